"""An ASTRA projector as a sparse matrix on the training device.

On a GPU, every ASTRA call synchronises the device and allocates its own
buffers, so a small problem's training step waits on the host twice (the
forward projection and the backprojection) and the GPU idles in between.  A
2D problem's projection matrix is small (a 256 x 256 image, 100 angles, 384
detector pixels: 11.8 million entries with ASTRA's ``linear`` kernel, 142 MB
in CSR with 32-bit indices), so it can live on the GPU: the forward
projection and the backprojection become two sparse matrix products on
torch's own stream, with no host round trip, and the backprojection is the
exact transpose of the forward projection.

The matrix is that of a CPU projector of the same geometry: the problem's
projector when it is a CPU one, else the kernel closest to ASTRA's CUDA
projector (``linear``, Joseph's interpolating kernel, for parallel beams;
``line_fanflat`` for fan beams; ASTRA's CPU kernels all need square pixels).
ASTRA's own matrix (``astra.projector.matrix``) reaches Python through a getter
that copies it one entry at a time (2.1 s of a 2.3 s build for the example
above on this project's 2-core machine), so the ``linear`` kernel of parallel
beams, the GPU's usual case, is computed with numpy instead
(:mod:`astra_inr.joseph`, the same kernel in float32: 0.28 s); other kernels
take ASTRA's getter.  With the transpose, a build takes 0.8 s there (2.4 s for
a 640 x 640 slice at 46 angles, 32 million entries), and matrices are kept per
geometry (:data:`CACHE_SIZE` of them, on the host) for the next reconstruction
of the same geometry (the slices of a stack, the scans of a beamtime).

:func:`training_operator` decides whether a trainer uses one
(``ProjectorMatrix``) and says why not when it does not.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections import OrderedDict
from typing import Any, Mapping

import astra
import numpy as np
import scipy.sparse
import torch

from . import geometry as geo
from . import joseph
from .operator import AstraOperator, check_operand, project

__all__ = ["MatrixOperator", "training_operator", "estimated_entries", "estimated_entries_for",
           "AUTO_MAX_ENTRIES", "CACHE_SIZE"]

#: 'auto' builds a matrix only when its estimated number of entries is at most this.
#: The matrix saves a fixed cost per step (two host waits; ASTRA's two calls took 0.5 to
#: 1.3 ms of a 4 ms step on an H200), which matters where a step is bound by the host
#: (small images).  Larger problems' steps are bound by the network's arithmetic, while
#: the matrix's build (about 0.07 s per million entries with its transpose on this
#: project's 2-core machine) and its device memory (16 bytes per entry with the
#: transpose) grow with them.  Not yet measured on a GPU: where the saving stops paying.
AUTO_MAX_ENTRIES = 25_000_000

#: Matrices (host copies) kept for later reconstructions of the same geometry.
CACHE_SIZE = 2

_CACHE: "OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor, dict]]" = OrderedDict()


def _csr_tensor(m: scipy.sparse.csr_matrix) -> torch.Tensor:
    """A scipy CSR matrix as a torch CSR tensor (float32; 32-bit indices where they fit)."""
    itype = np.int32 if m.nnz < 2**31 and max(m.shape) < 2**31 else np.int64
    with warnings.catch_warnings():
        # "Sparse CSR tensor support is in beta state": the products used here are stable.
        warnings.simplefilter("ignore", UserWarning)
        # The tensor shares the arrays where they already have these types (no copy).
        return torch.sparse_csr_tensor(torch.from_numpy(np.asarray(m.indptr, dtype=itype)),
                                       torch.from_numpy(np.asarray(m.indices, dtype=itype)),
                                       torch.from_numpy(np.asarray(m.data, dtype=np.float32)),
                                       size=m.shape, check_invariants=False)


def _geometry_key(g: Mapping[str, Any]) -> tuple:
    """A hashable key of an ASTRA geometry dict (arrays by their bytes)."""
    items = []
    for k in sorted(g):
        v = g[k]
        if isinstance(v, Mapping):
            v = _geometry_key(v)
        elif isinstance(v, (np.ndarray, list, tuple)):
            a = np.ascontiguousarray(np.asarray(v, dtype=np.float64))
            v = (a.shape, hashlib.sha1(a.tobytes()).hexdigest())
        items.append((k, v))
    return tuple(items)


def _cpu_kernel(vol_geom: Mapping[str, Any], proj_geom: Mapping[str, Any]) -> str:
    """The ASTRA CPU projector type closest to ASTRA's CUDA projector for this geometry.

    Raises
    ------
    ValueError
        For pixels that are not square: none of ASTRA's 2D CPU kernels takes them.
    """
    dx, dy = geo.volume_grid(vol_geom).voxel_size[:2]
    if abs(dx - dy) > 1e-6 * dx:
        raise ValueError(f"ASTRA's CPU kernels need square pixels, these are {dx:g} x {dy:g}")
    # Joseph's kernel ('linear') is the CUDA projector's.
    return "line_fanflat" if proj_geom["type"] in ("fanflat", "fanflat_vec") else "linear"


def _problem_2d(op: AstraOperator) -> tuple[dict, dict, int | None, bool]:
    """(2D volume geometry, 2D projection geometry, CPU projector id or None, flip_rows)
    of an operator whose slices are independent 2D problems.

    Raises
    ------
    ValueError
        For an operator whose slices see each other (cone beam, vector geometries in 3D).
    """
    if op.kind in ("direct2d", "slicewise3d"):
        vg = astra.projector.volume_geometry(op.projector_id)
        pg = astra.projector.projection_geometry(op.projector_id)
        cpu_id = None if astra.projector.is_cuda(op.projector_id) else op.projector_id
        return vg, pg, cpu_id, op.flip_rows
    vg = astra.projector3d.volume_geometry(op.projector_id)
    pg = astra.projector3d.projection_geometry(op.projector_id)
    vol2d, proj2d = geo.parallel3d_as_2d(vg, pg)      # raises unless slices are independent
    return vol2d, proj2d, None, True


def estimated_entries(op: AstraOperator) -> int:
    """About how many non-zeros the projection matrix of one slice of ``op`` has
    (:func:`estimated_entries_for` its shapes)."""
    return estimated_entries_for(op.vol_shape, op.proj_shape)


def estimated_entries_for(vol_shape: tuple[int, ...], proj_shape: tuple[int, ...]) -> int:
    """About how many non-zeros one slice's projection matrix has, from the volume's
    ``(..., rows, cols)`` and the projections' ``(..., angles, detectors)`` shapes.

    Each ray crosses at most ``rows + cols`` pixels and Joseph's kernel weighs
    two per row or column it steps through: ``rays * 2 * max(rows, cols)``
    bounds the ``line`` and ``linear`` kernels (measured 11.8 million for the
    estimate's 19.7 at 256 x 256, 100 angles, 384 pixels; strip kernels reach
    about 1.8 times the ``linear`` count).
    """
    rows, cols = vol_shape[-2:]
    angles, dets = proj_shape[-2:]
    return int(angles) * int(dets) * 2 * max(int(rows), int(cols))


def _astra_matrix(vol_geom: dict, proj_geom: dict, cpu_id: int | None, kernel: str | None
                  ) -> scipy.sparse.csr_matrix:
    """ASTRA's own matrix of the projector ``cpu_id``, or of a ``kernel`` projector made here."""
    pid = cpu_id if cpu_id is not None else astra.create_projector(kernel, proj_geom, vol_geom)
    mid = astra.projector.matrix(pid)
    try:
        return astra.matrix.get(mid).tocsr()
    finally:
        astra.matrix.delete(mid)
        if cpu_id is None:
            astra.projector.delete(pid)


def _build(vol_geom: dict, proj_geom: dict, cpu_id: int | None, flip_rows: bool
           ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """ASTRA's matrix of one slice and its transpose (torch CSR on the host) and a description."""
    kernel = None if cpu_id is not None else _cpu_kernel(vol_geom, proj_geom)
    # Only matrices of kernels made here are kept: ASTRA reuses the ids of deleted
    # projectors, so an id does not name one kernel for good.
    key = None if kernel is None else (kernel, _geometry_key(vol_geom),
                                       _geometry_key(proj_geom), flip_rows)
    if key is not None and key in _CACHE:
        _CACHE.move_to_end(key)
        a, at, info = _CACHE[key]
        return a, at, {**info, "cached": True}
    t0 = time.perf_counter()
    if kernel == "linear" and joseph.covers(vol_geom, proj_geom):
        w, builder = joseph.linear_parallel_matrix(vol_geom, proj_geom), "astra_inr.joseph"
    else:
        w, builder = _astra_matrix(vol_geom, proj_geom, cpu_id, kernel), "astra.matrix.get"
    if flip_rows:
        # A 3D slice is the 2D image with its rows reversed: renumber the columns.
        rows, cols = geo.volume_grid(vol_geom).shape
        r, c = np.divmod(w.indices, cols)
        w.indices = ((rows - 1 - r) * cols + c).astype(w.indices.dtype)
    # Column indices in order within each row, whatever the builder's visiting order.
    w.has_sorted_indices = False
    w.sort_indices()
    a = _csr_tensor(w)
    at = _csr_tensor(w.T.tocsr())
    info = {"kernel": kernel or f"the problem's CPU projector (id {cpu_id})", "builder": builder,
            "entries": int(w.nnz), "build_s": round(time.perf_counter() - t0, 3)}
    if key is None:
        return a, at, {**info, "cached": False}
    _CACHE[key] = (a, at, info)
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return a, at, {**info, "cached": False}


class MatrixOperator:
    """Volume -> projections as a sparse matrix product, on any torch device.

    Same interface as :class:`~astra_inr.operator.AstraOperator` where a
    trainer uses it (shapes, ``forward``, ``adjoint``, ``slab``, ``describe``,
    calling it projects differentiably).  A 3D volume is a stack of
    independent slices, each projected by the same matrix onto its own
    detector row.

    Parameters
    ----------
    a, at : torch.Tensor
        CSR matrix of one slice, (angles * detectors, rows * cols), and its
        transpose, on the device the operator works on.
    vol_shape, proj_shape : tuple of int
        (rows, cols) and (angles, detectors), or with a leading slice count
        (slices, rows, cols) and (slices, angles, detectors).
    info : dict
        What :meth:`describe` reports about the matrix (kernel, entries, build seconds).
    """

    kind = "matrix"

    def __init__(self, a: torch.Tensor, at: torch.Tensor, vol_shape: tuple[int, ...],
                 proj_shape: tuple[int, ...], info: dict) -> None:
        self._a, self._at = a, at
        self.vol_shape = tuple(int(n) for n in vol_shape)
        self.proj_shape = tuple(int(n) for n in proj_shape)
        self.info = dict(info)
        self.cuda = a.is_cuda

    @classmethod
    def from_operator(cls, op: AstraOperator, device: torch.device | str) -> "MatrixOperator":
        """The matrix of ``op``'s projector (or of the CPU kernel closest to it), on ``device``.

        Raises
        ------
        ValueError
            If ``op``'s slices are not independent 2D problems (cone beam, 3D vector geometries).
        """
        vg, pg, cpu_id, flip = _problem_2d(op)
        a, at, info = _build(vg, pg, cpu_id, flip)
        device = torch.device(device)
        return cls(a.to(device), at.to(device), op.vol_shape, op.proj_shape, info)

    @classmethod
    def from_geometry(cls, vol_geom: dict, proj_geom: dict, n_slices: int,
                      device: torch.device | str) -> "MatrixOperator":
        """A stack of ``n_slices`` independent 2D problems, as :meth:`AstraOperator.stack`.

        The matrix is Joseph's kernel (``linear``, the kernel of ASTRA's CUDA
        projector) or, where that is not defined, the closest CPU kernel.

        Raises
        ------
        ValueError
            For pixels that are not square (no CPU kernel takes them).
        """
        a, at, info = _build(vol_geom, proj_geom, None, False)
        device = torch.device(device)
        angles = len(proj_geom["ProjectionAngles"]) if "ProjectionAngles" in proj_geom \
            else len(proj_geom["Vectors"])
        return cls(a.to(device), at.to(device),
                   (n_slices, vol_geom["GridRowCount"], vol_geom["GridColCount"]),
                   (n_slices, angles, proj_geom["DetectorCount"]), info)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return len(self.vol_shape)

    @property
    def data_device(self) -> torch.device:
        return self._a.device

    def describe(self) -> dict:
        return {"kind": self.kind, "device": str(self.data_device), **self.info,
                "vol_shape": list(self.vol_shape), "proj_shape": list(self.proj_shape)}

    def slab(self, n_slices: int, gpu_index: int | None = None) -> "MatrixOperator":
        """The same matrix for any ``n_slices`` slices and their detector rows (see
        :meth:`AstraOperator.slab`); ``gpu_index`` is ignored (the matrix stays where it is)."""
        n = int(n_slices)
        if self.dim != 3 or not 1 <= n <= self.vol_shape[0]:
            raise ValueError(f"a slab needs 1 <= n_slices <= {self.vol_shape[0]} of a 3D volume")
        return MatrixOperator(self._a, self._at, (n, *self.vol_shape[1:]),
                              (n, *self.proj_shape[1:]), self.info)

    # ------------------------------------------------------------------ application
    def _apply(self, m: torch.Tensor, src: torch.Tensor, in_shape: tuple[int, ...],
               out_shape: tuple[int, ...], what: str, out: torch.Tensor | None) -> torch.Tensor:
        check_operand(src, in_shape, what)
        x = src.detach().to(m.device, m.dtype)
        # The projector stays in float32 inside a bf16 autocast region (MatmulPrecision bf16
        # is for the network's products; autocast would also cast this one, which sparse
        # kernels refuse on the CPU).
        with torch.autocast(m.device.type, enabled=False):
            if len(in_shape) == 2:
                y = m @ x.reshape(-1)
            else:
                # One column per slice: (entries of a slice, slices).
                y = (m @ x.reshape(in_shape[0], -1).T).T
        y = y.reshape(out_shape)
        if out is not None:
            out.copy_(y)
            y = out
        return y if y.device == src.device else y.to(src.device)

    def forward(self, vol: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Forward projection A x: float32 ``vol_shape`` -> ``proj_shape``, on ``vol``'s device."""
        return self._apply(self._a, vol, self.vol_shape, self.proj_shape, "volume", out)

    def adjoint(self, proj: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Backprojection A^T y, the exact transpose: ``proj_shape`` -> ``vol_shape``."""
        return self._apply(self._at, proj, self.proj_shape, self.vol_shape, "projections", out)

    def __call__(self, vol: torch.Tensor) -> torch.Tensor:
        return project(vol, self)  # type: ignore[arg-type]

    def close(self) -> None:
        """Nothing to free in ASTRA (the matrix is torch's); kept for the operator interface."""


def training_operator(op: AstraOperator, device: torch.device, mode: str
                      ) -> tuple[AstraOperator | MatrixOperator, str | None]:
    """The operator a trainer's steps use, and why it is not a matrix when it is not.

    Parameters
    ----------
    op : AstraOperator
        The problem's operator (ASTRA's projector).
    device : torch.device
        Where the network trains.
    mode : {'auto', 'on', 'off'}
        ``ProjectorMatrix``: 'auto' uses a matrix on a GPU for 2D problems and
        stacks of 2D slices up to :data:`AUTO_MAX_ENTRIES` estimated entries;
        'on' wherever slices are independent 2D problems (any device, any
        size); 'off' never.

    Returns
    -------
    (operator, reason) : the matrix operator and None, or ``op`` and why not.

    Raises
    ------
    ValueError
        With 'on' for geometries whose slices see each other (cone beam).
    """
    if mode == "off":
        return op, "ProjectorMatrix is off"
    if mode == "auto":
        if device.type != "cuda":
            return op, ("on the CPU a step is bound by the network: the matrix's faster "
                        "products (0.012 against ASTRA's 0.049 s per projection at 256 x 256, "
                        "100 angles) did not shorten steps beyond their run-to-run spread")
        if op.kind == "direct3d":
            return op, "3D problems use ASTRA's cuda3d projector ('on' takes parallel3d's matrix)"
        if estimated_entries(op) > AUTO_MAX_ENTRIES:
            return op, (f"its matrix would have about {estimated_entries(op):.3g} entries, above "
                        f"the {AUTO_MAX_ENTRIES:.3g} of ProjectorMatrix='auto'")
    try:
        matrix = MatrixOperator.from_operator(op, device)
    except ValueError as exc:
        if mode == "on":
            raise ValueError(f"ProjectorMatrix='on' needs slices that are independent 2D problems: "
                             f"{exc}") from exc
        return op, str(exc)
    if mode == "auto":
        # One product each way before training relies on them: a device or build of torch
        # without this sparse product leaves ASTRA's calls in place instead of failing later.
        try:
            matrix.adjoint(matrix.forward(torch.zeros(op.vol_shape, device=device)))
        except RuntimeError as exc:
            return op, f"the sparse product failed on {device} ({type(exc).__name__}: {exc})"[:300]
    return matrix, None
