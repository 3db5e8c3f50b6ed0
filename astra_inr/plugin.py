"""The ASTRA-facing adapter: ``cfg`` and data objects in, the volume out.

Only translation happens here: ASTRA ids -> geometries, an operator and a
sinogram -> :class:`~astra_inr.fit.INRTrainer`; the trained volume is copied
back into ``ReconstructionDataId`` after every ``run``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import astra
import numpy as np

from . import geometry as geo
from .config import INRConfig, option_help
from .fit import TV_WEIGHT_STAGE, INRTrainer, Progress
from .operator import AstraOperator
from .results import save_result

__all__ = ["INRPlugin", "export", "report"]

_DOC = """INR: reconstruction by a constrained-ReLU implicit neural representation.

Trains a coordinate network (BW-ReLU neurons: B-spline wavelets built from
ReLUs) so that ASTRA's forward projection of the volume it represents matches
the projection data.  Use it like SIRT:

    import astra, astra_inr          # importing astra_inr registers 'INR'
    cfg = astra.astra_dict('INR')
    cfg['ProjectorId'] = proj_id     # required for 2D data, optional for 3D
    cfg['ProjectionDataId'] = sino_id
    cfg['ReconstructionDataId'] = rec_id
    cfg['option'] = {'Seed': 0}
    alg = astra.algorithm.create(cfg)
    astra.algorithm.run(alg, 500)    # 500 more training iterations
    astra_inr.report(alg)            # residual, loss history, timing, options

2D: parallel, parallel_vec, fanflat, fanflat_vec with any 2D projector (CPU
or 'cuda').  3D: parallel3d, parallel3d_vec, cone, cone_vec through cuda3d
when a GPU is present; without one, parallel3d runs slice by slice on 2D CPU
projectors and the others are refused.

Options (cfg['option']; no string option may contain a comma, which makes
ASTRA abort the process):
""" + option_help()


def _data_kind(data_id: Any, key: str) -> tuple[int, dict]:
    """(2 or 3, geometry) of an ASTRA data object, or a clear error for a bad id."""
    if isinstance(data_id, bool) or not isinstance(data_id, (int, np.integer, float)):
        raise ValueError(f"cfg['{key}'] must be an ASTRA data id (an integer), got {data_id!r}")
    data_id = int(data_id)
    for dim, module in ((2, astra.data2d), (3, astra.data3d)):
        try:
            return dim, module.get_geometry(data_id)
        except Exception:
            continue
    raise ValueError(f"cfg['{key}'] = {data_id} is not an existing ASTRA data object "
                     "(deleted, or never created with astra.data2d/data3d.create)")


def _projector_dim(projector_id: Any) -> int | None:
    if projector_id is None:
        return None
    pid = int(projector_id)
    try:
        astra.projector.projection_geometry(pid)
        return 2
    except Exception:
        pass
    try:
        astra.projector3d.projection_geometry(pid)
        return 3
    except Exception:
        raise ValueError(f"cfg['ProjectorId'] = {pid} is not an existing ASTRA projector") from None


class INRPlugin(astra.plugin.base):
    __doc__ = _DOC
    astra_name = "INR"

    def astra_init(self, cfg: dict) -> None:
        # Overrides astra.plugin.base.astra_init: ASTRA only warns about unknown
        # options, but a misspelt option silently changing results is worse.
        self.config = INRConfig.from_options(cfg.get("options", {}))
        for key in ("ProjectionDataId", "ReconstructionDataId"):
            if key not in cfg:
                raise ValueError(f"cfg['{key}'] is required")
        dim, proj_geom = _data_kind(cfg["ProjectionDataId"], "ProjectionDataId")
        rec_dim, vol_geom = _data_kind(cfg["ReconstructionDataId"], "ReconstructionDataId")
        self.sino_id, self.rec_id, self.dim = int(cfg["ProjectionDataId"]), int(cfg["ReconstructionDataId"]), dim
        if rec_dim != dim:
            raise ValueError(f"ProjectionDataId is {dim}D data but ReconstructionDataId is {rec_dim}D")
        kind = proj_geom.get("type")
        allowed = geo.PROJ_TYPES_2D if dim == 2 else geo.PROJ_TYPES_3D
        if kind not in allowed:
            raise ValueError(f"ProjectionDataId has geometry {kind!r}; INR handles {allowed} in {dim}D")
        grid = geo.volume_grid(vol_geom)
        self.operator = self._make_operator(cfg.get("ProjectorId"), dim, vol_geom, proj_geom)
        if self.operator.vol_shape != grid.shape or self.operator.proj_shape != geo.projection_shape(proj_geom):
            raise ValueError(
                f"the projector does not match the data: projector volume {self.operator.vol_shape} "
                f"and projections {self.operator.proj_shape}, data volume {grid.shape} and "
                f"projections {geo.projection_shape(proj_geom)}")
        module = astra.data2d if dim == 2 else astra.data3d
        sinogram = np.array(module.get_shared(self.sino_id), dtype=np.float32, copy=True)
        self.trainer = INRTrainer(self.config, self.operator, sinogram, grid)
        self.projection_geometry = geo.projection_summary(proj_geom)

    def _make_operator(self, projector_id: Any, dim: int, vol_geom: dict,
                       proj_geom: dict) -> AstraOperator:
        pdim = _projector_dim(projector_id)
        if dim == 2:
            if pdim is None:
                raise ValueError("cfg['ProjectorId'] is required for 2D data (e.g. a 'linear', "
                                 "'strip', 'line_fanflat' or 'cuda' projector)")
            if pdim != 2:
                raise ValueError(f"cfg['ProjectorId'] = {projector_id} is a 3D projector but the data is 2D")
            if not astra.data2d_c.check_compatible(self.sino_id, int(projector_id)):
                raise ValueError("the projector's projection geometry does not match ProjectionDataId")
            if not astra.data2d_c.check_compatible(self.rec_id, int(projector_id)):
                raise ValueError("the projector's volume geometry does not match ReconstructionDataId")
            return AstraOperator.from_projector(int(projector_id), dim=2)
        if pdim == 2:
            raise ValueError(f"cfg['ProjectorId'] = {projector_id} is a 2D projector but the data is 3D")
        if pdim == 3 and astra.use_cuda():
            return AstraOperator.from_projector(int(projector_id), dim=3)
        # No projector given, or no GPU to run the given cuda3d one: build our own.
        return AstraOperator.create(vol_geom, proj_geom, gpu_index=self.config.gpu_index)

    def run(self, iterations: int = 1) -> None:
        callback = self._print_progress if self.config.verbose else None
        self.trainer.run(iterations, callback=callback)
        image = self.trainer.image().cpu().numpy()
        module = astra.data2d if self.dim == 2 else astra.data3d
        np.copyto(module.get_shared(self.rec_id), image)

    @staticmethod
    def _print_progress(p: Progress) -> None:
        if p.stage.startswith(TV_WEIGHT_STAGE):     # TVWeight='heldout' trying its ladder
            line = (f"INR {p.stage} ({p.iteration}/{p.iterations}): held-out residual "
                    f"{p.loss:.4f}, fit residual {p.data_residual:.4f} {p.seconds:.1f}s")
        else:
            line = (f"INR {p.iteration}/{p.iterations} (total {p.total_iterations}) "
                    f"loss {p.loss:.4e} lr {p.learning_rate:.2e} {p.seconds:.1f}s")
        print(line, file=sys.stderr, flush=True)

    def report(self) -> dict[str, Any]:
        out = self.trainer.report()
        out["projection_geometry"] = self.projection_geometry
        return out


def _plugin(alg_id: int) -> INRPlugin:
    try:
        obj = astra.algorithm.get_plugin_object(alg_id)
    except Exception:
        obj = None
    if not isinstance(obj, INRPlugin):
        raise ValueError(f"algorithm {alg_id} is not an INR algorithm created with astra.algorithm.create")
    return obj


def export(alg_id: int, out_dir: str | os.PathLike, overwrite: bool = False,
           units: str | None = None) -> Path:
    """Write an INR algorithm's current result: TIFF stack, report.json and the model.

    Parameters
    ----------
    alg_id : int
        An 'INR' algorithm that has run at least once.
    out_dir : path
        Folder to create (written under a temporary name, renamed when complete).
    overwrite : bool
        Replace an existing folder; otherwise ``FileExistsError``.
    units : str, optional
        World units of the geometry, e.g. 'mm' (then the TIFF resolution tags
        are standard centimetre tags).

    Returns
    -------
    Path
        The folder; ``astra_inr.load(path).render(upsample=2)`` re-evaluates the
        INR on a twice finer grid.
    """
    plugin = _plugin(alg_id)
    trainer = plugin.trainer
    if trainer.data_residual is None:
        raise RuntimeError(f"algorithm {alg_id} has not run yet: nothing to export")
    volume = trainer.image().cpu().numpy()
    return save_result(out_dir, volume, plugin.report(), trainer.grid, field=trainer.field,
                       options=trainer.config.to_options(), units=units, overwrite=overwrite)


def report(alg_id: int) -> dict[str, Any]:
    """The training report of an INR algorithm created through ASTRA.

    Parameters
    ----------
    alg_id : int
        Id returned by ``astra.algorithm.create`` for an 'INR' cfg.

    Returns
    -------
    dict
        ``iterations`` (total so far), ``data_residual`` (||Ax - y|| / ||y||
        after the last run; None before any), ``loss_history`` (thinned rows
        named by ``loss_history_columns``: iteration, loss, data residual, TV
        weight, Regulariser weight), ``estimated_noise_level``, ``estimated_inconsistency``,
        ``data_error_level`` (the two combined), ``discrepancy_target``,
        ``tv_weight`` (now) and ``tv_weight_floor`` (with its rule),
        ``support_mask`` (applied, free fraction, rule), ``seconds``,
        ``device``, ``options`` (resolved,
        CamelCase), the regularity report (path norms, Lipschitz bound and
        their history) and the geometry.

    Raises
    ------
    ValueError
        If ``alg_id`` is not an INR algorithm.
    """
    return _plugin(alg_id).report()
