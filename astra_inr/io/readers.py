"""``open_scan``: one entry point that recognises a scan's format from its content.

Detection looks at what the path *is*, not at its extension:

* a folder                                   -> TIFF folder (:func:`open_tiff_folder`)
* an HDF5 file with ``/exchange/data``       -> DXchange (:func:`open_dxchange`)
* an HDF5 file with an NXtomo entry          -> NXtomo (:func:`open_nxtomo`)
* a NumPy ``.npy`` file or a single-image TIFF -> one sinogram (:func:`open_sinogram`)

Anything else raises :class:`ScanFormatError` naming the file and what was
missing; a path that does not exist raises :class:`FileNotFoundError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py

from .hdf5 import DXchangeScan, NXtomoScan, find_nxtomo_entries, open_dxchange, open_h5, open_nxtomo
from .scan import Scan, ScanFormatError
from .sinogram import NPY_MAGIC, SinogramScan, open_sinogram
from .tiff_folder import TiffFolderScan, open_tiff_folder

__all__ = ["FORMATS", "detect_format", "open_scan",
           "DXchangeScan", "NXtomoScan", "TiffFolderScan", "SinogramScan",
           "open_dxchange", "open_nxtomo", "open_tiff_folder", "open_sinogram"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")   # classic and BigTIFF, both byte orders

_OPENERS = {"dxchange": open_dxchange, "nxtomo": open_nxtomo,
            "tiff_folder": open_tiff_folder, "sinogram": open_sinogram}
#: Formats :func:`open_scan` knows, and the hints each accepts beyond the common ones.
FORMATS: dict[str, tuple[str, ...]] = {
    "dxchange": (),
    "nxtomo": ("entry",),
    "tiff_folder": ("proj_pattern", "flat_pattern", "dark_pattern"),
    "sinogram": ("flat", "dark"),
}
_COMMON_HINTS = ("angles", "values", "pixel_size")


def detect_format(path: str | Path) -> str:
    """The format of a scan path: ``'dxchange'``, ``'nxtomo'``, ``'tiff_folder'`` or ``'sinogram'``.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ScanFormatError
        The content is none of the known formats (the message says what was found).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return "tiff_folder"
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise ScanFormatError(f"{path.name}: empty file")
    if head == HDF5_MAGIC or h5py.is_hdf5(path):
        with open_h5(path) as f:
            if "exchange/data" in f:
                return "dxchange"
            if find_nxtomo_entries(f):
                return "nxtomo"
            groups = sorted(f.keys())
        raise ScanFormatError(f"{path.name}: no /exchange/data and no NXtomo entry "
                              f"(top-level names: {', '.join(groups) or 'none'})")
    if head.startswith(NPY_MAGIC) or head[:4] in TIFF_MAGICS:
        return "sinogram"
    raise ScanFormatError(f"{path.name}: not an HDF5 (DXchange or NXtomo), TIFF or NumPy .npy file, "
                          f"nor a folder of TIFFs")


def open_scan(path: str | Path, *, format: str | None = None, **hints: Any) -> Scan:
    """Open a scan of any supported format, read lazily by detector rows.

    Parameters
    ----------
    path : str or Path
        A DXchange or NXtomo HDF5 file, a folder of TIFFs, or one sinogram
        (2D TIFF or ``.npy``).
    format : str, optional
        Skip detection: one of :data:`FORMATS`.
    **hints
        ``angles`` (``'start:stop:count'`` in degrees with stop excluded, e.g.
        ``'0:180:181'``; ``':endpoint'`` appended includes stop; or a list of
        degrees), ``values`` (``'counts'``, ``'transmission'`` or
        ``'line_integrals'``), ``pixel_size`` (mm), and per format: ``entry``
        (NXtomo), ``proj_pattern``/``flat_pattern``/``dark_pattern`` (TIFF folder,
        defaults ``'*proj*'``, ``'*flat*'``, ``'*dark*'``), ``flat``/``dark``
        (single sinogram: file or array, ``(cols,)`` or ``(frames, cols)``).

    Returns
    -------
    Scan
        Angles in radians; ``read_projections(rows)`` gives
        ``(angles, rows, cols)`` float32.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ScanFormatError
        Unrecognised or inconsistent content (a ``ValueError``).
    ValueError
        A hint that the format does not take, or a bad hint value.
    """
    path = Path(path)
    if format is None:
        format = detect_format(path)
    elif format not in _OPENERS:
        raise ValueError(f"format must be one of {sorted(_OPENERS)}, got {format!r}")
    elif not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    allowed = _COMMON_HINTS + FORMATS[format]
    unknown = sorted(set(hints) - set(allowed))
    if unknown:
        raise ValueError(f"{path.name}: hint(s) {unknown} do not apply to a {format} scan "
                         f"(accepted: {', '.join(allowed)})")
    if hints.get("values") is None:
        hints.pop("values", None)   # each opener has its own default
    return _OPENERS[format](path, **hints)
