"""Reconstruct a scan file end to end: reader -> preprocessing -> geometry -> algorithm -> result folder.

This is the core behind ``astra-inr reconstruct`` and ``astra-inr batch``
(the command line only parses arguments).  Every algorithm sees the same
preprocessed sinograms and geometry:

* the volume is a stack of slices, one per detector row kept (after
  ``rows`` and ``binning``), each ``n x n`` pixels with ``n`` the detector
  width (for a half-acquisition scan, a full turn with the axis near one
  edge, the whole field it sees: almost twice that), pixels the size of a
  detector pixel (mm when the file says, then
  the volume is in 1/mm; else detector pixels), slices in ASTRA's 2D row
  order (row 0 at the top) as 2D FBP/SIRT give them;
* the rotation axis is where preprocessing found (or was told) it: SIRT,
  CGLS and INR use an exact ``parallel_vec`` geometry with the detector
  offset; FBP (ASTRA's CPU FBP knows only ``parallel``) uses the sinogram
  shifted so the axis is at the detector centre (a half acquisition: placed
  on a detector of the whole field and weighted so each line counts once);
* FBP/SIRT/CGLS run slice by slice through ASTRA (``*_CUDA`` on a GPU); INR
  reconstructs all slices as one 3D implicit representation.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import astra
import numpy as np

from .checkpoint import RunCheckpoint
from .config import INRConfig
from .fit import AUTO_MAX_ROUNDS, AUTO_ROUND, TV_WEIGHT_STAGE, INRTrainer, Progress
from .geometry import VolumeGrid
from .io import open_scan
from .operator import AstraOperator
from .options import coerce_all, option, unknown_names_error
from .preprocess import PreprocessOptions, Sinograms, parallel_geometry, preprocess
from .preprocess.geometry import field_of_view, is_half_acquisition, weight_half_acquisition
from .results import save_result

__all__ = ["ALGORITHMS", "ReconOptions", "reconstruct", "reconstruct_sinograms",
           "INR_FIELDS_SHARED"]

ALGORITHMS = ("INR", "FBP", "SIRT", "CGLS")
#: Iterations when none are given; INR: None, chosen by the data (INRTrainer.run_until_fitted).
_DEFAULT_ITERATIONS = {"INR": None, "FBP": 1, "SIRT": 100, "CGLS": 20}
#: INR options the command line sets through its own shared flags.
INR_FIELDS_SHARED = ("device", "min_constraint", "max_constraint", "verbose")

#: Called as progress(stage, done, total, message).
ProgressFn = Callable[[str, int, int, str], None]


@dataclass
class ReconOptions:
    """Everything ``astra-inr reconstruct`` does to one input (snake_case = the CLI flags)."""

    # reading
    angles: str | None = option(None, "angles", "Projection angles for TIFF folders and single "
                                "sinograms: 'start:stop:count' in degrees, stop excluded "
                                "(append ':endpoint' to include it).", "optional_str")
    values: str | None = option(None, "values", "What a single sinogram holds.",
                                "optional_choice", ("counts", "transmission", "line_integrals"))
    pixel_size: float | None = option(None, "pixel_size", "Detector pixel size in mm "
                                      "(overrides the file).", "optional_float")
    proj_pattern: str | None = option(None, "proj_pattern", "TIFF folder: projection files "
                                      "(default '*proj*').", "optional_str")
    flat_pattern: str | None = option(None, "flat_pattern", "TIFF folder: flat fields "
                                      "(default '*flat*').", "optional_str")
    dark_pattern: str | None = option(None, "dark_pattern", "TIFF folder: dark fields "
                                      "(default '*dark*').", "optional_str")
    # preprocessing
    rows: str | None = option(None, "rows", "Detector rows A:B of the file (0-based, B "
                              "excluded; default all).", "optional_str")
    binning: int = option(1, "binning", "Average KxK detector pixels.", "positive_int")
    angles_step: int = option(1, "angles_step", "Use every K-th projection.", "positive_int")
    center: float | str = option("auto", "center", "Rotation centre in detector columns of "
                                 "the file (0-based) or 'auto'.", "auto|nonneg")
    stripe_removal: str = option("none", "stripe_removal", "Ring removal: 'none', 'sorting' "
                                 "(Vo et al. 2018, algorithm 3) or 'all' (algorithms 6, 5, 3).",
                                 "choice", ("none", "sorting", "all"))
    flat_columns: str | None = option(None, "flat_columns", "Open-beam detector columns "
                                      "A:B used as (or to correct) the flat field.",
                                      "optional_str")
    size: int | None = option(None, "size", "Reconstruction grid: N x N pixels of the detector "
                              "pixel size, centred on the axis (default: the detector width; for a "
                              "half-acquisition scan, the whole field its turn sees).",
                              "optional_int")
    # algorithm
    algorithm: str = option("INR", "algorithm", "INR, FBP, SIRT or CGLS.", "choice",
                            tuple(a.lower() for a in ALGORITHMS))
    iterations: int | None = option(None, "iterations", "Iterations (default: SIRT 100, CGLS "
                                    f"20; INR {AUTO_ROUND} to {AUTO_ROUND * AUTO_MAX_ROUNDS}, "
                                    "longer while the data stay under-fitted).", "optional_int")
    fbp_filter: str = option("ram-lak", "fbp_filter", "FBP filter (ASTRA's FilterType).",
                             "choice", ("ram-lak", "shepp-logan", "cosine", "hamming", "hann"))
    min_constraint: float | None = option(0.0, "min_constraint", "Lower bound for SIRT and INR "
                                          "(attenuation is >= 0; 'none' to lift).",
                                          "optional_float")
    max_constraint: float | None = option(None, "max_constraint", "Upper bound for SIRT and "
                                          "INR.", "optional_float")
    device: str = option("auto", "device", "'auto', 'cpu' or 'cuda' (ASTRA's CUDA algorithms "
                         "and the INR's network).", "choice", ("auto", "cpu", "cuda"))
    inr: dict = dataclasses.field(default_factory=dict, metadata={"doc": "INR options (snake_case "
                                                                  "fields of INRConfig)."})

    def __post_init__(self) -> None:
        coerce_all(self)
        self.algorithm = self.algorithm.upper()
        valid = {f.name for f in dataclasses.fields(INRConfig)} - set(INR_FIELDS_SHARED)
        unknown = [k for k in self.inr if k not in valid]
        if unknown:
            raise unknown_names_error(unknown, valid, "INR option")
        config = self.inr_config()     # validate INR values now, not after preprocessing
        self.inr = {k: getattr(config, k) for k in self.inr}
        self.preprocess_options()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], what: str = "option") -> "ReconOptions":
        """Build from flat snake_case keys (CLI or TOML); INR keys go to ``inr``.

        Raises
        ------
        ValueError
            Unknown keys (listing the valid ones) or bad values.
        """
        own = {f.name for f in dataclasses.fields(cls)} - {"inr"}
        inr_keys = {f.name for f in dataclasses.fields(INRConfig)} - set(INR_FIELDS_SHARED)
        unknown = [k for k in values if k not in own | inr_keys]
        if unknown:
            raise unknown_names_error(unknown, own | inr_keys, what)
        return cls(**{k: v for k, v in values.items() if k in own},
                   inr={k: v for k, v in values.items() if k in inr_keys})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def n_iterations(self) -> int | None:
        """The iterations to run; None for INR without a count (the data choose it)."""
        return self.iterations if self.iterations is not None else _DEFAULT_ITERATIONS[self.algorithm]

    def scan_hints(self) -> dict[str, Any]:
        keys = ("angles", "values", "pixel_size", "proj_pattern", "flat_pattern", "dark_pattern")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def preprocess_options(self) -> PreprocessOptions:
        return PreprocessOptions(rows=self.rows, binning=self.binning, angles_step=self.angles_step,
                                 center=self.center, stripe_removal=self.stripe_removal,
                                 flat_columns=self.flat_columns)

    def inr_config(self) -> INRConfig:
        return INRConfig(**self.inr, device=self.device, min_constraint=self.min_constraint,
                         max_constraint=self.max_constraint)


# ---------------------------------------------------------------------------
# Geometry of preprocessed sinograms
# ---------------------------------------------------------------------------

def _geometries(sino: Sinograms, size: int | None = None) -> tuple[dict, dict, VolumeGrid]:
    """(2D volume geometry, exact 2D projection geometry, 3D grid).

    The grid is ``size`` x ``size`` pixels of the detector pixel size, centred on
    the rotation axis; by default as wide as the field of view
    (:func:`~astra_inr.preprocess.geometry.field_of_view`: the detector's width, or
    for a half-acquisition scan the whole field its turn sees).
    """
    n_rows, _, n_cols = sino.data.shape
    # Preprocessing fixed the field from all the scan's angles; a subset keeps that grid.
    n = int(size or sino.report.get("field_of_view_columns")
            or field_of_view(sino.angles, n_cols, sino.center))
    px = sino.pixel_size or 1.0
    half = n * px / 2
    vg = astra.create_vol_geom(n, n, -half, half, -half, half)
    exact = parallel_geometry(sino.angles, n_cols, sino.pixel_size, sino.center)
    # Slices: one per kept detector row, as thick as a (binned) pixel, centred on z = 0.
    z_half = n_rows * px / 2
    grid = VolumeGrid((n_rows, n, n), (-half, -half, -z_half), (half, half, z_half),
                      stacked_2d=True)
    return vg, exact, grid


def _fbp_input(sino: Sinograms) -> tuple[np.ndarray, dict, str]:
    """Sinograms, a plain 'parallel' geometry for them (ASTRA's CPU FBP takes no other), and how.

    The axis must sit at the detector's centre: an off-centre axis is shifted there
    (the detector widened with its edge values); a half-acquisition scan is placed on
    a detector of the whole field and weighted instead
    (:func:`~astra_inr.preprocess.geometry.weight_half_acquisition`), since widening its
    short side with edge values would invent half the sample.
    """
    if is_half_acquisition(sino.angles, sino.n_cols, sino.center):
        data = weight_half_acquisition(sino.data, sino.center)
        how = "half acquisition: on a detector of the whole field, weighted (Wang 2002)"
    elif abs(sino.center - (sino.n_cols - 1) / 2) > 1e-9:
        data, how = sino.centered(), "shifted so the axis is centred"
    else:
        data, how = sino.data, "as measured"
    return data, parallel_geometry(sino.angles, data.shape[-1], sino.pixel_size), how


def _use_cuda(device: str) -> bool:
    if device == "cpu":
        return False
    if device == "cuda" and not astra.use_cuda():
        raise RuntimeError("device='cuda' was requested but ASTRA has no usable GPU "
                           "(astra.use_cuda() is False)")
    return bool(astra.use_cuda())


def _astra_slices(name: str, sinos: np.ndarray, vg: dict, pg: dict, iterations: int,
                  options: dict[str, Any], cuda: bool, progress: ProgressFn | None) -> np.ndarray:
    """Run an ASTRA 2D algorithm on each sinogram row; returns (rows, n, n) float32."""
    projector = astra.create_projector("cuda" if cuda else "linear", pg, vg)
    out = np.empty((sinos.shape[0], vg["GridRowCount"], vg["GridColCount"]), np.float32)
    try:
        for k, sino in enumerate(sinos):
            sid = astra.data2d.create("-sino", pg, sino)
            rid = astra.data2d.create("-vol", vg, 0)
            cfg = astra.astra_dict(name + ("_CUDA" if cuda else ""))
            cfg.update(ProjectorId=projector, ProjectionDataId=sid, ReconstructionDataId=rid,
                       option=options)
            alg = astra.algorithm.create(cfg)
            try:
                astra.algorithm.run(alg, iterations)
                out[k] = astra.data2d.get(rid)
            finally:
                astra.algorithm.delete(alg)
                astra.data2d.delete([sid, rid])
            if progress:
                progress(name, k + 1, len(sinos), f"slice {k + 1}/{len(sinos)}")
    finally:
        astra.projector.delete(projector)
    return out


def reconstruct_sinograms(sino: Sinograms, options: ReconOptions,
                          progress: ProgressFn | None = None,
                          checkpoint: RunCheckpoint | None = None,
                          ) -> tuple[np.ndarray, VolumeGrid, dict, Any]:
    """Reconstruct preprocessed sinograms with the chosen algorithm.

    Parameters
    ----------
    sino : Sinograms
    options : ReconOptions
    progress : callable(stage, done, total, message), optional
    checkpoint : RunCheckpoint, optional
        INR: its state is saved on the way (before each block after the first,
        or every ``CHECKPOINT_EVERY`` iterations of a given count) and a fitting
        saved state is gone on from (:mod:`astra_inr.checkpoint`).

    Returns
    -------
    volume : numpy.ndarray
        ``(slices, n, n)`` float32 (slices = detector rows kept).
    grid : VolumeGrid
    info : dict
        Algorithm, iterations, seconds, geometry and (INR) the training report.
    field : INRField or None
        The trained INR (for the model file), None for FBP/SIRT/CGLS.
    """
    vg, exact, grid = _geometries(sino, options.size)
    cuda = _use_cuda(options.device)
    its = options.n_iterations
    info: dict[str, Any] = {"algorithm": options.algorithm, "iterations": its,
                            "projection_geometry": {"type": exact["type"], "angles": len(sino.angles),
                                                    "detector_columns": sino.n_cols,
                                                    "pixel_size_mm": sino.pixel_size,
                                                    "rotation_center_columns": sino.center},
                            "gpu_projectors": cuda}
    start = time.perf_counter()
    field = None
    if options.algorithm == "FBP":
        data, fbp_geometry, info["sinogram"] = _fbp_input(sino)
        volume = _astra_slices("FBP", np.ascontiguousarray(data, np.float32), vg, fbp_geometry, 1,
                               {"FilterType": options.fbp_filter}, cuda, progress)
        info["iterations"] = 1
        info["filter"] = options.fbp_filter
    elif options.algorithm in ("SIRT", "CGLS"):
        opts = {}
        if options.algorithm == "SIRT":
            if options.min_constraint is not None:
                opts["MinConstraint"] = options.min_constraint
            if options.max_constraint is not None:
                opts["MaxConstraint"] = options.max_constraint
        volume = _astra_slices(options.algorithm, np.ascontiguousarray(sino.data, np.float32), vg,
                               exact, its, opts, cuda, progress)
        info["astra_options"] = opts
    else:
        config = options.inr_config()
        with AstraOperator.stack(vg, exact, sino.data.shape[0], "cuda" if cuda else None,
                                 config.gpu_index) as op:
            trainer = INRTrainer(config, op, sino.data, grid)

            def report_progress(p: Progress) -> None:
                if not progress:
                    return
                if p.stage.startswith(TV_WEIGHT_STAGE):
                    # One bar over the ladder's rungs (TVWeight='heldout'), the weight in the message.
                    weight = p.stage[len(TV_WEIGHT_STAGE):].strip()
                    progress(TV_WEIGHT_STAGE, p.iteration, p.iterations,
                             f"w {weight} held-out residual {p.loss:.4f} fit {p.data_residual:.4f}")
                else:
                    progress("INR" if p.stage == "train" else p.stage, p.iteration, p.iterations,
                             f"loss {p.loss:.3e} residual {p.data_residual:.4f}")

            resume, save = None, None
            if checkpoint is not None:
                resume, finding = checkpoint.load()
                save = checkpoint.save
                info["checkpoint"] = {"file": str(checkpoint.path), "found": finding,
                                      "resumed_at_iteration": None if resume is None
                                      else resume["trainer"]["total_iterations"]}
                if progress and resume is not None:
                    progress("checkpoint", 1, 1, f"{finding} at iteration "
                             f"{resume['trainer']['total_iterations']}")
            if its is None:
                chosen = trainer.run_until_fitted(callback=report_progress, checkpoint=save,
                                                  resume=resume)
                info["iterations"] = chosen["iterations"]
            else:
                trainer.run(its, callback=report_progress, checkpoint=save, resume=resume)
            if checkpoint is not None and checkpoint.save_failure is not None:
                info["checkpoint"]["save_failed"] = checkpoint.save_failure
            volume = trainer.image().cpu().numpy()
            info["inr"] = trainer.report()
            field = trainer.field
    info["seconds"] = time.perf_counter() - start
    return volume, grid, info, field


def reconstruct(input_path: str | Path, out_dir: str | Path, options: ReconOptions | None = None,
                overwrite: bool = False, progress: ProgressFn | None = None,
                resume: bool = True) -> Path:
    """Read, preprocess, reconstruct and write one scan.

    Parameters
    ----------
    input_path : path
        DXchange/NXtomo HDF5, a TIFF folder, or a single sinogram (TIFF/.npy).
    out_dir : path
        Result folder (TIFF stack, report.json, model.pt for INR); appears
        only when complete.
    options : ReconOptions
    overwrite : bool
        Replace an existing result; otherwise ``FileExistsError`` before any work.
    progress : callable(stage, done, total, message), optional
    resume : bool
        INR saves its state beside ``out_dir`` every 400 iterations
        (``.<name>.checkpoint.pt``, removed once the result is written); run
        again on the same scan with the same options, it goes on from there.
        False: start afresh (the old checkpoint is then replaced).

    Returns
    -------
    Path
        The result folder.
    """
    options = options or ReconOptions()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    scan = open_scan(input_path, **options.scan_hints())
    pre = options.preprocess_options()
    sino = preprocess(scan, pre, progress=(lambda d, t: progress("preprocess", d, t, "rows"))
                      if progress else None)
    t_pre = time.perf_counter() - t0
    checkpoint = None
    if options.algorithm == "INR":
        checkpoint = RunCheckpoint(out_dir, sino.data, sino.angles, sino.center, sino.pixel_size,
                                   options.to_dict())
        if not resume:
            checkpoint.remove()
    volume, grid, info, field = reconstruct_sinograms(sino, options, progress, checkpoint)
    report = {
        "input": scan.summary(),
        "preprocessing": sino.report,
        "preprocessing_options": pre.to_dict(),
        "reconstruction": info,
        "options": options.to_dict(),
        "volume": grid.to_dict(),
        "units": "1/mm" if sino.pixel_size else "1/pixel",
        "seconds": {"preprocessing": t_pre, "reconstruction": info["seconds"],
                    "total": time.perf_counter() - t0},
    }
    result = save_result(out_dir, volume, report, grid, field=field,
                         options=info.get("inr", {}).get("options"),
                         units="mm" if sino.pixel_size else None, overwrite=overwrite)
    if checkpoint is not None:
        checkpoint.remove()
    return result
