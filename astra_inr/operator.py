"""ASTRA projectors as a linear operator on torch tensors, with autograd.

:class:`AstraOperator` maps a volume tensor to projections (forward
projection, FP) and back (backprojection, BP, the adjoint) by calling ASTRA's
zero-copy ``astra.experimental.direct_FP2D/BP2D/FP3D/BP3D`` on the tensors'
memory through DLPack: CPU tensors for CPU projectors, CUDA tensors for
``cuda``/``cuda3d`` projectors, no host round trip.  :func:`project` makes FP
differentiable (its gradient is BP).

Three backends:

* ``Direct2D``: any 2D projector id (``line``, ``strip``, ``linear``,
  ``line_fanflat``, ``cuda``, ...).
* ``Direct3D``: a ``cuda3d`` projector id (GPU only).
* ``slicewise3d``: a volume as a stack of independent 2D problems through
  one 2D projector, one detector row per volume slice.  This is how a
  ``parallel3d`` problem runs without a GPU (slices in ASTRA's 3D row order,
  i.e. each 2D image flipped), and how the command line reconstructs several
  detector rows of a scan (slices in 2D order, as 2D FBP/SIRT give them).
"""

from __future__ import annotations

import astra
import astra.experimental
import numpy as np
import torch

from . import geometry as geo

__all__ = ["AstraOperator", "project"]


def _sync(t: torch.Tensor) -> None:
    # ASTRA runs CUDA work on its own stream; pending torch kernels writing
    # the input must be finished first or ASTRA reads stale memory.
    if t.is_cuda:
        torch.cuda.current_stream(t.device).synchronize()


def check_operand(t: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
    """Refuse anything but a float32 tensor of ``shape`` (``what`` names it in the message)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{what} has shape {tuple(t.shape)}, expected {shape}")
    if t.dtype != torch.float32:
        raise TypeError(f"{what} has dtype {t.dtype}, expected torch.float32 (ASTRA computes in "
                        "float32)")


class AstraOperator:
    """The linear map from volume to projections defined by ASTRA projectors.

    Parameters
    ----------
    kind : {'direct2d', 'direct3d', 'slicewise3d'}
        Backend (see module docstring).  Prefer the constructors
        :meth:`from_projector` and :meth:`slicewise_parallel3d`.
    projector_id : int
        ASTRA projector (2D for 'direct2d' and 'slicewise3d', cuda3d for 'direct3d').
    vol_shape, proj_shape : tuple of int
        Array shapes in ASTRA's conventions (see :mod:`astra_inr.geometry`).
    cuda : bool
        Whether the projector computes on the GPU (then it is fed CUDA tensors).
    owns_projector : bool
        Delete the projector in :meth:`close` (it was created here).
    flip_rows : bool
        'slicewise3d' only: each volume slice is the 2D image with its rows
        reversed (ASTRA's 3D row order).
    """

    def __init__(self, kind: str, projector_id: int, vol_shape: tuple[int, ...],
                 proj_shape: tuple[int, ...], cuda: bool, owns_projector: bool = False,
                 flip_rows: bool = False) -> None:
        if kind not in ("direct2d", "direct3d", "slicewise3d"):
            raise ValueError(f"unknown operator kind {kind!r}")
        self.kind = kind
        self.projector_id = int(projector_id)
        self.vol_shape = tuple(int(n) for n in vol_shape)
        self.proj_shape = tuple(int(n) for n in proj_shape)
        self.cuda = bool(cuda)
        self.flip_rows = bool(flip_rows)
        self._owns = owns_projector
        self._closed = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_projector(cls, projector_id: int, dim: int = 2,
                       owns_projector: bool = False) -> "AstraOperator":
        """Wrap an existing ASTRA projector (2D, or ``cuda3d`` with ``dim=3``).

        Raises
        ------
        astra.log.AstraError
            If no projector of that dimension has this id.
        """
        if dim == 2:
            vg = astra.projector.volume_geometry(projector_id)
            pg = astra.projector.projection_geometry(projector_id)
            cuda = bool(astra.projector.is_cuda(projector_id))
            vol_shape = geo.volume_grid(vg).shape
            return cls("direct2d", projector_id, vol_shape, geo.projection_shape(pg), cuda,
                       owns_projector)
        if dim == 3:
            vg = astra.projector3d.volume_geometry(projector_id)
            pg = astra.projector3d.projection_geometry(projector_id)
            return cls("direct3d", projector_id, geo.volume_grid(vg).shape,
                       geo.projection_shape(pg), True, owns_projector)
        raise ValueError(f"dim must be 2 or 3, got {dim}")

    @classmethod
    def create(cls, vol_geom: dict, proj_geom: dict, projector: str | None = None,
               gpu_index: int | None = None) -> "AstraOperator":
        """Create a projector for these geometries and wrap it (owned: freed by close()).

        Parameters
        ----------
        projector : str, optional
            ASTRA projector type.  Default: ``cuda`` (2D) or ``cuda3d`` (3D) when
            ``astra.use_cuda()``, else ``linear`` (parallel) or ``line_fanflat``
            (fan beam).  3D without a GPU: ``parallel3d`` runs slice by slice
            through 2D CPU projectors; every other 3D geometry raises.
        gpu_index : int, optional
            GPU for ASTRA's CUDA projectors (their 'GPUindex' option).

        Raises
        ------
        astra.log.AstraError
            For a 3D geometry that needs a GPU when none is present.  Raised
            before any ASTRA 3D call, which would kill the process.
        """
        kind = proj_geom.get("type")
        gpu_options = None if gpu_index is None else {"GPUindex": int(gpu_index)}
        if kind in geo.PROJ_TYPES_3D:
            if astra.use_cuda():
                pid = astra.create_projector(projector or "cuda3d", proj_geom, vol_geom, gpu_options)
                return cls.from_projector(pid, dim=3, owns_projector=True)
            if kind != "parallel3d":
                raise astra.log.AstraError(
                    f"3D geometry {kind!r} needs ASTRA's CUDA projectors and no GPU is available "
                    "(astra.use_cuda() is False); only 'parallel3d' runs on the CPU, slice by slice")
            return cls.slicewise_parallel3d(vol_geom, proj_geom, projector)
        if kind not in geo.PROJ_TYPES_2D:
            raise ValueError(f"unsupported projection geometry type {kind!r}; expected one of "
                             f"{geo.PROJ_TYPES_2D + geo.PROJ_TYPES_3D}")
        if projector is None:
            if astra.use_cuda():
                projector = "cuda"
            else:
                projector = "linear" if kind.startswith("parallel") else "line_fanflat"
        pid = astra.create_projector(projector, proj_geom, vol_geom,
                                     gpu_options if projector == "cuda" else None)
        return cls.from_projector(pid, dim=2, owns_projector=True)

    @classmethod
    def slicewise_parallel3d(cls, vol_geom: dict, proj_geom: dict,
                             projector: str | None = None) -> "AstraOperator":
        """A ``parallel3d`` problem as one 2D CPU problem per slice (see geometry.parallel3d_as_2d)."""
        vol2d, proj2d = geo.parallel3d_as_2d(vol_geom, proj_geom)
        if projector is None or projector == "cuda3d":
            dx, dy = geo.volume_grid(vol2d).voxel_size
            if abs(dx - dy) > 1e-6 * dx:
                raise ValueError("without a GPU a parallel3d problem runs on ASTRA's 2D CPU "
                                 f"kernels, which need square pixels; these are {dx:g} x {dy:g}")
            projector = "linear"              # Joseph's kernel, as in cuda3d
        pid = astra.create_projector(projector, proj2d, vol2d)
        vol_shape = geo.volume_grid(vol_geom).shape
        return cls("slicewise3d", pid, vol_shape, geo.projection_shape(proj_geom), False, True,
                   flip_rows=True)

    @classmethod
    def stack(cls, vol_geom_2d: dict, proj_geom_2d: dict, n_slices: int,
              projector: str | None = None, gpu_index: int | None = None) -> "AstraOperator":
        """``n_slices`` independent 2D problems sharing one 2D geometry, slices in 2D order.

        Volume ``(n_slices, rows, cols)``, projections ``(n_slices, angles,
        detectors)``; slice k uses detector row k.  Projector as in :meth:`create`.
        """
        two_d = cls.create(vol_geom_2d, proj_geom_2d, projector, gpu_index)
        two_d._owns = False                 # ownership moves to the stack
        rows, cols = two_d.vol_shape
        angles, dets = two_d.proj_shape
        return cls("slicewise3d", two_d.projector_id, (n_slices, rows, cols),
                   (n_slices, angles, dets), two_d.cuda, True, flip_rows=False)

    def slab(self, n_slices: int, gpu_index: int | None = None) -> "AstraOperator":
        """An operator for any ``n_slices`` slices and their detector rows.

        Valid for stacks of 2D problems and for ``parallel3d`` with one
        detector row per slice: rays run within slices, so each slice projects
        onto its own row alone, whatever its height and whichever slices are
        stacked with it, and one projector serves every batch of ``n_slices``.
        Feed it ``vol[idx]`` and ``proj[idx]`` for the same indices (e.g.
        ``k:k+n``, or slices drawn apart).

        Raises
        ------
        ValueError
            For geometries where slices see each other (cone beam, tilted vectors).
        """
        n = int(n_slices)
        if not 1 <= n <= self.vol_shape[0] or self.dim != 3:
            raise ValueError(f"a slab needs 1 <= n_slices <= {self.vol_shape[0]} of a 3D volume")
        if self.kind == "slicewise3d":
            return AstraOperator("slicewise3d", self.projector_id, (n, *self.vol_shape[1:]),
                                 (n, *self.proj_shape[1:]), self.cuda, owns_projector=False,
                                 flip_rows=self.flip_rows)
        vg = astra.projector3d.volume_geometry(self.projector_id)
        pg = astra.projector3d.projection_geometry(self.projector_id)
        geo.parallel3d_as_2d(vg, pg)            # raises unless rows and slices pair up
        grid = geo.volume_grid(vg)
        dz = grid.voxel_size[2]
        slab_vg = astra.create_vol_geom(grid.shape[1], grid.shape[2], n, grid.minimum[0],
                                        grid.maximum[0], grid.minimum[1], grid.maximum[1],
                                        -n * dz / 2, n * dz / 2)
        slab_pg = astra.create_proj_geom("parallel3d", float(pg["DetectorSpacingX"]),
                                         float(pg["DetectorSpacingY"]), n,
                                         int(pg["DetectorColCount"]),
                                         np.asarray(pg["ProjectionAngles"], dtype=np.float64))
        options = None if gpu_index is None else {"GPUindex": int(gpu_index)}
        pid = astra.create_projector("cuda3d", slab_pg, slab_vg, options)
        return AstraOperator.from_projector(pid, dim=3, owns_projector=True)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return len(self.vol_shape)

    @property
    def data_device(self) -> torch.device:
        """Device ASTRA works on: CUDA tensors avoid a copy for GPU projectors."""
        return torch.device("cuda") if self.cuda else torch.device("cpu")

    def describe(self) -> dict:
        return {"kind": self.kind, "projector_id": self.projector_id, "gpu": self.cuda,
                "flip_rows": self.flip_rows,
                "vol_shape": list(self.vol_shape), "proj_shape": list(self.proj_shape)}

    # ------------------------------------------------------------------ application
    def _check(self, t: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
        check_operand(t, shape, what)
        if self._closed:
            raise RuntimeError("this AstraOperator was closed (its projector is deleted)")

    def _to_astra(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if self.cuda and not t.is_cuda:
            t = t.cuda()
        elif not self.cuda and t.is_cuda:
            t = t.cpu()
        return t.contiguous()

    def forward(self, vol: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Forward projection A x.

        Parameters
        ----------
        vol : torch.Tensor
            float32, shape ``vol_shape``, any device.
        out : torch.Tensor, optional
            Preallocated result on ASTRA's device (overwritten).

        Returns
        -------
        torch.Tensor
            float32, shape ``proj_shape``, on ``vol``'s device.
        """
        self._check(vol, self.vol_shape, "volume")
        src = self._to_astra(vol)
        dst = out if out is not None else torch.empty(self.proj_shape, dtype=torch.float32,
                                                      device=src.device)
        self._run(True, src, dst)
        return dst if dst.device == vol.device else dst.to(vol.device)

    def adjoint(self, proj: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Backprojection A^T y (the exact adjoint for CPU projectors).

        Parameters
        ----------
        proj : torch.Tensor
            float32, shape ``proj_shape``, any device.

        Returns
        -------
        torch.Tensor
            float32, shape ``vol_shape``, on ``proj``'s device.
        """
        self._check(proj, self.proj_shape, "projections")
        src = self._to_astra(proj)
        dst = out if out is not None else torch.empty(self.vol_shape, dtype=torch.float32,
                                                      device=src.device)
        self._run(False, src, dst)
        return dst if dst.device == proj.device else dst.to(proj.device)

    def _run(self, fp: bool, src: torch.Tensor, dst: torch.Tensor) -> None:
        _sync(src)
        # ASTRA's direct calls take (projector, volume, projections) both ways.
        if self.kind == "direct2d":
            if fp:
                astra.experimental.direct_FP2D(self.projector_id, src, dst)
            else:
                astra.experimental.direct_BP2D(self.projector_id, dst, src)
        elif self.kind == "direct3d":
            if fp:
                astra.experimental.direct_FP3D(self.projector_id, src, dst)
            else:
                astra.experimental.direct_BP3D(self.projector_id, dst, src)
        else:
            self._run_slicewise(fp, src, dst)

    def _run_slicewise(self, fp: bool, src: torch.Tensor, dst: torch.Tensor) -> None:
        # Volume slice k <-> detector row k.  With flip_rows the 2D image is the
        # 3D slice with its rows reversed (2D row 0 is the largest y, 3D row 0
        # the smallest).
        for k in range(self.vol_shape[0]):
            if fp:
                image = src[k].flip(0).contiguous() if self.flip_rows else src[k]
                astra.experimental.direct_FP2D(self.projector_id, image, dst[k])
            elif self.flip_rows:
                image = torch.empty(self.vol_shape[1:], dtype=torch.float32, device=src.device)
                astra.experimental.direct_BP2D(self.projector_id, image, src[k])
                dst[k].copy_(image.flip(0))
            else:
                astra.experimental.direct_BP2D(self.projector_id, dst[k], src[k])

    def __call__(self, vol: torch.Tensor) -> torch.Tensor:
        """Differentiable forward projection (see :func:`project`)."""
        return project(vol, self)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the ASTRA projector if this operator created it."""
        if self._owns and not self._closed:
            try:
                if self.kind == "direct3d":
                    astra.projector3d.delete(self.projector_id)
                else:
                    astra.projector.delete(self.projector_id)
            except Exception:  # interpreter shutdown: ASTRA may be gone
                pass
        self._closed = True

    def __enter__(self) -> "AstraOperator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vol: torch.Tensor, op: AstraOperator) -> torch.Tensor:  # type: ignore[override]
        ctx.op = op
        return op.forward(vol)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return ctx.op.adjoint(grad.contiguous()), None


def project(vol: torch.Tensor, op: AstraOperator) -> torch.Tensor:
    """Forward projection A x that autograd differentiates (gradient A^T g).

    Parameters
    ----------
    vol : torch.Tensor
        float32, shape ``op.vol_shape``; may require grad.
    op : AstraOperator

    Returns
    -------
    torch.Tensor
        Projections, shape ``op.proj_shape``, on ``vol``'s device.
    """
    return _Project.apply(vol, op)
