"""Geometry: centring shift, exact ASTRA geometry, and binning.

ASTRA's CPU FBP only takes the plain ``'parallel'`` geometry, which assumes the
axis at the detector centre ``(cols - 1) / 2``.  Two ways to use an off-centre
axis: :func:`center_sinogram` shifts (and pads) the sinogram so the axis lands
on the centre; :func:`parallel_geometry` returns the exact ``'parallel_vec'``
geometry for the data as they are (for SIRT/CGLS/FP/BP and the INR).

A half-acquisition scan (360 degrees with the axis near one edge of the
detector, :func:`is_half_acquisition`) sees a field of view almost twice the
detector's width (:func:`field_of_view`); for FBP it is placed on a detector of
that width and weighted so that each line counts once (:func:`weight_half_acquisition`).
"""

from __future__ import annotations

import math
from typing import Any

import astra
import numpy as np
from scipy import ndimage

__all__ = ["center_sinogram", "parallel_geometry", "bin_sinograms", "binned_center",
           "is_half_acquisition", "field_of_view", "weight_half_acquisition"]


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
# Half-acquisition (offset-axis 360-degree) scans
# ---------------------------------------------------------------------------

#: The axis of a half-acquisition scan lies within this fraction of the detector's width from
#: one edge.  Such scans put it a few to a few tens of columns in, to nearly double the field of
#: view; scans of the whole sample keep it near the middle, a few percent off at most.
HALF_ACQUISITION_EDGE = 0.25


def _full_turn(angles: np.ndarray) -> bool:
    """Whether the angles go round the whole turn: no gap between neighbours (mod 360) of 90 degrees."""
    wrapped = np.sort(np.mod(np.asarray(angles, dtype=np.float64).reshape(-1), 2 * np.pi))
    if wrapped.size < 4:
        return False
    gaps = np.diff(np.concatenate([wrapped, wrapped[:1] + 2 * np.pi]))
    return float(gaps.max()) < np.pi / 2


def is_half_acquisition(angles: np.ndarray, n_cols: int, center: float) -> bool:
    """Whether a scan is a half acquisition: a full turn, the axis near one detector edge.

    A full turn: the angles, taken modulo 360 degrees, leave no gap of 90 degrees
    (a 180-degree scan leaves one of almost 180).  Near the edge: fewer than
    ``HALF_ACQUISITION_EDGE`` x ``n_cols`` columns on the axis's short side.  Each
    ray through the sample is then measured once over the turn (twice only within
    the columns the two sides share), and the sample may reach
    ``max(center, n_cols - 1 - center)`` columns from the axis.
    """
    center = _check_center(center, n_cols)
    short_side = min(center, n_cols - 1 - center)
    return short_side < HALF_ACQUISITION_EDGE * n_cols and _full_turn(angles)


def field_of_view(angles: np.ndarray, n_cols: int, center: float) -> int:
    """Default width of the reconstruction grid, in detector pixels, centred on the axis.

    The detector's width; for a half-acquisition scan (:func:`is_half_acquisition`)
    the whole field the turn sees, ``2 R + 1`` with ``R`` the long side's columns
    from the axis rounded up, so the sample is not cut off at the detector's width.
    """
    if not is_half_acquisition(angles, n_cols, center):
        return int(n_cols)
    return 2 * int(math.ceil(max(center, n_cols - 1 - center) - 1e-9)) + 1


def weight_half_acquisition(sinograms: np.ndarray, center: float) -> np.ndarray:
    """A half-acquisition scan on a detector of the whole field, weighted for FBP over the turn.

    For parallel beams ``p(theta + 180, c + u) = p(theta, c - u)``: over a full turn
    each line is measured at offset ``u`` from the axis and again at ``-u`` half a
    turn later, both only where both lie on the detector (the columns the two sides
    share).  The sinograms are first centred (:func:`center_sinogram`: the axis on
    the middle column, as ASTRA's plain ``'parallel'`` geometry and its CPU FBP
    assume, the detector widened to the whole field); then the column at offset
    ``u`` is multiplied by ``2 w(u)``, 0 where ``c + u`` lies off the detector (the
    widened side's edge values), with ``w(u) + w(-u) = 1``: each measurement weighs
    in proportion to its distance from its detector edge, so no seam remains where
    one side ends.  The factor 2 makes each line count as twice measured, which
    FBP over 360 degrees averages (Wang 2002, offset-detector weighting).

    Parameters
    ----------
    sinograms : numpy.ndarray
        ``(..., angles, cols)`` line integrals over a full turn.
    center : float
        Rotation centre, detector columns (0-based).

    Returns
    -------
    numpy.ndarray
        ``(..., angles, cols')`` float32, ``cols'`` as :func:`center_sinogram` gives.
    """
    n_cols = np.shape(sinograms)[-1]
    centred = center_sinogram(sinograms, center)
    width = centred.shape[-1]
    u = np.arange(width) - (width - 1) / 2                 # each column's offset from the axis

    def depth(x: np.ndarray) -> np.ndarray:
        """How far inside the detector a column position lies (0: outside)."""
        return np.clip(np.minimum(x, n_cols - 1 - x) + 1.0, 0.0, None)

    weight = 2 * depth(center + u) / (depth(center + u) + depth(center - u))
    return np.ascontiguousarray(centred * weight.astype(np.float32), dtype=np.float32)


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
