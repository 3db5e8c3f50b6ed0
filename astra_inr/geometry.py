"""ASTRA volume and projection geometries as the INR sees them.

An ASTRA volume geometry is a grid of voxels inside a window (world units,
e.g. mm).  The INR is a function of *normalised* coordinates: world
coordinates shifted by the window centre and divided by the largest
half-extent, so the longest side of the window spans [-1, 1] and voxels stay
isotropic in the network's eyes whatever the units, offsets or aspect ratio.

Array conventions (ASTRA's):

* 2D volume ``(rows, cols)``; column j is x = MinX + (j + 1/2) dx and row i is
  y = MaxY - (i + 1/2) dy (row 0 at the top, largest y).
* 3D volume ``(slices, rows, cols)``; x as in 2D, row i is
  y = MinY + (i + 1/2) dy and slice k is z = MinZ + (k + 1/2) dz.  (A
  one-slice ``parallel3d`` problem equals the 2D problem with rows reversed.)
* 2D sinogram ``(angles, detectors)``; 3D projections
  ``(detector rows, angles, detector cols)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

__all__ = [
    "PROJ_TYPES_2D",
    "PROJ_TYPES_3D",
    "VolumeGrid",
    "volume_grid",
    "projection_shape",
    "projection_summary",
    "parallel3d_as_2d",
]

PROJ_TYPES_2D = ("parallel", "parallel_vec", "fanflat", "fanflat_vec")
PROJ_TYPES_3D = ("parallel3d", "parallel3d_vec", "cone", "cone_vec")


def _window(vol_geom: Mapping[str, Any]) -> Mapping[str, Any]:
    # create_vol_geom() writes 'option'; data*.get_geometry() returns 'options'.
    return vol_geom.get("option") or vol_geom.get("options") or {}


@dataclass(frozen=True)
class VolumeGrid:
    """A voxel grid in world units.

    Attributes
    ----------
    shape : tuple of int
        ``(rows, cols)`` or ``(slices, rows, cols)``.
    minimum, maximum : tuple of float
        Window bounds per axis in ``(x, y[, z])`` order, world units.
    stacked_2d : bool
        3D only: the volume is a stack of 2D slices in ASTRA's 2D row order
        (row 0 at the largest y), as the command line writes them, instead
        of ASTRA's 3D order (row 0 at the smallest y).
    """

    shape: tuple[int, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    stacked_2d: bool = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def voxel_size(self) -> tuple[float, ...]:
        """Voxel size per axis in ``(x, y[, z])`` order, world units."""
        counts = self._counts_xyz()
        return tuple((hi - lo) / n for lo, hi, n in zip(self.minimum, self.maximum, counts))

    @property
    def centre(self) -> tuple[float, ...]:
        return tuple((lo + hi) / 2 for lo, hi in zip(self.minimum, self.maximum))

    @property
    def half_extent(self) -> float:
        """Largest half-width of the window: one unit of normalised coordinates."""
        return max((hi - lo) / 2 for lo, hi in zip(self.minimum, self.maximum))

    def _counts_xyz(self) -> tuple[int, ...]:
        if self.ndim == 2:
            rows, cols = self.shape
            return (cols, rows)
        slices, rows, cols = self.shape
        return (cols, rows, slices)

    def axis_coordinates(self, upsample: int | float = 1,
                         shape: tuple[int, ...] | None = None) -> list[np.ndarray]:
        """Normalised coordinates of voxel centres along each array axis.

        Parameters
        ----------
        upsample : float
            Sample the same window ``upsample`` times more finely per axis.
        shape : tuple of int, optional
            Sample the window on this array shape instead (overrides upsample).

        Returns
        -------
        list of numpy.ndarray
            One 1D float64 array per array axis (``rows, cols`` or
            ``slices, rows, cols``), in array order.
        """
        if shape is None:
            shape = tuple(max(1, int(round(n * upsample))) for n in self.shape)
        if len(shape) != self.ndim:
            raise ValueError(f"shape must have {self.ndim} entries, got {shape}")
        c, h = self.centre, self.half_extent

        def centres(lo: float, hi: float, n: int, descending: bool = False) -> np.ndarray:
            step = (hi - lo) / n
            pts = lo + (np.arange(n) + 0.5) * step
            return pts[::-1] if descending else pts

        if self.ndim == 2:
            rows, cols = shape
            y = (centres(self.minimum[1], self.maximum[1], rows, descending=True) - c[1]) / h
            x = (centres(self.minimum[0], self.maximum[0], cols) - c[0]) / h
            return [y, x]
        slices, rows, cols = shape
        z = (centres(self.minimum[2], self.maximum[2], slices) - c[2]) / h
        y = (centres(self.minimum[1], self.maximum[1], rows, descending=self.stacked_2d) - c[1]) / h
        x = (centres(self.minimum[0], self.maximum[0], cols) - c[0]) / h
        return [z, y, x]

    def coordinates(self, upsample: int | float = 1, shape: tuple[int, ...] | None = None,
                    device: torch.device | str = "cpu",
                    slices: slice | None = None) -> torch.Tensor:
        """Normalised coordinates of every voxel centre, in C order of the array.

        Returns
        -------
        torch.Tensor
            Shape ``(prod(shape), ndim)`` float32, columns ``(x, y[, z])``.
            ``slices`` restricts a 3D grid to a range of slices.
        """
        axes = self.axis_coordinates(upsample, shape)
        if slices is not None:
            axes[0] = axes[0][slices]
        grids = np.meshgrid(*axes, indexing="ij")
        # Array axes are (y, x) or (z, y, x); the network takes (x, y[, z]).
        cols = [g.reshape(-1) for g in reversed(grids)]
        return torch.from_numpy(np.stack(cols, axis=1).astype(np.float32)).to(device)

    def to_dict(self) -> dict[str, Any]:
        out = {"shape": list(self.shape), "minimum_xyz": list(self.minimum),
               "maximum_xyz": list(self.maximum), "voxel_size_xyz": list(self.voxel_size)}
        if self.ndim == 3:
            out["row_order"] = "2D (row 0 at max y)" if self.stacked_2d else "3D (row 0 at min y)"
        return out


def volume_grid(vol_geom: Mapping[str, Any]) -> VolumeGrid:
    """Read an ASTRA 2D or 3D volume geometry dict into a :class:`VolumeGrid`.

    Raises
    ------
    ValueError
        If the dict lacks the grid counts or has an empty window.
    """
    try:
        rows = int(vol_geom["GridRowCount"])
        cols = int(vol_geom["GridColCount"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not an ASTRA volume geometry (needs GridRowCount and GridColCount): {vol_geom!r}") from exc
    win = _window(vol_geom)
    slices = vol_geom.get("GridSliceCount")
    lo = [float(win.get("WindowMinX", -cols / 2)), float(win.get("WindowMinY", -rows / 2))]
    hi = [float(win.get("WindowMaxX", cols / 2)), float(win.get("WindowMaxY", rows / 2))]
    if slices is None:
        shape: tuple[int, ...] = (rows, cols)
    else:
        slices = int(slices)
        shape = (slices, rows, cols)
        lo.append(float(win.get("WindowMinZ", -slices / 2)))
        hi.append(float(win.get("WindowMaxZ", slices / 2)))
    if min(shape) < 1 or any(h <= l for l, h in zip(lo, hi)):
        raise ValueError(f"empty volume geometry: shape {shape}, window {lo} .. {hi}")
    return VolumeGrid(shape=shape, minimum=tuple(lo), maximum=tuple(hi))


def projection_shape(proj_geom: Mapping[str, Any]) -> tuple[int, ...]:
    """Array shape of data for an ASTRA projection geometry.

    ``(angles, detectors)`` in 2D, ``(detector rows, angles, detector cols)`` in 3D.
    """
    kind = proj_geom.get("type")
    if kind in ("parallel", "fanflat"):
        return (len(np.atleast_1d(proj_geom["ProjectionAngles"])), int(proj_geom["DetectorCount"]))
    if kind in ("parallel_vec", "fanflat_vec"):
        return (int(np.asarray(proj_geom["Vectors"]).shape[0]), int(proj_geom["DetectorCount"]))
    if kind in ("parallel3d", "cone"):
        return (int(proj_geom["DetectorRowCount"]), len(np.atleast_1d(proj_geom["ProjectionAngles"])),
                int(proj_geom["DetectorColCount"]))
    if kind in ("parallel3d_vec", "cone_vec"):
        return (int(proj_geom["DetectorRowCount"]), int(np.asarray(proj_geom["Vectors"]).shape[0]),
                int(proj_geom["DetectorColCount"]))
    raise ValueError(f"unsupported projection geometry type {kind!r}; "
                     f"expected one of {PROJ_TYPES_2D + PROJ_TYPES_3D}")


def projection_summary(proj_geom: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-friendly description of a projection geometry (for reports)."""
    out: dict[str, Any] = {"type": proj_geom.get("type"), "shape": list(projection_shape(proj_geom))}
    for key, value in proj_geom.items():
        if key in ("type", "ProjectionAngles", "Vectors"):
            continue
        if isinstance(value, (int, float, str)):
            out[key] = value
    if "ProjectionAngles" in proj_geom:
        angles = np.atleast_1d(np.asarray(proj_geom["ProjectionAngles"], dtype=np.float64))
        out["angles_rad"] = {"count": int(angles.size), "first": float(angles[0]),
                             "last": float(angles[-1]),
                             "span_deg": float(np.degrees(angles.max() - angles.min()))}
    return out


def parallel3d_as_2d(vol_geom: Mapping[str, Any],
                     proj_geom: Mapping[str, Any]) -> tuple[dict, dict]:
    """The 2D geometries one slice of a ``parallel3d`` problem reduces to.

    Valid when each detector row sees exactly one volume slice: as many
    detector rows as slices, row spacing equal to the slice thickness, and
    rows centred on slices.  Used to run ``parallel3d`` problems with ASTRA's
    2D CPU projectors when no GPU is present.

    Returns
    -------
    (vol_geom_2d, proj_geom_2d) : tuple of dict

    Raises
    ------
    ValueError
        If the geometry is not such a stack of independent slices.
    """
    if proj_geom.get("type") != "parallel3d":
        raise ValueError(f"only 'parallel3d' reduces to 2D slices, got {proj_geom.get('type')!r}")
    grid = volume_grid(vol_geom)
    if grid.ndim != 3:
        raise ValueError("parallel3d needs a 3D volume geometry (with GridSliceCount)")
    slices, rows, cols = grid.shape
    det_rows = int(proj_geom["DetectorRowCount"])
    spacing_y = float(proj_geom["DetectorSpacingY"])
    dz = grid.voxel_size[2]
    if det_rows != slices or not math.isclose(spacing_y, dz, rel_tol=1e-6):
        raise ValueError(
            "without a GPU a parallel3d problem runs slice by slice, which needs one detector row "
            f"per slice: got {det_rows} detector rows of height {spacing_y} for {slices} slices "
            f"of thickness {dz}")
    if not math.isclose(grid.centre[2], 0.0, abs_tol=1e-6 * max(1.0, dz)):
        raise ValueError(f"parallel3d slice-by-slice needs the volume centred in z (detector rows are "
                         f"centred on the axis); WindowMinZ/MaxZ centre is {grid.centre[2]}")
    vol2d = {"GridRowCount": rows, "GridColCount": cols,
             "option": {"WindowMinX": grid.minimum[0], "WindowMaxX": grid.maximum[0],
                        "WindowMinY": grid.minimum[1], "WindowMaxY": grid.maximum[1]}}
    proj2d = {"type": "parallel", "DetectorWidth": float(proj_geom["DetectorSpacingX"]),
              "DetectorCount": int(proj_geom["DetectorColCount"]),
              "ProjectionAngles": np.asarray(proj_geom["ProjectionAngles"], dtype=np.float64)}
    return vol2d, proj2d
