"""Beamline scan readers: DXchange, NXtomo, TIFF folders and single sinograms.

Every reader returns a :class:`Scan` that reads detector rows lazily::

    from astra_inr.io import open_scan
    scan = open_scan("tooth.h5")                      # format from the content
    block = scan.read_projections(rows=slice(0, 16))  # (angles, 16, cols) float32
    flats = scan.read_flats(rows=slice(0, 16))        # (frames, 16, cols) or None

See :mod:`astra_inr.preprocess` for flat/dark correction, -log, stripe removal,
rotation-centre finding and binning on top of a scan.
"""

from .hdf5 import DXchangeScan, NXtomoScan, open_dxchange, open_nxtomo
from .readers import FORMATS, detect_format, open_scan
from .scan import VALUE_KINDS, Scan, ScanFormatError, parse_angles
from .sinogram import SinogramScan, open_sinogram
from .tiff_folder import TiffFolderScan, open_tiff_folder

__all__ = [
    "FORMATS",
    "VALUE_KINDS",
    "DXchangeScan",
    "NXtomoScan",
    "Scan",
    "ScanFormatError",
    "SinogramScan",
    "TiffFolderScan",
    "detect_format",
    "open_dxchange",
    "open_nxtomo",
    "open_scan",
    "open_sinogram",
    "open_tiff_folder",
    "parse_angles",
]
