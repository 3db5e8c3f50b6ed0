"""INR beside ASTRA's FBP, SIRT and CGLS and a TV reconstruction on the same data, fairly tuned.

Every method reconstructs the same preprocessed sinograms on the same grid
(see :mod:`astra_inr.recon`).  The baselines are tuned as a careful user
would tune them, and the choice is recorded:

* FBP: one pass with the stated filter (Ram-Lak unless ``fbp_filter`` says
  otherwise).
* SIRT (non-negative, as ``min_constraint``) and CGLS: the iteration count is
  the best of a ladder of checkpoints (10, 20, 50, 100, 200, 500, 1000 for
  SIRT; 2, 5, 10, 20, 50, 100 for CGLS) -- by PSNR against the reference when
  there is one, else by the discrepancy principle: the first checkpoint whose
  residual ||A x - y|| / ||y|| is at most 1.05 times the data's error level
  estimated from the data (white noise,
  :func:`astra_inr.objective.estimate_noise_level`, and the projections'
  inconsistency, :func:`astra_inr.objective.estimate_inconsistency`),
  or whose residual fell by less than 1% since the previous checkpoint
  (stagnation: real data carry model errors no noise estimate sees).
* TV (total variation on the pixel grid, :mod:`astra_inr.tv`; bounds as
  SIRT's): the weight is the best of a ladder from 1e-7 to 1 (500 PDHG steps
  at each, smallest first, each continuing from the one before) -- by PSNR
  against the reference over the whole ladder, else the largest weight whose
  residual stays within 1.05 times the data's error level (or within 1% of
  the smallest weights' residual where the data cannot be fitted to it).
  INR borrows this prior; TV shows what the network adds to it.
* INR: its defaults, unless options are given.

PSNR uses the reference's data range; SSIM is the Gaussian-window
definition of :mod:`astra_inr.metrics`, averaged over slices.

Held-out projections (``heldout``: the angles a subset left out of a real
scan) score every method without a reference image: each volume is projected
at those angles and compared with what was measured there, plainly
(``||A_h x - y_h|| / ||y_h||``, dominated by the slow detector frequencies
where the signal is) and ramp-weighted (``||R^(1/2) (A_h x - y_h)|| /
||R^(1/2) y_h||``; by the Fourier slice theorem the ramp weighs detector
frequencies as the image's frequencies count in an image-domain error, so
edges and detail count as much as in PSNR).  Both include the held-out data's
own noise, the same for every method, so differences between methods are
smaller than their errors; a reference made from all angles was fitted to
these projections and is no fair comparison on them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import astra
import numpy as np
import torch

from .metrics import psnr, ssim
from .objective import MOROZOV_FACTOR, DataFit, estimate_inconsistency, estimate_noise_level
from .matrix import AUTO_MAX_ENTRIES, MatrixOperator, estimated_entries_for
from .operator import AstraOperator
from .preprocess import Sinograms
from .recon import ReconOptions, _geometries, _use_cuda, reconstruct_sinograms
from .tv import ITERATIONS_PER_WEIGHT, WEIGHT_LADDER, TVProblem

__all__ = ["METHODS", "MethodResult", "compare_methods", "score", "SIRT_LADDER", "CGLS_LADDER",
           "TV_LADDER", "TV_ITERATIONS", "DISCREPANCY_TAU"]

METHODS = ("FBP", "SIRT", "CGLS", "TV", "INR")
SIRT_LADDER = (10, 20, 50, 100, 200, 500, 1000)
CGLS_LADDER = (2, 5, 10, 20, 50, 100)
#: TV weights (see :mod:`astra_inr.tv`), smallest first; each continues from the one before.
TV_LADDER = WEIGHT_LADDER
#: PDHG iterations at each weight of the ladder.
TV_ITERATIONS = ITERATIONS_PER_WEIGHT
#: Stop at the first iterate whose residual is within this factor of the noise level.
DISCREPANCY_TAU = MOROZOV_FACTOR
#: ... or whose residual is less than this fraction below the previous checkpoint's.
STAGNATION = 0.01

ProgressFn = Callable[[str, int, int, str], None]


@dataclass
class MethodResult:
    """One method's reconstruction and how it scored.

    Attributes
    ----------
    name : str
    volume : numpy.ndarray
        ``(slices, n, n)`` float32.
    seconds : float
        Wall time of the reconstruction actually kept (for tuned baselines:
        the run to the chosen iteration count, not the whole search).
    iterations : int
    choice : str
        How the iteration count was chosen.
    data_residual : float
        ||A x - y|| / ||y|| on the data given to the methods.
    psnr, ssim : float or None
        Against the reference, when there is one.
    heldout_residual, heldout_residual_ramp : float or None
        Plain and ramp-weighted relative residual on the held-out
        projections, when there are any.
    """

    name: str
    volume: np.ndarray
    seconds: float
    iterations: int
    choice: str
    data_residual: float
    psnr: float | None = None
    ssim: float | None = None
    heldout_residual: float | None = None
    heldout_residual_ramp: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        held = ({} if self.heldout_residual is None else
                {"heldout_residual": self.heldout_residual,
                 "heldout_residual_ramp": self.heldout_residual_ramp})
        return {"psnr": self.psnr, "ssim": self.ssim, "seconds": self.seconds,
                "iterations": self.iterations, "iteration_choice": self.choice,
                "data_residual": self.data_residual, **held, **self.extra}


def score(volume: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(PSNR over the volume, SSIM averaged over slices), both with the reference's range."""
    vol = np.asarray(volume, np.float64).reshape(-1, *volume.shape[-2:])
    ref = np.asarray(reference, np.float64).reshape(vol.shape)
    rng = float(ref.max() - ref.min())
    values = [ssim(v, r, range_=rng) for v, r in zip(vol, ref)]
    return psnr(vol, ref), float(np.mean(values))


class _Residual:
    """||A x - y|| / ||y|| for volumes on the comparison grid."""

    def __init__(self, sino: Sinograms, vg: dict, pg: dict, cuda: bool) -> None:
        self.op = AstraOperator.stack(vg, pg, sino.data.shape[0], "cuda" if cuda else None)
        self.y = torch.from_numpy(np.ascontiguousarray(sino.data, np.float32))
        self.norm = float(self.y.double().norm())

    def __call__(self, volume: np.ndarray) -> float:
        x = torch.from_numpy(np.ascontiguousarray(volume, np.float32))
        return float((self.op.forward(x) - self.y).double().norm()) / self.norm

    def close(self) -> None:
        self.op.close()


class _HeldOutResidual:
    """(plain, ramp-weighted) relative residual on projections no method was given."""

    def __init__(self, heldout: Sinograms, size: int | None, vg: dict, n_rows: int,
                 cuda: bool) -> None:
        vg_h, pg, _ = _geometries(heldout, size)
        if vg_h != vg or heldout.data.shape[0] != n_rows:
            raise ValueError(
                f"the held-out projections ({heldout.data.shape[0]} rows, grid {vg_h}) do not "
                f"match the methods' data ({n_rows} rows, grid {vg}): they must come from the "
                "same scan, rows and pixel size")
        self.plain = _Residual(heldout, vg, pg, cuda)
        self.ramp = DataFit(self.plain.y, "ramp")

    def __call__(self, volume: np.ndarray) -> tuple[float, float]:
        x = torch.from_numpy(np.ascontiguousarray(volume, np.float32))
        with torch.no_grad():
            proj = self.plain.op.forward(x)
            plain = float((proj - self.plain.y).double().norm()) / self.plain.norm
            return plain, float(self.ramp(proj)) ** 0.5

    def close(self) -> None:
        self.plain.close()


class _SliceRuns:
    """One ASTRA SIRT/CGLS algorithm per slice, advanced checkpoint by checkpoint."""

    def __init__(self, name: str, sino: Sinograms, vg: dict, pg: dict, options: dict[str, Any],
                 cuda: bool) -> None:
        self.name, self.vg = name, vg
        self.pid = astra.create_projector("cuda" if cuda else "linear", pg, vg)
        self.cfgs, self.algs, self.rids, self.sids = [], [], [], []
        for sino_k in sino.data:
            sid = astra.data2d.create("-sino", pg, np.ascontiguousarray(sino_k, np.float32))
            rid = astra.data2d.create("-vol", vg, 0)
            cfg = astra.astra_dict(name + ("_CUDA" if cuda else ""))
            cfg.update(ProjectorId=self.pid, ProjectionDataId=sid, ReconstructionDataId=rid,
                       option=options)
            self.sids.append(sid)
            self.rids.append(rid)
            self.cfgs.append(cfg)
            self.algs.append(astra.algorithm.create(cfg))
        self.done = 0

    def advance(self, iterations: int) -> tuple[np.ndarray, float]:
        """The volume after ``iterations`` in total, and the seconds that result costs."""
        t0 = time.perf_counter()
        if self.name == "SIRT":
            # SIRT keeps no state but x: continuing a run equals one longer run.
            for alg in self.algs:
                astra.algorithm.run(alg, iterations - self.done)
        else:
            # CGLS restarts its recursion at every run call: each count from scratch.
            for k, (alg, rid) in enumerate(zip(self.algs, self.rids)):
                astra.algorithm.delete(alg)
                astra.data2d.store(rid, 0)
                self.algs[k] = astra.algorithm.create(self.cfgs[k])
                astra.algorithm.run(self.algs[k], iterations)
        self.done = iterations
        seconds = time.perf_counter() - t0
        return np.stack([astra.data2d.get(rid) for rid in self.rids]).astype(np.float32), seconds

    def close(self) -> None:
        for alg in self.algs:
            astra.algorithm.delete(alg)
        astra.data2d.delete(self.sids + self.rids)
        astra.projector.delete(self.pid)


class _TVRuns:
    """TV on the pixel grid (:mod:`astra_inr.tv`), weight by weight from the smallest, warm-started.

    Each rung of the ladder continues from the previous rung's iterates, so a
    rung's seconds add up as SIRT's checkpoints do.  Smallest first: from zero,
    PDHG reaches a small weight's solution in a few hundred steps, while at a
    large weight the TV dual grows towards its bound by small steps (a CT
    slice with 3 % noise, weight 1: still 28.5 -> 25.2 dB between 250 and 3000
    steps, and its residual below that of weight 0.01's solution), so
    starting large made the early rungs mere early-stopped iterates whose
    residuals misled the discrepancy rule.  From the smaller weight's solution
    the dual starts near its bound and the residual grows with the weight.
    """

    def __init__(self, sino: Sinograms, vg: dict, pg: dict, lower: float | None,
                 upper: float | None, cuda: bool, iterations: int) -> None:
        self.device = torch.device("cuda" if cuda else "cpu")
        n_slices = sino.data.shape[0]
        self.op: AstraOperator | MatrixOperator
        # A TV step is two projections and little else: the projection matrix (Joseph's
        # kernel, as ASTRA's linear and cuda projectors) is 4x faster than ASTRA's calls
        # on the CPU and keeps a GPU step on the GPU.  Too large a matrix, or pixels no
        # CPU kernel takes, leave ASTRA's calls.
        entries = estimated_entries_for((vg["GridRowCount"], vg["GridColCount"]),
                                        sino.data.shape)
        try:
            if entries > AUTO_MAX_ENTRIES:
                raise ValueError(f"its matrix would have about {entries:.3g} entries, above "
                                 f"{AUTO_MAX_ENTRIES:.3g}")
            self.op = MatrixOperator.from_geometry(vg, pg, n_slices, self.device)
            self.operator_note = None
        except ValueError as exc:
            self.op = AstraOperator.stack(vg, pg, n_slices, "cuda" if cuda else None)
            self.operator_note = f"ASTRA's calls: {exc}"
        y = torch.from_numpy(np.ascontiguousarray(sino.data, np.float32)).to(self.device)
        try:
            self.problem = TVProblem(self.op, y, lower, upper)
        except Exception:
            self.op.close()
            raise
        self.state = self.problem.start()
        self.iterations = iterations

    def advance(self, weight: float) -> tuple[np.ndarray, float]:
        """The volume after this weight's rung, and the seconds it took."""
        t0 = time.perf_counter()
        self.state = self.problem.run(self.state, weight, self.iterations)
        volume = self.state.x.cpu().numpy().astype(np.float32)
        return volume, time.perf_counter() - t0

    def describe(self) -> dict[str, Any]:
        return {**self.problem.describe(), "iterations_per_weight": self.iterations,
                "operator": self.op.describe(),
                **({"operator_note": self.operator_note} if self.operator_note else {})}

    def close(self) -> None:
        self.op.close()


def _tune(name: str, runs: _SliceRuns | _TVRuns, ladder: Sequence[float], unit: str,
          cumulative_seconds: bool, reference: np.ndarray | None, noise: float,
          residual: _Residual, progress: ProgressFn | None, whole_ladder: bool = False
          ) -> tuple[float, MethodResult]:
    """Advance ``runs`` over the ladder (iteration counts or TV weights); keep the best rung.

    Along an iteration ladder the fit tightens (the residual falls), along a
    ladder of TV weights (smallest first) it loosens.  With a reference the
    search stops once PSNR has fallen at two rungs in a row (past the best
    trade-off it does not come back), unless ``whole_ladder``; without one it
    keeps, by the
    discrepancy principle, the loosest fit within the data's error level: the
    first iteration count that reaches it, or the largest weight that stays
    within it.  ``runs`` is closed.

    Returns
    -------
    (rung, result) : the chosen rung and the method's result (``iterations``
        still to be set by the caller where the rung is not an iteration count).
    """
    target = DISCREPANCY_TAU * noise
    residuals: dict[float, float] = {}
    scores: dict[float, float] = {}
    best: tuple[float, np.ndarray, float] | None = None
    cumulative = 0.0
    try:
        for i, rung in enumerate(ladder):
            volume, seconds = runs.advance(rung)
            cumulative = cumulative + seconds if cumulative_seconds else seconds
            residuals[rung] = residual(volume)
            if progress:
                progress(f"{name} search", i + 1, len(ladder), f"{rung:g} {unit}")
            if reference is not None:
                scores[rung] = score(volume, reference)[0]
                if best is None or scores[rung] > scores[best[0]]:
                    best = (rung, volume, cumulative)
                recent = list(scores.values())[-3:]
                if not whole_ladder and len(recent) == 3 and recent[0] > recent[1] > recent[2]:
                    break
            elif unit == "weights":
                # Where the data cannot be fitted to the estimated level (model errors), the
                # fit is judged against the closest one the smallest weights reach.
                limit = max(target, (1.0 + STAGNATION) * min(residuals.values()))
                if residuals[rung] > limit:
                    break
                best = (rung, volume, cumulative)
            else:
                best = (rung, volume, cumulative)
                previous = list(residuals.values())[-2:-1]
                # Stop at the noise level, or when going on hardly fits the data any
                # better (real data rarely reach an estimate of pure noise).
                if residuals[rung] <= target or (previous and previous[0] - residuals[rung]
                                                 < STAGNATION * previous[0]):
                    break
    finally:
        runs.close()
    rung, volume, seconds = best
    extra: dict[str, Any] = {"residual_by_checkpoint" if unit == "iterations" else
                             "residual_by_weight":
                             {f"{r:g}": v for r, v in residuals.items()}}
    ladder_text = "[" + ", ".join(f"{r:g}" for r in ladder) + "]"
    one, many = ("checkpoint", "checkpoints") if unit == "iterations" else ("weight", "weights")
    if reference is not None:
        choice = (f"best PSNR against the reference over {many} {ladder_text} (PSNR by {one}: "
                  + ", ".join(f"{r:g}: {s:.2f}" for r, s in scores.items()) + ")")
    else:
        extra["discrepancy_target"] = target
        reached = residuals[rung] <= target
        if unit == "weights":
            choice = (f"discrepancy principle: the largest weight of {ladder_text} whose "
                      f"residual is <= {DISCREPANCY_TAU} x estimated data error level "
                      f"{noise:.4f}, or within {STAGNATION:.0%} of the smallest weights' "
                      "residual where that level is not reached"
                      + ("" if reached else f" (here: not reached; {rung:g})"))
        else:
            choice = (f"discrepancy principle: first {one} of {ladder_text} with residual <= "
                      f"{DISCREPANCY_TAU} x estimated data error level {noise:.4f}"
                      + ("" if reached else f", or whose residual fell by less than "
                                            f"{STAGNATION:.0%} from the previous {one} "
                                            f"(stagnation; here at {rung:g})"))
    return rung, MethodResult(name, volume, seconds, int(rung) if unit == "iterations" else 0,
                              choice, residuals[rung], extra=extra)


def compare_methods(sino: Sinograms, methods: Sequence[str], options: ReconOptions | None = None,
                    reference: np.ndarray | None = None, progress: ProgressFn | None = None,
                    sirt_iterations: int | None = None, heldout: Sinograms | None = None,
                    ) -> dict[str, MethodResult]:
    """Reconstruct ``sino`` with each method and score against ``reference``.

    Parameters
    ----------
    sino : Sinograms
        Preprocessed data (rows, angles, cols) given to every method.
    methods : sequence of str
        Any of FBP, SIRT, CGLS, INR.
    options : ReconOptions
        Shared settings (min_constraint, fbp_filter, device, INR options,
        INR iterations).
    reference : numpy.ndarray, optional
        ``(slices, n, n)`` (or ``(n, n)`` for one slice) on the reconstruction
        grid; selects baseline iterations by PSNR and scores every method.
    sirt_iterations : int, optional
        Run SIRT exactly this long instead of searching its ladder.
    heldout : Sinograms, optional
        Projections at angles ``sino`` lacks (same rows, columns and centre,
        e.g. :attr:`astra_inr.cases.ScanCase.heldout`): every method is also
        scored on how well it predicts them (see the module docstring).
        They never steer a method.

    Returns
    -------
    dict
        Method name -> :class:`MethodResult`, in the order given.
    """
    options = options or ReconOptions()
    unknown = [m for m in methods if m.upper() not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    vg, exact, grid = _geometries(sino, options.size)
    if reference is not None:
        reference = np.asarray(reference, np.float32).reshape(grid.shape)
    cuda = _use_cuda(options.device)
    residual = _Residual(sino, vg, exact, cuda)
    white = estimate_noise_level(residual.y)
    noise = math.hypot(white, estimate_inconsistency(residual.y, residual.op, white))
    held = (_HeldOutResidual(heldout, options.size, vg, sino.data.shape[0], cuda)
            if heldout is not None else None)
    results: dict[str, MethodResult] = {}
    try:
        for method in (m.upper() for m in methods):
            if method == "SIRT":
                opts = {k: v for k, v in (("MinConstraint", options.min_constraint),
                                          ("MaxConstraint", options.max_constraint)) if v is not None}
                ladder = (sirt_iterations,) if sirt_iterations else SIRT_LADDER
                _, result = _tune("SIRT", _SliceRuns("SIRT", sino, vg, exact, opts, cuda), ladder,
                                  "iterations", True, reference, noise, residual, progress)
                result.extra["options"] = opts
                if sirt_iterations:
                    result.choice = f"given: {sirt_iterations}"
            elif method == "CGLS":
                # CGLS restarts at every checkpoint: each count's seconds stand alone.
                _, result = _tune("CGLS", _SliceRuns("CGLS", sino, vg, exact, {}, cuda),
                                  CGLS_LADDER, "iterations", False, reference, noise, residual,
                                  progress)
                result.extra["options"] = {}
            elif method == "TV":
                runs = _TVRuns(sino, vg, exact, options.min_constraint, options.max_constraint,
                               cuda, TV_ITERATIONS)
                described = runs.describe()
                # The whole ladder: on noisy data PSNR first falls with the weight (the
                # smallest weights fit noise, 3 % noise: 6.6, 5.1, 5.1 dB), then rises.
                weight, result = _tune("TV", runs, TV_LADDER, "weights", True, reference, noise,
                                       residual, progress, whole_ladder=True)
                result.iterations = TV_ITERATIONS * (TV_LADDER.index(weight) + 1)
                result.extra.update(tv_weight=weight, tv_problem=described)
            else:
                run_opts = ReconOptions(**{**options.to_dict(), "algorithm": method.lower()})
                volume, _, info, _ = reconstruct_sinograms(sino, run_opts, progress)
                choice = ("one pass, filter " + options.fbp_filter if method == "FBP" else
                          "given" if options.iterations is not None else
                          "chosen by the data: " + info["inr"]["auto_iterations"]["stopped"])
                extra = {}
                if method == "INR":
                    rep = info["inr"]
                    extra = {"options": rep["options"], "scale": rep["scale"],
                             "path_norm": rep["path_norm"]["total"],
                             "estimated_noise_level": rep["estimated_noise_level"],
                             "estimated_inconsistency": rep["estimated_inconsistency"],
                             "tv_weight_floor": rep["tv_weight_floor"],
                             "tv_weight_final": rep["tv_weight"],
                             "regulariser_weight_final": rep["regularisers"][
                                 "regulariser_weight_final"],
                             "level_gains": rep["level_fit"]["gains"]}
                    if rep.get("auto_iterations"):
                        extra["iteration_blocks"] = rep["auto_iterations"]["blocks"]
                    if rep.get("tv_weight_choice"):
                        extra["tv_weight_choice"] = rep["tv_weight_choice"]
                result = MethodResult(method, volume, info["seconds"], info["iterations"], choice,
                                      residual(volume), extra=extra)
            if reference is not None:
                result.psnr, result.ssim = score(result.volume, reference)
            if held is not None:
                result.heldout_residual, result.heldout_residual_ramp = held(result.volume)
            results[method] = result
    finally:
        residual.close()
        if held is not None:
            held.close()
    return results
