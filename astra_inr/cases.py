"""Comparison cases: what data the methods get and what they are scored against.

Three ways to get a case (used by ``astra-inr compare`` and the benchmark):

* :func:`case_from_scan` with ``reference=None``: a scan as is; no score,
  baselines stopped by the discrepancy principle.
* :func:`case_from_scan` with ``reference='full'``: the methods see a subset
  of the angles (every K-th, N evenly spread, or a limited wedge); the
  reference is a reconstruction from all angles by SIRT (non-negative,
  iterations by the discrepancy principle on the full data).  SIRT and not
  FBP, because with all angles it is less noisy than FBP and its stopping
  rule needs no reference; no method under test sees the other angles.
* :func:`case_from_phantom`: a sinogram simulated from an image with a
  *different* projector than the methods use (ASTRA 'strip' on a 2x finer
  grid; the methods use 'linear'), so no method profits from an inverse
  crime; Gaussian noise of standard deviation ``noise`` x the sinogram's
  maximum; the reference is the image.

When the methods see a subset of a scan's angles, :func:`case_from_scan`
also returns the projections they did not see (:func:`held_out_angles`):
:func:`astra_inr.compare.compare_methods` scores every method on how well
its volume predicts them, a score that needs no reference image and so does
not share any method's bias.

A reference file (``--reference FILE``) is read by :func:`read_reference`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import astra
import numpy as np
import tifffile

from .io import open_scan
from .preprocess import PreprocessOptions, Sinograms, preprocess
from .recon import ReconOptions

__all__ = ["AngleSubset", "ScanCase", "case_from_scan", "case_from_phantom", "held_out_angles",
           "read_reference", "reference_from_full_data", "subset_angles"]


@dataclass(frozen=True)
class AngleSubset:
    """Which projections the methods get: every ``step``-th, ``count`` evenly spread, or a wedge.

    At most one of ``step``, ``count``; ``limited_deg`` keeps the angles in
    [first, first + limited_deg) and combines with either.
    """

    step: int | None = None
    count: int | None = None
    limited_deg: float | None = None

    def __post_init__(self) -> None:
        if self.step is not None and self.count is not None:
            raise ValueError("give either an angle step or an angle count, not both")
        for name in ("step", "count"):
            v = getattr(self, name)
            if v is not None and (int(v) != v or v < 1):
                raise ValueError(f"angle {name} must be a positive integer, got {v!r}")
        if self.limited_deg is not None and not 0 < self.limited_deg <= 360:
            raise ValueError(f"limited angle must be in (0, 360] degrees, got {self.limited_deg!r}")

    @property
    def active(self) -> bool:
        return self.step is not None or self.count is not None or self.limited_deg is not None

    def indices(self, angles: np.ndarray) -> np.ndarray:
        idx = np.arange(len(angles))
        if self.limited_deg is not None:
            rel = np.rad2deg(angles - angles[0])
            idx = idx[rel < self.limited_deg - 1e-9]
        if self.step is not None:
            idx = idx[:: self.step]
        elif self.count is not None:
            if self.count > len(idx):
                raise ValueError(f"asked for {self.count} angles but only {len(idx)} are available")
            idx = idx[np.round(np.linspace(0, len(idx), self.count, endpoint=False)).astype(int)]
        return idx

    def describe(self) -> str:
        parts = []
        if self.limited_deg is not None:
            parts.append(f"a {self.limited_deg:g} degree wedge")
        if self.step is not None:
            parts.append(f"every {self.step}th angle")
        if self.count is not None:
            parts.append(f"{self.count} evenly spread angles")
        return ", ".join(parts) or "all angles"


def _take_angles(sino: Sinograms, idx: np.ndarray, rule: str) -> Sinograms:
    """The projections ``idx`` of ``sino``, the rule that chose them in the report."""
    report = dict(sino.report, angle_subset={"rule": rule, "kept": int(len(idx)),
                                             "of": int(len(sino.angles))})
    return replace(sino, data=np.ascontiguousarray(sino.data[:, idx]), angles=sino.angles[idx],
                   report=report)


def subset_angles(sino: Sinograms, subset: AngleSubset) -> Sinograms:
    """The same sinograms restricted to a subset of the projections."""
    return _take_angles(sino, subset.indices(sino.angles), subset.describe())


def held_out_angles(sino: Sinograms, subset: AngleSubset) -> Sinograms | None:
    """The projections a subset leaves out (None when it keeps every angle)."""
    idx = np.setdiff1d(np.arange(len(sino.angles)), subset.indices(sino.angles))
    return _take_angles(sino, idx, f"not in: {subset.describe()}") if idx.size else None


class ScanCase(NamedTuple):
    """What :func:`case_from_scan` builds.

    Attributes
    ----------
    sino : Sinograms
        The data the methods get, ``(rows, angles, cols)``.
    reference : numpy.ndarray or None
        ``(slices, n, n)`` to score against, or None.
    case : dict
        JSON-friendly description (input, scan summary, preprocessing, angles, reference).
    heldout : Sinograms or None
        The preprocessed projections of the angles the subset left out (same
        rows, columns and rotation centre as ``sino``), or None without a subset.
    """

    sino: Sinograms
    reference: np.ndarray | None
    case: dict
    heldout: Sinograms | None


def reference_from_full_data(sino: Sinograms, options: ReconOptions,
                             iterations: int | None = None) -> tuple[np.ndarray, str]:
    """SIRT (non-negative) on all angles; iterations given, or by the discrepancy principle."""
    from .compare import compare_methods

    result = compare_methods(sino, ["SIRT"], options, sirt_iterations=iterations)["SIRT"]
    how = "given" if iterations else "chosen by the discrepancy principle"
    note = (f"SIRT on all {len(sino.angles)} angles (MinConstraint {options.min_constraint}), "
            f"{result.iterations} iterations {how}; SIRT because with all angles it is less "
            f"noisy than FBP and needs no reference to stop")
    return result.volume, note


def case_from_scan(path: str | Path, options: ReconOptions, reference: str | None = None,
                   subset: AngleSubset = AngleSubset(), reference_iterations: int | None = None,
                   ) -> ScanCase:
    """Preprocess a scan and build the methods' data, the reference and the case description.

    ``reference``: None, 'full' (needs a subset), or a TIFF file on the reconstruction grid.
    ``reference_iterations``: SIRT iterations of a 'full' reference (default: discrepancy).
    With a subset, the left-out projections come back as ``heldout``
    (preprocessed with all angles, like the methods' data).
    """
    scan = open_scan(path, **options.scan_hints())
    pre = options.preprocess_options()
    if reference == "full":
        if not subset.active:
            raise ValueError("--reference full needs the methods to see fewer angles: give "
                             "--angles-step K, --angles N or --limited-angle DEG")
        pre = PreprocessOptions(**{**pre.to_dict(), "angles_step": 1, "rows": pre.rows})
    sino = preprocess(scan, pre)
    case: dict[str, Any] = {"input": str(path), "scan": scan.summary(),
                            "preprocessing": sino.report}
    ref_volume = None
    if reference == "full":
        ref_volume, note = reference_from_full_data(sino, options, reference_iterations)
        case["reference"] = note
    elif reference is not None:
        n = options.size or sino.data.shape[-1]
        ref_volume = read_reference(reference, (sino.data.shape[0], n, n))
        case["reference"] = f"file {reference}"
    heldout = None
    if subset.active:
        heldout = held_out_angles(sino, subset)
        sino = subset_angles(sino, subset)
    case["angles"] = {"rule": subset.describe(), "count": int(len(sino.angles))}
    case["title"] = f"{Path(path).name}: {len(sino.angles)} angles ({subset.describe()})"
    case["description"] = (f"{scan.format} scan {Path(path).name}, {sino.data.shape[0]} slice(s) of "
                           f"{sino.data.shape[-1]} columns, rotation centre "
                           f"{sino.report.get('rotation_center', sino.center):.2f} px (file).")
    return ScanCase(sino, ref_volume, case, heldout)


def read_reference(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A reference TIFF (image or stack) checked against the reconstruction shape (slices, n, n)."""
    ref = np.asarray(tifffile.imread(path), dtype=np.float32)
    if ref.ndim == 2:
        ref = ref[None]
    if ref.shape != tuple(shape):
        raise ValueError(f"reference {path} has shape {ref.shape}; the reconstruction has "
                         f"{tuple(shape)} (slices, rows, cols)")
    return ref


def case_from_phantom(image: np.ndarray | str | Path, n_angles: int, noise: float = 0.0,
                      limited_deg: float | None = None, seed: int = 0,
                      detector_factor: float = 1.5) -> tuple[Sinograms, np.ndarray, dict]:
    """Simulate a parallel-beam scan of an image (no inverse crime).

    Parameters
    ----------
    image : array or path
        ``(n, n)`` or ``(slices, n, n)`` phantom in 1/pixel.
    n_angles : int
        Angles evenly over 180 degrees (or over ``limited_deg``), endpoint excluded.
    noise : float
        Gaussian noise standard deviation as a fraction of the sinogram maximum.
    detector_factor : float
        Detector columns per image column (1.5 covers the whole square).
    """
    name = Path(image).name if isinstance(image, (str, Path)) else "phantom"
    img = np.asarray(tifffile.imread(image) if isinstance(image, (str, Path)) else image,
                     dtype=np.float32)
    vol = img[None] if img.ndim == 2 else img
    if vol.ndim != 3 or vol.shape[1] != vol.shape[2]:
        raise ValueError(f"phantom must be (n, n) or (slices, n, n), got {img.shape}")
    if n_angles < 2:
        raise ValueError(f"need at least 2 angles, got {n_angles}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    n = vol.shape[1]
    span = np.deg2rad(limited_deg if limited_deg is not None else 180.0)
    angles = np.linspace(0.0, span, n_angles, endpoint=False)
    cols = int(np.ceil(detector_factor * n))
    pg = astra.create_proj_geom("parallel", 1.0, cols, angles)
    vg_fine = astra.create_vol_geom(2 * n, 2 * n, -n / 2, n / 2, -n / 2, n / 2)
    pid = astra.create_projector("strip", pg, vg_fine)
    rng = np.random.default_rng(seed)
    sinos = []
    try:
        for s in vol:
            sid, sino = astra.create_sino(np.kron(s, np.ones((2, 2), np.float32)), pid)
            astra.data2d.delete(sid)
            sinos.append(sino)
    finally:
        astra.projector.delete(pid)
    data = np.stack(sinos).astype(np.float32)
    sigma = noise * float(np.abs(data).max())
    if sigma > 0:
        data = data + rng.normal(0.0, sigma, data.shape).astype(np.float32)
    report = {"simulation": {"projector": "strip on a 2x finer grid", "angles": n_angles,
                             "angle_span_deg": float(np.rad2deg(span)), "noise_sigma_of_max": noise,
                             "noise_sigma": sigma, "seed": seed, "detector_columns": cols},
              "rotation_center": (cols - 1) / 2}
    sino = Sinograms(data=data, angles=angles, pixel_size=None, center=(cols - 1) / 2, report=report)
    # Reconstruct on the phantom's n x n grid (pass size=n to ReconOptions).
    case = {"grid_size": n, "input": name, "title": f"{name}: {n_angles} angles"
            + (f" over {limited_deg:g} deg" if limited_deg else "")
            + (f", noise {100 * noise:g}% of max" if noise else ", no noise"),
            "description": (f"Simulated from {name} ({vol.shape[0]} slice(s) of {n}x{n}) with ASTRA's "
                            f"strip projector on a 2x finer grid; methods use the linear projector."),
            "reference": "the phantom", "simulation": report["simulation"]}
    return sino, vol, case
