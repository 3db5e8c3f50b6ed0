"""Rotation centre: Vo et al. (2014) for 180-degree scans, opposite-projection pairs for 360-degree scans."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["find_center", "find_center_vo", "find_center_pairs", "find_center_pairs_indices"]

CENTER_METHODS = ("auto", "vo", "pairs")
CENTER_REFERENCES = {
    "vo": ("Vo, Atwood & Drakopoulos (2014), Reliable method for calculating the center of rotation "
           "in parallel-beam tomography, Opt. Express 22(16), 19078"),
    "pairs": ("agreement of projections 180 degrees apart with their mirror images over the "
              "columns they share: 1 - sum (x - y)^2 / sum (x^2 + y^2)"),
    "manual": "given by the user",
}


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles into (-pi, pi]."""
    return np.pi - np.mod(np.pi - angle, 2 * np.pi)


def _angle_step(angles: np.ndarray) -> float:
    diffs = np.diff(np.unique(np.round(angles, 12)))
    return float(np.median(diffs)) if diffs.size else float("nan")


def find_center_pairs_indices(angles: np.ndarray, tolerance: float | None = None) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, of projections 180 degrees apart (mod 360).

    ``tolerance`` (radians) defaults to a twentieth of the angular step: pairs
    must really be opposite, since a 1-degree mismatch shifts far features.
    """
    angles = np.asarray(angles, dtype=np.float64)
    if tolerance is None:
        tolerance = 0.05 * _angle_step(angles) if angles.size > 1 else 1e-6
    two_pi = 2 * np.pi
    wrapped = np.mod(angles, two_pi)
    order = np.argsort(wrapped, kind="stable")
    # Sorted angles with a copy shifted by a full turn on either side, so matches across 0/360 are found.
    extended = np.concatenate([wrapped[order] - two_pi, wrapped[order], wrapped[order] + two_pi])
    index = np.concatenate([order, order, order])
    target = np.mod(angles + np.pi, two_pi)
    lo = np.searchsorted(extended, target - tolerance, side="left")
    hi = np.searchsorted(extended, target + tolerance, side="right")
    pairs = [(i, int(j)) for i in np.flatnonzero(hi > lo) for j in index[lo[i]:hi[i]] if j > i]
    return np.array(sorted(set(pairs)), dtype=np.int64).reshape(-1, 2)


#: Fewest detector columns a projection and its mirrored opposite must share for a centre to
#: be considered (a half-acquisition scan with the axis c columns from the edge shares 2c + 1).
MIN_PAIR_OVERLAP = 8


def find_center_pairs(sinogram: np.ndarray, angles: np.ndarray, *, pairs: np.ndarray | None = None,
                      search: tuple[float, float] | None = None) -> float:
    """Rotation centre from projections 180 degrees apart (360-degree scans).

    For parallel beams ``p(theta + 180, x) = p(theta, 2c - x)``: each projection
    matches its opposite one mirrored about the centre ``c``.  For each shift
    ``s = 2c - (cols - 1)`` the columns that a projection and its mirrored partner
    share are compared by ``1 - sum (x - y)^2 / sum (x^2 + y^2)``, pooled over all
    pairs, at every whole shift (sums by FFT); the best is refined to sub-pixel
    precision by the parabola through it and its two neighbours.  Unlike the plain
    cross-correlation, this does not grow with the number of shared columns, so
    an axis near the detector's edge (a half-acquisition scan, which widens the
    field of view to almost twice the detector) is found as well as a central one.

    Parameters
    ----------
    sinogram : numpy.ndarray
        ``(angles, cols)`` line integrals.
    angles : numpy.ndarray
        ``(angles,)`` radians.
    pairs : numpy.ndarray, optional
        ``(n, 2)`` index pairs; default :func:`find_center_pairs_indices`.
    search : (float, float), optional
        Range of centres (detector pixels) to consider; default the whole detector
        but for ``MIN_PAIR_OVERLAP / 2`` columns at either edge.

    Returns
    -------
    float
        Centre in detector pixels, 0-based.
    """
    sino = np.asarray(sinogram, dtype=np.float64)
    n_cols = sino.shape[1]
    if pairs is None:
        pairs = find_center_pairs_indices(angles)
    if len(pairs) == 0:
        raise ValueError("no projections 180 degrees apart: use the 'vo' method for 180-degree scans")
    length = int(2 ** math.ceil(math.log2(2 * n_cols)))     # zero padding: no circular wrap-around
    first, mirrored = sino[pairs[:, 0]], sino[pairs[:, 1], ::-1]
    spectrum = lambda rows: np.fft.rfft(rows, n=length, axis=-1)
    ones = spectrum(np.ones(n_cols))
    # Sums over each shift's shared columns, pooled over pairs: x y, x^2 and y^2.
    sums = {"xy": (spectrum(first) * np.conj(spectrum(mirrored))).sum(axis=0),
            "xx": spectrum((first ** 2).sum(axis=0)) * np.conj(ones),
            "yy": ones * np.conj(spectrum((mirrored ** 2).sum(axis=0)))}

    def agreement(values: dict[str, np.ndarray]) -> np.ndarray:
        # 1 - sum (x - y)^2 / sum (x^2 + y^2): 1 where the shared columns agree, about 0 for
        # unrelated ones (and for air against air, whose noise is independent).  Unlike a
        # correlation coefficient it compares levels as well as shapes, so a few columns of
        # similar slope at the detector's ends do not match.
        # Shared columns that hold almost nothing (air, or no signal at all) score about 0:
        # their energy is floored at a thousandth of the largest overlap's.
        energy = values["xx"] + values["yy"]
        return 2 * values["xy"] / np.maximum(energy, floor)

    shifts = np.fft.fftfreq(length, 1.0 / length)               # 0, 1, ..., -1
    lo, hi = search if search is not None else (0.0, n_cols - 1.0)
    overlap = n_cols - np.abs(shifts)
    allowed = ((shifts >= 2 * lo - (n_cols - 1)) & (shifts <= 2 * hi - (n_cols - 1))
               & (overlap >= min(MIN_PAIR_OVERLAP, n_cols)))
    if not allowed.any():
        raise ValueError(f"no centre in the search range {search} leaves {MIN_PAIR_OVERLAP} columns "
                         "shared by opposite projections")
    floor = 1e-3 * float(np.max(np.fft.irfft(sums["xx"] + sums["yy"], n=length)))
    at_shifts = agreement({k: np.fft.irfft(v, n=length) for k, v in sums.items()})
    best = shifts[allowed][np.argmax(at_shifts[allowed])]
    # Sub-pixel: the parabola through the agreement at the best whole shift and its two
    # neighbours.  Those values are exact sums over the shared columns; resampling the
    # projections instead (splines, or a Fourier interpolant of the sums, which rings where
    # few columns are shared) smooths their noise by an amount that varies with the
    # fraction, and biased the centre of noisy synthetic scans by up to 0.4 pixel.
    neighbours = np.array([best - 1, best, best + 1], dtype=np.int64)
    shift = _parabola_peak(neighbours.astype(np.float64), at_shifts[np.mod(neighbours, length)], 1)
    shift = float(np.clip(shift, best - 0.5, best + 0.5))
    return float((n_cols - 1 + shift) / 2)


def _parabola_peak(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Vertex of the parabola through the three samples around index ``k`` (extremum refinement)."""
    if 0 < k < len(x) - 1:
        y0, y1, y2 = y[k - 1], y[k], y[k + 1]
        denom = y0 - 2 * y1 + y2
        if denom != 0:
            return float(x[k] + 0.5 * (y0 - y2) / denom * (x[1] - x[0]))
    return float(x[k])


def find_center_vo(sinogram: np.ndarray, *, ratio: float = 0.5, search: tuple[float, float] | None = None,
                   k_max: int = 128, k_coarse: int = 32) -> float:
    """Rotation centre of a 180-degree sinogram, Vo, Atwood & Drakopoulos (2014).

    The sinogram and its left-right mirror, shifted by a trial centre, are
    stacked into a 360-degree sinogram.  Its 2D Fourier transform has (almost)
    no energy outside a double wedge for an object of radius ``R``: angular
    frequency ``|k| <= 2 pi R |nu|``.  A wrong centre breaks the 180-degree seam
    and spreads energy into the forbidden region; the centre minimises the mean
    magnitude there.  Trial shifts are applied in Fourier space, so the metric is
    evaluated exactly at sub-pixel centres without re-transforming.

    Parameters
    ----------
    sinogram : numpy.ndarray
        ``(angles, cols)`` line integrals, angles increasing and evenly covering
        ``[theta0, theta0 + 180)`` degrees.
    ratio : float
        Assumed object diameter over detector width (sets ``R``); 0.5 as in Vo.
    search : (float, float), optional
        Range of centres; default the middle 70 % of the detector.
    k_max, k_coarse : int
        Highest angular frequency (per turn) used in the fine and the coarse
        search; low frequencies carry the seam's signature and keep the cost
        independent of the number of angles.

    Returns
    -------
    float
        Centre in detector pixels, 0-based.
    """
    sino = np.asarray(sinogram, dtype=np.float64)
    n_angles, n_cols = sino.shape
    # Pad with edge values so trial shifts do not wrap the far edge into the data.
    pad = n_cols // 4 + 2
    padded = np.pad(sino, ((0, 0), (pad, pad)), mode="edge")
    width = padded.shape[1]
    radius = ratio * n_cols / 2
    w_all = np.fft.fftfreq(width, 1.0 / width)                   # cycles per padded width
    k_limit = min(k_max, n_angles)
    # |w| / width <= |k| / (2 pi R): the forbidden region of angular frequency k.
    w_keep = np.abs(w_all) <= k_limit * width / (2 * np.pi * radius) + 1
    col_a = np.fft.fft(padded, axis=1)[:, w_keep]
    col_b = np.fft.fft(padded[:, ::-1], axis=1)[:, w_keep]
    full_a = np.fft.fft(col_a, n=2 * n_angles, axis=0)          # zero-padded: rows n..2n-1 hold the mirror
    full_b = np.fft.fft(col_b, n=2 * n_angles, axis=0)
    k = np.fft.fftfreq(2 * n_angles, 1.0 / (2 * n_angles))
    w = w_all[w_keep]
    kk, ww = np.meshgrid(k, w, indexing="ij")
    mask = (np.abs(ww) <= np.abs(kk) * width / (2 * np.pi * radius)) & (np.abs(kk) <= k_limit) \
        & (np.abs(kk) >= 1) & (np.abs(ww) > 1)
    a = full_a[mask].astype(np.complex64)
    # The mirror block starts at row n of 2n: a factor exp(-i pi k) = (-1)^k.
    b = (full_b[mask] * np.where(kk[mask] % 2 == 0, 1.0, -1.0)).astype(np.complex64)
    wm = (-2 * np.pi / width * ww[mask]).astype(np.float32)

    def metric(shifts: np.ndarray, entries: np.ndarray | slice = slice(None)) -> np.ndarray:
        a_, b_, w_ = a[entries], b[entries], wm[entries]
        out = np.empty(shifts.size)
        for start in range(0, shifts.size, 32):
            s = shifts[start:start + 32].astype(np.float32)
            phase = np.exp(1j * np.outer(s, w_))
            out[start:start + 32] = np.abs(a_[None] + b_[None] * phase).mean(axis=1)
        return out

    lo, hi = search if search is not None else (0.15 * (n_cols - 1), 0.85 * (n_cols - 1))
    # s = 2c - (cols - 1) is the same in padded coordinates; a step of 1 in s is half a pixel in c.
    coarse = np.arange(math.floor(2 * lo - (n_cols - 1)), math.ceil(2 * hi - (n_cols - 1)) + 1, 1.0)
    # The coarse scan over many shifts uses only the lowest angular frequencies (cheap, and
    # enough to find the right half pixel); the fine scan uses them all.
    low = np.flatnonzero(np.abs(kk[mask]) <= k_coarse)
    best = coarse[int(np.argmin(metric(coarse, low)))]
    fine = best + np.linspace(-1.5, 1.5, 61)
    values = metric(fine)
    k_best = int(np.argmin(values))
    shift = _parabola_peak(fine, -values, k_best)
    return float((n_cols - 1 + shift) / 2)


def _half_turn(angles: np.ndarray) -> np.ndarray | None:
    """Indices (sorted by angle) of projections covering [theta0, theta0 + 180) evenly, or None."""
    order = np.argsort(angles, kind="stable")
    theta = angles[order] - angles[order[0]]
    step = _angle_step(angles)
    if not np.isfinite(step) or theta[-1] + 1.5 * step < np.pi:
        return None
    return order[theta < np.pi - 0.5 * step]


def find_center(sinograms: np.ndarray, angles: np.ndarray, method: str = "auto",
                search: tuple[float, float] | None = None) -> tuple[float, str, list[float]]:
    """Rotation centre of one or more detector rows; the median over rows.

    Parameters
    ----------
    sinograms : numpy.ndarray
        ``(angles, cols)`` or ``(rows, angles, cols)`` line integrals.
    angles : numpy.ndarray
        ``(angles,)`` radians, any order.
    method : {'auto', 'vo', 'pairs'}
        ``'pairs'`` (:func:`find_center_pairs`) needs projections 180 degrees
        apart; ``'vo'`` (:func:`find_center_vo`) needs at least 180 degrees;
        ``'auto'`` takes pairs when at least a tenth of the projections (and 3)
        have an exact opposite, else Vo's method on the first 180 degrees.
    search : (float, float), optional
        Range of centres to consider (detector pixels).

    Returns
    -------
    (float, str, list of float)
        The centre (detector pixels, 0-based), the method used and the per-row estimates.

    Raises
    ------
    ValueError
        Less than 180 degrees of data, or no opposite pairs for ``'pairs'``.
    """
    if method not in CENTER_METHODS:
        raise ValueError(f"center method must be one of {CENTER_METHODS}, got {method!r}")
    data = np.asarray(sinograms, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    angles = np.asarray(angles, dtype=np.float64)
    if data.ndim != 3 or data.shape[1] != angles.size:
        raise ValueError(f"sinograms of shape {np.shape(sinograms)} do not match {angles.size} angles "
                         f"(expected (angles, cols) or (rows, angles, cols))")
    pairs = find_center_pairs_indices(angles)
    if method == "auto":
        method = "pairs" if len(pairs) >= max(3, angles.size // 10) else "vo"
    if method == "pairs":
        if len(pairs) == 0:
            raise ValueError("center method 'pairs' needs projections 180 degrees apart; this scan has "
                             "none (use 'vo' or give the centre)")
        estimates = [find_center_pairs(row, angles, pairs=pairs, search=search) for row in data]
    else:
        half = _half_turn(angles)
        if half is None:
            span = np.rad2deg(np.ptp(angles))
            raise ValueError(f"automatic centre finding needs at least 180 degrees of projections; the "
                             f"scan covers {span:.1f} degrees: give center=<column> (file pixels)")
        estimates = [find_center_vo(row[half], search=search) for row in data]
    return float(np.median(estimates)), method, [float(e) for e in estimates]
