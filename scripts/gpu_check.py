#!/usr/bin/env python
"""One prepared run on a GPU machine: correctness of the CUDA paths, then every GPU speed row.

    python scripts/gpu_check.py [--out DIR] [--budget 420] [--sections 2d,3d,...]

Sections (each guarded: a failure is reported and the next runs):

1. 2D ``cuda`` projector through the ASTRA plugin: INR on GPU vs SIRT_CUDA
   (orientation) and vs the same INR on the CPU path (quality).
2. 3D ``cuda3d``: the CPU slice-by-slice operator against cuda3d's forward
   projection (same convention, rows flipped as DESIGN.md says), a parallel3d
   and a cone-beam INR through the plugin against SIRT3D_CUDA (orientation).
3. CUDA graphs: 200 training steps with and without them (2D with noise, 3D
   in slabs), same seed: the volumes and residual histories must agree.
3b. Checkpoint: a data-chosen run killed before its second block and resumed
   in a fresh trainer, against the same run uninterrupted (blocks, volumes,
   CUDA graphs after the restore).
4. Projector matrix: ASTRA's matrix on the GPU against the cuda and cuda3d
   projectors (relative difference, milliseconds per product), and INR with
   the matrix (the default) against ASTRA calls at every step (PSNR, seconds).
5. Speed: BW-ReLU vs ReLU (eager and graphed), iteration vs matrix products,
   2D 256x256 / 100 angles iterations per second without graphs and, with
   them, in float32, TF32 and bf16 (with the PSNR each reaches, to judge
   accuracy), the 3D 256^3 reconstruction against SIRT3D_CUDA, and a 512^3
   volume (memory).  The 2D rate with graphs is measured with the matrix
   (the default) and with ASTRA calls (ProjectorMatrix off).
6. Defaults check: INR's defaults (iterations chosen by the data) against 500
   and 1000 iterations, a fixed TV weight and a 0.1 floor on simulated
   Shepp-Logan and real-CT cases, beside tuned FBP/SIRT/CGLS (GPU ASTRA).
7. Only when asked (``--sections 3d-variants``): the 256^3 row at the defaults,
   with contiguous slabs and with learning rate 5e-3, 100 s each.

Writes ``gpu_check.json`` to ``--out`` (default ``$OUT`` or the current folder)
and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import astra
import numpy as np
import torch

import astra_inr
from astra_inr import AstraOperator, INRConfig, INRTrainer, volume_grid
from astra_inr.metrics import psnr
from astra_inr.speed import activation_cost, machine, matmul_floor, training_speed_2d, volume_3d

RESULTS: dict = {"sections": {}}
START = time.perf_counter()
OUT_DIR = Path(os.environ.get("OUT", "."))


def save() -> None:
    """Write what is known so far (a run cut off at its time limit still leaves its results)."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS["elapsed_seconds"] = time.perf_counter() - START
    (OUT_DIR / "gpu_check.json").write_text(json.dumps(RESULTS, indent=2, default=str))


def section(name: str):
    def wrap(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            print(f"\n== {name} (t={t0 - START:.0f}s)", flush=True)
            try:
                out = fn(*args, **kwargs)
                RESULTS["sections"][name] = {"ok": True, "seconds": time.perf_counter() - t0, **(out or {})}
            except Exception as exc:  # report and go on: one run must answer everything it can
                traceback.print_exc()
                RESULTS["sections"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                             "seconds": time.perf_counter() - t0}
            print(json.dumps(RESULTS["sections"][name], default=str)[:1500], flush=True)
            save()
        return run
    return wrap


def corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _run_alg(name, proj_id, sid, rid, its, options=None, dim=2):
    cfg = astra.astra_dict(name)
    if proj_id is not None:
        cfg["ProjectorId"] = proj_id
    cfg.update(ProjectionDataId=sid, ReconstructionDataId=rid)
    if options:
        cfg["option"] = options
    alg = astra.algorithm.create(cfg)
    astra.algorithm.run(alg, its)
    data = (astra.data2d if dim == 2 else astra.data3d).get(rid)
    return data, alg


@section("2D cuda plugin vs SIRT_CUDA and the CPU path")
def check_2d():
    n = 96
    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, 144, np.linspace(0, np.pi, 60, endpoint=False))
    _, phantom = astra.data2d.shepp_logan(vg)
    cpu = astra.create_projector("linear", pg, vg)
    gpu = astra.create_projector("cuda", pg, vg)
    sid, sino = astra.create_sino(phantom, cpu)
    rid = astra.data2d.create("-vol", vg, 0)
    sirt, _ = _run_alg("SIRT_CUDA", gpu, sid, rid, 200)
    sirt = sirt.copy()
    opts = {"Seed": 0, "MinConstraint": 0.0}
    inr_gpu, alg = _run_alg("INR", gpu, sid, rid, 300, opts)
    inr_gpu = inr_gpu.copy()
    rep = astra_inr.report(alg)
    inr_cpu, _ = _run_alg("INR", cpu, sid, rid, 300, {**opts, "Device": "cpu"})
    flips = {"same": corr(inr_gpu, sirt), "rows reversed": corr(inr_gpu[::-1], sirt),
             "cols reversed": corr(inr_gpu[:, ::-1], sirt)}
    return {"device": rep["device"], "corr_with_sirt_cuda": flips,
            "orientation_ok": max(flips, key=flips.get) == "same" and flips["same"] > 0.9,
            "psnr_inr_gpu": psnr(inr_gpu, phantom), "psnr_inr_cpu": psnr(inr_cpu, phantom),
            "psnr_sirt_cuda_200": psnr(sirt, phantom), "seconds_inr_gpu_300": rep["seconds"]}


@section("3D: slicewise CPU operator vs cuda3d, plugin parallel3d and cone vs SIRT3D_CUDA")
def check_3d():
    n, s = 64, 8
    vg = astra.create_vol_geom(n, n, s)
    angles = np.linspace(0, np.pi, 90, endpoint=False)
    pg = astra.create_proj_geom("parallel3d", 1.0, 1.0, s, 96, angles)
    _, phantom = astra.data3d.shepp_logan(vg)
    phantom = phantom.astype(np.float32)
    gpu_op = AstraOperator.create(vg, pg)
    cpu_op = AstraOperator.slicewise_parallel3d(vg, pg)
    x = torch.from_numpy(phantom)
    p_gpu = gpu_op.forward(x.cuda()).cpu().numpy()
    p_cpu = cpu_op.forward(x).numpy()
    rel = float(np.linalg.norm(p_gpu - p_cpu) / np.linalg.norm(p_gpu))
    # Is the slicewise convention right?  Compare against the flipped alternatives too.
    alt = AstraOperator("slicewise3d", cpu_op.projector_id, cpu_op.vol_shape, cpu_op.proj_shape,
                        False, owns_projector=False, flip_rows=False).forward(x).numpy()
    rel_noflip = float(np.linalg.norm(p_gpu - alt) / np.linalg.norm(p_gpu))
    y = torch.rand(gpu_op.proj_shape)
    adj_gpu = gpu_op.adjoint(y.cuda()).cpu().numpy()
    adj_cpu = cpu_op.adjoint(y).numpy()
    out = {"fp_rel_diff_cuda3d_vs_slicewise": rel, "fp_rel_diff_without_row_flip": rel_noflip,
           "bp_rel_diff": float(np.linalg.norm(adj_gpu - adj_cpu) / np.linalg.norm(adj_gpu))}
    # Slab operator vs the whole-volume cuda3d projection.
    slab = gpu_op.slab(2)
    out["slab_rel_diff"] = float(max(
        np.linalg.norm(slab.forward(x[k:k + 2].contiguous().cuda()).cpu().numpy() - p_gpu[k:k + 2])
        / np.linalg.norm(p_gpu[k:k + 2]) for k in range(0, s, 2)))
    # Slices drawn apart (SliceSampling 'random'): each must still land on its own row alone.
    apart = [0, s // 2 + 1]
    out["slab_rel_diff_slices_apart"] = float(
        np.linalg.norm(slab.forward(x[apart].contiguous().cuda()).cpu().numpy() - p_gpu[apart])
        / np.linalg.norm(p_gpu[apart]))
    for kind, geom in (("parallel3d", pg),
                       ("cone", astra.create_proj_geom("cone", 1.0, 1.0, 24, 112, angles, 400.0, 100.0))):
        sid = astra.data3d.create("-sino", geom, 0)
        op = AstraOperator.create(vg, geom)
        astra.data3d.store(sid, op.forward(x.cuda()).cpu().numpy())
        rid = astra.data3d.create("-vol", vg, 0)
        sirt, _ = _run_alg("SIRT3D_CUDA", None, sid, rid, 150, {"MinConstraint": 0.0}, dim=3)
        sirt = sirt.copy()
        inr, alg = _run_alg("INR", None, sid, rid, 300, {"MinConstraint": 0.0}, dim=3)
        rep = astra_inr.report(alg)
        out[kind] = {"corr_inr_sirt3d": corr(inr, sirt), "corr_rows_flipped": corr(inr[:, ::-1], sirt),
                     "psnr_inr": psnr(inr, phantom), "psnr_sirt3d_150": psnr(sirt, phantom),
                     "operator": rep["operator"]["kind"], "slice_batch": rep["slice_batch"],
                     "device": rep["device"], "seconds": rep["seconds"]}
    return out


@section("CUDA graphs: the captured training step equals the eager one")
def check_graphs():
    """Same seed, same data: 2D with support mask and TV, and a 3D volume trained in slabs."""
    out = {}
    vg = astra.create_vol_geom(128, 128)
    pg = astra.create_proj_geom("parallel", 1.0, 192, np.linspace(0, np.pi, 60, endpoint=False))
    _, phantom = astra.data2d.shepp_logan(vg)
    vg3 = astra.create_vol_geom(64, 64, 32)
    pg3 = astra.create_proj_geom("parallel3d", 1.0, 1.0, 32, 96,
                                 np.linspace(0, np.pi, 60, endpoint=False))
    _, phantom3 = astra.data3d.shepp_logan(vg3)
    problems = {"2d 128, 60 angles, 2% noise": (vg, pg, phantom, {}),
                "3d 64x64x32 in slabs of 8": (vg3, pg3, phantom3, {"slice_batch": 8})}
    for name, (v, p, ph, extra) in problems.items():
        op = AstraOperator.create(v, p)
        clean = op.forward(torch.from_numpy(ph.astype(np.float32)).cuda())
        gen = torch.Generator(device="cuda").manual_seed(0)
        sino = clean + 0.02 * clean.abs().max() * torch.randn(clean.shape, device="cuda",
                                                                 generator=gen)
        runs = {}
        for graphs in (False, True):
            tr = INRTrainer(INRConfig(min_constraint=0.0, cuda_graphs=graphs, **extra), op, sino,
                            volume_grid(v))
            t0 = time.perf_counter()
            tr.run(200)
            torch.cuda.synchronize()
            runs[graphs] = (tr.image().cpu().numpy(), np.array(tr.history.as_list()),
                            tr.report()["cuda_graphs"], time.perf_counter() - t0)
        (a, ha, _, ta), (b, hb, rep, tb) = runs[False], runs[True]
        out[name] = {"graphs_report": rep,
                     "image_rel_diff": float(np.linalg.norm(a - b) / np.linalg.norm(a)),
                     "residual_max_abs_diff": float(np.abs(ha[:, 2] - hb[:, 2]).max()),
                     "final_residuals": [float(ha[-1, 2]), float(hb[-1, 2])],
                     "psnr_eager_graphed": [psnr(a, ph), psnr(b, ph)],
                     "seconds_eager_graphed_200_its": [ta, tb]}
        op.close()
    return out


@section("checkpoint: a run resumed from its saved state on the GPU")
def check_checkpoint(device: str = "cuda"):
    """run_until_fitted killed at its first checkpoint (before its second block) and resumed in
    a fresh trainer (the state through torch.save/load), against the same run uninterrupted:
    the same blocks, close volumes (on a GPU not bit for bit), CUDA graphs used after the
    restore, Adam's step size still a device tensor."""
    import io

    vg = astra.create_vol_geom(128, 128)
    pg = astra.create_proj_geom("parallel", 1.0, 192, np.linspace(0, np.pi, 60, endpoint=False))
    _, phantom = astra.data2d.shepp_logan(vg)
    op = AstraOperator.create(vg, pg)
    clean = op.forward(torch.from_numpy(phantom.astype(np.float32)).to(op.data_device))
    gen = torch.Generator(device=clean.device).manual_seed(0)
    sino = clean + 0.02 * clean.abs().max() * torch.randn(clean.shape, device=clean.device,
                                                             generator=gen)
    config = INRConfig(min_constraint=0.0, device=device)
    plan = dict(round_iterations=100, max_rounds=3)

    class Killed(BaseException):
        pass

    whole = INRTrainer(config, op, sino, volume_grid(vg))
    out = whole.run_until_fitted(**plan)
    saved = []

    def save_then_die(state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        saved.append(torch.load(buffer, weights_only=True))
        raise Killed

    first = INRTrainer(config, op, sino, volume_grid(vg))
    try:
        first.run_until_fitted(checkpoint=save_then_die, **plan)
    except Killed:
        pass
    if not saved:                       # one block was enough: nothing to resume
        op.close()
        return {"killed_at_a_checkpoint": False, "blocks": len(out["blocks"])}
    again = INRTrainer(config, op, sino, volume_grid(vg))
    t0 = time.perf_counter()
    resumed = again.run_until_fitted(resume=saved[-1])
    seconds = time.perf_counter() - t0
    a, b = whole.image().cpu().numpy(), again.image().cpu().numpy()
    op.close()
    lr = again.optimizer.param_groups[0]["lr"]
    return {"killed_at_a_checkpoint": True,
            "resumed_at_iteration": saved[-1]["trainer"]["total_iterations"],
            "iterations_whole_resumed": [out["iterations"], resumed["iterations"]],
            "same_blocks": len(out["blocks"]) == len(resumed["blocks"]),
            "image_rel_diff": float(np.linalg.norm(a - b) / np.linalg.norm(a)),
            "psnr_whole_resumed": [psnr(a, phantom), psnr(b, phantom)],
            "graphs_after_restore": again.report()["cuda_graphs"],
            "lr_is_device_tensor": isinstance(lr, torch.Tensor) and lr.device.type == "cuda",
            "seconds_resumed": seconds}


@section("projector matrix: ASTRA's matrix on the GPU against its cuda projectors")
def check_matrix():
    """ProjectorMatrix: the operator, then INR with the matrix (default) and with ASTRA calls."""
    from astra_inr.matrix import MatrixOperator
    out = {}
    n, angles = 256, 100
    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, 384, np.linspace(0, np.pi, angles, endpoint=False))
    _, phantom = astra.data2d.shepp_logan(vg)
    op = AstraOperator.create(vg, pg)                     # ASTRA's cuda projector
    t0 = time.perf_counter()
    m = MatrixOperator.from_operator(op, "cuda")
    out["build_s"] = time.perf_counter() - t0
    out["matrix"] = m.describe()
    x = torch.from_numpy(phantom.astype(np.float32)).cuda()
    fp_a, fp_m = op.forward(x), m.forward(x)
    bp_a, bp_m = op.adjoint(fp_a), m.adjoint(fp_a)
    out["fp_rel_diff_vs_cuda"] = float((fp_m - fp_a).norm() / fp_a.norm())
    out["bp_rel_diff_vs_cuda"] = float((bp_m - bp_a).norm() / bp_a.norm())
    torch.cuda.synchronize()
    for name, fn in {"fp": lambda: m.forward(x), "bp": lambda: m.adjoint(fp_a),
                     "astra_fp": lambda: op.forward(x), "astra_bp": lambda: op.adjoint(fp_a)}.items():
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        out[f"{name}_ms"] = (time.perf_counter() - t0) / 50 * 1e3
    gen = torch.Generator(device="cuda").manual_seed(0)
    sino = fp_a + 0.01 * fp_a.abs().max() * torch.randn(fp_a.shape, device="cuda", generator=gen)
    for mode in ("off", "auto"):
        tr = INRTrainer(INRConfig(min_constraint=0.0, projector_matrix=mode), op, sino,
                        volume_grid(vg))
        t0 = time.perf_counter()
        tr.run(500)
        torch.cuda.synchronize()
        rep = tr.report()
        out[f"inr_500_{mode}"] = {"psnr": psnr(tr.image().cpu().numpy(), phantom),
                                  "seconds": time.perf_counter() - t0,
                                  "residual": rep["data_residual"],
                                  "step_operator": rep["step_operator"],
                                  "cuda_graphs": rep["cuda_graphs"]}
    op.close()
    # The build on this host at the full-size tooth's shape (above 'auto's cap; 2.4 s with
    # the numpy kernel on the 2-core CPU machine, 7.5 s with ASTRA's getter): whether the
    # cap should move.
    from astra_inr import matrix as matrix_module
    vg_t = astra.create_vol_geom(640, 640)
    pg_t = astra.create_proj_geom("parallel", 1.0, 640, np.linspace(0, np.pi, 46, endpoint=False))
    t0 = time.perf_counter()
    info = matrix_module._build(vg_t, pg_t, None, False)[2]
    out["build_640x640_46_angles"] = {**info, "seconds": time.perf_counter() - t0}
    # A parallel3d volume in slabs through parallel3d's 2D matrix ('on') against cuda3d.
    vg3 = astra.create_vol_geom(64, 64, 32)
    pg3 = astra.create_proj_geom("parallel3d", 1.0, 1.0, 32, 96,
                                 np.linspace(0, np.pi, 60, endpoint=False))
    _, phantom3 = astra.data3d.shepp_logan(vg3)
    op3 = AstraOperator.create(vg3, pg3)
    x3 = torch.from_numpy(phantom3.astype(np.float32)).cuda()
    m3 = MatrixOperator.from_operator(op3, "cuda")
    fp3 = op3.forward(x3)
    out["parallel3d_fp_rel_diff_vs_cuda3d"] = float((m3.forward(x3) - fp3).norm() / fp3.norm())
    for mode in ("off", "on"):
        tr = INRTrainer(INRConfig(min_constraint=0.0, projector_matrix=mode, slice_batch=8), op3,
                        fp3, volume_grid(vg3))
        t0 = time.perf_counter()
        tr.run(200)
        torch.cuda.synchronize()
        out[f"inr3d_200_{mode}"] = {"psnr": psnr(tr.image().cpu().numpy(), phantom3),
                                    "seconds": time.perf_counter() - t0}
    op3.close()
    return out


@section("speed rows")
def speed(budget_3d: float):
    rows = [activation_cost("cuda"), activation_cost("cuda", graphed=True),
            matmul_floor("cuda", n=256),
            training_speed_2d("cuda", n=256, n_angles=100, iterations=600, cuda_graphs=False),
            training_speed_2d("cuda", n=256, n_angles=100, iterations=600,
                              projector_matrix="off")]
    quality = {}
    for precision in ("float32", "tf32", "bf16"):
        row = training_speed_2d("cuda", n=256, n_angles=100, iterations=600, precision=precision)
        rows.append(row)
        # Accuracy of the precision: PSNR after 600 iterations on the Shepp-Logan problem.
        vg = astra.create_vol_geom(256, 256)
        pg = astra.create_proj_geom("parallel", 1.0, 384, np.linspace(0, np.pi, 100, endpoint=False))
        _, phantom = astra.data2d.shepp_logan(vg)
        op = AstraOperator.create(vg, pg)
        sino = op.forward(torch.from_numpy(phantom.astype(np.float32)).cuda())
        tr = INRTrainer(INRConfig(matmul_precision=precision, min_constraint=0.0), op, sino,
                        volume_grid(vg))
        tr.run(600)
        quality[precision] = psnr(tr.image().cpu().numpy(), phantom)
        op.close()
        print(json.dumps(row), flush=True)
    rows.append({"row": "PSNR after 600 iterations by matmul precision (256x256, 100 angles, "
                        "clean data)", **quality})
    remaining = budget_3d - (time.perf_counter() - START)
    if remaining > 60:
        rows.append(volume_3d(256, 256, seconds=min(100.0, remaining - 20)))
    return {"rows": rows}


@section("defaults check: INR defaults and their alternatives against tuned baselines")
def defaults_sweep(deadline: float, iterations: int = 500):
    """Evidence for the defaults of issue 7 at GPU sizes: the defaults (iterations chosen by the
    data; TV's gradient matched to the ramp, its weight 0.1 x the estimated error level), the same
    with ``iterations`` and twice as many, and the former defaults (TVGradient 'plain': TV
    floor 12 x the noise, raised by the discrepancy rule), vs tuned baselines.  Each INR
    cell: PSNR, SSIM, seconds, final TV weight (in each gradient's own units), iterations."""
    import tifffile

    from astra_inr.cases import case_from_phantom
    from astra_inr.compare import compare_methods
    from astra_inr.recon import ReconOptions

    root = Path(__file__).resolve().parents[1]
    ct_path = root / ".gpu" / "ct_small_attenuation.tif"
    ct = tifffile.imread(ct_path) if ct_path.exists() else None
    sl = astra.data2d.shepp_logan(astra.create_vol_geom(256, 256))[1].astype(np.float32)
    cases = [("sl256-30-n0", sl, 30, 0.0, None), ("sl256-60-n3", sl, 60, 0.03, None),
             ("sl256-60-n0", sl, 60, 0.0, None),
             ("sl256-100-n1", sl, 100, 0.01, None)]
    if ct is not None:
        cases += [("ct128-60-n1", ct, 60, 0.01, None), ("ct128-lim120-n1", ct, 60, 0.01, 120.0)]
    configs = {"defaults (iterations chosen by the data)": ({}, None),
               f"defaults {iterations} its": ({}, iterations),
               "former defaults (TVGradient plain)": ({"tv_gradient": "plain"}, None),
               f"former defaults {iterations} its": ({"tv_gradient": "plain"}, iterations),
               f"defaults {2 * iterations} its": ({}, 2 * iterations)}
    out = {}
    for name, image, n_angles, noise, limited in cases:
        if time.perf_counter() - START > deadline:
            out[name] = "skipped: out of time"
            continue
        sino, ref, case = case_from_phantom(image, n_angles, noise, limited)
        n = case["grid_size"]
        base = compare_methods(sino, ["FBP", "SIRT", "CGLS"], ReconOptions(size=n), ref)
        row = {"baselines": {k: [round(v.psnr, 2), round(v.ssim, 3), v.iterations]
                             for k, v in base.items()}}
        for label, (inr, its) in configs.items():
            opts = ReconOptions(size=n, iterations=its, inr=inr)
            r = compare_methods(sino, ["INR"], opts, ref)["INR"]
            row[label] = [round(r.psnr, 2), round(r.ssim, 3), round(r.seconds, 1),
                          round(r.extra["tv_weight_final"], 3), r.iterations]
            row["noise_level"] = r.extra.get("estimated_noise_level")
        out[name] = row
        print(name, json.dumps(row), flush=True)
    return {"iterations": iterations, "cases": out}


@section("3D training variants: 256^3 against SIRT3D_CUDA on the same budget")
def volume_3d_variants(deadline: float, seconds: float = 100.0):
    """The 3D row at the defaults and with one change each: contiguous slabs and learning
    rate 5e-3 (the former batches and step size; both worse on a 64^3 CPU study)."""
    variants = {"defaults": {}, "SliceSampling contiguous": {"slice_sampling": "contiguous"},
                "LearningRate 5e-3": {"learning_rate": 5e-3}}
    out = {}
    for label, options in variants.items():
        if time.perf_counter() - START + seconds + 25 > deadline:
            out[label] = "skipped: out of time"
            continue
        row = volume_3d(256, 256, seconds=seconds, options=options)
        out[label] = {k: row[k] for k in ("sirt3d_psnr", "inr_psnr", "inr_s", "inr_iterations",
                                          "inr_slice_batch", "inr_slice_sampling",
                                          "inr_seconds_to_reach_sirt_psnr", "peak_gpu_memory_gb",
                                          "psnr_curve")}
        print(label, json.dumps(out[label]), flush=True)
    return out


@section("512^3 volume on one GPU (memory)")
def big_volume():
    n = 512
    torch.cuda.reset_peak_memory_stats()
    vg = astra.create_vol_geom(n, n, n)
    pg = astra.create_proj_geom("parallel3d", 1.0, 1.0, n, 768, np.linspace(0, np.pi, n, endpoint=False))
    op = AstraOperator.create(vg, pg)
    vol = torch.zeros((n, n, n), device="cuda")
    vol[128:384, 160:352, 96:416] = 1.0
    sino = op.forward(vol)
    del vol
    tr = INRTrainer(INRConfig(min_constraint=0.0), op, sino, volume_grid(vg))
    t0 = time.perf_counter()
    tr.run(100)
    image = tr.image()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    free, total = torch.cuda.mem_get_info()
    return {"iterations": 100, "seconds": seconds, "slice_batch": tr.slice_batch,
            "image_shape": list(image.shape), "finite": bool(torch.isfinite(image).all()),
            "torch_peak_gb": torch.cuda.max_memory_allocated() / 2**30,
            "device_used_gb_at_end": (total - free) / 2**30, "device_total_gb": total / 2**30}


#: Section name -> how main() runs it within the budget, in this order.
SECTIONS = {"2d": lambda budget: check_2d(), "3d": lambda budget: check_3d(),
            "graphs": lambda budget: check_graphs(),
            "checkpoint": lambda budget: check_checkpoint(),
            "matrix": lambda budget: check_matrix(),
            "speed": lambda budget: speed(budget - 170),
            "big": lambda budget: big_volume(),
            "defaults": lambda budget: defaults_sweep(deadline=budget - 25),
            "3d-variants": lambda budget: volume_3d_variants(deadline=budget)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    ap.add_argument("--budget", type=float, default=530.0,
                    help="seconds after which optional sections are skipped")
    ap.add_argument("--sections", default="2d,3d,graphs,checkpoint,matrix,speed,big,defaults",
                    help="comma-separated sections to run, of 2d, 3d, graphs, checkpoint, matrix, "
                         "speed, big, defaults and 3d-variants (not run by default: about 6 "
                         "minutes)")
    args = ap.parse_args()
    wanted = set(args.sections.split(","))
    unknown = wanted - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    global OUT_DIR
    OUT_DIR = args.out
    RESULTS.update(device=machine("cuda") if torch.cuda.is_available() else "no GPU",
                   torch=torch.__version__, astra=astra.__version__, astra_cuda=astra.use_cuda(),
                   python=sys.version.split()[0])
    print(json.dumps({k: v for k, v in RESULTS.items() if k != "sections"}), flush=True)
    if not (torch.cuda.is_available() and astra.use_cuda()):
        raise SystemExit("gpu_check needs a CUDA GPU visible to torch and to ASTRA")
    for name in SECTIONS:
        if name in wanted:
            SECTIONS[name](args.budget)
    RESULTS["total_seconds"] = time.perf_counter() - START
    save()
    print("\n== summary")
    for name, sec in RESULTS["sections"].items():
        print(f"{'ok ' if sec['ok'] else 'FAIL'} {sec['seconds']:7.1f}s  {name}")
    for row in RESULTS["sections"].get("speed rows", {}).get("rows", []):
        print(json.dumps({k: v for k, v in row.items() if k != "psnr_curve"}, default=str))


if __name__ == "__main__":
    main()
