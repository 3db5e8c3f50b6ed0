"""Writers: TIFF stacks, JSON reports, and result folders that appear only when complete.

A result folder is written under a temporary name beside its final place and
renamed at the end (a rename within one file system is atomic), so a crash,
a full disk or a killed job never leaves a folder that looks finished.  An
existing result is replaced only when asked (``overwrite=True``), and then
only after the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import tifffile

__all__ = ["result_folder", "write_json", "write_tiff_stack", "read_tiff_stack",
           "is_complete_result", "REPORT_NAME", "SLICE_PATTERN"]

REPORT_NAME = "report.json"
SLICE_PATTERN = "slice_{:05d}.tif"
_TMP_PREFIX = ".tmp-"


def is_complete_result(path: str | os.PathLike) -> bool:
    """True when ``path`` is a finished result folder (it holds a report)."""
    return (Path(path) / REPORT_NAME).is_file()


@contextlib.contextmanager
def result_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out_dir`` when the block succeeds.

    Parameters
    ----------
    out_dir : path
        The final folder.
    overwrite : bool
        Replace an existing ``out_dir`` (after the new result is complete).

    Raises
    ------
    FileExistsError
        ``out_dir`` exists and ``overwrite`` is False (checked before any work
        and again before the final rename).
    """
    final = Path(out_dir).absolute()
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True (--overwrite) to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{_TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"{final} appeared while writing; not replacing it")
            old = final.parent / f"{_TMP_PREFIX}{final.name}-old-{uuid.uuid4().hex[:8]}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else None     # JSON has no NaN/inf
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (numpy values converted, NaN/inf as null)."""
    Path(path).write_text(json.dumps(_jsonable(data), indent=2) + "\n")


def write_tiff_stack(volume: np.ndarray, directory: str | os.PathLike,
                     voxel_size: Sequence[float], units: str | None = None,
                     description: dict[str, Any] | None = None) -> list[Path]:
    """Write a 2D image or 3D volume as float32 TIFFs, one per slice.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(rows, cols)`` or ``(slices, rows, cols)``.
    directory : path
        Existing folder; files are ``slice_00000.tif``, ``slice_00001.tif``, ...
    voxel_size : sequence of float
        ``(x, y[, z])`` voxel size in world units.
    units : str, optional
        World units.  ``'mm'`` writes standard centimetre resolution tags
        (ImageJ and Fiji read them); otherwise the tags hold pixels per world
        unit with no unit, and ``units`` goes into the description.
    description : dict, optional
        Geometry and provenance, stored as JSON in each file's
        ImageDescription with the slice index and the volume shape added; a
        ``slice_z`` list (one z per slice) is stored per file.

    Returns
    -------
    list of Path
        The files written.
    """
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3:
        raise ValueError(f"volume must be 2D or 3D, got shape {volume.shape}")
    vx, vy = float(voxel_size[0]), float(voxel_size[1])
    if units == "mm":
        resolution, unit = (10.0 / vx, 10.0 / vy), "CENTIMETER"
    else:
        resolution, unit = (1.0 / vx, 1.0 / vy), "NONE"
    base = dict(description or {})
    slice_z = base.pop("slice_z", None)
    base.update(units=units, voxel_size_xyz=list(map(float, voxel_size)),
                volume_shape=list(np.shape(volume)))
    paths = []
    for k, image in enumerate(vol):
        # tifffile reads a JSON description as its own "shaped" metadata, which
        # needs the page shape: with it our metadata reads back as tifffile's.
        meta = dict(base, shape=list(image.shape), slice_index=k)
        if slice_z is not None:
            meta["slice_z"] = float(slice_z[k])
        path = Path(directory) / SLICE_PATTERN.format(k)
        tifffile.imwrite(path, image, resolution=resolution, resolutionunit=unit,
                         description=json.dumps(_jsonable(meta)), metadata=None)
        paths.append(path)
    return paths


def read_tiff_stack(directory: str | os.PathLike) -> np.ndarray:
    """Read a stack written by :func:`write_tiff_stack`, in the shape it was written."""
    files = sorted(Path(directory).glob("slice_*.tif"))
    if not files:
        raise FileNotFoundError(f"{directory}: no slice_*.tif files")
    stack = np.stack([tifffile.imread(f) for f in files])
    with tifffile.TiffFile(files[0]) as tif:
        try:
            shape = json.loads(tif.pages[0].description)["volume_shape"]
        except (ValueError, KeyError, TypeError):
            shape = stack.shape
    return stack.reshape(shape)
