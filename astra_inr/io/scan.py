"""The :class:`Scan` object every reader returns, and helpers the readers share.

A :class:`Scan` describes one parallel-beam tomography scan on disk and reads
it lazily: opening a scan reads only metadata (shapes, angles, pixel size);
``read_projections(rows)`` reads just the requested detector rows, so a file
larger than memory can be processed row block by row block.  A scan holds no
open file handles between calls (HDF5 files are opened per read), so it can be
pickled and sent to Dask or multiprocessing workers.

Array conventions (as the files store them):

* projections ``(angles, rows, cols)``, flats and darks ``(frames, rows, cols)``;
  a single sinogram is a scan with one detector row;
* angles in radians, float64, in the order of the projections;
* pixel size in millimetres (``None`` when the file does not say, with units).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "ScanFormatError",
    "Scan",
    "VALUE_KINDS",
    "parse_angles",
    "length_to_mm",
    "progressions",
]

#: What the numbers in a scan are: raw detector counts (need flat fields),
#: transmission (flat/dark corrected, in (0, 1]) or line integrals (-log done).
VALUE_KINDS = ("counts", "transmission", "line_integrals")


class ScanFormatError(ValueError):
    """A file or folder is not a readable scan; the message names it and what was wrong."""


# ---------------------------------------------------------------------------
# Angles and units
# ---------------------------------------------------------------------------

_ANGLE_SPEC = re.compile(r"^\s*([^:]+):([^:]+):([^:]+)(?::(endpoint|inclusive))?\s*$")


def parse_angles(spec: str | Sequence[float] | np.ndarray, *, what: str = "angles") -> np.ndarray:
    """Projection angles in radians from a spec string or a list of degrees.

    Parameters
    ----------
    spec : str or sequence of float
        ``"start:stop:count"`` in degrees with ``stop`` **excluded**, i.e.
        ``numpy.linspace(start, stop, count, endpoint=False)``: ``"0:180:181"``
        is 181 angles 0, 0.994, ..., 179.006 and ``"0:360:720"`` is every half
        degree of a full turn.  Append ``":endpoint"`` to include ``stop``
        (``"0:360:459:endpoint"`` is ``linspace(0, 360, 459)``, a scan whose last
        projection repeats the first).  Or an explicit sequence of angles in
        **degrees**.
    what : str
        Name used in error messages.

    Returns
    -------
    numpy.ndarray
        ``(count,)`` float64, radians.
    """
    if isinstance(spec, str):
        match = _ANGLE_SPEC.match(spec)
        if not match:
            raise ValueError(f"{what}: expected 'start:stop:count' in degrees (e.g. '0:180:181', "
                             f"optionally ':endpoint'), got {spec!r}")
        try:
            start, stop = float(match.group(1)), float(match.group(2))
            count = int(match.group(3))
        except ValueError:
            raise ValueError(f"{what}: start and stop must be numbers and count an integer in "
                             f"'start:stop:count', got {spec!r}") from None
        if count < 1 or not (math.isfinite(start) and math.isfinite(stop)) or start == stop:
            raise ValueError(f"{what}: need count >= 1 and finite start != stop in "
                             f"'start:stop:count', got {spec!r}")
        degrees = np.linspace(start, stop, count, endpoint=match.group(4) is not None)
    else:
        degrees = np.asarray(spec, dtype=np.float64)
        if degrees.ndim != 1 or degrees.size == 0:
            raise ValueError(f"{what}: expected a 1D list of angles in degrees, got shape {degrees.shape}")
    if not np.all(np.isfinite(degrees)):
        raise ValueError(f"{what}: angles must be finite numbers (degrees)")
    return np.deg2rad(degrees)


def angles_to_radians(values: np.ndarray, units: str | None, *, where: str) -> tuple[np.ndarray, str]:
    """Convert angles read from a file to radians, honouring a ``units`` attribute.

    Files without a units attribute are taken as degrees (what DXchange and
    NXtomo writers use in practice); the returned label says which was used.
    """
    label = (units or "").strip().lower()
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if label in ("", "deg", "degree", "degrees"):
        return np.deg2rad(values), "degrees" if label else "degrees (no units attribute)"
    if label in ("rad", "radian", "radians"):
        return values, "radians"
    raise ScanFormatError(f"{where}: angle units {units!r} not understood (expected degrees or radians)")


_MM_PER_UNIT = {
    "m": 1e3, "meter": 1e3, "metre": 1e3, "meters": 1e3, "metres": 1e3,
    "cm": 10.0, "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0, "millimeters": 1.0,
    "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "micron": 1e-3, "microns": 1e-3, "micrometer": 1e-3,
    "micrometre": 1e-3, "micrometers": 1e-3, "nm": 1e-6, "nanometer": 1e-6,
}


def length_to_mm(value: float, units: str | None) -> float | None:
    """A length in millimetres, or ``None`` when ``units`` is missing or unknown.

    A pixel size without units is not guessed: a wrong guess would silently
    scale every reconstructed attenuation value by 1000.
    """
    factor = _MM_PER_UNIT.get((units or "").strip().lower())
    if factor is None or not math.isfinite(value) or value <= 0:
        return None
    return float(value) * factor


def as_text(value: Any) -> str:
    """HDF5 strings come back as bytes, numpy bytes or 0-d arrays: make them ``str``."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", "replace")
    return str(value)


def json_friendly(value: Any) -> Any:
    """A JSON-serialisable version of a scalar or small array (metadata values)."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.size > 64:
            return f"<array {value.shape} {value.dtype}>"
        return [json_friendly(v) for v in value.tolist()] if value.ndim else json_friendly(value[()])
    if isinstance(value, (list, tuple)):
        return [json_friendly(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# ---------------------------------------------------------------------------
# Row and angle selections
# ---------------------------------------------------------------------------

def normalise_rows(rows: slice | tuple[int, int] | None, n_rows: int, *, where: str) -> slice:
    """Turn a user row selection into ``slice(start, stop, step)`` with bounds checked.

    Python slicing silently clamps out-of-range bounds; a scan reader must not
    (asking for rows 500:600 of a 200-row detector is a mistake worth an error).
    """
    if rows is None:
        return slice(0, n_rows, 1)
    if isinstance(rows, tuple) and len(rows) == 2:
        rows = slice(rows[0], rows[1])
    if not isinstance(rows, slice):
        raise TypeError(f"{where}: rows must be a slice or a (start, stop) pair, got {rows!r}")
    step = 1 if rows.step is None else int(rows.step)
    if step < 1:
        raise ValueError(f"{where}: row step must be a positive integer, got {rows.step!r}")
    start = 0 if rows.start is None else int(rows.start)
    stop = n_rows if rows.stop is None else int(rows.stop)
    if start < 0:
        start += n_rows
    if stop < 0:
        stop += n_rows
    if not 0 <= start < stop <= n_rows:
        raise ValueError(f"{where}: rows {rows.start}:{rows.stop} outside the detector's "
                         f"{n_rows} rows (need 0 <= start < stop <= {n_rows})")
    return slice(start, stop, step)


def normalise_angle_selection(angles: slice | None, n_angles: int, *, where: str) -> slice:
    """A projection-index slice with a positive step, clamped like Python slicing."""
    if angles is None:
        return slice(0, n_angles, 1)
    if not isinstance(angles, slice):
        raise TypeError(f"{where}: angles must be a slice of projection indices, got {angles!r}")
    start, stop, step = angles.indices(n_angles)
    if step < 1:
        raise ValueError(f"{where}: angle step must be a positive integer, got {angles.step!r}")
    if len(range(start, stop, step)) == 0:
        raise ValueError(f"{where}: angle selection {angles} selects no projections of {n_angles}")
    return slice(start, stop, step)


def progressions(indices: Sequence[int]) -> list[tuple[slice, slice]]:
    """Split increasing indices into arithmetic runs, as ``(file_slice, position_slice)`` pairs.

    ``file_slice`` selects the run in the file, ``position_slice`` where it goes in
    the output.  Reading a few strided slices is much faster in h5py than fancy
    indexing with a long index list (NXtomo projections interleaved with flats).
    """
    out: list[tuple[slice, slice]] = []
    i, n = 0, len(indices)
    while i < n:
        j = i + 1
        step = int(indices[j] - indices[i]) if j < n else 1
        if step < 1:
            raise ValueError(f"indices must increase, got {indices[i]} then {indices[j]}")
        while j < n and indices[j] - indices[j - 1] == step:
            j += 1
        out.append((slice(int(indices[i]), int(indices[j - 1]) + 1, step), slice(i, j)))
        i = j
    return out


# ---------------------------------------------------------------------------
# The Scan base class
# ---------------------------------------------------------------------------

class Scan:
    """One tomography scan on disk, read lazily by detector rows.

    Subclasses (one per file format) implement :meth:`_read`.  All public
    attributes are plain Python/numpy values, so a scan pickles cheaply.

    Attributes
    ----------
    path : pathlib.Path
        The file or folder.
    format : str
        ``'dxchange'``, ``'nxtomo'``, ``'tiff_folder'`` or ``'sinogram'``.
    angles : numpy.ndarray
        ``(n_angles,)`` float64, radians, one per projection, in file order.
    shape : tuple of int
        ``(n_angles, rows, cols)`` of the projections.
    pixel_size : float or None
        Detector pixel size in mm (horizontal), ``None`` if unknown.
    values : str
        One of :data:`VALUE_KINDS`.
    metadata : dict
        JSON-friendly extras: dtype, frame counts, where angles and pixel size
        came from, file attributes.
    n_flats, n_darks : int
        Number of flat-field and dark-field frames (0 when absent).
    """

    format: str = "scan"

    def __init__(self, path: Path, *, angles: np.ndarray, shape: tuple[int, int, int],
                 pixel_size: float | None, values: str, metadata: dict[str, Any],
                 n_flats: int, n_darks: int) -> None:
        if values not in VALUE_KINDS:
            raise ValueError(f"{path.name}: values must be one of {VALUE_KINDS}, got {values!r}")
        if angles.shape != (shape[0],):
            raise ScanFormatError(f"{path.name}: {angles.size} angles but {shape[0]} projections")
        self.path = Path(path)
        self.angles = np.ascontiguousarray(angles, dtype=np.float64)
        self.angles.setflags(write=False)
        self.shape = tuple(int(s) for s in shape)
        self.pixel_size = None if pixel_size is None else float(pixel_size)
        self.values = values
        self.metadata = dict(metadata)
        self.n_flats = int(n_flats)
        self.n_darks = int(n_darks)

    # -- public reading API -------------------------------------------------
    @property
    def n_angles(self) -> int:
        return self.shape[0]

    @property
    def n_rows(self) -> int:
        return self.shape[1]

    @property
    def n_cols(self) -> int:
        return self.shape[2]

    def read_projections(self, rows: slice | tuple[int, int] | None = None,
                         angles: slice | None = None) -> np.ndarray:
        """Projections for some detector rows (and optionally some angles).

        Parameters
        ----------
        rows : slice or (start, stop), optional
            Detector rows of the file, 0-based; all rows when omitted.
        angles : slice, optional
            Projection indices (e.g. ``slice(None, None, 4)`` for every 4th).

        Returns
        -------
        numpy.ndarray
            ``(n_selected_angles, n_selected_rows, cols)`` float32, the file's values.
        """
        row_sel = normalise_rows(rows, self.n_rows, where=self.path.name)
        ang_sel = normalise_angle_selection(angles, self.n_angles, where=self.path.name)
        return self._read("projections", ang_sel, row_sel)

    def read_flats(self, rows: slice | tuple[int, int] | None = None) -> np.ndarray | None:
        """Flat fields ``(n_flats, n_selected_rows, cols)`` float32, or ``None`` if the scan has none."""
        if self.n_flats == 0:
            return None
        row_sel = normalise_rows(rows, self.n_rows, where=self.path.name)
        return self._read("flats", slice(0, self.n_flats, 1), row_sel)

    def read_darks(self, rows: slice | tuple[int, int] | None = None) -> np.ndarray | None:
        """Dark fields ``(n_darks, n_selected_rows, cols)`` float32, or ``None`` if the scan has none."""
        if self.n_darks == 0:
            return None
        row_sel = normalise_rows(rows, self.n_rows, where=self.path.name)
        return self._read("darks", slice(0, self.n_darks, 1), row_sel)

    def _read(self, kind: str, frames: slice, rows: slice) -> np.ndarray:
        raise NotImplementedError  # each format's subclass reads its own layout

    # -- housekeeping ----------------------------------------------------------
    def close(self) -> None:
        """Release resources.  Readers keep no file open between reads, so this is a no-op
        kept for symmetry with file objects (``with open_scan(p) as scan: ...``)."""

    def __enter__(self) -> "Scan":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description: path, format, shape, angle range, pixel size, values."""
        deg = np.rad2deg(self.angles)
        return {
            "path": str(self.path), "format": self.format, "shape": list(self.shape),
            "angles_deg": [float(deg.min()), float(deg.max())], "n_flats": self.n_flats,
            "n_darks": self.n_darks, "pixel_size_mm": self.pixel_size, "values": self.values,
            "metadata": self.metadata,
        }

    def __repr__(self) -> str:
        deg = np.rad2deg(self.angles)
        px = "unknown" if self.pixel_size is None else f"{self.pixel_size:g} mm"
        return (f"<{type(self).__name__} {self.path.name!r}: {self.shape[0]} angles "
                f"({deg.min():g}..{deg.max():g} deg) x {self.shape[1]} rows x {self.shape[2]} cols, "
                f"{self.n_flats} flats, {self.n_darks} darks, {self.values}, pixel {px}>")
