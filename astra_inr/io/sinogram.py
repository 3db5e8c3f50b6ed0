"""A single sinogram in a 2D TIFF or ``.npy`` file: one detector row, geometry from the caller.

The array is ``(angles, detector cols)``.  Its scan has ``rows == 1``.  Because a
lone sinogram carries no geometry, the angles are required, and what the values
are must be known: integer data are taken as raw counts, floating-point data need
an explicit ``values=`` (counts, transmission or line integrals) since any guess
would change the result.

Raw counts need a flat field: either a flat file/array given here (``flat=``,
shape ``(cols,)`` or ``(frames, cols)``), or the open-beam columns at the edge
of the sinogram, named later in preprocessing (``PreprocessOptions.flat_columns``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tifffile

from .scan import VALUE_KINDS, Scan, ScanFormatError, parse_angles

__all__ = ["SinogramScan", "open_sinogram", "load_2d_array"]

NPY_MAGIC = b"\x93NUMPY"


def load_2d_array(path: Path, *, what: str, mmap: bool = False) -> np.ndarray:
    """Read a 2D array from ``.npy`` (by content) or a single-image TIFF."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    try:
        if head.startswith(NPY_MAGIC):
            array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        else:
            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) != 1:
                    raise ScanFormatError(f"{path.name}: {what} TIFF has {len(tif.pages)} pages; "
                                          f"expected one 2D image")
                array = tif.pages[0].asarray()
    except ScanFormatError:
        raise
    except Exception as err:  # numpy and tifffile raise several types for damaged files
        raise ScanFormatError(f"{path.name}: cannot read the {what} (truncated or corrupt?): {err}") from None
    return array


def _frames_1d(value: str | Path | np.ndarray | Sequence[float], n_cols: int, *, what: str,
               sino_name: str) -> np.ndarray:
    """A flat or dark given as a file or array, as ``(frames, 1, cols)`` float32."""
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{sino_name}: {what} file {path} does not exist")
        array = np.asarray(load_2d_array(path, what=what))
    else:
        array = np.asarray(value)
    given_shape = array.shape
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != n_cols:
        raise ScanFormatError(f"{sino_name}: {what} has shape {given_shape}; expected ({n_cols},) or "
                              f"(frames, {n_cols}) to match the sinogram's {n_cols} detector columns")
    return np.ascontiguousarray(array[:, None, :], dtype=np.float32)


class SinogramScan(Scan):
    """One sinogram as a scan with one detector row."""

    format = "sinogram"

    def __init__(self, path: Path, *, angles: np.ndarray, shape: tuple[int, int, int],
                 pixel_size: float | None, values: str, metadata: dict[str, Any],
                 flats: np.ndarray | None, darks: np.ndarray | None) -> None:
        super().__init__(path, angles=angles, shape=shape, pixel_size=pixel_size, values=values,
                         metadata=metadata, n_flats=0 if flats is None else flats.shape[0],
                         n_darks=0 if darks is None else darks.shape[0])
        self._fields = {"flats": flats, "darks": darks}

    def _read(self, kind: str, frames: slice, rows: slice) -> np.ndarray:
        if kind == "projections":
            sino = load_2d_array(self.path, what="sinogram", mmap=True)
            if sino.shape != (self.shape[0], self.shape[2]):
                raise ScanFormatError(f"{self.path.name}: the sinogram changed on disk: now {sino.shape}, "
                                      f"opened as {(self.shape[0], self.shape[2])}")
            # np.array copies: a float32 .npy would otherwise come back as a read-only memory map.
            return np.array(sino[frames][:, None, :][:, rows, :], dtype=np.float32)
        field = self._fields[kind]
        assert field is not None  # read_flats/read_darks return None before calling _read
        return field[frames][:, rows, :].copy()


def open_sinogram(path: str | Path, *, angles: str | Sequence[float] | None = None,
                  values: str | None = None, pixel_size: float | None = None,
                  flat: str | Path | np.ndarray | None = None,
                  dark: str | Path | np.ndarray | None = None) -> SinogramScan:
    """Open one sinogram ``(angles, cols)`` from a 2D TIFF or ``.npy`` file.

    Parameters
    ----------
    path : str or Path
        The file.
    angles : str or sequence of float
        Required: ``'start:stop:count'`` in degrees, stop excluded, e.g.
        ``'0:180:181'``; ``'0:360:459:endpoint'`` for ``linspace(0, 360, 459)``;
        or a list of degrees.
    values : {'counts', 'transmission', 'line_integrals'}, optional
        What the numbers are.  Default: ``'counts'`` for integer data; required
        for floating-point data.
    pixel_size : float, optional
        Detector pixel size in mm.
    flat, dark : path or array, optional
        Flat/dark field, ``(cols,)`` or ``(frames, cols)``, for raw counts.

    Raises
    ------
    ValueError
        No angles, or float data without ``values``.
    ScanFormatError
        Not a 2D array, or angles/flat/dark that do not fit its shape.
    """
    path = Path(path)
    if angles is None:
        raise ValueError(f"{path.name}: a single sinogram carries no geometry; give the angles, e.g. "
                         f"angles='0:180:N' (degrees, stop excluded) or '0:360:N:endpoint'")
    sino = load_2d_array(path, what="sinogram", mmap=True)
    if sino.ndim != 2 or min(sino.shape) == 0:
        raise ScanFormatError(f"{path.name}: has shape {sino.shape}; a sinogram is a 2D array "
                              f"(angles, detector cols)")
    theta = parse_angles(angles)
    n_angles, n_cols = (int(s) for s in sino.shape)
    if theta.size != n_angles:
        raise ScanFormatError(f"{path.name}: the angles give {theta.size} angles but the sinogram has "
                              f"{n_angles} rows (a sinogram is (angles, detector cols), shape {sino.shape})")
    if values is None:
        if not np.issubdtype(sino.dtype, np.integer):
            raise ValueError(f"{path.name}: holds {sino.dtype} values; say what they are with "
                             f"values='counts', 'transmission' or 'line_integrals'")
        values = "counts"
    if values not in VALUE_KINDS:
        raise ValueError(f"{path.name}: values must be one of {VALUE_KINDS}, got {values!r}")
    flats = None if flat is None else _frames_1d(flat, n_cols, what="flat", sino_name=path.name)
    darks = None if dark is None else _frames_1d(dark, n_cols, what="dark", sino_name=path.name)
    meta: dict[str, Any] = {"dtype": str(sino.dtype), "angles_source": "given",
                            "n_flats": 0 if flats is None else int(flats.shape[0]),
                            "n_darks": 0 if darks is None else int(darks.shape[0])}
    if pixel_size is not None:
        meta["pixel_size_source"] = "given"
    del sino  # close the memory map: the scan reopens the file for each read
    return SinogramScan(path, angles=theta, shape=(n_angles, 1, n_cols), pixel_size=pixel_size,
                        values=values, metadata=meta, flats=flats, darks=darks)
