"""INR beside ASTRA's FBP, SIRT and CGLS on the same data, with fairly tuned baselines.

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
from .objective import DataFit, estimate_inconsistency, estimate_noise_level
from .operator import AstraOperator
from .preprocess import Sinograms
from .recon import ReconOptions, _geometries, _use_cuda, reconstruct_sinograms

__all__ = ["METHODS", "MethodResult", "compare_methods", "score", "SIRT_LADDER", "CGLS_LADDER",
           "DISCREPANCY_TAU"]

METHODS = ("FBP", "SIRT", "CGLS", "INR")
SIRT_LADDER = (10, 20, 50, 100, 200, 500, 1000)
CGLS_LADDER = (2, 5, 10, 20, 50, 100)
#: Stop at the first iterate whose residual is within this factor of the noise level.
DISCREPANCY_TAU = 1.05
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
        vg_h, pg, _, _ = _geometries(heldout, size)
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


def _tune(name: str, sino: Sinograms, vg: dict, pg: dict, ladder: Sequence[int],
          options: dict[str, Any], cuda: bool, reference: np.ndarray | None, noise: float,
          residual: _Residual, progress: ProgressFn | None) -> MethodResult:
    """Run SIRT or CGLS over the ladder of iteration counts; keep the best checkpoint.

    With a reference the search stops once PSNR has fallen at two checkpoints
    in a row (semi-convergence: it will not come back); without one, at the
    first checkpoint that meets the discrepancy target.
    """
    runs = _SliceRuns(name, sino, vg, pg, options, cuda)
    target = DISCREPANCY_TAU * noise
    residuals: dict[int, float] = {}
    scores: dict[int, float] = {}
    best: tuple[int, np.ndarray, float] | None = None
    cumulative = 0.0
    try:
        for i, it in enumerate(ladder):
            volume, seconds = runs.advance(it)
            cumulative = cumulative + seconds if name == "SIRT" else seconds
            residuals[it] = residual(volume)
            if progress:
                progress(f"{name} search", i + 1, len(ladder), f"{it} iterations")
            if reference is not None:
                scores[it] = score(volume, reference)[0]
                if best is None or scores[it] > scores[best[0]]:
                    best = (it, volume, cumulative)
                recent = list(scores.values())[-3:]
                if len(recent) == 3 and recent[0] > recent[1] > recent[2]:
                    break
            else:
                best = (it, volume, cumulative)
                previous = list(residuals.values())[-2:-1]
                # Stop at the noise level, or when more iterations hardly fit the data
                # any better (real data rarely reach an estimate of pure noise).
                if residuals[it] <= target or (previous and previous[0] - residuals[it]
                                               < STAGNATION * previous[0]):
                    break
    finally:
        runs.close()
    it, volume, seconds = best
    extra: dict[str, Any] = {"options": options,
                             "residual_by_checkpoint": {str(i): r for i, r in residuals.items()}}
    if reference is not None:
        choice = (f"best PSNR against the reference over checkpoints {list(ladder)} "
                  f"(PSNR by checkpoint: {', '.join(f'{i}: {s:.2f}' for i, s in scores.items())})")
    else:
        extra["discrepancy_target"] = target
        reached = residuals[it] <= target
        choice = (f"discrepancy principle: first checkpoint of {list(ladder)} with residual <= "
                  f"{DISCREPANCY_TAU} x estimated data error level {noise:.4f}"
                  + ("" if reached else f", or whose residual fell by less than {STAGNATION:.0%} "
                                        f"from the previous checkpoint (stagnation; here at {it})"))
    return MethodResult(name, volume, seconds, it, choice, residuals[it], extra=extra)


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
    vg, exact, centred, grid = _geometries(sino, options.size)
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
                result = _tune("SIRT", sino, vg, exact, ladder, opts, cuda, reference, noise,
                               residual, progress)
                if sirt_iterations:
                    result.choice = f"given: {sirt_iterations}"
            elif method == "CGLS":
                result = _tune("CGLS", sino, vg, exact, CGLS_LADDER, {}, cuda, reference, noise,
                               residual, progress)
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
                             "level_gains": rep["level_fit"]["gains"]}
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
