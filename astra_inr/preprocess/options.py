"""Options and result of :func:`~astra_inr.preprocess.preprocess`, with their small validators."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from .center import CENTER_METHODS
from .geometry import center_sinogram, parallel_geometry
from .stripes import STRIPE_METHODS

__all__ = ["PreprocessOptions", "Sinograms"]


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
        Average ``binning x binning`` detector pixels (rows and columns); a
        single-row scan (one sinogram) is binned along the detector only.
        Rows or columns left over at the end are dropped (and reported).
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
