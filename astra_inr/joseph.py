"""ASTRA's 2D parallel-beam ``linear`` (Joseph) projection matrix, built with numpy.

ASTRA computes this matrix quickly in C++ (``astra.projector.matrix``), but
hands it to Python through ``astra.matrix.get``, which copies it one entry at a
time in a Python-level loop: about 5 million entries a second on this
project's 2-core development machine, 85 % of the build (7.1 s for a
640 x 640 slice at 46 angles, 32 million entries).  This module computes the
same matrix with array operations, following ASTRA's kernel
(``ParallelBeamLinearKernelProjector2D.inl``) step for step in float32,
including its row-by-row accumulation of the ray's crossing point, so the
result agrees with ASTRA's own matrix to float32 rounding (checked by the
tests against ``astra.matrix.get`` on several geometries).

Only ``parallel`` and ``parallel_vec`` geometries with square pixels are
covered; :mod:`astra_inr.matrix` takes ASTRA's getter for everything else.
"""

from __future__ import annotations

from typing import Any, Mapping

import astra
import numpy as np
import scipy.sparse

__all__ = ["covers", "linear_parallel_matrix"]

_F32 = np.float32


def covers(vol_geom: Mapping[str, Any], proj_geom: Mapping[str, Any]) -> bool:
    """Whether :func:`linear_parallel_matrix` builds this geometry pair's matrix.

    ASTRA's ``linear`` kernel itself needs square pixels; the geometry must be
    2D ``parallel`` or ``parallel_vec``.
    """
    if proj_geom.get("type") not in ("parallel", "parallel_vec") or "GridSliceCount" in vol_geom:
        return False
    dx, dy = _pixel_lengths(vol_geom)
    return abs(dx - dy) <= 1e-6 * dx


def _pixel_lengths(vol_geom: Mapping[str, Any]) -> tuple[np.float32, np.float32]:
    """Pixel width and height as ASTRA computes them (float32)."""
    opt = vol_geom["option"]
    cols, rows = _F32(vol_geom["GridColCount"]), _F32(vol_geom["GridRowCount"])
    return ((_F32(opt["WindowMaxX"]) - _F32(opt["WindowMinX"])) / cols,
            (_F32(opt["WindowMaxY"]) - _F32(opt["WindowMinY"])) / rows)


def _ray_vectors(proj_geom: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """ASTRA's per-angle (rayX, rayY, detSX, detSY, detUX, detUY) in float32, and the
    detector count; detS is the detector's corner (ASTRA's internal convention)."""
    if proj_geom["type"] == "parallel":
        vec = astra.geom_2vec(dict(proj_geom))["Vectors"]
    else:
        vec = np.asarray(proj_geom["Vectors"], dtype=np.float64)
    n_det = int(proj_geom["DetectorCount"])
    v = vec.astype(_F32)
    ray_x, ray_y, cx, cy, ux, uy = (v[:, k] for k in range(6))
    # ASTRA stores the corner: centre - 0.5 * count * u, in float32.
    half = _F32(0.5) * _F32(n_det)
    return np.stack([ray_x, ray_y, cx - half * ux, cy - half * uy, ux, uy], axis=1), n_det


def _one_angle(ray: np.ndarray, n_det: int, rows: int, cols: int, min_x: np.float32,
               max_y: np.float32, px: np.float32, py: np.float32, index_type: type
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entries per ray, column indices, weights) of one angle's rays, in ray order."""
    ray_x, ray_y, s_x, s_y, u_x, u_y = (_F32(r) for r in ray)
    det = np.arange(n_det, dtype=_F32) + _F32(0.5)
    d_x = s_x + det * u_x
    d_y = s_y + det * u_y
    e_x = min_x + px * _F32(0.5)
    e_y = max_y - py * _F32(0.5)
    norm = _F32(np.sqrt(ray_y * ray_y + ray_x * ray_x))
    if abs(ray_x) < abs(ray_y):                          # mainly vertical: step through rows
        slope = ray_x / ray_y
        length = px * norm / abs(ray_y)
        delta = -py * slope * (_F32(1.0) / px)
        start = (d_x + (e_y - d_y) * slope - e_x) * (_F32(1.0) / px)
        steps, span, stride = rows, cols, (cols, 1)
    else:                                                # mainly horizontal: through columns
        slope = ray_y / ray_x
        length = py * norm / abs(ray_x)
        delta = -px * slope * (_F32(1.0) / py)
        start = -(d_y + (e_x - d_x) * slope - e_y) * (_F32(1.0) / py)
        steps, span, stride = cols, rows, (1, cols)
    # ASTRA adds delta once per step in float32; accumulate the same way.
    pos = np.empty((n_det, steps), dtype=_F32)
    pos[:, 0] = start
    pos[:, 1:] = delta
    np.add.accumulate(pos, axis=1, out=pos)
    cell = np.floor(pos)
    offset = pos - cell
    # Far outside cells only need to stay outside: clip before the integer cast.
    cell = np.clip(cell, -2, span, out=cell).astype(index_type)
    inside = (cell >= -1) & (cell < span)
    base = np.arange(steps, dtype=index_type)[None, :] * index_type(stride[0]) \
        + cell * index_type(stride[1])
    # Each step weighs the two cells around the crossing: (1 - offset) and offset.
    keep = np.empty((n_det, steps, 2), dtype=bool)
    np.logical_and(inside, cell >= 0, out=keep[..., 0])
    np.logical_and(inside, cell + 1 < span, out=keep[..., 1])
    index = np.empty((n_det, steps, 2), dtype=index_type)
    index[..., 0] = base
    np.add(base, index_type(stride[1]), out=index[..., 1])
    weight = np.empty((n_det, steps, 2), dtype=_F32)
    np.multiply(_F32(1.0) - offset, length, out=weight[..., 0])
    np.multiply(offset, length, out=weight[..., 1])
    counts = keep.reshape(n_det, -1).sum(axis=1)
    return counts, index[keep], weight[keep]


def linear_parallel_matrix(vol_geom: Mapping[str, Any], proj_geom: Mapping[str, Any]
                           ) -> scipy.sparse.csr_matrix:
    """The matrix ASTRA's ``linear`` projector has for this 2D parallel geometry.

    Parameters
    ----------
    vol_geom : dict
        ASTRA 2D volume geometry (square pixels).
    proj_geom : dict
        ASTRA ``parallel`` or ``parallel_vec`` projection geometry.

    Returns
    -------
    scipy.sparse.csr_matrix
        float32, shape (angles * detectors, rows * cols): row ``angle *
        detectors + detector``, column ``row * cols + col``, the entries in the
        order ASTRA's kernel visits them (``has_sorted_indices`` is not set).

    Raises
    ------
    ValueError
        For a geometry :func:`covers` rejects.
    """
    if not covers(vol_geom, proj_geom):
        raise ValueError("the vectorised linear kernel covers 2D parallel and parallel_vec "
                         f"geometries with square pixels, got {proj_geom.get('type')!r}")
    rows, cols = int(vol_geom["GridRowCount"]), int(vol_geom["GridColCount"])
    px, py = _pixel_lengths(vol_geom)
    opt = vol_geom["option"]
    min_x, max_y = _F32(opt["WindowMinX"]), _F32(opt["WindowMaxY"])
    rays, n_det = _ray_vectors(proj_geom)
    # Indices up to rows * cols + cols (a masked neighbour) must fit the index type.
    index_type = np.int32 if (rows + 1) * (cols + 1) < 2**31 else np.int64
    counts, indices, weights = [], [], []
    for ray in rays:
        c, i, w = _one_angle(ray, n_det, rows, cols, min_x, max_y, px, py, index_type)
        counts.append(c)
        indices.append(i)
        weights.append(w)
    indptr = np.zeros(len(rays) * n_det + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=indptr[1:])
    if indptr[-1] < 2**31:
        indptr = indptr.astype(np.int32)
    return scipy.sparse.csr_matrix((np.concatenate(weights), np.concatenate(indices), indptr),
                                   shape=(len(rays) * n_det, rows * cols))
