"""Flat/dark correction, open-beam normalisation, -log, dead pixels."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "flat_dark_correct",
    "normalise_by_columns",
    "minus_log",
    "find_dead_pixels",
    "interpolate_dead_pixels",
    "interpolate_invalid_samples",
]


def flat_dark_correct(projections: np.ndarray, flat: np.ndarray | None, dark: np.ndarray | None,
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Transmission ``(P - D) / (F - D)``, in place, with the bad denominators counted.

    Parameters
    ----------
    projections : numpy.ndarray
        ``(angles, rows, cols)`` float32 raw counts; overwritten with the result.
    flat, dark : numpy.ndarray or None
        ``(rows, cols)`` averaged flat and dark fields (counts).  Without a flat
        only the dark is subtracted (the result is then counts, to be normalised
        by :func:`normalise_by_columns`).

    Returns
    -------
    transmission : numpy.ndarray
        ``(angles, rows, cols)`` float32, the same array as ``projections``.
        Where ``F - D <= 0`` the value is set to 1 (no information; such pixels
        are flagged in ``bad``).
    bad : numpy.ndarray
        ``(rows, cols)`` bool, pixels whose ``F - D`` is not positive (or not finite).
    counts : dict
        ``{'denominator_nonpositive_pixels': n}``.
    """
    out = projections
    if dark is not None:
        out -= dark[None]
    if flat is None:
        return out, np.zeros(out.shape[1:], dtype=bool), {"denominator_nonpositive_pixels": 0}
    denominator = flat - (0 if dark is None else dark)
    bad = ~(denominator > 0)           # also catches NaN
    out /= np.where(bad, 1.0, denominator)[None].astype(np.float32)
    out[:, bad] = 1.0
    return out, bad, {"denominator_nonpositive_pixels": int(bad.sum())}


def _resolve_columns(columns: slice | Sequence[int], n_cols: int) -> np.ndarray:
    if isinstance(columns, slice):
        index = np.arange(n_cols)[columns]
    else:
        index = np.asarray(columns, dtype=np.int64)
        if np.any((index < -n_cols) | (index >= n_cols)):
            raise ValueError(f"flat_columns {list(columns)} outside the detector's {n_cols} columns")
        index = np.unique(index % n_cols)
    if index.size == 0:
        raise ValueError(f"flat_columns {columns} selects none of the detector's {n_cols} columns")
    return index


def normalise_by_columns(values: np.ndarray, columns: slice | Sequence[int]) -> tuple[np.ndarray, dict[str, int]]:
    """Divide each ``(angle, row)`` by the mean of its open-beam columns, in place.

    Parameters
    ----------
    values : numpy.ndarray
        ``(angles, rows, cols)`` float32, counts minus dark, or transmission.
    columns : slice or sequence of int
        Open-beam (air) columns, e.g. ``slice(0, 30)``.

    Returns
    -------
    values : numpy.ndarray
        The same array, normalised so the open-beam columns average 1.
    counts : dict
        ``{'open_beam_nonpositive': n}``: projection rows whose open-beam mean was
        not positive; they are normalised by the median of the row's valid means.
    """
    index = _resolve_columns(columns, values.shape[-1])
    reference = values[..., index].mean(axis=-1, dtype=np.float64)      # (angles, rows)
    bad = ~(reference > 0)
    if bad.any():
        for r in range(reference.shape[1]):
            good = reference[~bad[:, r], r]
            if good.size == 0:
                raise ValueError(f"open-beam columns {index[0]}..{index[-1]} have no positive mean in "
                                 f"any projection of a row: they are not open beam")
            reference[bad[:, r], r] = np.median(good)
    values /= reference[..., None].astype(np.float32)
    return values, {"open_beam_nonpositive": int(bad.sum())}


def minus_log(transmission: np.ndarray, min_transmission: float = 1e-3) -> tuple[np.ndarray, dict[str, int]]:
    """Line integrals ``-log(T)`` in place, clipping ``T`` below ``min_transmission``.

    Parameters
    ----------
    transmission : numpy.ndarray
        Any shape, float32; overwritten.
    min_transmission : float
        Values below it (also zero, negative and NaN) become it before the log.

    Returns
    -------
    line_integrals : numpy.ndarray
        The same array.
    counts : dict
        ``{'transmission_nonpositive': n, 'transmission_clipped': m}`` with
        ``m >= n`` (all values raised to ``min_transmission``).
    """
    low = ~(transmission >= min_transmission)
    counts = {"transmission_nonpositive": int(np.count_nonzero(~(transmission > 0))),
              "transmission_clipped": int(np.count_nonzero(low))}
    transmission[low] = min_transmission
    np.log(transmission, out=transmission)
    np.negative(transmission, out=transmission)
    return transmission, counts


def interpolate_invalid_samples(sinograms: np.ndarray, invalid: np.ndarray) -> int:
    """Replace single bad samples (e.g. zero counts) by linear interpolation along the row, in place.

    Parameters
    ----------
    sinograms : numpy.ndarray
        ``(angles, rows, cols)`` line integrals.
    invalid : numpy.ndarray
        ``(angles, rows, cols)`` bool, samples to replace.

    Returns
    -------
    int
        Detector lines (angle, row) left untouched because all their samples were invalid.
    """
    hopeless = 0
    cols = np.arange(sinograms.shape[-1])
    for a, r in zip(*np.nonzero(invalid.any(axis=-1))):
        bad = invalid[a, r]
        if bad.all():
            hopeless += 1
            continue
        line = sinograms[a, r]
        line[bad] = np.interp(cols[bad], cols[~bad], line[~bad])
    return hopeless


def find_dead_pixels(transmission: np.ndarray, bad_denominator: np.ndarray | None,
                     min_transmission: float) -> np.ndarray:
    """Dead pixels of a row block: no usable flat, or no signal at any angle.

    Parameters
    ----------
    transmission : numpy.ndarray
        ``(angles, rows, cols)`` before clipping.
    bad_denominator : numpy.ndarray or None
        ``(rows, cols)`` pixels whose flat minus dark is not positive.
    min_transmission : float
        A pixel below this at *every* angle sees no beam: a dead pixel (stuck at
        the dark level) rather than a dense object, which would not hide the
        beam from one isolated column at all angles.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` bool.
    """
    dead = np.all(~(transmission >= min_transmission), axis=0)
    if bad_denominator is not None:
        dead |= bad_denominator
    return dead


def interpolate_dead_pixels(sinograms: np.ndarray, dead: np.ndarray) -> int:
    """Replace dead pixels by linear interpolation along the detector row, in place.

    Parameters
    ----------
    sinograms : numpy.ndarray
        ``(angles, rows, cols)`` line integrals.
    dead : numpy.ndarray
        ``(rows, cols)`` bool.

    Returns
    -------
    int
        Rows left untouched because every pixel in them was dead.
    """
    hopeless = 0
    for r in np.flatnonzero(dead.any(axis=1)):
        good = np.flatnonzero(~dead[r])
        if good.size == 0:
            hopeless += 1
            continue
        bad = np.flatnonzero(dead[r])
        pos = np.searchsorted(good, bad)
        left = good[np.clip(pos - 1, 0, good.size - 1)]
        right = good[np.clip(pos, 0, good.size - 1)]
        span = (right - left).astype(np.float32)
        weight = np.divide(bad - left, span, out=np.zeros_like(span), where=span > 0)
        row = sinograms[:, r, :]
        row[:, bad] = (1 - weight) * row[:, left] + weight * row[:, right]
    return hopeless
