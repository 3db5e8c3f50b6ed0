"""HDF5 scan readers: DXchange (APS and tomopy) and NeXus NXtomo.

Both keep no HDF5 file open between reads: each ``read_*`` call opens the file,
reads a hyperslab (only the requested detector rows) straight into a float32
buffer and closes it.  That keeps a :class:`~astra_inr.io.scan.Scan` picklable
for Dask workers and never holds a lock on a file another process is writing.

DXchange layout read here::

    /exchange/data        (angles, rows, cols)   projections
    /exchange/data_white  (frames, rows, cols)   flat fields   (optional)
    /exchange/data_dark   (frames, rows, cols)   dark fields   (optional)
    /exchange/theta       (angles,)              degrees (a 'units' attribute is honoured)
    /measurement/instrument/detector/pixel_size_x   with a 'units' attribute (optional)

NXtomo layout read here (the entry is any top-level group whose
``definition`` reads ``NXtomo``; its name varies between facilities)::

    <entry>/instrument/detector/data       (frames, rows, cols)
    <entry>/instrument/detector/image_key  (frames,) 0 projection, 1 flat, 2 dark, 3 invalid
    <entry>/sample/rotation_angle          (frames,) degrees unless units say radians
    <entry>/instrument/detector/x_pixel_size   with a 'units' attribute (optional)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from .scan import (
    VALUE_KINDS,
    Scan,
    ScanFormatError,
    angles_to_radians,
    as_text,
    json_friendly,
    length_to_mm,
    parse_angles,
    progressions,
)

__all__ = ["DXchangeScan", "NXtomoScan", "open_dxchange", "open_nxtomo", "find_nxtomo_entries"]

_DX_DATA = "/exchange/data"
_DX_FLATS = "/exchange/data_white"
_DX_DARKS = "/exchange/data_dark"
_DX_THETA = "/exchange/theta"
_DX_PIXEL = ("/measurement/instrument/detector/pixel_size_x",
             "/measurement/instrument/detector/x_pixel_size",
             "/measurement/instrument/detector/pixel_size")


def open_h5(path: Path) -> h5py.File:
    """Open an HDF5 file read-only, turning h5py's OSError into a ScanFormatError that names it."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ScanFormatError(f"{path.name}: cannot be opened as HDF5 (truncated or corrupt?): {err}") from None


def _root_attributes(f: h5py.File) -> dict[str, Any]:
    return {str(k): json_friendly(v) for k, v in list(f.attrs.items())[:32]}


def _check_frames(path: Path, name: str, ds: h5py.Dataset, proj_shape: tuple[int, ...]) -> int:
    """Number of frames of a flat/dark dataset after checking it matches the projections."""
    if ds.ndim != 3:
        raise ScanFormatError(f"{path.name}: {name} has shape {ds.shape}, expected (frames, rows, cols)")
    if ds.shape[1:] != proj_shape[1:]:
        raise ScanFormatError(f"{path.name}: {name} frames are {ds.shape[1]}x{ds.shape[2]} pixels but the "
                              f"projections are {proj_shape[1]}x{proj_shape[2]} (rows x cols)")
    return int(ds.shape[0])


def _read_pixel_size(f: h5py.File, candidates: Sequence[str]) -> tuple[float | None, dict[str, Any]]:
    """Pixel size in mm from the first candidate dataset present, with what was found."""
    for name in candidates:
        if name in f and isinstance(f[name], h5py.Dataset):
            ds = f[name]
            raw = np.asarray(ds[()], dtype=np.float64).reshape(-1)
            if raw.size == 0:
                continue
            units = as_text(ds.attrs["units"]) if "units" in ds.attrs else None
            mm = length_to_mm(float(raw[0]), units)
            info: dict[str, Any] = {"pixel_size_source": name, "pixel_size_raw": float(raw[0]),
                                    "pixel_size_units": units}
            if mm is None:
                info["pixel_size_note"] = "ignored: missing or unknown units (pass pixel_size= in mm)"
            return mm, info
    return None, {}


class _HDF5Scan(Scan):
    """Shared reading code: projections/flats/darks are hyperslabs of datasets."""

    def _read_selection(self, dataset: str, indices: np.ndarray | slice, rows: slice, n_out: int) -> np.ndarray:
        n_rows = len(range(rows.start, rows.stop, rows.step))
        out = np.empty((n_out, n_rows, self.n_cols), dtype=np.float32)
        pieces = ([(indices, slice(0, n_out))] if isinstance(indices, slice)
                  else progressions(indices))
        with open_h5(self.path) as f:
            ds = f[dataset]
            try:
                for file_sel, out_sel in pieces:
                    # read_direct converts to float32 inside HDF5: no intermediate uint16 copy.
                    ds.read_direct(out, np.s_[file_sel, rows, :], np.s_[out_sel, :, :])
            except (OSError, RuntimeError) as err:
                raise ScanFormatError(f"{self.path.name}: reading {dataset} failed "
                                      f"(truncated or corrupt file?): {err}") from None
        return out


class DXchangeScan(_HDF5Scan):
    """A DXchange HDF5 scan (see the module docstring for the layout)."""

    format = "dxchange"

    def _read(self, kind: str, frames: slice, rows: slice) -> np.ndarray:
        dataset = {"projections": _DX_DATA, "flats": _DX_FLATS, "darks": _DX_DARKS}[kind]
        n_out = len(range(frames.start, frames.stop, frames.step))
        return self._read_selection(dataset, frames, rows, n_out)


def open_dxchange(path: str | Path, *, angles: str | Sequence[float] | None = None,
                  values: str = "counts", pixel_size: float | None = None) -> DXchangeScan:
    """Open a DXchange HDF5 file.

    Parameters
    ----------
    path : str or Path
        The ``.h5`` file.
    angles : str or sequence of float, optional
        Override ``/exchange/theta`` (see :func:`~astra_inr.io.scan.parse_angles`; degrees).
        Required when the file has no theta.
    values : {'counts', 'transmission', 'line_integrals'}
        What ``/exchange/data`` holds; raw counts by default.
    pixel_size : float, optional
        Detector pixel size in mm, overriding the file's.

    Raises
    ------
    ScanFormatError
        No ``/exchange/data``, wrong dimensions, flats/darks of another detector
        size, or a theta of the wrong length.
    """
    path = Path(path)
    if values not in VALUE_KINDS:
        raise ValueError(f"{path.name}: values must be one of {VALUE_KINDS}, got {values!r}")
    with open_h5(path) as f:
        if _DX_DATA not in f or not isinstance(f[_DX_DATA], h5py.Dataset):
            raise ScanFormatError(f"{path.name}: no {_DX_DATA} dataset (not a DXchange file)")
        data = f[_DX_DATA]
        if data.ndim != 3 or min(data.shape) == 0:
            raise ScanFormatError(f"{path.name}: {_DX_DATA} has shape {data.shape}, "
                                  f"expected (angles, rows, cols) with no empty axis")
        shape = tuple(int(s) for s in data.shape)
        n_flats = _check_frames(path, _DX_FLATS, f[_DX_FLATS], shape) if _DX_FLATS in f else 0
        n_darks = _check_frames(path, _DX_DARKS, f[_DX_DARKS], shape) if _DX_DARKS in f else 0
        meta: dict[str, Any] = {"dtype": str(data.dtype), "n_flats": n_flats, "n_darks": n_darks}
        if angles is not None:
            theta = parse_angles(angles)
            meta["angles_source"] = "given"
        elif _DX_THETA in f:
            ds = f[_DX_THETA]
            units = as_text(ds.attrs["units"]) if "units" in ds.attrs else None
            theta, label = angles_to_radians(ds[()], units, where=f"{path.name}: {_DX_THETA}")
            meta["angles_source"] = _DX_THETA
            meta["theta_units"] = label
        else:
            raise ScanFormatError(f"{path.name}: no {_DX_THETA}; give the angles, e.g. angles='0:180:{shape[0]}'")
        if theta.size != shape[0]:
            raise ScanFormatError(f"{path.name}: {meta['angles_source']} has {theta.size} angles "
                                  f"but {_DX_DATA} has {shape[0]} projections")
        px, px_info = _read_pixel_size(f, _DX_PIXEL)
        meta.update(px_info)
        meta["attributes"] = _root_attributes(f)
    if pixel_size is not None:
        px = float(pixel_size)
        meta["pixel_size_source"] = "given"
    return DXchangeScan(path, angles=theta, shape=shape, pixel_size=px, values=values,
                        metadata=meta, n_flats=n_flats, n_darks=n_darks)


# ---------------------------------------------------------------------------
# NXtomo
# ---------------------------------------------------------------------------

_NX_DATA = ("instrument/detector/data", "data/data")
_NX_KEY = ("instrument/detector/image_key", "data/image_key")
_NX_ANGLE = ("sample/rotation_angle", "data/rotation_angle")
_NX_PIXEL = ("instrument/detector/x_pixel_size",)


def find_nxtomo_entries(f: h5py.File) -> list[str]:
    """Names of groups (top level, or one level down for NXsubentry) whose ``definition`` is NXtomo."""
    found: list[str] = []

    def is_nxtomo(group: h5py.Group) -> bool:
        if "definition" not in group or not isinstance(group["definition"], h5py.Dataset):
            return False
        return as_text(group["definition"][()]).strip().lower() == "nxtomo"

    for name, obj in f.items():
        if not isinstance(obj, h5py.Group):
            continue
        if is_nxtomo(obj):
            found.append("/" + name)
            continue
        for sub_name, sub in obj.items():
            if isinstance(sub, h5py.Group) and is_nxtomo(sub):
                found.append(f"/{name}/{sub_name}")
    return found


def _first_dataset(group: h5py.Group, candidates: Sequence[str]) -> str | None:
    for name in candidates:
        if name in group and isinstance(group[name], h5py.Dataset):
            return name
    return None


class NXtomoScan(_HDF5Scan):
    """A NeXus NXtomo scan: one frame stack whose ``image_key`` says which frames are what."""

    format = "nxtomo"

    def __init__(self, path: Path, *, dataset: str, frame_indices: dict[str, np.ndarray],
                 angles: np.ndarray, shape: tuple[int, int, int], pixel_size: float | None,
                 values: str, metadata: dict[str, Any]) -> None:
        super().__init__(path, angles=angles, shape=shape, pixel_size=pixel_size, values=values,
                         metadata=metadata, n_flats=frame_indices["flats"].size,
                         n_darks=frame_indices["darks"].size)
        self._dataset = dataset
        self._frames = frame_indices

    def _read(self, kind: str, frames: slice, rows: slice) -> np.ndarray:
        indices = self._frames[kind][frames]
        return self._read_selection(self._dataset, indices, rows, indices.size)


def open_nxtomo(path: str | Path, *, entry: str | None = None,
                angles: str | Sequence[float] | None = None, values: str = "counts",
                pixel_size: float | None = None) -> NXtomoScan:
    """Open a NeXus NXtomo file.

    Parameters
    ----------
    path : str or Path
        The ``.nxs``/``.h5`` file.
    entry : str, optional
        The NXtomo entry (e.g. ``'/entry'``); needed only when the file has several.
    angles : str or sequence of float, optional
        Override ``sample/rotation_angle`` for the projections (degrees; see
        :func:`~astra_inr.io.scan.parse_angles`).
    values : {'counts', 'transmission', 'line_integrals'}
        What the projection frames hold.
    pixel_size : float, optional
        Detector pixel size in mm, overriding ``x_pixel_size``.

    Raises
    ------
    ScanFormatError
        No NXtomo entry, no detector data, an image_key of the wrong length or
        with unknown values, no projections, or angles of the wrong length.
    """
    path = Path(path)
    if values not in VALUE_KINDS:
        raise ValueError(f"{path.name}: values must be one of {VALUE_KINDS}, got {values!r}")
    with open_h5(path) as f:
        entries = find_nxtomo_entries(f)
        if entry is not None:
            key = entry if entry.startswith("/") else "/" + entry
            if key not in entries:
                raise ScanFormatError(f"{path.name}: no NXtomo entry {entry!r} (NXtomo entries: {entries or 'none'})")
        elif len(entries) == 1:
            key = entries[0]
        elif not entries:
            raise ScanFormatError(f"{path.name}: no NXtomo entry (no group with definition = NXtomo)")
        else:
            raise ScanFormatError(f"{path.name}: several NXtomo entries {entries}; choose one with entry=")
        group = f[key]
        data_name = _first_dataset(group, _NX_DATA)
        if data_name is None:
            raise ScanFormatError(f"{path.name}: NXtomo entry {key} has no {' or '.join(_NX_DATA)}")
        data = group[data_name]
        if data.ndim != 3 or min(data.shape) == 0:
            raise ScanFormatError(f"{path.name}: {key}/{data_name} has shape {data.shape}, "
                                  f"expected (frames, rows, cols) with no empty axis")
        n_frames = int(data.shape[0])
        key_name = _first_dataset(group, _NX_KEY)
        if key_name is None:
            image_key = np.zeros(n_frames, dtype=np.int64)   # no key: every frame is a projection
        else:
            image_key = np.asarray(group[key_name][()], dtype=np.int64).reshape(-1)
            if image_key.size != n_frames:
                raise ScanFormatError(f"{path.name}: {key}/{key_name} has {image_key.size} values "
                                      f"but {key}/{data_name} has {n_frames} frames")
            unknown = sorted(set(np.unique(image_key).tolist()) - {0, 1, 2, 3})
            if unknown:
                raise ScanFormatError(f"{path.name}: {key}/{key_name} has values {unknown}; expected "
                                      f"0 (projection), 1 (flat), 2 (dark), 3 (invalid)")
        frames = {"projections": np.flatnonzero(image_key == 0), "flats": np.flatnonzero(image_key == 1),
                  "darks": np.flatnonzero(image_key == 2)}
        if frames["projections"].size == 0:
            raise ScanFormatError(f"{path.name}: {key}/{key_name} marks no frame as a projection (0)")
        shape = (int(frames["projections"].size), int(data.shape[1]), int(data.shape[2]))
        meta: dict[str, Any] = {"dtype": str(data.dtype), "entry": key, "data": f"{key}/{data_name}",
                                "n_flats": int(frames["flats"].size), "n_darks": int(frames["darks"].size),
                                "n_invalid": int(np.count_nonzero(image_key == 3))}
        if angles is not None:
            theta = parse_angles(angles)
            meta["angles_source"] = "given"
        else:
            angle_name = _first_dataset(group, _NX_ANGLE)
            if angle_name is None:
                raise ScanFormatError(f"{path.name}: NXtomo entry {key} has no sample/rotation_angle; "
                                      f"give the angles, e.g. angles='0:180:{shape[0]}'")
            ds = group[angle_name]
            units = as_text(ds.attrs["units"]) if "units" in ds.attrs else None
            all_angles, label = angles_to_radians(ds[()], units, where=f"{path.name}: {key}/{angle_name}")
            if all_angles.size != n_frames:
                raise ScanFormatError(f"{path.name}: {key}/{angle_name} has {all_angles.size} angles "
                                      f"but {key}/{data_name} has {n_frames} frames")
            theta = all_angles[frames["projections"]]
            meta["angles_source"] = f"{key}/{angle_name}"
            meta["angle_units"] = label
        if theta.size != shape[0]:
            raise ScanFormatError(f"{path.name}: {theta.size} angles given but {shape[0]} projections")
        px, px_info = _read_pixel_size(group, _NX_PIXEL)
        meta.update(px_info)
        dataset = f"{key}/{data_name}"
    if pixel_size is not None:
        px = float(pixel_size)
        meta["pixel_size_source"] = "given"
    return NXtomoScan(path, dataset=dataset, frame_indices=frames, angles=theta, shape=shape,
                      pixel_size=px, values=values, metadata=meta)
