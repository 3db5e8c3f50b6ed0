"""The ``astra-inr`` command: reconstruct, batch, compare, demo.

A thin door into :mod:`astra_inr.recon`, :mod:`astra_inr.batch` and
:mod:`astra_inr.compare`: it only turns arguments into their option objects
and reports errors as one clear line (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import INRConfig
from .recon import INR_FIELDS_SHARED, ReconOptions

__all__ = ["main", "build_parser"]

EXIT_FAILED = 1


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_options(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """Add one flag per ReconOptions field and per INR option (values checked later)."""
    group = parser.add_argument_group("reading, preprocessing and algorithm")
    for f in dataclasses.fields(ReconOptions):
        if f.name == "inr" or f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        choices = f.metadata.get("choices") or ()
        extra = f" One of: {', '.join(choices)}." if choices else ""
        group.add_argument(_flag(f.name), dest=f.name, default=argparse.SUPPRESS, metavar="X",
                           help=f"{f.metadata['doc']}{extra} (default: {default})")
    inr = parser.add_argument_group("INR options (see `astra.plugin.get_help('INR')`)")
    for f in dataclasses.fields(INRConfig):
        if f.name in INR_FIELDS_SHARED:
            continue
        inr.add_argument(_flag(f.name), dest=f.name, default=argparse.SUPPRESS, metavar="X",
                         help=f"{f.metadata['doc']} (default: {f.default})")


def _given(args: argparse.Namespace, exclude: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in exclude}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astra-inr",
        description="Tomographic reconstruction with ASTRA: INR (implicit neural representation) "
                    "beside FBP, SIRT and CGLS, from beamline files to TIFF stacks with a report.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("reconstruct", help="reconstruct one scan",
                         description="Read a scan (DXchange or NXtomo HDF5, a TIFF folder, or one "
                                     "sinogram), preprocess it and reconstruct it into a TIFF "
                                     "stack with report.json.")
    rec.add_argument("input", help="scan file or folder")
    rec.add_argument("--out", required=True, help="result folder (created when complete)")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing result")
    rec.add_argument("--quiet", action="store_true", help="no progress display")
    rec.add_argument("--restart", action="store_true",
                     help="INR: ignore the checkpoint an interrupted run of this result left "
                          "and start afresh (by default a run of the same scan and options "
                          "goes on from it; INR saves one every 400 iterations)")
    _add_options(rec)

    bat = sub.add_parser("batch", help="reconstruct the scans listed in a TOML file",
                         description="Run every [[scan]] of CONFIG.toml; finished scans are skipped, "
                                     "failures are recorded in out/batch_report.json.")
    bat.add_argument("config", help="batch file (TOML)")
    where = bat.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="start a local Dask cluster of N processes")
    where.add_argument("--scheduler", help="address of an existing Dask scheduler")
    bat.add_argument("--overwrite", action="store_true", help="redo finished scans too")
    bat.add_argument("--quiet", action="store_true", help="no per-scan progress display")

    cmp_ = sub.add_parser(
        "compare", help="INR beside FBP, SIRT and CGLS on one scan or a phantom",
        description="Reconstruct the same data with several methods (baselines tuned by the "
                    "reference or the discrepancy principle) and write comparison.json/.csv/.md/.png.")
    cmp_.add_argument("input", nargs="?", help="scan file or folder (or use --phantom)")
    cmp_.add_argument("--out", required=True, help="output folder")
    cmp_.add_argument("--algorithms", default="FBP,SIRT,CGLS,INR",
                      help="comma-separated methods (default: FBP,SIRT,CGLS,INR; also TV: total "
                           "variation on the pixel grid, its weight tuned on a ladder)")
    cmp_.add_argument("--reference", help="a TIFF image/stack to score against, or 'full' (a SIRT "
                                          "reconstruction from all angles; methods get a subset)")
    cmp_.add_argument("--reference-iterations", type=int, metavar="N",
                      help="SIRT iterations of a 'full' reference (default: discrepancy principle)")
    cmp_.add_argument("--angles", dest="angle_arg", metavar="N|SPEC",
                      help="an integer: N evenly spread angles for the methods (or simulated with "
                           "--phantom); 'start:stop:count': the angles of a TIFF folder or sinogram")
    cmp_.add_argument("--limited-angle", type=float, metavar="DEG", help="keep a DEG-degree wedge")
    cmp_.add_argument("--phantom", help="simulate the scan from this image (TIFF) instead of INPUT")
    cmp_.add_argument("--noise", type=float, default=0.0,
                      help="with --phantom: Gaussian noise sigma as a fraction of the sinogram maximum")
    cmp_.add_argument("--noise-seed", type=int, default=0, help="with --phantom: noise seed")
    cmp_.add_argument("--overwrite", action="store_true")
    cmp_.add_argument("--quiet", action="store_true")
    _add_options(cmp_, skip=("angles", "algorithm"))

    demo = sub.add_parser("demo", help="reconstruct sample_data/ with FBP, SIRT and INR and compare",
                          description="Reconstruct the bundled simulated scan with FBP, SIRT and INR "
                                      "and write a comparison against its phantom.")
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--data", type=Path, default=None, help="sample_data folder")
    demo.add_argument("--iterations", type=int, default=None, help="INR iterations")
    demo.add_argument("--overwrite", action="store_true")
    demo.add_argument("--quiet", action="store_true")
    return parser


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from .progress import ProgressBar
    from .recon import reconstruct

    options = ReconOptions.from_mapping(
        _given(args, ("command", "input", "out", "overwrite", "quiet", "debug", "restart")))
    out = reconstruct(args.input, args.out, options, overwrite=args.overwrite,
                      progress=None if args.quiet else ProgressBar(), resume=not args.restart)
    if not args.quiet:
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch

    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = run_batch(args.config, workers=args.workers, scheduler=args.scheduler,
                       overwrite=args.overwrite, quiet=args.quiet, log=log)
    counts = report["counts"]
    print(f"batch: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
          f"(details in {Path(report['scans'][0]['out']).parent / 'batch_report.json'})"
          if report["scans"] else "batch: no scans", file=sys.stderr)
    return EXIT_FAILED if counts["failed"] else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import re

    from .cases import AngleSubset, case_from_phantom, case_from_scan
    from .compare import compare_methods
    from .comparison_report import markdown_table, write_comparison
    from .progress import ProgressBar

    given = _given(args, ("command", "input", "out", "overwrite", "quiet", "debug", "algorithms",
                          "reference", "angle_arg", "limited_angle", "phantom", "noise", "noise_seed",
                          "reference_iterations"))
    count = None
    if args.angle_arg is not None:
        if re.fullmatch(r"\d+", args.angle_arg.strip()):
            count = int(args.angle_arg)
        else:
            given["angles"] = args.angle_arg
    step = given.pop("angles_step", None)
    subset = AngleSubset(step=None if step is None else int(step), count=count,
                         limited_deg=args.limited_angle)
    methods = [m.strip() for m in args.algorithms.split(",") if m.strip()]
    if args.phantom:
        if args.input:
            raise ValueError("give either INPUT or --phantom, not both")
        if count is None:
            raise ValueError("--phantom needs --angles N (the number of simulated angles)")
        sino, reference, case = case_from_phantom(args.phantom, count, args.noise,
                                                  args.limited_angle, args.noise_seed)
        heldout = None
        given.setdefault("size", case["grid_size"])
        options = ReconOptions.from_mapping(given)
    else:
        if not args.input:
            raise ValueError("give a scan INPUT or --phantom IMAGE")
        options = ReconOptions.from_mapping(given)
        sino, reference, case, heldout = case_from_scan(args.input, options, args.reference,
                                                        subset, args.reference_iterations)
    progress = None if args.quiet else ProgressBar()
    results = compare_methods(sino, methods, options, reference, progress, heldout=heldout)
    out = write_comparison(args.out, results, case, reference, overwrite=args.overwrite)
    if not args.quiet:
        print(markdown_table(results), file=sys.stderr)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, data=args.data, iterations=args.iterations, overwrite=args.overwrite,
             quiet=args.quiet)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"reconstruct": _cmd_reconstruct, "batch": _cmd_batch, "compare": _cmd_compare,
                "demo": _cmd_demo}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"astra-inr {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
