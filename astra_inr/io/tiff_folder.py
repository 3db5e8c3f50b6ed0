"""A folder of single-image TIFF files: projections, flats and darks told apart by file name.

Typical lab-CT and beamline export::

    scan/proj_0000.tif ... proj_1799.tif
    scan/flat_0000.tif ... flat_0019.tif      (optional)
    scan/dark_0000.tif ... dark_0009.tif      (optional)
    scan/angles.txt                            (degrees, one per line; optional if angles are given)

Files are sorted *naturally* by the numbers in their names (``proj_2`` before
``proj_10``).  Reading a row block memory-maps each uncompressed TIFF and copies
only those rows; compressed or tiled files are decoded whole and sliced.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tifffile

from .scan import VALUE_KINDS, Scan, ScanFormatError, parse_angles

__all__ = ["TiffFolderScan", "open_tiff_folder", "natural_key", "read_angles_txt"]

TIFF_SUFFIXES = (".tif", ".tiff")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers numerically: ``p2 < p10``."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if p.isdigit() else p.lower() for p in parts)


def _matching(folder: Path, pattern: str) -> list[Path]:
    files = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def read_angles_txt(path: Path) -> np.ndarray:
    """Angles in radians from a text file of degrees, one per line (blank lines and ``#`` comments skipped)."""
    values = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            values.append(float(text))
        except ValueError:
            raise ScanFormatError(f"{path.parent.name}/{path.name} line {number}: {line!r} is not "
                                  f"an angle in degrees") from None
    if not values:
        raise ScanFormatError(f"{path.parent.name}/{path.name}: no angles in the file")
    return parse_angles(values, what=str(path))


def _image_shape(path: Path) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) of a TIFF's single image, with errors that name the file."""
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) != 1:
                raise ScanFormatError(f"{path.name}: has {len(tif.pages)} pages; multi-page TIFF stacks "
                                      f"are not supported (one image per file)")
            page = tif.pages[0]
            return tuple(int(s) for s in page.shape), str(page.dtype)
    except ScanFormatError:
        raise
    except Exception as err:  # tifffile raises several types for damaged files
        raise ScanFormatError(f"{path.name}: not a readable TIFF image: {err}") from None


class TiffFolderScan(Scan):
    """A scan stored as one TIFF image per frame."""

    format = "tiff_folder"

    def __init__(self, path: Path, *, files: dict[str, list[Path]], angles: np.ndarray,
                 shape: tuple[int, int, int], pixel_size: float | None, values: str,
                 metadata: dict[str, Any]) -> None:
        super().__init__(path, angles=angles, shape=shape, pixel_size=pixel_size, values=values,
                         metadata=metadata, n_flats=len(files["flats"]), n_darks=len(files["darks"]))
        self._files = files

    def _read(self, kind: str, frames: slice, rows: slice) -> np.ndarray:
        files = self._files[kind][frames]
        n_rows = len(range(rows.start, rows.stop, rows.step))
        out = np.empty((len(files), n_rows, self.n_cols), dtype=np.float32)
        for i, file in enumerate(files):
            out[i] = self._read_rows(file, rows)
        return out

    def _read_rows(self, file: Path, rows: slice) -> np.ndarray:
        try:
            image = tifffile.memmap(file, mode="r")   # uncompressed, contiguous: touch only the rows
        except (ValueError, OSError):
            try:
                image = tifffile.imread(file)           # compressed/tiled: decode, then slice
            except Exception as err:
                raise ScanFormatError(f"{self.path.name}/{file.name}: not a readable TIFF image: {err}") from None
        if image.shape != self.shape[1:]:
            raise ScanFormatError(f"{self.path.name}/{file.name}: image is {image.shape[0]}x{image.shape[1]} "
                                  f"but the projections are {self.shape[1]}x{self.shape[2]} (rows x cols)")
        block = np.asarray(image[rows], dtype=np.float32)
        del image   # drop the memory map now: thousands of files would otherwise stay mapped
        return block


def open_tiff_folder(path: str | Path, *, angles: str | Sequence[float] | None = None,
                     values: str = "counts", pixel_size: float | None = None,
                     proj_pattern: str = "*proj*", flat_pattern: str = "*flat*",
                     dark_pattern: str = "*dark*") -> TiffFolderScan:
    """Open a folder of TIFF images as a scan.

    Parameters
    ----------
    path : str or Path
        The folder.
    angles : str or sequence of float, optional
        ``'start:stop:count'`` (degrees, stop excluded; see
        :func:`~astra_inr.io.scan.parse_angles`) or a list of degrees.  Without
        it the folder must hold ``angles.txt`` (degrees, one per line).
    values : {'counts', 'transmission', 'line_integrals'}
        What the projection images hold.
    pixel_size : float, optional
        Detector pixel size in mm (TIFF files do not reliably record it).
    proj_pattern, flat_pattern, dark_pattern : str
        Glob patterns (``fnmatch`` syntax) for the three kinds of frame; only
        ``.tif``/``.tiff`` files count.  Flats and darks are optional.

    Raises
    ------
    ScanFormatError
        No projection files, a file matching two patterns, images of different
        sizes, multi-page files, or an angle count that differs from the
        number of projections.
    """
    folder = Path(path)
    if values not in VALUE_KINDS:
        raise ValueError(f"folder {folder.name}: values must be one of {VALUE_KINDS}, got {values!r}")
    if not folder.is_dir():
        raise ScanFormatError(f"{folder}: not a folder")
    files = {"projections": _matching(folder, proj_pattern), "flats": _matching(folder, flat_pattern),
             "darks": _matching(folder, dark_pattern)}
    if not files["projections"]:
        raise ScanFormatError(f"folder {folder}: no TIFF files match {proj_pattern!r}")
    patterns = {"projections": proj_pattern, "flats": flat_pattern, "darks": dark_pattern}
    kinds = list(files)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            both = set(files[a]) & set(files[b])
            if both:
                name = sorted(both, key=lambda p: natural_key(p.name))[0].name
                raise ScanFormatError(f"folder {folder.name}: {name} matches both {patterns[a]!r} ({a}) "
                                      f"and {patterns[b]!r} ({b}); give patterns that tell them apart")

    shape2d, dtype = _image_shape(files["projections"][0])
    if len(shape2d) != 2:
        raise ScanFormatError(f"folder {folder.name}: {files['projections'][0].name} has shape {shape2d}; "
                              f"expected one 2D grey image (rows, cols) per file")
    for kind in ("flats", "darks"):
        if files[kind]:
            other, _ = _image_shape(files[kind][0])
            if other != shape2d:
                raise ScanFormatError(f"folder {folder.name}: {kind} image {files[kind][0].name} is "
                                      f"{'x'.join(map(str, other))} but the projections are "
                                      f"{shape2d[0]}x{shape2d[1]} (rows x cols)")
    n_proj = len(files["projections"])
    meta: dict[str, Any] = {"dtype": dtype, "n_flats": len(files["flats"]), "n_darks": len(files["darks"]),
                            "patterns": dict(patterns),
                            "first_projection": files["projections"][0].name,
                            "last_projection": files["projections"][-1].name}
    if angles is not None:
        theta = parse_angles(angles)
        meta["angles_source"] = "given"
        source = "the given angles"
    elif (folder / "angles.txt").is_file():
        theta = read_angles_txt(folder / "angles.txt")
        meta["angles_source"] = "angles.txt"
        source = "angles.txt"
    else:
        raise ScanFormatError(f"folder {folder.name}: no angles.txt; give the angles, "
                              f"e.g. angles='0:180:{n_proj}' (degrees, stop excluded)")
    if theta.size != n_proj:
        raise ScanFormatError(f"folder {folder.name}: {source} has {theta.size} angles but "
                              f"{n_proj} projections match {proj_pattern!r}")
    if pixel_size is not None:
        meta["pixel_size_source"] = "given"
    return TiffFolderScan(folder, files=files, angles=theta, shape=(n_proj, shape2d[0], shape2d[1]),
                          pixel_size=pixel_size, values=values, metadata=meta)
