#!/usr/bin/env python
"""INR with several option sets on benchmark cases, beside the tuned baselines computed once.

Each case of ``scripts/benchmark.py`` (same data, sizes, references and held-out
projections) is built once and FBP, SIRT and CGLS run once on it at their best
iteration counts; then INR runs once per configuration.  The question it answers
is the issue's "measure each way on the suite": which change of the INR's
options moves which case, by how much, at what cost.

    python scripts/option_sweep.py --cases 'tooth-*,neutron-*' \\
        --config defaults= --config tv0.05=tv_weight=0.05 \\
        --config its1000=iterations=1000 --out DIR

``--config LABEL=KEY=VALUE;KEY=VALUE`` (repeatable): KEY is a snake_case
INRConfig field (``tv_weight``, ``discrepancy``, ``ramp_floor``, ...) or
``iterations``; VALUE is read and checked as the command line reads that
option.  An empty list (``defaults=``) is INR at its defaults.  ``--quick`` uses
the benchmark's quick sizes (its INR shrinkage is *not* applied: every
configuration starts from the defaults).

Prints one line per run and a table at the end (PSNR / SSIM / seconds per
case and configuration, the margin over the best classical PSNR and SSIM,
data and held-out residuals); writes ``option_sweep.json`` to ``--out`` after
every run, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmark as bm  # noqa: E402  (the benchmark's cases, built the same way)

from astra_inr.compare import compare_methods  # noqa: E402
from astra_inr.config import INRConfig  # noqa: E402
from astra_inr.options import unknown_names_error  # noqa: E402
from astra_inr.recon import ReconOptions  # noqa: E402

BASELINES = ("FBP", "SIRT", "CGLS")
#: Per INR run, the report values worth keeping beside the scores.
KEPT = ("psnr", "ssim", "seconds", "iterations", "iteration_choice", "data_residual",
        "heldout_residual", "heldout_residual_ramp", "estimated_noise_level",
        "estimated_inconsistency", "tv_weight_floor", "tv_weight_final", "level_gains",
        "iteration_blocks", "tv_weight_choice")


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    """``'label=key=value;key=value'`` -> (label, {key: value}), read and checked as INR options.

    Values are converted and validated by :class:`INRConfig` (and ``iterations``
    by :class:`ReconOptions`), as the command line's flags are.

    Raises
    ------
    argparse.ArgumentTypeError
        On a missing label, a pair without '=', an unknown key or a bad value.
    """
    label, sep, rest = text.partition("=")
    if not sep or not label.strip():
        raise argparse.ArgumentTypeError(f"--config {text!r}: expected LABEL=KEY=VALUE;... "
                                         "(or LABEL= for the defaults)")
    raw: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in rest.split(";"))):
        key, eq, value = pair.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"--config {text!r}: {pair!r} is not KEY=VALUE")
        raw[key.strip()] = value.strip()
    fields = {f.name for f in dataclasses.fields(INRConfig)}
    unknown = set(raw) - fields - {"iterations"}
    try:
        if unknown:
            raise unknown_names_error(sorted(unknown), fields | {"iterations"}, "option")
        iterations = ReconOptions(iterations=raw.pop("iterations", None)).iterations
        config = INRConfig(**raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--config {text!r}: {exc}") from None
    options = {k: getattr(config, k) for k in raw}
    return label.strip(), options | ({} if iterations is None else {"iterations": iterations})


def _kept(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in KEPT if k in summary}


def sweep_case(spec: bm.CaseSpec, mode: bm.Mode, args: argparse.Namespace,
               configs: list[tuple[str, dict[str, Any]]], out: dict[str, Any],
               save) -> None:
    """Baselines once, then INR per configuration, into ``out['cases'][spec.id]``."""
    bench_args = argparse.Namespace(device=args.device, inr_iterations=None, data=args.data)
    sino, reference, case, options, heldout = bm.build_case(spec, mode, bench_args)
    entry: dict[str, Any] = {"title": spec.title, "parameters": spec.params, "configs": {}}
    out["cases"][spec.id] = entry
    base = compare_methods(sino, list(BASELINES), options, reference, heldout=heldout)
    entry["baselines"] = {name: _kept(r.summary()) | {"iterations": r.iterations}
                          for name, r in base.items()}
    independent = None
    if heldout is not None:
        # Real scans: also scored against SIRT on the left-out angles (benchmark.py's third table).
        independent, entry["independent_reference"] = bm.independent_reference(
            heldout, options, spec.params["reference_iterations"])
        bm.add_independent_scores(base, entry["baselines"], independent)
        best_independent = {k: max(b[k] for b in entry["baselines"].values())
                            for k in ("independent_psnr", "independent_ssim")}
    best_psnr = max(r.psnr for r in base.values())
    best_ssim = max(r.ssim for r in base.values())
    print(f"{spec.id}: baselines " + ", ".join(f"{n} {r.psnr:.2f}/{r.ssim:.3f}"
                                               for n, r in base.items())
          + ("" if independent is None else "; against SIRT on the left-out angles " + ", ".join(
              f"{n} {b['independent_psnr']:.2f}/{b['independent_ssim']:.3f}"
              for n, b in entry["baselines"].items())), flush=True)
    save()
    for label, config in configs:
        inr = {k: v for k, v in config.items() if k != "iterations"}
        run_opts = dataclasses.replace(options, inr=inr,
                                       iterations=config.get("iterations", options.iterations))
        try:
            r = compare_methods(sino, ["INR"], run_opts, reference, heldout=heldout)["INR"]
        except Exception as exc:  # one failing configuration must not lose the others
            entry["configs"][label] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{spec.id} [{label}]: FAILED {exc}", flush=True)
            save()
            continue
        row = _kept(r.summary()) | {"options": config,
                                    "margin_db": r.psnr - best_psnr,
                                    "margin_ssim": r.ssim - best_ssim}
        if independent is not None:
            bm.add_independent_scores({"INR": r}, {"INR": row}, independent)
            row["independent_margin_db"] = (row["independent_psnr"]
                                            - best_independent["independent_psnr"])
            row["independent_margin_ssim"] = (row["independent_ssim"]
                                              - best_independent["independent_ssim"])
        entry["configs"][label] = row
        print(f"{spec.id} [{label}]: {r.psnr:.2f} dB / {r.ssim:.3f} "
              f"({row['margin_db']:+.2f} / {row['margin_ssim']:+.3f}), residual "
              f"{r.data_residual:.4f}, {r.iterations} its ({r.choice}), {r.seconds:.1f} s"
              + ("" if independent is None else
                 f"; against SIRT on the left-out angles {row['independent_psnr']:.2f} / "
                 f"{row['independent_ssim']:.3f} ({row['independent_margin_db']:+.2f} / "
                 f"{row['independent_margin_ssim']:+.3f})"), flush=True)
        save()


def table(out: dict[str, Any], labels: list[str]) -> str:
    """Markdown: one row per case and configuration."""
    lines = ["| case | configuration | PSNR / SSIM | - best classical (dB / SSIM) | "
             "data residual | held-out plain / ramp | TV final | seconds | "
             "vs SIRT on left-out angles (- best) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cid, entry in out["cases"].items():
        b = entry.get("baselines", {})
        lines.append(f"| {cid} | baselines | " + ", ".join(
            f"{n} {v['psnr']:.2f} / {v['ssim']:.3f} ({v['iterations']})" for n, v in b.items())
            + " | | | | | | " + ", ".join(
                f"{n} {v['independent_psnr']:.2f} / {v['independent_ssim']:.3f}"
                for n, v in b.items() if "independent_psnr" in v) + " |")
        for label in labels:
            r = entry["configs"].get(label)
            if r is None or "error" in r:
                lines.append(f"| {cid} | {label} | {'not run' if r is None else r['error']} "
                             "| | | | | | |")
                continue
            held = (f"{r['heldout_residual']:.4f} / {r['heldout_residual_ramp']:.4f}"
                    if "heldout_residual" in r else "")
            lines.append(f"| {cid} | {label} | {r['psnr']:.2f} / {r['ssim']:.3f} | "
                         f"{r['margin_db']:+.2f} / {r['margin_ssim']:+.3f} | "
                         f"{r['data_residual']:.4f} | {held} | "
                         f"{r.get('tv_weight_final', float('nan')):.3f} | {r['seconds']:.1f} | "
                         + (f"{r['independent_psnr']:.2f} / {r['independent_ssim']:.3f} "
                            f"({r['independent_margin_db']:+.2f} / "
                            f"{r['independent_margin_ssim']:+.3f})"
                            if "independent_psnr" in r else "") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True, metavar="PATTERN",
                    help="comma-separated case patterns, as benchmark.py --cases")
    ap.add_argument("--config", dest="configs", type=parse_config, action="append",
                    required=True, metavar="LABEL=KEY=VALUE;...")
    ap.add_argument("--quick", action="store_true", help="the benchmark's quick sizes")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--data", type=Path, default=bm.DATA)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    labels = [label for label, _ in args.configs]
    if len(set(labels)) != len(labels):
        ap.error(f"configuration labels must differ: {labels}")
    mode = dataclasses.replace(bm.QUICK_MODE if args.quick else bm.DEFAULT_MODE,
                               inr_options={}, inr_iterations=None)
    specs = bm.select_cases(mode, args.cases)
    out: dict[str, Any] = {"machine": bm.machine_info(), "mode": mode.to_dict(),
                           "configs": dict(args.configs), "cases": {}, "complete": False}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "option_sweep.json"
    start = time.perf_counter()

    def save() -> None:
        out["wall_seconds"] = time.perf_counter() - start
        bm.write_json_atomic(path, out)

    for spec in specs:
        try:
            sweep_case(spec, mode, args, args.configs, out, save)
        except Exception as exc:  # a case that cannot be built is reported; the others go on
            out["cases"].setdefault(spec.id, {})["error"] = f"{type(exc).__name__}: {exc}"
            print(f"{spec.id}: FAILED {exc}", flush=True)
    out["complete"] = True
    out["table"] = table(out, labels)
    save()
    print(out["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
