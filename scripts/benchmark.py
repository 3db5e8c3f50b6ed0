#!/usr/bin/env python
"""The astra-inr quality benchmark: INR beside FBP, SIRT, CGLS and TV on fixed cases.

Every case reconstructs the same data with each method through
:func:`astra_inr.compare.compare_methods` (SIRT and CGLS tuned on their
iteration ladders and TV -- total variation on the pixel grid,
:mod:`astra_inr.tv` -- on its ladder of weights, by PSNR against the
reference; FBP with Ram-Lak; INR with its defaults unless the mode says
otherwise) and scores PSNR and SSIM
against the case's reference.  The script prints a markdown table (one row
per case: each method's PSNR / SSIM / seconds, the PSNR winner, INR's
margins over the best classical method and whether they meet the quality
target, below) to stdout, progress to stderr, and
writes everything to a JSON file -- after every case, atomically, so that a
run cut off part way still leaves its results.

Cases
-----
Simulated (:func:`astra_inr.cases.case_from_phantom`: ASTRA's 'strip'
projector on a 2x finer grid, the methods use 'linear'; no inverse crime;
Gaussian noise of the given fraction of the sinogram's maximum, seed 0;
parallel beam, angles evenly over 180 degrees without the endpoint; the
reference is the phantom itself):

* ``ct-{30,60}-n{0,1,3}``: the real CT slice ``ct_small_attenuation.tif``
  (128 x 128, 1/mm) from 30 or 60 angles with noise 0, 1 or 3 percent.
* ``sl-{30,60}-n{0,1,3}``: the modified Shepp-Logan phantom (values 0..1,
  ``astra.data2d.shepp_logan``), 256 x 256, likewise.
* ``ct-lim120-n1``, ``sl-lim120-n1``: limited angle, 60 angles evenly over
  a 120 degree wedge (2 degree steps, the 60 degrees from 120 to 180 are
  missing), noise 1 percent.

Real (:func:`astra_inr.cases.case_from_scan` with ``reference='full'``: the
reference is non-negative SIRT on *all* angles, its iterations by the
discrepancy principle; the methods see only the subset.  Such a reference
shares SIRT's own smoothing, so it favours SIRT: read these rows as
closeness to the full-data SIRT, not to the truth.  A second score needs
no reference: every method's volume is projected at the angles the subset
left out and compared with what was measured there (plain and
ramp-weighted relative residual, :mod:`astra_inr.compare`), printed as a
second table.  A third table scores every method against SIRT on the
left-out angles only (same iterations rule as the reference): that
reference shares none of the input's noise, so a method that reproduces the
input's noise gains nothing from it; it is still SIRT, with SIRT's smoothing
and the left-out data's own noise.  The target is read from the first table.
Under the tables, each real scan's reference ceiling: what an image free of
noise would score against the all-angle reference (:func:`reference_ceiling`;
``--no-ceiling`` skips its two SIRT runs per real scan), so a bar that lies
near or beyond it reads as the reference's limit, not the method's):

* ``tooth-step4``: the APS tooth scan ``aps_tooth_dxchange.h5`` (DXchange,
  181 angles over 180 degrees, 2 rows x 640 columns): flat/dark correction,
  -log, automatic rotation centre; both detector rows (two slices) at full
  resolution, 640 x 640 per slice; the methods get every 4th angle (46).
* ``neutron-quarter``: the neutron sinogram ``neutron_sinogram_360.tif``
  (uint16 counts, 459 angles over 360 degrees including the endpoint, 503
  columns, no flat field): normalised by the open-beam columns 0:30, -log,
  ring removal ``stripe_removal='all'`` (Vo et al. 2018 algorithms 6, 5, 3),
  503 x 503 grid; the methods get every 4th angle (115).  Rings are removed
  because the reference is made from the same data: left in, they would be
  in the reference and each method would be scored on how faithfully it
  reproduces the rings rather than on the sparse-view reconstruction (every
  method receives the same preprocessed data, so the removal is fair either
  way).  The removal runs on all 459 angles before the subset is taken, as
  :func:`~astra_inr.cases.case_from_scan` does for any preprocessing.

Modes
-----
default (sized for one GPU; run it with ``--device auto``):
    every case above at the sizes above; INR with all its defaults
    (iterations, width, depth, scale, learning rate); the references and the
    baselines' ladders as :mod:`astra_inr.compare` chooses them.  The speed
    rows (below) follow the quality cases unless ``--no-speed``.

``--quick`` (a few minutes on 2 CPU cores):
    the cases ``ct-30-n0`` (sparse), ``ct-60-n3`` (noisy), ``ct-lim120-n1``
    (limited angle), ``sl-30-n1``, ``tooth-step4`` and ``neutron-quarter``
    (``--cases`` picks any other case at quick sizes); the CT slice
    block-averaged 2 x 2 to 64 x 64, Shepp-Logan drawn at 64 x 64; the
    tooth's two rows binned 2 x 2 into one slice of 320 columns and
    reconstructed on a 192 x 192 grid centred on the axis (the tooth lies
    within 89 binned pixels of the axis in every projection, so nothing is
    cut off), its SIRT reference run for a fixed 200 iterations; the neutron
    sinogram's raw counts averaged over pairs of detector columns (251
    columns, what a detector with twice as wide pixels counts; open-beam
    columns 0:15) and reconstructed on a 180 x 180 grid centred on the axis
    (its object lies within 85 binned pixels of the axis), its SIRT
    reference run for a fixed 100 iterations; INR with Width 128 for 300
    iterations (a smaller network and a shorter run than its defaults),
    otherwise its defaults (``--inr-defaults``: INR exactly as by default, at the
    quick data sizes; tens of minutes on 2 CPU cores).  Every change from the INR defaults is printed
    and recorded in the JSON (``mode.inr``; each INR row's ``options`` holds
    every INR option as run).  No speed rows unless ``--speed``.

Speed rows
----------
``--speed`` (default mode: unless ``--no-speed``) calls
``astra_inr.speed.run_speed_benchmarks(args)`` (iterations per second,
seconds to finish, peak memory), prints its rows as a second table and
stores them under ``"speed"`` in the JSON.  That module is owned by the
speed work; when it does not exist, the script says so and goes on.

Output
------
The JSON: ``machine`` (platform, CPU count, library versions, GPU name,
``astra_use_cuda``, load average), ``mode`` (sizes, INR settings, device),
``methods``, ``cases`` (per case id: ``title``, ``parameters``,
``description``, ``reference``, ``options``, ``status`` ('ok' or 'error'
with ``error`` and ``traceback``), ``methods`` (per method: ``psnr``,
``ssim``, ``seconds``, ``iterations``, ``iteration_choice``,
``data_residual``, for real scans ``heldout_residual`` and
``heldout_residual_ramp``, ...), ``winner``, ``inr_margin_db``,
``inr_margin_ssim``, ``target`` (the rule that applies and whether INR
meets it), ``seconds``), ``target_summary`` (how many cases meet it),
``table`` (the markdown printed), ``heldout_table`` (real scans' held-out
scores, when any ran), ``independent_table`` (real scans against SIRT on the
left-out angles: per method ``independent_psnr`` / ``independent_ssim``, per
case ``independent_reference``), per real-scan case ``reference_ceiling`` and
the ``ceiling_table``, real scans' SSIM within the object (per method
``object_ssim``, per case ``object_fraction``; ``object_table``), ``speed`` (``status``: 'ok',
'unavailable', 'error' or 'skipped'; ``rows``) and ``complete`` (false
while the run is going on or if it was cut off).

Usage
-----
::

    python scripts/benchmark.py --quick                  # CPU smoke run, ~5 minutes
    python scripts/benchmark.py --device auto            # the full suite on a GPU
    python scripts/benchmark.py --cases 'ct-*' --methods FBP,SIRT,INR --json out.json
    python scripts/benchmark.py --list                   # the cases and their parameters

The process exits with 1 when any case (or the speed section) failed; the
failure is in the table and the JSON and the other cases still run.

Target
------
What INR has to show to earn its place beside the classical methods (the
project's quality issue): on sparse (at most 60 angles over 180 degrees),
limited-angle or noisy data -- every real scan counts as noisy -- INR at its
defaults is at least 1.5 dB PSNR *and* 0.03 SSIM above the best of FBP,
SIRT and CGLS (each at its best iteration count; the best PSNR and the best
SSIM are taken separately); on full, clean data it is at most 0.5 dB below.
A run with changed INR options is still scored, and its table says so.

TV is not one of the target's methods: it is printed beside them, with INR's
margin over it in a column of its own, because INR borrows its prior (total
variation) and a user who knows TV reconstruction asks what the network adds
to it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import importlib
import os
import platform
import sys
import tempfile
import time
import traceback
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import astra
import numpy as np
import tifffile

import astra_inr  # noqa: F401  (registers the INR plugin)
from astra_inr.cases import (AngleSubset, case_from_phantom, case_from_scan,
                             reference_from_full_data)
from astra_inr.compare import METHODS, MethodResult, compare_methods, score
from astra_inr.metrics import EmptyRegionError, noise_free_ssim, object_region, psnr, ssim
# Imported with the rest, not when the first figure is due: a long run must not
# pick up a different version of the package (an editable install edited meanwhile).
from astra_inr.comparison_report import write_comparison
from astra_inr.io.writers import write_json
from astra_inr.preprocess import Sinograms
from astra_inr.progress import ProgressBar
from astra_inr.provenance import provenance
from astra_inr.recon import ReconOptions

ROOT = Path(__file__).resolve().parents[1]
#: The shared real data (never copied into the repository).
DATA = ROOT.parent / "shared" / "data"
CT_FILE = "ct_small_attenuation.tif"
TOOTH_FILE = "aps_tooth_dxchange.h5"
NEUTRON_FILE = "neutron_sinogram_360.tif"

#: Seed of the simulated noise (INR's network seed is its default, 0).
NOISE_SEED = 0
ANGLE_COUNTS = (30, 60)
NOISE_LEVELS = (0.0, 0.01, 0.03)
LIMITED_DEG = 120.0
LIMITED_ANGLES = 60
LIMITED_NOISE = 0.01
#: The quality target (module docstring): sparse means at most this many angles per 180 degrees.
SPARSE_MAX_ANGLES = 60
TARGET_GAIN_DB = 1.5
TARGET_GAIN_SSIM = 0.03
FULL_CLEAN_MAX_LOSS_DB = 0.5
#: The classical methods the target is measured against (TV is printed beside them).
TARGET_METHODS = ("FBP", "SIRT", "CGLS")
NEUTRON_STRIPE_REMOVAL = "all"
#: The neutron sinogram's open-beam columns 0:30 normalise it (it has no flat field).
NEUTRON_OPEN_COLUMNS = 30

Log = Callable[[str], None]


# ---------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Mode:
    """Sizes and INR settings of one benchmark mode.

    Attributes
    ----------
    name : str
        'default' or 'quick'.
    ct_size, sl_size : int
        Phantom grids in pixels (CT: 128 or a divisor of it, by block mean).
    tooth_binning : int
        Detector binning of the tooth (its rows are 0:2, so 1 or 2).
    neutron_binning : int
        Detector columns of the neutron sinogram averaged into one, on its
        raw counts before preprocessing (``ReconOptions.binning`` bins K x K
        pixels and needs K rows; a single sinogram has one).
    tooth_size, neutron_size : int or None
        Reconstruction grids centred on the axis (None: the detector width).
    tooth_reference_iterations, neutron_reference_iterations : int or None
        SIRT iterations of the full-data references (None: discrepancy principle).
    inr_iterations : int or None
        INR iterations (None: the INR default).
    inr_options : dict
        INR options (snake_case INRConfig fields) that differ from the defaults.
    case_ids : tuple of str or None
        The cases run when ``--cases`` is not given (None: all).
    """

    name: str
    ct_size: int
    sl_size: int
    tooth_binning: int
    neutron_binning: int
    tooth_size: int | None
    neutron_size: int | None
    tooth_reference_iterations: int | None
    neutron_reference_iterations: int | None
    inr_iterations: int | None
    inr_options: dict[str, Any] = field(default_factory=dict)
    case_ids: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_MODE = Mode("default", ct_size=128, sl_size=256, tooth_binning=1, neutron_binning=1,
                    tooth_size=None,
                    neutron_size=None, tooth_reference_iterations=None,
                    neutron_reference_iterations=None, inr_iterations=None)
QUICK_MODE = Mode("quick", ct_size=64, sl_size=64, tooth_binning=2, neutron_binning=2,
                  tooth_size=192, neutron_size=180, tooth_reference_iterations=200,
                  neutron_reference_iterations=100, inr_iterations=300,
                  inr_options={"width": 128},
                  case_ids=("ct-30-n0", "ct-60-n3", "ct-lim120-n1", "sl-30-n1", "tooth-step4",
                            "neutron-quarter"))


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseSpec:
    """One benchmark case: an id, a one-line title and the parameters that build it.

    ``params['kind']`` is 'phantom' (keys phantom, size, angles, noise,
    limited_deg, seed) or 'scan' (keys scan, file, options, subset_step,
    reference_iterations).
    """

    id: str
    title: str
    params: dict[str, Any]


def _noise_tag(noise: float) -> str:
    return f"n{round(100 * noise):d}"


def phantom_cases(mode: Mode) -> list[CaseSpec]:
    """The simulated cases of ``mode``: both phantoms, sparse/noisy grid and limited angle."""
    specs = []
    for key, name, size in (("ct", "CT slice", mode.ct_size), ("sl", "Shepp-Logan", mode.sl_size)):
        grid = [(n, noise, None) for n in ANGLE_COUNTS for noise in NOISE_LEVELS]
        grid.append((LIMITED_ANGLES, LIMITED_NOISE, LIMITED_DEG))
        for n_angles, noise, limited in grid:
            cid = (f"{key}-lim{limited:g}-{_noise_tag(noise)}" if limited
                   else f"{key}-{n_angles}-{_noise_tag(noise)}")
            span = f"{n_angles} angles over {limited:g} deg" if limited else f"{n_angles} angles"
            title = f"{name} {size}x{size}, {span}, noise {100 * noise:g}%"
            specs.append(CaseSpec(cid, title, {
                "kind": "phantom", "phantom": key, "size": size, "angles": n_angles,
                "noise": noise, "limited_deg": limited, "seed": NOISE_SEED}))
    return specs


def scan_cases(mode: Mode) -> list[CaseSpec]:
    """The real-data cases of ``mode``: the tooth and the neutron sinogram."""
    tooth_opts = {"rows": "0:2", "binning": mode.tooth_binning, "size": mode.tooth_size}
    neutron_opts = {"angles": "0:360:459:endpoint", "values": "counts",
                    "flat_columns": f"0:{NEUTRON_OPEN_COLUMNS // mode.neutron_binning}",
                    "stripe_removal": NEUTRON_STRIPE_REMOVAL, "size": mode.neutron_size}
    tooth_slices = 2 // mode.tooth_binning
    tooth_grid = mode.tooth_size or 640 // mode.tooth_binning
    neutron_grid = mode.neutron_size or 503 // mode.neutron_binning
    neutron_bin = (f", columns binned {mode.neutron_binning}" if mode.neutron_binning > 1 else "")
    return [
        CaseSpec("tooth-step4",
                 f"APS tooth, every 4th of 181 angles, {tooth_slices} slice(s) of "
                 f"{tooth_grid}x{tooth_grid}, binning {mode.tooth_binning}, vs its full-data SIRT",
                 {"kind": "scan", "scan": "tooth", "file": TOOTH_FILE, "options": tooth_opts,
                  "subset_step": 4, "reference_iterations": mode.tooth_reference_iterations}),
        CaseSpec("neutron-quarter",
                 f"neutron sinogram (rings removed{neutron_bin}), {neutron_grid}x{neutron_grid}, "
                 f"every 4th of 459 angles over 360 deg, vs its full-data SIRT",
                 {"kind": "scan", "scan": "neutron", "file": NEUTRON_FILE, "options": neutron_opts,
                  "column_binning": mode.neutron_binning,
                  "subset_step": 4, "reference_iterations": mode.neutron_reference_iterations}),
    ]


def all_cases(mode: Mode) -> list[CaseSpec]:
    """Every case of the suite, with ``mode``'s sizes."""
    return phantom_cases(mode) + scan_cases(mode)


def select_cases(mode: Mode, patterns: str | None) -> list[CaseSpec]:
    """The cases to run: ``patterns`` (comma-separated fnmatch patterns) or the mode's set.

    Raises
    ------
    ValueError
        When no case matches.
    """
    cases = all_cases(mode)
    if patterns:
        pats = [p.strip() for p in patterns.split(",") if p.strip()]
        chosen = [c for c in cases if any(fnmatch.fnmatchcase(c.id, p) for p in pats)]
    elif mode.case_ids is not None:
        chosen = [c for c in cases if c.id in mode.case_ids]
    else:
        chosen = cases
    if not chosen:
        raise ValueError(f"no case matches {patterns!r}; the cases are: "
                         + ", ".join(c.id for c in cases))
    return chosen


def phantom_image(name: str, size: int, data_dir: Path) -> np.ndarray:
    """The ``size`` x ``size`` phantom: 'ct' (the real CT slice, block-averaged) or 'sl'.

    Raises
    ------
    ValueError
        When ``size`` does not divide the CT slice's 128 pixels.
    """
    if name == "sl":
        return astra.data2d.shepp_logan(astra.create_vol_geom(size, size))[1].astype(np.float32)
    image = np.asarray(tifffile.imread(data_dir / CT_FILE), np.float32)
    n = image.shape[0]
    if n % size:
        raise ValueError(f"the CT slice is {n} pixels wide; size {size} does not divide it")
    k = n // size
    return image.reshape(size, k, size, k).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def recon_options(mode: Mode, args: argparse.Namespace, **fields: Any) -> ReconOptions:
    """The shared ReconOptions of a case: device, INR settings of the mode, plus ``fields``."""
    iterations = args.inr_iterations if args.inr_iterations is not None else mode.inr_iterations
    return ReconOptions(device=args.device, iterations=iterations, inr=dict(mode.inr_options),
                        **{k: v for k, v in fields.items() if v is not None})


def build_case(spec: CaseSpec, mode: Mode, args: argparse.Namespace,
               ) -> tuple[Sinograms, np.ndarray, dict[str, Any], ReconOptions, Sinograms | None]:
    """Make the data, the reference, the case description, the options and the held-out data.

    The held-out data (None for phantoms) are a real scan's projections at
    the angles the methods do not get.
    """
    p = spec.params
    data_dir = Path(args.data)
    if p["kind"] == "phantom":
        image = phantom_image(p["phantom"], p["size"], data_dir)
        sino, reference, case = case_from_phantom(image, p["angles"], p["noise"],
                                                  p["limited_deg"], p["seed"])
        case["input"] = CT_FILE if p["phantom"] == "ct" else "modified Shepp-Logan (astra)"
        return sino, reference, case, recon_options(mode, args, size=case["grid_size"]), None
    options = recon_options(mode, args, **p["options"])
    source = data_dir / p["file"]
    binning = p.get("column_binning", 1)
    with tempfile.TemporaryDirectory(prefix="astra-inr-benchmark-") as tmp:
        path = bin_sinogram_columns(source, binning, Path(tmp)) if binning > 1 else source
        sino, reference, case, heldout = case_from_scan(
            path, options, reference="full", subset=AngleSubset(step=p["subset_step"]),
            reference_iterations=p["reference_iterations"])
    if binning > 1:
        case["input"] = str(source)
        case["input_preparation"] = (f"raw counts averaged over {binning} adjacent detector "
                                     f"columns (a temporary copy) before preprocessing")
    return sino, reference, case, options, heldout


def bin_sinogram_columns(path: Path, factor: int, out_dir: Path) -> Path:
    """Average ``factor`` adjacent detector columns of a single-sinogram TIFF of raw counts.

    The mean of the counts is what a detector with ``factor`` times wider
    pixels measures (scaled), so the result is still counts; trailing
    columns that fill no bin are dropped.

    Parameters
    ----------
    path : Path
        ``(angles, cols)`` TIFF.
    factor : int
    out_dir : Path
        Where the float32 copy is written.

    Returns
    -------
    Path
        The binned ``(angles, cols // factor)`` TIFF.
    """
    counts = np.asarray(tifffile.imread(path), np.float64)
    angles, cols = counts.shape
    c = cols // factor
    binned = counts[:, :c * factor].reshape(angles, c, factor).mean(axis=2)
    out = out_dir / f"{path.stem}_columns_binned_{factor}.tif"
    tifffile.imwrite(out, binned.astype(np.float32))
    return out


# ---------------------------------------------------------------------------
# Running and scoring
# ---------------------------------------------------------------------------

def winner_and_margin(methods: dict[str, dict[str, Any]]) -> tuple[str | None, float | None]:
    """The method with the highest PSNR, and INR's PSNR minus the best classical method's.

    Parameters
    ----------
    methods : dict
        Method name -> summary with a ``psnr`` entry (None when unscored).

    Returns
    -------
    winner : str or None
    inr_margin_db : float or None
        None unless INR and at least one classical method have a PSNR.
    """
    scored = {m: s["psnr"] for m, s in methods.items() if s.get("psnr") is not None}
    winner = max(scored, key=scored.get) if scored else None
    return winner, inr_margin(methods, "psnr")


def inr_margin(methods: dict[str, dict[str, Any]], score: str,
               against: Sequence[str] = TARGET_METHODS) -> float | None:
    """INR's ``score`` ('psnr' or 'ssim') minus the best of the methods ``against``.

    Each score takes its own best method.  None unless INR and at least one
    of those methods have that score.
    """
    scored = {m: s[score] for m, s in methods.items() if s.get(score) is not None}
    classical = [v for m, v in scored.items() if m in against]
    return scored["INR"] - max(classical) if "INR" in scored and classical else None


def hard_case(params: dict[str, Any]) -> bool:
    """Whether a case is sparse, limited-angle or noisy (the +1.5 dB target) or full and clean.

    Real scans are measured data, so noisy; a phantom is hard when it has
    noise, a limited angle, or at most :data:`SPARSE_MAX_ANGLES` angles.
    """
    if params["kind"] != "phantom":
        return True
    return (params["noise"] > 0 or params["limited_deg"] is not None
            or params["angles"] <= SPARSE_MAX_ANGLES)


def target_verdict(params: dict[str, Any], margin_db: float | None,
                   margin_ssim: float | None) -> dict[str, Any]:
    """The quality target that applies to a case and whether INR's margins meet it.

    Returns
    -------
    dict
        ``rule`` (text), ``kind`` ('sparse, limited or noisy' or 'full and
        clean') and ``met`` (bool; None when INR or every classical method
        went unscored).
    """
    if hard_case(params):
        rule = f"INR >= best classical + {TARGET_GAIN_DB:g} dB and + {TARGET_GAIN_SSIM:g} SSIM"
        met = (None if margin_db is None or margin_ssim is None
               else margin_db >= TARGET_GAIN_DB and margin_ssim >= TARGET_GAIN_SSIM)
        return {"kind": "sparse, limited or noisy", "rule": rule, "met": met}
    rule = f"INR >= best classical - {FULL_CLEAN_MAX_LOSS_DB:g} dB"
    met = None if margin_db is None else margin_db >= -FULL_CLEAN_MAX_LOSS_DB
    return {"kind": "full and clean", "rule": rule, "met": met}


def target_summary(cases: Sequence[dict[str, Any]]) -> str:
    """One line: on how many scored cases INR meets the target, and which miss it."""
    verdicts = {e["id"]: e["target"]["met"] for e in cases
                if e["status"] == "ok" and e["target"]["met"] is not None}
    missed = [cid for cid, met in verdicts.items() if not met]
    line = f"Target met on {len(verdicts) - len(missed)} of {len(verdicts)} scored case(s)"
    return line + (f"; missed: {', '.join(missed)}." if missed else ".")


def run_case(spec: CaseSpec, mode: Mode, args: argparse.Namespace, log: Log) -> dict[str, Any]:
    """Build and run one case; a failure is returned as ``status: 'error'``, never raised."""
    entry: dict[str, Any] = {"id": spec.id, "title": spec.title, "parameters": spec.params,
                             "status": "running"}
    t0 = time.perf_counter()
    try:
        sino, reference, case, options, heldout = build_case(spec, mode, args)
        entry.update(description=case.get("description"), reference=case.get("reference"),
                     case=case, data_shape=list(sino.data.shape), options=options.to_dict(),
                     build_seconds=time.perf_counter() - t0)
        progress = None if args.quiet else ProgressBar(prefix=f"  {spec.id}: ")
        results = compare_methods(sino, args.methods, options, reference, progress,
                                  heldout=heldout)
        entry["methods"] = {name: _method_summary(r) for name, r in results.items()}
        if heldout is not None:
            volume, entry["independent_reference"] = independent_reference(
                heldout, options, spec.params["reference_iterations"])
            add_independent_scores(results, entry["methods"], volume)
            entry["object_fraction"] = add_object_scores(results, entry["methods"], reference)
            if args.ceiling:
                entry["reference_ceiling"] = reference_ceiling(
                    sino, heldout, reference, options, spec.params["reference_iterations"])
        entry["winner"], entry["inr_margin_db"] = winner_and_margin(entry["methods"])
        entry["inr_margin_ssim"] = inr_margin(entry["methods"], "ssim")
        entry["inr_margin_tv_db"] = inr_margin(entry["methods"], "psnr", ("TV",))
        entry["inr_margin_tv_ssim"] = inr_margin(entry["methods"], "ssim", ("TV",))
        entry["target"] = target_verdict(spec.params, entry["inr_margin_db"],
                                         entry["inr_margin_ssim"])
        entry["status"] = "ok"
    except Exception as exc:  # a failing case is reported; the suite goes on
        entry.update(status="error", error=f"{type(exc).__name__}: {exc}",
                     traceback=traceback.format_exc())
        log(f"  {spec.id}: FAILED {entry['error']}")
    else:
        if args.figures:
            entry["figures"] = _write_figures(Path(args.figures) / spec.id, results, case,
                                              reference, log)
    entry["seconds"] = time.perf_counter() - t0
    # Other work on the machine slows the CPU rows (INR most): keep the load beside the seconds.
    entry["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return entry


def _method_summary(result: MethodResult) -> dict[str, Any]:
    """A method's JSON row: PSNR, SSIM, seconds, iterations and how they were chosen."""
    return {"name": result.name, **result.summary()}


def _write_figures(out: Path, results: dict[str, MethodResult], case: dict[str, Any],
                   reference: np.ndarray, log: Log) -> str:
    """Write the case's comparison folder; returns its path, or the error (scores stand)."""
    try:
        return str(write_comparison(out, results, case, reference, overwrite=True))
    except Exception as exc:
        log(f"  figures for {out.name} failed: {type(exc).__name__}: {exc}")
        return f"error: {type(exc).__name__}: {exc}"


def case_line(entry: dict[str, Any]) -> str:
    """One progress line for a finished case."""
    if entry["status"] != "ok":
        return f"{entry['id']}: error after {entry['seconds']:.1f} s: {entry['error']}"
    parts = [f"{m} {s['psnr']:.2f} dB" if s.get("psnr") is not None else f"{m} n/a"
             for m, s in entry["methods"].items()]
    return f"{entry['id']}: {', '.join(parts)} ({entry['seconds']:.1f} s)"


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

def _cell(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    psnr, ssim = summary.get("psnr"), summary.get("ssim")
    score = "n/a" if psnr is None else f"{psnr:.2f} / {ssim:.3f}"
    return f"{score} / {summary['seconds']:.1f} s"


def quality_table(cases: Sequence[dict[str, Any]], methods: Sequence[str]) -> str:
    """The markdown table: one row per case, each method's PSNR / SSIM / seconds, INR's margins
    over the best classical method and whether they meet the target."""
    with_tv = "TV" in methods and "INR" in methods
    header = ["case", *methods, "best PSNR", "INR - best classical (dB / SSIM)", "target",
              *(["INR - TV (dB / SSIM)"] if with_tv else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in cases:
        if entry["status"] != "ok":
            error = entry.get("error", entry["status"]).replace("|", "/").splitlines()[0][:120]
            cells = ["-"] * len(methods) + [f"error: {error}", "-", "-"] + ["-"] * with_tv
        else:
            cells = [_cell(entry["methods"].get(m)) for m in methods]
            met = entry["target"]["met"]
            cells += [entry["winner"] or "n/a",
                      _margins(entry["inr_margin_db"], entry["inr_margin_ssim"]),
                      "n/a" if met is None else "met" if met else "missed"]
            if with_tv:
                cells.append(_margins(entry.get("inr_margin_tv_db"),
                                      entry.get("inr_margin_tv_ssim")))
        lines.append("| " + " | ".join([entry["id"], *cells]) + " |")
    return "\n".join(lines)


def _margins(db: float | None, ssim: float | None) -> str:
    return "n/a" if db is None else f"{db:+.2f}" + ("" if ssim is None else f" / {ssim:+.3f}")


def independent_reference(heldout: Sinograms, options: ReconOptions,
                          iterations: int | None) -> tuple[np.ndarray, str]:
    """A real scan's second reference: SIRT on the left-out angles only (it shares no noise
    with the input), and how it was made."""
    volume, note = reference_from_full_data(heldout, options, iterations)
    return volume, note.replace("on all", "on the left-out", 1)


def reference_ceiling(given: Sinograms, heldout: Sinograms, reference: np.ndarray,
                      options: ReconOptions, iterations: int | None) -> dict[str, Any]:
    """What an image free of noise would score against a real scan's all-angle reference.

    The scan's angles (``given`` and ``heldout`` together) are split into
    alternate halves, and SIRT runs on each as for the reference (non-negative,
    ``iterations`` or the discrepancy principle).  Half their difference,
    ``D = (E - O) / 2``, has no signal and about the reference's own noise (the
    reference sees both halves' data).  A noise-free image differs from the
    reference by that noise: PSNR ``range^2 / mean(D^2)``, SSIM from
    :func:`astra_inr.metrics.noise_free_ssim` (slice by slice, as :func:`score`).

    An estimate: D also holds the two halves' different angular-sampling
    streaks (this lowers both figures), and the SSIM's local variances are
    clipped (this raises it).  Never raises: a failure is returned as ``error``.

    Returns
    -------
    dict
        ``psnr``, ``ssim``, ``object_ssim`` (the SSIM within the object, as
        :func:`add_object_scores`; there the variances' clipping hardly counts:
        0.918 against the actual 0.918 on a phantom), ``noise_rms`` (of D, as a fraction of the
        reference's range), ``how``; or ``error``.
    """
    try:
        angles = np.concatenate([given.angles, heldout.angles])
        order = np.argsort(angles, kind="stable")
        data = np.concatenate([given.data, heldout.data], axis=1)[:, order]
        halves = [dataclasses.replace(given, data=np.ascontiguousarray(data[:, order_k]),
                                      angles=angles[order][order_k])
                  for order_k in (slice(0, None, 2), slice(1, None, 2))]
        even, odd = (compare_methods(h, ["SIRT"], options, sirt_iterations=iterations)["SIRT"]
                     for h in halves)
        ref = np.asarray(reference, np.float64).reshape(-1, *reference.shape[-2:])
        noise = ((np.asarray(even.volume, np.float64) - np.asarray(odd.volume, np.float64))
                 / 2).reshape(ref.shape)
        rng = float(ref.max() - ref.min())
        return {"psnr": psnr(ref + noise, ref),
                "ssim": float(np.mean([noise_free_ssim(r, n, range_=rng)
                                       for r, n in zip(ref, noise)])),
                "object_ssim": within_object(
                    lambda k, region: noise_free_ssim(ref[k], noise[k], range_=rng,
                                                      region=region), object_regions(ref, rng)),
                "noise_rms": float(np.sqrt(np.mean(noise ** 2))) / rng,
                "how": (f"SIRT on alternate halves of all {len(angles)} angles "
                        f"({even.iterations} and {odd.iterations} iterations); the reference's "
                        f"noise taken as half their difference")}
    except Exception as exc:  # an aid to reading the scores: its failure must not fail the case
        return {"error": f"{type(exc).__name__}: {exc}"}


def ceiling_table(cases: Sequence[dict[str, Any]]) -> str | None:
    """Real scans only: the target's bar beside what a noise-free image would score."""
    rows = [e for e in cases if e["status"] == "ok" and "psnr" in e.get("reference_ceiling", {})]
    if not rows:
        return None
    lines = ["| case (reference: SIRT on all angles) | best classical | INR | target's bar | "
             "a noise-free image (estimate) |", "|---|---|---|---|---|"]
    for e in rows:
        ms, ceiling = e["methods"], e["reference_ceiling"]
        others = [s for m, s in ms.items() if m in TARGET_METHODS and s.get("psnr") is not None]
        best = ({k: max(s[k] for s in others) for k in ("psnr", "ssim")} if others else None)
        inr = ms.get("INR", {})
        lines.append("| " + " | ".join([
            e["id"],
            f"{best['psnr']:.2f} / {best['ssim']:.3f}" if best else "-",
            f"{inr['psnr']:.2f} / {inr['ssim']:.3f}" if inr.get("psnr") is not None else "-",
            (f"{best['psnr'] + TARGET_GAIN_DB:.2f} / {best['ssim'] + TARGET_GAIN_SSIM:.3f}"
             if best else "-"),
            f"{ceiling['psnr']:.2f} / {ceiling['ssim']:.3f}"]) + " |")
    return "\n".join(lines) + (
        "\n\nCells: PSNR (dB) / SSIM against the first table's reference. The last column is "
        "what an image free of noise would score against it: the reference is SIRT on all "
        "angles and keeps their noise, which no noise-free image reproduces "
        "(reference_ceiling: estimated from SIRT on alternate halves of the angles; the SSIM is "
        "an upper estimate). A bar near or beyond it asks a method to reproduce the "
        "reference's noise.")


def add_independent_scores(results: dict[str, MethodResult],
                           summaries: dict[str, dict[str, Any]], reference: np.ndarray) -> None:
    """Add ``independent_psnr`` and ``independent_ssim`` (against ``reference``) to each
    method's summary."""
    for name, result in results.items():
        summaries[name]["independent_psnr"], summaries[name]["independent_ssim"] = score(
            result.volume, reference)


def object_regions(reference: np.ndarray, range_: float) -> list[np.ndarray]:
    """Each slice's object (:func:`astra_inr.metrics.object_region`), taken from the
    reference alone; ``reference`` is ``(slices, rows, cols)``."""
    return [object_region(r, range_=range_) for r in reference]


def within_object(score_slice: Callable[[int, np.ndarray], float],
                  regions: Sequence[np.ndarray]) -> float | None:
    """Mean over the slices of ``score_slice(k, regions[k])``.  Slices whose object
    reaches no window clear of the border (the empty end of a stack) are left out;
    None if every slice is."""
    values = []
    for k, region in enumerate(regions):
        try:
            values.append(score_slice(k, region))
        except EmptyRegionError:
            continue
    return float(np.mean(values)) if values else None


def object_scores(volume: np.ndarray, reference: np.ndarray,
                  regions: Sequence[np.ndarray] | None = None) -> tuple[float | None, float]:
    """(SSIM within the object, the object's share of the pixels), slice by slice as
    :func:`astra_inr.compare.score`; ``regions`` as :func:`object_regions` gives them
    (computed when not given)."""
    vol = np.asarray(volume, np.float64).reshape(-1, *volume.shape[-2:])
    ref = np.asarray(reference, np.float64).reshape(vol.shape)
    rng = float(ref.max() - ref.min())
    if regions is None:
        regions = object_regions(ref, rng)
    within = within_object(lambda k, region: ssim(vol[k], ref[k], range_=rng, region=region),
                           regions)
    return within, float(np.mean(regions))


def add_object_scores(results: dict[str, MethodResult], summaries: dict[str, dict[str, Any]],
                      reference: np.ndarray) -> float:
    """Add ``object_ssim`` (against ``reference``, within the object) to each method's
    summary; returns the object's share of the pixels."""
    ref = np.asarray(reference, np.float64).reshape(-1, *reference.shape[-2:])
    regions = object_regions(ref, float(ref.max() - ref.min()))
    for name, result in results.items():
        summaries[name]["object_ssim"] = object_scores(result.volume, reference, regions)[0]
    return float(np.mean(regions))


def _scan_table(rows: Sequence[dict[str, Any]], methods: Sequence[str], first: str, last: str,
                key: str, cell: Callable[[dict[str, Any]], str],
                summary: Callable[[dict[str, dict[str, Any]]], str]) -> str:
    """A markdown table of real-scan cases: one cell per method (where its ``key`` is set)
    and a last column summarising the row."""
    header = [first, *methods, last]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in rows:
        ms = entry["methods"]
        cells = [cell(ms[m]) if m in ms and ms[m].get(key) is not None else "-" for m in methods]
        lines.append("| " + " | ".join([entry["id"], *cells, summary(ms)]) + " |")
    return "\n".join(lines)


def independent_table(cases: Sequence[dict[str, Any]], methods: Sequence[str]) -> str | None:
    """Real scans only: PSNR / SSIM against SIRT on the angles the subset left out."""
    rows = [e for e in cases if e["status"] == "ok" and e.get("independent_reference")]
    if not rows:
        return None
    def margin(ms: dict[str, dict[str, Any]]) -> str:
        others = [s for m, s in ms.items() if m != "INR" and s.get("independent_psnr") is not None]
        if "INR" not in ms or not others:
            return "-"
        best = {k: max(s[k] for s in others) for k in ("independent_psnr", "independent_ssim")}
        return (f"{ms['INR']['independent_psnr'] - best['independent_psnr']:+.2f} / "
                f"{ms['INR']['independent_ssim'] - best['independent_ssim']:+.3f}")

    return _scan_table(
        rows, methods, "case (reference: SIRT on the left-out angles)", "INR - best other",
        "independent_psnr", lambda s: f"{s['independent_psnr']:.2f} / {s['independent_ssim']:.3f}",
        margin) + (
        "\n\nCells: PSNR (dB) / SSIM against non-negative SIRT on only the angles no method was "
        "given, its iterations as for the first table's reference. It shares none of the input's "
        "noise, unlike the first table's reference (all angles, the input's among them); it is "
        "still SIRT, with SIRT's smoothing and those angles' own noise. SIRT and CGLS keep the "
        "iterations chosen against the first table's reference. The target is read from the "
        "first table.")


def object_table(cases: Sequence[dict[str, Any]], methods: Sequence[str]) -> str | None:
    """Real scans only: SSIM against the first table's reference within the object."""
    rows = [e for e in cases if e["status"] == "ok" and e.get("object_fraction") is not None]
    if not rows:
        return None
    def margin(ms: dict[str, dict[str, Any]]) -> str:
        others = [s["object_ssim"] for m, s in ms.items()
                  if m != "INR" and s.get("object_ssim") is not None]
        if ms.get("INR", {}).get("object_ssim") is None or not others:
            return "-"
        return f"{ms['INR']['object_ssim'] - max(others):+.3f}"

    lines = _scan_table(rows, methods, "case (SSIM within the object)", "INR - best other",
                        "object_ssim", lambda s: f"{s['object_ssim']:.3f}", margin).split("\n")
    lines[0] += " object's share | a noise-free image |"
    lines[1] += "---|---|"
    for k, entry in enumerate(rows, start=2):
        ceiling = entry.get("reference_ceiling", {}).get("object_ssim")
        lines[k] += (f" {entry['object_fraction']:.2f} | "
                     f"{'-' if ceiling is None else f'{ceiling:.3f}'} |")
    return "\n".join(lines) + (
        "\n\nCells: SSIM against the first table's reference, averaged only over windows "
        "centred on the object: where the reference's local mean (Gaussian, 3 pixels) is at "
        "least 5 % of its range above its minimum (metrics.object_region; from the reference "
        "alone, the same pixels for every method). Over the whole field SSIM also scores the "
        "empty space around the object, where this reference holds SIRT's noise clipped at 0; "
        "there an image that is 0, as empty space is, loses SSIM. The target is read from the "
        "first table.")


def heldout_table(cases: Sequence[dict[str, Any]], methods: Sequence[str]) -> str | None:
    """Real scans only: each method's residual on the projections it was not given.

    Cells: plain / ramp-weighted relative residual (lower is better; the
    held-out data's own noise is in both, the same for every method).  None
    when no case has held-out projections.
    """
    rows = [e for e in cases if e["status"] == "ok"
            and any(s.get("heldout_residual") is not None for s in e["methods"].values())]
    if not rows:
        return None
    def lowest(ms: dict[str, dict[str, Any]]) -> str:
        ramp = {m: s["heldout_residual_ramp"] for m, s in ms.items()
                if s.get("heldout_residual_ramp") is not None}
        return min(ramp, key=ramp.get)

    return _scan_table(
        rows, methods, "case (held-out angles)", "lowest ramp-weighted", "heldout_residual",
        lambda s: f"{s['heldout_residual']:.4f} / {s['heldout_residual_ramp']:.4f}",
        lowest) + (
        "\n\nCells: ||A x - y|| / ||y|| on the projections no method was given (the angles the "
        "subset left out), plain / ramp-weighted. No reference image is involved, so no method's "
        "own bias is favoured; the floor is those projections' noise, not 0.")


def table_notes(mode: Mode, args: argparse.Namespace) -> str:
    """The lines under the table: what the cells mean and the INR settings used."""
    inr = inr_settings(mode, args)
    return (f"Cells: PSNR (dB) / SSIM / seconds of the reconstruction kept, against the case's "
            f"reference. Mode: {mode.name}; device {args.device}. INR: {inr['description']}. "
            f"SIRT/CGLS iterations and TV's weight: best PSNR on their ladders; FBP: Ram-Lak. "
            f"Target (against FBP, SIRT and CGLS; TV beside them): on sparse "
            f"(<= {SPARSE_MAX_ANGLES} angles), limited-angle or noisy data (every real scan) INR "
            f">= best classical + {TARGET_GAIN_DB:g} dB and + {TARGET_GAIN_SSIM:g} SSIM, on full "
            f"clean data >= best classical - {FULL_CLEAN_MAX_LOSS_DB:g} dB"
            + ("" if inr["defaults"] else " (the target is for INR's defaults; this run changed them)")
            + ".")


def inr_settings(mode: Mode, args: argparse.Namespace) -> dict[str, Any]:
    """INR iterations and options of this run, and whether they are the defaults."""
    iterations = args.inr_iterations if args.inr_iterations is not None else mode.inr_iterations
    changed = dict(mode.inr_options)
    if iterations is not None:
        changed["iterations"] = iterations
    text = ("all defaults" if not changed else
            "defaults except " + ", ".join(f"{k}={v}" for k, v in changed.items())
            + (" (reduced for --quick)" if mode.name == "quick" else ""))
    return {"iterations": iterations, "options": dict(mode.inr_options), "defaults": not changed,
            "description": text}


def speed_table(rows: Sequence[dict[str, Any]]) -> str:
    """The speed rows as markdown: scalar fields as columns (lists and dicts stay in the JSON)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k, v in row.items() if k not in keys and not isinstance(v, (list, dict))]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_speed_value(row.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def _speed_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/")


# ---------------------------------------------------------------------------
# Speed rows (owned by the speed work: astra_inr/speed.py)
# ---------------------------------------------------------------------------
#
# Contract: ``astra_inr.speed.run_speed_benchmarks(args)`` gets this script's
# parsed arguments (``args.quick``, ``args.device``, ...) and returns a list
# of JSON-friendly dicts, one per row (iterations per second, seconds to
# finish, peak memory, ...).  Scalar fields become the columns of the second
# table; every field goes into the JSON under "speed" -> "rows".

SPEED_MODULE = "astra_inr.speed"


def speed_rows(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """The speed rows from ``astra_inr.speed``, or None when that module does not exist.

    Errors inside the module (including its own failed imports) propagate.
    """
    try:
        module = importlib.import_module(SPEED_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != SPEED_MODULE:
            raise
        return None
    return [dict(row) for row in module.run_speed_benchmarks(args)]


def speed_section(args: argparse.Namespace, log: Log) -> dict[str, Any]:
    """Run :func:`speed_rows` and report ``{status, rows, note | error, seconds}``."""
    t0 = time.perf_counter()
    log("speed: running the speed rows")
    try:
        rows = speed_rows(args)
    except Exception as exc:
        log(f"speed: FAILED {type(exc).__name__}: {exc}")
        return {"status": "error", "rows": [], "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "seconds": time.perf_counter() - t0}
    if rows is None:
        note = f"speed rows are not available ({SPEED_MODULE} does not exist)"
        log(f"speed: {note}")
        return {"status": "unavailable", "rows": [], "note": note, "seconds": 0.0}
    return {"status": "ok", "rows": rows, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------
# Machine, JSON, command line
# ---------------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    """Platform, CPUs, library versions, GPU (if any) and ``astra.use_cuda()``."""
    import torch

    info = provenance()
    info.update(processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads(),
                torch_cuda_available=torch.cuda.is_available(),
                astra_use_cuda=bool(astra.use_cuda()),
                load_average_at_start=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)
    return info


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write_json(tmp, data)
    os.replace(tmp, path)


def parse_methods(text: str) -> list[str]:
    """'fbp,SIRT' -> ['FBP', 'SIRT'], refusing unknown or repeated names."""
    methods = [m.strip().upper() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise argparse.ArgumentTypeError(f"methods must be distinct names from {', '.join(METHODS)}; "
                                         f"got {text!r}")
    return methods


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="The astra-inr quality benchmark: INR beside FBP, SIRT, CGLS and TV on simulated "
                    "and real cases (see the module docstring for every case).")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, a subset of cases, a reduced INR (minutes on 2 CPU cores)")
    parser.add_argument("--cases", metavar="PATTERN",
                        help="comma-separated fnmatch patterns on case ids, e.g. 'ct-*,tooth-*' "
                             "(chosen from all cases, at the mode's sizes)")
    parser.add_argument("--methods", type=parse_methods, default=list(METHODS),
                        help=f"comma-separated methods (default {','.join(METHODS)})")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="ASTRA's CUDA algorithms and INR's network (default auto)")
    parser.add_argument("--inr-iterations", type=positive_int, metavar="N",
                        help="INR iterations (overrides the mode's choice)")
    parser.add_argument("--inr-defaults", action="store_true",
                        help="with --quick: INR with all its defaults (network and iterations) "
                             "instead of the reduced one; data sizes stay quick")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="folder for benchmark.json (default: the current folder)")
    parser.add_argument("--json", type=Path, help="JSON path (default OUT/benchmark.json)")
    parser.add_argument("--figures", type=Path, metavar="DIR",
                        help="also write a comparison folder (figure, TIFFs, tables) per case")
    parser.add_argument("--data", type=Path, default=DATA,
                        help=f"the shared data folder (default {DATA})")
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=None,
                        help="run the speed rows (default: yes in the default mode, no with --quick)")
    parser.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=True,
                        help="estimate each real scan's reference ceiling: two more SIRT runs "
                             "per real scan, on half its angles each (default: yes)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (case lines stay)")
    return parser


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0, or 1 when a case or the speed section failed."""
    args = build_parser().parse_args(argv)
    mode = QUICK_MODE if args.quick else DEFAULT_MODE
    if args.inr_defaults:
        mode = dataclasses.replace(mode, inr_options={}, inr_iterations=None)
    log: Log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        specs = select_cases(mode, args.cases)
    except ValueError as exc:
        log(f"benchmark: {exc}")
        return 2
    if args.list:
        chosen = {spec.id for spec in specs}
        for spec in all_cases(mode):
            print(f"{'*' if spec.id in chosen else ' '} {spec.id:<16} {spec.title}")
        print(f"(* = run by this command line, {mode.name} mode)")
        return 0
    json_path = args.json or args.out / "benchmark.json"
    run_speed = args.speed if args.speed is not None else not args.quick
    start = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "astra-inr quality benchmark (scripts/benchmark.py)",
        "started_utc": _now(), "complete": False,
        "mode": {**mode.to_dict(), "inr": inr_settings(mode, args), "device": args.device},
        "methods": args.methods, "machine": machine_info(), "cases": {},
        "speed": {"status": "pending" if run_speed else "skipped", "rows": []},
    }
    log(f"benchmark: {mode.name} mode, {len(specs)} case(s), methods {','.join(args.methods)}, "
        f"INR {report['mode']['inr']['description']}; writing {json_path}")
    for k, spec in enumerate(specs, 1):
        log(f"[{k}/{len(specs)}] {spec.id}: {spec.title}")
        entry = run_case(spec, mode, args, log)
        report["cases"][spec.id] = entry
        log(f"[{k}/{len(specs)}] {case_line(entry)}")
        report["wall_seconds"] = time.perf_counter() - start
        write_json_atomic(json_path, report)
    table = quality_table(list(report["cases"].values()), args.methods)
    report["target_summary"] = target_summary(list(report["cases"].values()))
    report["table"] = table + "\n\n" + report["target_summary"] + "\n\n" + table_notes(mode, args)
    # The real scans' further tables, each printed and kept under its own key when any case has it.
    cases = list(report["cases"].values())
    for key, extra in (("heldout_table", heldout_table(cases, args.methods)),
                       ("independent_table", independent_table(cases, args.methods)),
                       ("ceiling_table", ceiling_table(cases)),
                       ("object_table", object_table(cases, args.methods))):
        if extra:
            report[key] = extra
            report["table"] += "\n\n" + extra
    print(report["table"])
    if run_speed:
        report["speed"] = speed_section(args, log)
        if report["speed"]["rows"]:
            report["speed"]["table"] = speed_table(report["speed"]["rows"])
            print("\n" + report["speed"]["table"])
    report.update(complete=True, finished_utc=_now(), wall_seconds=time.perf_counter() - start)
    write_json_atomic(json_path, report)
    log(f"benchmark: done in {report['wall_seconds']:.1f} s; wrote {json_path}")
    failed = [c for c in report["cases"].values() if c["status"] != "ok"]
    return 1 if failed or report["speed"]["status"] == "error" else 0


if __name__ == "__main__":
    sys.exit(main())
