"""Geometry: centring shift, exact ASTRA geometry, and binning.

ASTRA's CPU FBP only takes the plain ``'parallel'`` geometry, which assumes the
axis at the detector centre ``(cols - 1) / 2``.  Two ways to use an off-centre
axis: :func:`center_sinogram` shifts (and pads) the sinogram so the axis lands
on the centre; :func:`parallel_geometry` returns the exact ``'parallel_vec'``
geometry for the data as they are (for SIRT/CGLS/FP/BP and the INR).
"""

from __future__ import annotations

import math
from typing import Any

import astra
import numpy as np
from scipy import ndimage

__all__ = ["center_sinogram", "parallel_geometry", "bin_sinograms", "binned_center"]


def _check_center(center: float, n_cols: int) -> float:
    center = float(center)
    if not math.isfinite(center) or not 0 <= center <= n_cols - 1:
        raise ValueError(f"rotation centre {center!r} outside the detector's columns 0..{n_cols - 1}")
    return center


def center_sinogram(sinogram: np.ndarray, center: float, *, order: int = 3) -> np.ndarray:
    """Shift each sinogram row so the rotation axis lands on the detector centre.

    The detector is widened (never cropped) so that no data are lost: the
    result has ``cols' = cols + ceil(|2 center - (cols - 1)|)`` columns and the
    axis at ``(cols' - 1) / 2``, i.e. it fits ASTRA's plain ``'parallel'``
    geometry with ``cols'`` detectors (the geometry ASTRA's CPU FBP requires).
    New columns repeat the edge values (air for a sample inside the field of view).

    Parameters
    ----------
    sinogram : numpy.ndarray
        ``(..., angles, cols)`` line integrals.
    center : float
        Rotation centre, detector pixels (0-based) of ``sinogram``.
    order : int
        Spline order of the sub-pixel shift (1 linear, 3 cubic).

    Returns
    -------
    numpy.ndarray
        ``(..., angles, cols')`` float32.
    """
    data = np.asarray(sinogram, dtype=np.float32)
    n_cols = data.shape[-1]
    center = _check_center(center, n_cols)
    offset = 2 * center - (n_cols - 1)
    extra = int(math.ceil(abs(offset) - 1e-9))
    width = n_cols + extra
    # Output column x samples input position x + t, t chosen so output centre maps to `center`.
    t = center - (width - 1) / 2
    left = int(math.ceil(max(0.0, -t))) + 4
    right = int(math.ceil(max(0.0, width - 1 + t - (n_cols - 1)))) + 4
    flat = data.reshape(-1, n_cols)
    padded = np.pad(flat, ((0, 0), (left, right)), mode="edge")
    # ndimage.shift: out[y] = in[y - shift]; we need out[x] = padded[x + t + left].
    shifted = ndimage.shift(padded, (0.0, -(t + left)), order=order, mode="nearest", prefilter=order > 1)
    return np.ascontiguousarray(shifted[:, :width], dtype=np.float32).reshape(data.shape[:-1] + (width,))


def parallel_geometry(angles: np.ndarray, n_cols: int, pixel_size: float | None = None,
                      center: float | None = None) -> dict[str, Any]:
    """ASTRA 2D projection geometry for a parallel beam whose axis projects onto ``center``.

    Parameters
    ----------
    angles : numpy.ndarray
        ``(angles,)`` radians.
    n_cols : int
        Detector columns.
    pixel_size : float, optional
        Detector pixel size (mm; the volume geometry must then be in mm).
        ``None``: 1, i.e. everything in detector pixels.
    center : float, optional
        Rotation centre in detector pixels (0-based).  ``None`` or the detector
        centre ``(n_cols - 1) / 2``: a plain ``'parallel'`` geometry.

    Returns
    -------
    dict
        ``astra.create_proj_geom('parallel', ...)`` or ``'parallel_vec'`` whose
        rows are ``(rayX, rayY, dX, dY, uX, uY)``: ray direction
        ``(sin t, -cos t)``, pixel step ``u = pixel_size (cos t, sin t)`` (ASTRA's
        column index runs along ``u``) and detector centre
        ``d = ((n_cols - 1) / 2 - center) u``, which puts the projection of the
        origin (the axis) on column ``center``.  This is ASTRA's own conversion
        of ``'parallel'`` to vectors plus the offset.
    """
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    n_cols = int(n_cols)
    spacing = 1.0 if pixel_size is None else float(pixel_size)
    if center is None or abs(float(center) - (n_cols - 1) / 2) < 1e-9:
        return astra.create_proj_geom("parallel", spacing, n_cols, angles)
    offset = (n_cols - 1) / 2 - _check_center(center, n_cols)
    cos, sin = np.cos(angles), np.sin(angles)
    vectors = np.stack([sin, -cos, offset * spacing * cos, offset * spacing * sin,
                        spacing * cos, spacing * sin], axis=1)
    return astra.create_proj_geom("parallel_vec", n_cols, vectors)


# ---------------------------------------------------------------------------
# Binning
# ---------------------------------------------------------------------------

def bin_sinograms(sinograms: np.ndarray, factor: int, row_factor: int | None = None) -> np.ndarray:
    """Average ``row_factor x factor`` detector pixels of ``(rows, angles, cols)`` data.

    ``row_factor`` defaults to ``factor`` (square bins).  Trailing rows/columns
    that do not fill a bin are dropped.  Returns float32
    ``(rows // row_factor, angles, cols // factor)``.
    """
    kr = factor if row_factor is None else row_factor
    if factor == 1 and kr == 1:
        return np.asarray(sinograms, dtype=np.float32)
    rows, n_angles, cols = sinograms.shape
    r, c = rows // kr, cols // factor
    trimmed = sinograms[:r * kr, :, :c * factor]
    binned = trimmed.reshape(r, kr, n_angles, c, factor).mean(axis=(1, 4), dtype=np.float64)
    return binned.astype(np.float32)


def binned_center(center: float, factor: int) -> float:
    """A file-pixel centre in binned pixels: bin ``j`` covers file pixels ``j K .. j K + K - 1``."""
    return (center - (factor - 1) / 2) / factor
