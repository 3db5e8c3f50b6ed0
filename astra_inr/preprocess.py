"""From a raw :class:`~astra_inr.io.Scan` to line-integral sinograms ASTRA can reconstruct.

One entry point, :func:`preprocess`, runs these steps row block by row block
(peak memory is about one block of raw projections plus the output):

1. **Flat/dark correction** ``T = (P - D) / (F - D)`` with averaged flats ``F``
   and darks ``D``.  Pixels with a non-positive denominator ``F - D`` and
   samples with ``T < min_transmission`` (including ``T <= 0``) are clipped and
   **counted** in the report.  Scans without flat fields (e.g. a neutron
   sinogram) are normalised by open-beam columns at the detector edge
   (``flat_columns``); with flats, ``flat_columns`` also corrects beam-intensity
   fluctuations per projection.
2. **Dead pixels**: pixels whose flat minus dark is not positive, or whose
   transmission is below ``min_transmission`` at *every* angle (dead, stuck at
   the dark level) are interpolated from their neighbours along the row.
   Single samples with no counts above dark (transmission <= 0, e.g. a column
   that is dead for part of the scan) are interpolated along the row too.
3. ``-log`` to line integrals.
4. Optional **stripe (ring) removal** after Vo, Atwood & Drakopoulos (2018),
   "Superior techniques for eliminating ring artifacts in X-ray
   micro-tomography", Opt. Express 26(22), 28396: ``'sorting'`` is their
   algorithm 3 (sorting-based, for full and partial stripes); ``'all'`` runs
   algorithms 6 (unresponsive stripes), 5 (large stripes) and 3 in turn, with
   the safeguards described in :func:`remove_large_stripes` and
   :func:`remove_dead_stripes`.  Applied to line integrals, where a detector
   gain error is an additive column offset.
5. **Rotation centre**: automatic (``center='auto'``) or given, always reported
   in detector pixels of the *file* (0-based, before binning or cropping).  For
   180-degree scans the method of Vo, Atwood & Drakopoulos (2014), "Reliable
   method for calculating the center of rotation in parallel-beam tomography",
   Opt. Express 22(16), 19078 (sinogram and its mirror joined into a 360-degree
   sinogram; the centre minimises the Fourier energy outside the double wedge an
   object of finite size can fill); for scans with projections 180 degrees apart
   (360-degree scans) cross-correlation of each projection with its mirrored
   partner.  Estimated per detector row; the median over rows is used.
6. **Binning** ``K x K`` (averages of line integrals, so that the linear model
   holds), a **row range** of the file and **every k-th angle**.

Array conventions: raw projections ``(angles, rows, cols)`` as files store them;
output sinograms ``(rows, angles, cols)`` (detector rows first, like ASTRA 3D
projection data; one row is one 2D ASTRA sinogram ``(angles, cols)``).  Angles
in radians, pixel sizes in mm, centres in detector pixels (0-based column index
of the pixel *centre* the rotation axis projects onto).

ASTRA's CPU FBP only takes the plain ``'parallel'`` geometry, which assumes the
axis at the detector centre ``(cols - 1) / 2``.  Two ways to use an off-centre
axis: :func:`center_sinogram` shifts (and pads) the sinogram so the axis lands
on the centre; :func:`parallel_geometry` returns the exact ``'parallel_vec'``
geometry for the data as they are (for SIRT/CGLS/FP/BP and the INR).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Sequence

import astra
import numpy as np
from scipy import ndimage

from .io.scan import Scan

__all__ = [
    "PreprocessOptions",
    "Sinograms",
    "preprocess",
    "flat_dark_correct",
    "normalise_by_columns",
    "minus_log",
    "find_dead_pixels",
    "interpolate_dead_pixels",
    "interpolate_invalid_samples",
    "remove_stripes",
    "remove_stripes_sorting",
    "remove_large_stripes",
    "remove_dead_stripes",
    "find_center",
    "find_center_vo",
    "find_center_pairs",
    "find_center_pairs_indices",
    "center_sinogram",
    "parallel_geometry",
    "bin_sinograms",
    "binned_center",
]

STRIPE_METHODS = ("none", "sorting", "all")
CENTER_METHODS = ("auto", "vo", "pairs")
STRIPE_REFERENCE = ("Vo, Atwood & Drakopoulos (2018), Superior techniques for eliminating ring "
                    "artifacts in X-ray micro-tomography, Opt. Express 26(22), 28396")
CENTER_REFERENCES = {
    "vo": ("Vo, Atwood & Drakopoulos (2014), Reliable method for calculating the center of rotation "
           "in parallel-beam tomography, Opt. Express 22(16), 19078"),
    "pairs": "cross-correlation of projections 180 degrees apart with their mirror images",
    "manual": "given by the user",
}

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------
# Options and result
# ---------------------------------------------------------------------------

def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _odd_window(name: str, value: Any) -> int:
    value = _positive_int(name, value)
    if value < 3 or value % 2 == 0:
        raise ValueError(f"{name} must be an odd integer >= 3 (a centred window), got {value!r}")
    return value


def _parse_range(name: str, value: Any) -> tuple[int, int | None] | None:
    """``None``, ``(a, b)``, ``slice(a, b)`` or ``'a:b'`` (b may be empty: to the end)."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 2:
            raise ValueError(f"{name} must look like 'start:stop', got {value!r}")
        try:
            value = (int(parts[0]) if parts[0].strip() else 0, int(parts[1]) if parts[1].strip() else None)
        except ValueError:
            raise ValueError(f"{name} must be integers 'start:stop', got {value!r}") from None
    elif isinstance(value, slice):
        if value.step not in (None, 1):
            raise ValueError(f"{name} must be a contiguous range (step 1), got {value!r}")
        value = (0 if value.start is None else value.start, value.stop)
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name} must be (start, stop), slice(start, stop) or 'start:stop', got {value!r}")
    start, stop = value
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"{name} start must be an integer >= 0, got {start!r}")
    if stop is not None and (isinstance(stop, bool) or not isinstance(stop, (int, np.integer)) or stop <= start):
        raise ValueError(f"{name} stop must be an integer > start ({start}) or None, got {stop!r}")
    return int(start), None if stop is None else int(stop)


@dataclass(frozen=True)
class PreprocessOptions:
    """What :func:`preprocess` does; validated on construction (``ValueError`` naming the bad value).

    Attributes
    ----------
    rows : (start, stop), slice, 'start:stop' or None
        Detector rows of the file to process, 0-based, stop excluded, before
        binning.  ``None``: all rows.  Stored as ``(start, stop_or_None)``.
    binning : int
        Average ``binning x binning`` detector pixels (rows and columns).  Rows
        or columns left over at the end are dropped (and reported).
    angles_step : int
        Keep every ``angles_step``-th projection.
    center : 'auto' or float
        Rotation centre in detector pixels **of the file**, 0-based (the column
        the axis projects onto, e.g. ``(cols - 1) / 2`` for a centred axis), or
        ``'auto'`` to find it.
    center_method : {'auto', 'vo', 'pairs'}
        Automatic method: ``'pairs'`` needs projections 180 degrees apart
        (360-degree scans), ``'vo'`` needs 180 degrees of data; ``'auto'``
        uses pairs when at least a tenth of the projections have a partner.
    center_rows : int
        How many detector rows (evenly spread over ``rows``) the automatic
        centre is estimated on; the median is used.
    stripe_removal : {'none', 'sorting', 'all'}
        ``'sorting'``: Vo et al. 2018 algorithm 3; ``'all'``: algorithms 6, 5
        and 3 (unresponsive, large, then small stripes).
    stripe_size : int
        Median-filter width (detector columns, odd) of the sorting step.
    stripe_large_size : int
        Median-filter width (odd) for large and unresponsive stripes (``'all'``).
    stripe_snr : float
        Detection threshold of large/unresponsive stripes (ratio to the noise
        level; larger detects fewer).
    flat_columns : slice, 'start:stop', sequence of int, or None
        Open-beam (air) detector columns of the file, e.g. ``'0:30'``.  Without
        flat fields they *are* the flat field (per projection and row); with
        flat fields they correct beam-intensity drift between projections.
    dead_pixels : {'interpolate', 'keep'}
        Interpolate dead pixels along the row, or keep them (clipped).
    min_transmission : float
        Transmissions below this (including non-positive ones) are clipped to
        it, so line integrals stay finite (at most ``-log(min_transmission)``).
    block_rows : int
        Detector rows read and processed at once (rounded up to a multiple of
        ``binning``).
    """

    rows: tuple[int, int | None] | slice | str | None = None
    binning: int = 1
    angles_step: int = 1
    center: float | Literal["auto"] = "auto"
    center_method: Literal["auto", "vo", "pairs"] = "auto"
    center_rows: int = 5
    stripe_removal: Literal["none", "sorting", "all"] = "none"
    stripe_size: int = 21
    stripe_large_size: int = 61
    stripe_snr: float = 3.0
    flat_columns: slice | str | Sequence[int] | None = None
    dead_pixels: Literal["interpolate", "keep"] = "interpolate"
    min_transmission: float = 1e-3
    block_rows: int = 32

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("rows", _parse_range("rows", self.rows))
        set_("binning", _positive_int("binning", self.binning))
        set_("angles_step", _positive_int("angles_step", self.angles_step))
        set_("center_rows", _positive_int("center_rows", self.center_rows))
        set_("block_rows", _positive_int("block_rows", self.block_rows))
        set_("stripe_size", _odd_window("stripe_size", self.stripe_size))
        set_("stripe_large_size", _odd_window("stripe_large_size", self.stripe_large_size))
        if isinstance(self.center, str):
            if self.center != "auto":
                raise ValueError(f"center must be 'auto' or a column number (file pixels, 0-based), "
                                 f"got {self.center!r}")
        elif isinstance(self.center, bool) or not isinstance(self.center, (int, float, np.number)) \
                or not math.isfinite(self.center):
            raise ValueError(f"center must be 'auto' or a finite column number (file pixels, 0-based), "
                             f"got {self.center!r}")
        else:
            set_("center", float(self.center))
        if self.center_method not in CENTER_METHODS:
            raise ValueError(f"center_method must be one of {CENTER_METHODS}, got {self.center_method!r}")
        if self.stripe_removal not in STRIPE_METHODS:
            raise ValueError(f"stripe_removal must be one of {STRIPE_METHODS}, got {self.stripe_removal!r}")
        if isinstance(self.stripe_snr, bool) or not isinstance(self.stripe_snr, (int, float)) \
                or not self.stripe_snr > 0:
            raise ValueError(f"stripe_snr must be a positive number, got {self.stripe_snr!r}")
        if self.dead_pixels not in ("interpolate", "keep"):
            raise ValueError(f"dead_pixels must be 'interpolate' or 'keep', got {self.dead_pixels!r}")
        if isinstance(self.min_transmission, bool) or not isinstance(self.min_transmission, (int, float)) \
                or not 0 < self.min_transmission < 1:
            raise ValueError(f"min_transmission must be in (0, 1), got {self.min_transmission!r}")
        set_("flat_columns", self._parse_columns(self.flat_columns))

    @staticmethod
    def _parse_columns(value: Any) -> slice | tuple[int, ...] | None:
        if value is None or isinstance(value, slice):
            if isinstance(value, slice) and value.step is not None and value.step < 1:
                raise ValueError(f"flat_columns slice step must be positive, got {value!r}")
            return value
        if isinstance(value, str):
            parts = value.split(":")
            try:
                numbers = [int(p) if p.strip() else None for p in parts]
            except ValueError:
                numbers = []
            if len(parts) != 2 or not numbers:
                raise ValueError(f"flat_columns must look like 'start:stop' (e.g. '0:30' or '-30:'), got {value!r}")
            return slice(numbers[0], numbers[1])
        try:
            columns = tuple(int(c) for c in value)
        except (TypeError, ValueError):
            raise ValueError(f"flat_columns must be a slice, 'start:stop' or a list of column numbers, "
                             f"got {value!r}") from None
        if not columns:
            raise ValueError("flat_columns must name at least one column")
        return columns

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (slices as 'start:stop')."""
        out = asdict(self)
        fc = self.flat_columns
        if isinstance(fc, slice):
            out["flat_columns"] = f"{'' if fc.start is None else fc.start}:{'' if fc.stop is None else fc.stop}"
        elif fc is not None:
            out["flat_columns"] = list(fc)
        out["rows"] = None if self.rows is None else list(self.rows)
        return out


@dataclass
class Sinograms:
    """Preprocessed line-integral sinograms and what was done to get them.

    Attributes
    ----------
    data : numpy.ndarray
        ``(rows, angles, cols)`` float32 line integrals (dimensionless: the
        integral of the attenuation coefficient along each ray, so a
        reconstruction is in 1/mm when its geometry is in mm).
    angles : numpy.ndarray
        ``(angles,)`` float64 radians.
    pixel_size : float or None
        Detector pixel size in mm after binning, or ``None`` if unknown.
    center : float
        Rotation centre in the returned detector columns (binned, 0-based).
    report : dict
        JSON-friendly record of every step: ``rotation_center`` (file pixels,
        0-based), ``rotation_center_method``, clipped counts, dead pixels,
        stripe method, binning, rows, angles_step, timings.
    """

    data: np.ndarray
    angles: np.ndarray
    pixel_size: float | None
    center: float
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def n_cols(self) -> int:
        return int(self.data.shape[-1])

    def geometry(self) -> dict[str, Any]:
        """The ASTRA 2D projection geometry of each row (``parallel_vec`` if off-centre)."""
        return parallel_geometry(self.angles, self.n_cols, self.pixel_size, self.center)

    def centered(self, order: int = 3) -> np.ndarray:
        """``data`` shifted and padded so the axis sits at the detector centre (for plain 'parallel')."""
        return center_sinogram(self.data, self.center, order=order)


# ---------------------------------------------------------------------------
# Flat/dark correction, -log, dead pixels
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Stripe (ring) removal, after Vo et al. 2018
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Rotation centre
# ---------------------------------------------------------------------------

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


def find_center_pairs(sinogram: np.ndarray, angles: np.ndarray, *, pairs: np.ndarray | None = None,
                      search: tuple[float, float] | None = None) -> float:
    """Rotation centre from projections 180 degrees apart (360-degree scans).

    For parallel beams ``p(theta + 180, x) = p(theta, 2c - x)``: each projection
    matches its opposite one mirrored about the centre ``c``.  The summed
    cross-correlation of all pairs against the mirrored partners peaks at the
    shift ``s = 2c - (cols - 1)``; the peak is refined to sub-pixel precision on
    the band-limited (Fourier) interpolant of the correlation.

    Parameters
    ----------
    sinogram : numpy.ndarray
        ``(angles, cols)`` line integrals.
    angles : numpy.ndarray
        ``(angles,)`` radians.
    pairs : numpy.ndarray, optional
        ``(n, 2)`` index pairs; default :func:`find_center_pairs_indices`.
    search : (float, float), optional
        Range of centres (detector pixels) to consider; default the whole detector.

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
    first = np.fft.rfft(sino[pairs[:, 0]], n=length, axis=1)
    mirrored = np.fft.rfft(sino[pairs[:, 1], ::-1], n=length, axis=1)
    cross = (first * np.conj(mirrored)).sum(axis=0)              # correlation spectrum, summed over pairs
    correlation = np.fft.irfft(cross, n=length)
    shifts = np.fft.fftfreq(length, 1.0 / length)               # 0, 1, ..., -1
    lo, hi = search if search is not None else (0.0, n_cols - 1.0)
    allowed = (shifts >= 2 * lo - (n_cols - 1)) & (shifts <= 2 * hi - (n_cols - 1))
    best = shifts[allowed][np.argmax(correlation[allowed])]
    freqs = np.fft.rfftfreq(length)
    weights = np.full(freqs.size, 2.0)
    weights[0] = 1.0
    if length % 2 == 0:
        weights[-1] = 1.0

    def interpolated(s: np.ndarray) -> np.ndarray:
        phase = np.exp(2j * np.pi * np.outer(s, freqs))
        return (phase * (weights * cross)[None]).real.sum(axis=1)

    fine = best + np.linspace(-1.0, 1.0, 201)
    values = interpolated(fine)
    k = int(np.argmax(values))
    shift = _parabola_peak(fine, values, k)
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


# ---------------------------------------------------------------------------
# Geometry: centring shift and exact ASTRA geometry
# ---------------------------------------------------------------------------

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

def bin_sinograms(sinograms: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` detector pixels of ``(rows, angles, cols)`` data.

    Trailing rows/columns that do not fill a bin are dropped.  Returns float32
    ``(rows // factor, angles, cols // factor)``.
    """
    if factor == 1:
        return np.asarray(sinograms, dtype=np.float32)
    rows, n_angles, cols = sinograms.shape
    r, c = rows // factor, cols // factor
    trimmed = sinograms[:r * factor, :, :c * factor]
    binned = trimmed.reshape(r, factor, n_angles, c, factor).mean(axis=(1, 4), dtype=np.float64)
    return binned.astype(np.float32)


def binned_center(center: float, factor: int) -> float:
    """A file-pixel centre in binned pixels: bin ``j`` covers file pixels ``j K .. j K + K - 1``."""
    return (center - (factor - 1) / 2) / factor


# ---------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------

def _mean_field(frames: np.ndarray | None) -> np.ndarray | None:
    return None if frames is None else frames.mean(axis=0, dtype=np.float64).astype(np.float32)


def _check_scan(scan: Scan, options: PreprocessOptions) -> tuple[int, int]:
    """Validate options against the scan; return the file rows [start, stop) actually used."""
    n_rows, n_cols = scan.n_rows, scan.n_cols
    start, stop = (0, None) if options.rows is None else options.rows
    stop = n_rows if stop is None else stop
    if stop > n_rows:
        raise ValueError(f"rows {start}:{stop} outside {scan.path.name}'s {n_rows} detector rows")
    k = options.binning
    if stop - start < k:
        raise ValueError(f"binning {k} needs at least {k} detector rows; rows {start}:{stop} give "
                         f"{stop - start}" + (" (a single sinogram has one row)" if n_rows == 1 else ""))
    if n_cols < k:
        raise ValueError(f"binning {k} is larger than the detector's {n_cols} columns")
    if scan.values == "counts" and scan.n_flats == 0 and options.flat_columns is None:
        raise ValueError(f"{scan.path.name} holds raw counts but no flat fields: give "
                         f"flat_columns (open-beam columns, e.g. '0:30') or a flat field")
    if options.flat_columns is not None:
        if scan.values == "line_integrals":
            raise ValueError(f"{scan.path.name} already holds line integrals: flat_columns (open-beam "
                             f"normalisation) applies only to counts or transmission")
        _resolve_columns(options.flat_columns, n_cols)
    if options.center != "auto":
        _check_center(options.center, n_cols)
    if options.angles_step > scan.n_angles:
        raise ValueError(f"angles_step {options.angles_step} is larger than the scan's {scan.n_angles} angles")
    return start, start + k * ((stop - start) // k)


def preprocess(scan: Scan, options: PreprocessOptions | None = None, progress: Progress | None = None,
               out: np.ndarray | None = None) -> Sinograms:
    """Line-integral sinograms from a scan, processed row block by row block.

    Parameters
    ----------
    scan : Scan
        From :func:`astra_inr.io.open_scan`.
    options : PreprocessOptions, optional
        Defaults: all rows, no binning, all angles, automatic centre, no stripe removal.
    progress : callable(done, total), optional
        Called after each row block with the number of blocks done and the total.
    out : array-like, optional
        Where to write the result, ``(rows_out, angles_out, cols_out)`` float32,
        e.g. a ``numpy.memmap`` for outputs larger than memory.  Allocated in
        memory when omitted.

    Returns
    -------
    Sinograms
        ``data`` ``(rows_out, angles_out, cols_out)`` float32 line integrals,
        ``angles`` (radians), ``pixel_size`` (mm after binning), ``center``
        (binned columns) and ``report``.

    Raises
    ------
    ValueError
        Options that do not fit the scan (rows outside the detector, raw counts
        without any flat field, a centre outside the detector, automatic centre
        on less than 180 degrees, ...).
    """
    options = options or PreprocessOptions()
    t0 = time.perf_counter()
    first_row, last_row = _check_scan(scan, options)
    k = options.binning
    n_cols_out = scan.n_cols // k
    angle_sel = slice(0, scan.n_angles, options.angles_step)
    angles = scan.angles[angle_sel].copy()
    shape_out = ((last_row - first_row) // k, angles.size, n_cols_out)
    if out is None:
        out = np.empty(shape_out, dtype=np.float32)
    elif tuple(out.shape) != shape_out:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {shape_out} (rows, angles, cols)")

    block = k * math.ceil(options.block_rows / k)
    starts = list(range(first_row, last_row, block))
    n_centre = min(options.center_rows, last_row - first_row)
    centre_rows = sorted(set(np.linspace(first_row, last_row - 1, n_centre).round().astype(int).tolist()))
    centre_sinos: dict[int, np.ndarray] = {}
    counts = {"denominator_nonpositive_pixels": 0, "open_beam_nonpositive": 0,
              "transmission_nonpositive": 0, "transmission_clipped": 0, "nonfinite_line_integrals": 0}
    dead_columns: set[int] = set()
    dead_pixels = 0
    hopeless_rows = 0
    hopeless_lines = 0
    interpolated_samples = 0
    stripe_report: dict[str, Any] = {"method": options.stripe_removal}

    for number, r0 in enumerate(starts):
        r1 = min(r0 + block, last_row)
        rows = slice(r0, r1)
        values = scan.read_projections(rows, angle_sel)                 # (angles, nb, cols) float32
        dead = np.zeros(values.shape[1:], dtype=bool)
        if scan.values in ("counts", "transmission"):
            bad_den = None
            if scan.values == "counts":
                flat = _mean_field(scan.read_flats(rows))
                dark = _mean_field(scan.read_darks(rows))
                values, bad_den, c = flat_dark_correct(values, flat, dark)
                counts["denominator_nonpositive_pixels"] += c["denominator_nonpositive_pixels"]
            if options.flat_columns is not None:
                values, c = normalise_by_columns(values, options.flat_columns)
                counts["open_beam_nonpositive"] += c["open_beam_nonpositive"]
            dead = find_dead_pixels(values, bad_den, options.min_transmission)
            # Non-positive transmission means no counts above dark: a missing measurement
            # (e.g. a partly dead column), not an attenuation; interpolated below when asked.
            invalid = ~(values > 0) & ~dead[None] if options.dead_pixels == "interpolate" else None
            values, c = minus_log(values, options.min_transmission)
            for key, n in c.items():
                counts[key] += n
        else:
            invalid = ~np.isfinite(values)
            counts["nonfinite_line_integrals"] += int(invalid.sum())
            values[invalid] = 0.0
            if options.dead_pixels != "interpolate":
                invalid = None
        if invalid is not None and invalid.any():
            interpolated_samples += int(invalid.sum())
            hopeless_lines += interpolate_invalid_samples(values, invalid)
        del invalid
        if dead.any():
            dead_pixels += int(dead.sum())
            dead_columns.update(np.flatnonzero(dead.any(axis=0)).tolist())
            if options.dead_pixels == "interpolate":
                hopeless_rows += interpolate_dead_pixels(values, dead)
        # A view, not a copy: (nb, angles, cols) is written into `out` by the strided copy below.
        sinos = values.transpose(1, 0, 2)
        del values
        sinos, stripe_report = _merge_stripes(sinos, options, stripe_report)
        for r in centre_rows:
            if r0 <= r < r1:
                centre_sinos[r] = sinos[r - r0].copy()
        o0 = (r0 - first_row) // k
        binned = bin_sinograms(sinos, k)
        out[o0:o0 + binned.shape[0]] = binned
        del sinos, binned
        if progress is not None:
            progress(number + 1, len(starts))

    if options.center == "auto":
        stack = np.stack([centre_sinos[r] for r in centre_rows])
        center, method, per_row = find_center(stack, angles, options.center_method)
        per_row_report = {str(r): round(c, 3) for r, c in zip(centre_rows, per_row)}
    else:
        center, method, per_row_report = float(options.center), "manual", {}
    deg = np.rad2deg(angles)
    report: dict[str, Any] = {
        "scan": str(scan.path), "format": scan.format, "values": scan.values,
        "shape_in": list(scan.shape), "shape_out": list(shape_out),
        "rows": [first_row, last_row], "binning": k, "angles_step": options.angles_step,
        "n_angles": int(angles.size), "angle_range_deg": [float(deg.min()), float(deg.max())],
        "cols_dropped": scan.n_cols - n_cols_out * k,
        "block_rows": block, "blocks": len(starts),
        "flat_field": _flat_field_summary(scan, options),
        "flat_columns": options.to_dict()["flat_columns"],
        "n_flats": scan.n_flats, "n_darks": scan.n_darks,
        "min_transmission": options.min_transmission, **counts,
        "dead_pixels": dead_pixels, "dead_pixel_handling": options.dead_pixels,
        "dead_columns": sorted(dead_columns)[:1000], "dead_column_count": len(dead_columns),
        "dead_rows_uncorrectable": hopeless_rows,
        "interpolated_samples": interpolated_samples, "lines_uncorrectable": hopeless_lines,
        "stripe_removal": stripe_report,
        "rotation_center": round(center, 4), "rotation_center_method": method,
        "rotation_center_reference": CENTER_REFERENCES[method],
        "rotation_center_rows": per_row_report,
        "center": round(binned_center(center, k), 4),
        "pixel_size_mm": None if scan.pixel_size is None else scan.pixel_size * k,
        "options": options.to_dict(), "seconds": round(time.perf_counter() - t0, 3),
    }
    return Sinograms(data=out, angles=angles, pixel_size=report["pixel_size_mm"],
                     center=binned_center(center, k), report=report)


def _flat_field_summary(scan: Scan, options: PreprocessOptions) -> str:
    """What normalised the data, in words, for the report."""
    steps = []
    if scan.values == "counts" and scan.n_flats:
        steps.append("flats and darks" if scan.n_darks else "flats (no darks)")
    if options.flat_columns is not None:
        steps.append("open-beam columns")
    return ", then ".join(steps) if steps else "none"


def _merge_stripes(sinos: np.ndarray, options: PreprocessOptions,
                   report: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Run stripe removal on a block and add its counts to the running report."""
    if options.stripe_removal == "none":
        return sinos, report
    corrected, block_report = remove_stripes(sinos, options.stripe_removal, size=options.stripe_size,
                                             large_size=options.stripe_large_size, snr=options.stripe_snr)
    merged = dict(block_report)
    for key in ("dead_stripe_columns", "large_stripe_columns", "large_stripe_rows_skipped"):
        if key in block_report:
            merged[key] = report.get(key, 0) + block_report[key]
    return corrected, merged
