"""Stripe (ring) removal, after Vo, Atwood & Drakopoulos (2018).

"Superior techniques for eliminating ring artifacts in X-ray micro-tomography",
Opt. Express 26(22), 28396.  Applied to line integrals, where a detector gain
error is an additive column offset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["remove_stripes", "remove_stripes_sorting", "remove_large_stripes", "remove_dead_stripes"]

STRIPE_METHODS = ("none", "sorting", "all")
STRIPE_REFERENCE = ("Vo, Atwood & Drakopoulos (2018), Superior techniques for eliminating ring "
                    "artifacts in X-ray micro-tomography, Opt. Express 26(22), 28396")


def _window(size: int, n: int) -> int:
    """An odd window no wider than the data."""
    size = min(size, n if n % 2 else n - 1)
    return max(size, 1)


def remove_stripes_sorting(sinograms: np.ndarray, size: int = 21) -> np.ndarray:
    """Sorting-based stripe removal (Vo et al. 2018, algorithm 3).

    Each detector column is sorted along the angle axis; on the sorted image a
    stripe is a column offset from its neighbours, which a median filter
    *across columns* removes; the values are then put back in their original
    order.  Removes full and partial stripes while keeping real features, which
    vary with angle and so sort into the same place in neighbouring columns.

    Parameters
    ----------
    sinograms : numpy.ndarray
        ``(angles, cols)`` or ``(rows, angles, cols)`` line integrals.
    size : int
        Median window across columns (odd, detector pixels).

    Returns
    -------
    numpy.ndarray
        New array, same shape, float32.
    """
    data = np.asarray(sinograms, dtype=np.float32)
    out = np.empty(data.shape, dtype=np.float32)
    size = _window(size, data.shape[-1])
    rows_in = data.reshape((-1,) + data.shape[-2:])
    rows_out = out.reshape(rows_in.shape)
    # One sinogram at a time: the sort order (int64) and the sorted copy stay one row large.
    for r in range(rows_in.shape[0]):
        sino = rows_in[r]
        if size < 3:
            rows_out[r] = sino
            continue
        order = np.argsort(sino, axis=0, kind="stable")
        smoothed = ndimage.median_filter(np.take_along_axis(sino, order, axis=0), size=(1, size),
                                         mode="reflect")
        np.put_along_axis(rows_out[r], order, smoothed, axis=0)
    return out


def _detect_stripes(profile: np.ndarray, snr: float, sides: str = "both", floor: float = 1e-6) -> np.ndarray:
    """Stripe columns of a per-column profile: Vo et al. 2018, section 3.1 (sort, fit, threshold).

    The sorted profile's middle half is fitted with a line; its rise over the
    fit sets the noise level; values farther than ``snr / 2`` noise levels above
    or below the fitted line's ends are stripes (only when the extreme values
    themselves exceed ``snr`` noise levels, so a clean profile gives none).
    ``sides`` limits detection to values above (``'high'``) or below (``'low'``);
    ``floor`` is the smallest noise level assumed (noise-free data would
    otherwise make every tiny deviation a stripe).
    """
    n = profile.size
    ordered = np.sort(profile)[::-1]
    x = np.arange(n, dtype=np.float64)
    drop = int(0.25 * n)
    if n - 2 * drop < 3:
        return np.zeros(n, dtype=bool)
    slope, intercept = np.polyfit(x[drop:n - drop], ordered[drop:n - drop], 1)
    end = intercept + slope * x[-1]
    noise = max(abs(end - intercept), floor)
    mask = np.zeros(n, dtype=bool)
    if sides != "low" and abs(ordered[0] - intercept) / noise >= snr:
        mask |= profile > intercept + noise * snr * 0.5
    if sides != "high" and abs(ordered[-1] - end) / noise >= snr:
        mask |= profile <= end - noise * snr * 0.5
    return mask


def remove_large_stripes(sinogram: np.ndarray, snr: float = 3.0, size: int = 61,
                         drop_ratio: float = 0.1, max_fraction: float = 0.1) -> tuple[np.ndarray, int, bool]:
    """Large-stripe removal (Vo et al. 2018, algorithm 5), on line integrals.

    The sorted sinogram is median-filtered across columns with a wide window;
    the difference of each column's sorted mean from the filtered one is its
    offset.  Columns whose offset stands out by more than ``snr`` noise levels
    (see :func:`_detect_stripes`) are stripes, and are replaced by the filtered
    values put back in their original order.

    Departures from Vo's code, all to avoid damaging real structure: stripes
    are detected on the offset minus its running median (a third of the
    window), because a wide median filter cannot follow a sample's own smooth
    features and leaves broad offsets that are not stripes; the noise level is
    at least 1 % of the sinogram's range (smaller offsets are left to the
    sorting step); the optional equalisation of *all*
    columns by their offset is not done (the sorting step, algorithm 3,
    handles small offsets); and when more than ``max_fraction`` of the columns
    are flagged the row is left unchanged and reported, since that many
    "stripes" means the sample, not the detector, was detected.

    Parameters
    ----------
    sinogram : numpy.ndarray
        ``(angles, cols)`` line integrals.
    snr, size, drop_ratio : float, int, float
        Detection threshold, median window (odd) and the fraction of extreme
        sorted values ignored when comparing columns.
    max_fraction : float
        Largest fraction of columns that may be replaced.

    Returns
    -------
    (numpy.ndarray, int, bool)
        ``(angles, cols)`` float32, the number of columns replaced, and whether
        the row was skipped because too many columns were flagged.
    """
    sino = np.array(sinogram, dtype=np.float32)
    n_angles, n_cols = sino.shape
    size = _window(size, n_cols)
    if size < 3:
        return sino, 0, False
    drop = int(0.5 * np.clip(drop_ratio, 0.0, 0.8) * n_angles)
    order = np.argsort(sino, axis=0, kind="stable")
    ordered = np.take_along_axis(sino, order, axis=0)
    smoothed = ndimage.median_filter(ordered, size=(1, size), mode="reflect")
    keep = slice(drop, n_angles - drop) if n_angles - 2 * drop > 0 else slice(None)
    offset = ordered[keep].mean(axis=0) - smoothed[keep].mean(axis=0)
    narrow = offset - ndimage.median_filter(offset, _window(size // 3 | 1, n_cols), mode="reflect")
    # Offsets under ~1 % of the sinogram's range are left to the sorting step (algorithm 3).
    floor = 0.01 * float(np.ptp(np.percentile(sino, [1, 99])))
    stripes = ndimage.binary_dilation(_detect_stripes(narrow, snr, floor=max(floor, 1e-6)), iterations=1)
    if stripes.sum() > max_fraction * n_cols:
        return sino, 0, True
    replaced = np.empty_like(sino)
    np.put_along_axis(replaced, order, smoothed, axis=0)
    sino[:, stripes] = replaced[:, stripes]
    return sino, int(stripes.sum()), False


def remove_dead_stripes(sinogram: np.ndarray, snr: float = 3.0, size: int = 61) -> tuple[np.ndarray, int]:
    """Unresponsive-stripe removal (Vo et al. 2018, algorithm 6), without the residual pass.

    An unresponsive column varies less along the angle than its neighbours: its
    sum of absolute differences from an angle-smoothed copy falls below a median
    background.  Detected columns are replaced by linear interpolation from the
    good ones.  Unlike Vo's version, columns that vary *more* (fluctuating) are
    not flagged: on line integrals the noise grows with attenuation, so columns
    through dense parts of a sample would be mistaken for fluctuating stripes.

    Returns
    -------
    (numpy.ndarray, int)
        Corrected ``(angles, cols)`` float32 and the number of replaced columns.
    """
    sino = np.array(sinogram, dtype=np.float32)
    n_angles, n_cols = sino.shape
    size = _window(size, n_cols)
    if size < 3 or n_cols < 5:
        return sino, 0
    smooth = ndimage.uniform_filter1d(sino, 10, axis=0, mode="reflect")
    variation = np.abs(sino - smooth).sum(axis=0)
    background = ndimage.median_filter(variation, size, mode="reflect")
    background[background == 0] = variation.mean() if variation.mean() > 0 else 1.0
    stripes = ndimage.binary_dilation(_detect_stripes(variation / background, snr, "low"), iterations=1)
    stripes[:2] = False      # interpolation needs good columns on both sides
    stripes[-2:] = False
    bad = np.flatnonzero(stripes)
    if bad.size:
        good = np.flatnonzero(~stripes)
        for a in range(n_angles):
            sino[a, bad] = np.interp(bad, good, sino[a, good])
    return sino, int(bad.size)


def remove_stripes(sinograms: np.ndarray, method: str = "sorting", *, size: int = 21,
                   large_size: int = 61, snr: float = 3.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Stripe removal on sinograms ``(angles, cols)`` or ``(rows, angles, cols)``.

    Parameters
    ----------
    method : {'none', 'sorting', 'all'}
        ``'sorting'``: Vo et al. 2018 algorithm 3.  ``'all'``: algorithms 6
        (unresponsive stripes), 5 (large stripes), then 3, as in their
        ``remove_all_stripe``.
    size, large_size, snr
        Sorting window, large/unresponsive window (odd, columns), detection threshold.

    Returns
    -------
    (numpy.ndarray, dict)
        Corrected float32 array of the same shape, and a report (method,
        reference, parameters, stripe columns replaced by algorithms 6 and 5,
        rows where algorithm 5 flagged too many columns and was skipped).
    """
    if method not in STRIPE_METHODS:
        raise ValueError(f"stripe method must be one of {STRIPE_METHODS}, got {method!r}")
    data = np.asarray(sinograms, dtype=np.float32)
    report: dict[str, Any] = {"method": method}
    if method == "none":
        return data, report
    report["reference"] = STRIPE_REFERENCE
    report["algorithms"] = [3] if method == "sorting" else [6, 5, 3]
    report["size"] = size
    if method == "all":
        report.update(large_size=large_size, snr=snr, dead_stripe_columns=0, large_stripe_columns=0,
                      large_stripe_rows_skipped=0)
        flat = data.reshape((-1,) + data.shape[-2:]).copy()
        for r in range(flat.shape[0]):
            flat[r], n_dead = remove_dead_stripes(flat[r], snr, large_size)
            flat[r], n_large, skipped = remove_large_stripes(flat[r], snr, large_size)
            report["dead_stripe_columns"] += n_dead
            report["large_stripe_columns"] += n_large
            report["large_stripe_rows_skipped"] += int(skipped)
        data = flat.reshape(data.shape)
    return remove_stripes_sorting(data, size), report
