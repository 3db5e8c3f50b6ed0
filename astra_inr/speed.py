"""Speed measurements for ``scripts/benchmark.py --speed`` and the GPU check.

Each function measures one claim and returns a JSON-friendly row with the
machine it ran on.  Timings synchronise the GPU before reading the clock and
discard warm-up runs (the first ones compile the BW-ReLU kernels).

Rows:

* :func:`activation_cost` -- forward+backward of the default network with
  BW-ReLU against the same network with plain ReLU (same shapes, same run;
  on a GPU also with both replayed as CUDA graphs, as training runs them).
* :func:`matmul_floor` -- one training iteration of a 2D reconstruction
  against the forward+backward of the network's matrix products alone
  (activations replaced by the identity): the floor a CPU can reach.
* :func:`training_speed_2d` -- iterations per second of the default INR on
  an n x n image with a given number of angles (on a GPU with and without
  CUDA graphs), and the seconds a run of the default length takes.
* :func:`volume_3d` -- a 3D parallel-beam reconstruction (GPU): INR for a
  time budget (one run, :func:`train_for_seconds`) against SIRT3D_CUDA after
  100 iterations, PSNR against the phantom, wall time and peak GPU memory.
"""

from __future__ import annotations

import gc
import platform
import time
from typing import Any, Callable

import astra
import numpy as np
import torch

from .config import INRConfig
from .fit import INRTrainer, native_bf16, resolve_device
from .geometry import VolumeGrid, volume_grid
from .metrics import psnr
from .model import INRNetwork
from .operator import AstraOperator

__all__ = ["activation_cost", "matmul_floor", "training_speed_2d", "volume_3d", "machine",
           "run_speed_benchmarks"]


def machine(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds per call after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples))


def _fwd_bwd(net: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        net.zero_grad(set_to_none=True)
        net(x).sum().backward()
    return step


def _graphed_fwd_bwd(net: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """The same pass with the network captured as CUDA graphs (forward and backward)."""
    graphed = torch.cuda.make_graphed_callables(net, (x,))

    def step() -> None:
        net.zero_grad(set_to_none=True)
        graphed(x).sum().backward()
    return step


def activation_cost(device: str = "cpu", points: int = 65536, width: int = 300, depth: int = 3,
                    repeats: int = 5, graphed: bool = False) -> dict[str, Any]:
    """Forward+backward seconds of BW-ReLU vs ReLU networks of the same shape.

    ``graphed`` (GPU): both networks replayed as CUDA graphs, as training does,
    so that the launch cost of the kernels does not enter the ratio.
    """
    dev = torch.device(device)
    if graphed and dev.type != "cuda":
        raise ValueError(f"graphed=True needs a CUDA device (CUDA graphs), got {device!r}")
    x = torch.rand(points, 2, device=dev) * 2 - 1
    times = {}
    for act in ("bw_relu", "relu"):
        net = INRNetwork(2, width, depth, 3.0, activation=act).to(dev)
        step = _graphed_fwd_bwd(net, x) if graphed else _fwd_bwd(net, x)
        times[act] = _time(step, dev, repeats)
    return {"row": "BW-ReLU vs ReLU, forward+backward" + (" (CUDA graphs)" if graphed else ""),
            "device": machine(dev), "points": points,
            "width": width, "depth": depth, "bw_relu_s": times["bw_relu"], "relu_s": times["relu"],
            "ratio": times["bw_relu"] / times["relu"], "target": "<= 1.3"}


def _problem_2d(n: int, n_angles: int, device: torch.device) -> tuple[AstraOperator, torch.Tensor, Any]:
    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, int(np.ceil(1.5 * n)),
                                np.linspace(0, np.pi, n_angles, endpoint=False))
    op = AstraOperator.create(vg, pg, "cuda" if device.type == "cuda" else "linear")
    _, phantom = astra.data2d.shepp_logan(vg)
    sino = op.forward(torch.from_numpy(phantom.astype(np.float32)).to(op.data_device))
    return op, sino, vg


def matmul_floor(device: str = "cpu", n: int = 128, n_angles: int = 100,
                 repeats: int = 5, precision: str = "auto") -> dict[str, Any]:
    """A full training iteration vs the network's matrix products alone (same run).

    ``precision`` is the trainer's MatmulPrecision; the products alone run at the same.
    """
    dev = torch.device(device)
    op, sino, vg = _problem_2d(n, n_angles, dev)
    trainer = INRTrainer(INRConfig(device=dev.type, matmul_precision=precision), op, sino,
                         volume_grid(vg))
    iteration = _time(trainer._step, dev, repeats)
    net = INRNetwork(2, trainer.config.width, trainer.config.depth, 3.0).to(dev)
    net.activation = torch.nn.Identity()
    with trainer._precision():
        floor = _time(_fwd_bwd(net, trainer.coords), dev, repeats)
    op.close()
    return {"row": "training iteration vs matrix products alone", "device": machine(dev),
            "image": f"{n}x{n}", "angles": n_angles, "precision": trainer.matmul_precision,
            "iteration_s": iteration,
            "matmul_fwd_bwd_s": floor, "ratio": iteration / floor, "target": "<= 1.5 (CPU)"}


def training_speed_2d(device: str = "cpu", n: int = 256, n_angles: int = 100,
                      iterations: int = 200, precision: str = "auto",
                      default_run: int = 500, cuda_graphs: bool = True,
                      projector_matrix: str = "auto") -> dict[str, Any]:
    """Iterations per second of the default INR on a 2D problem.

    ``projector_matrix`` is the trainer's ProjectorMatrix; the row records
    which operator the steps used and, for a matrix, the seconds it took to build
    (set up before the first step, so outside the rate).
    """
    dev = torch.device(device)
    op, sino, vg = _problem_2d(n, n_angles, dev)
    t0 = time.perf_counter()
    trainer = INRTrainer(INRConfig(device=dev.type, matmul_precision=precision,
                                   cuda_graphs=cuda_graphs, projector_matrix=projector_matrix),
                         op, sino, volume_grid(vg))
    setup_s = time.perf_counter() - t0
    step_operator = trainer.step_operator.describe()
    trainer.run(20)                                   # compile, capture and warm up
    _sync(dev)
    t0 = time.perf_counter()
    trainer.run(iterations)
    _sync(dev)
    seconds = time.perf_counter() - t0
    op.close()
    rate = iterations / seconds
    return {"row": "INR training, 2D", "device": machine(dev), "image": f"{n}x{n}",
            "angles": n_angles, "precision": trainer.matmul_precision,
            "bf16_native": trainer.bf16_native,
            "cuda_graphs": trainer.graphed_steps,
            "step_operator": step_operator["kind"],
            "matrix_build_s": step_operator.get("build_s"), "trainer_setup_s": setup_s,
            "iterations_per_s": rate,
            f"seconds_for_{default_run}_iterations": default_run / rate,
            "target": ">= 600 it/s at 256x256, 100 angles (GPU)"}


def train_for_seconds(config: INRConfig, operator: AstraOperator, sinogram: torch.Tensor,
                      grid: VolumeGrid, seconds: float, score: Callable[[torch.Tensor], float],
                      eval_every: float = 10.0) -> tuple[INRTrainer, list[list[float]], float]:
    """Train one INR for about ``seconds`` of wall time, scoring its image along the way.

    One run, so one learning-rate schedule (each run() decays to its own end,
    so chained short runs would restart it): its length is ``seconds`` over
    the step time of a probe trainer (steps 10 to 60, after warm-up, compilation
    and graph capture), less 5 % for the evaluations, which count in the time.

    Returns
    -------
    trainer : INRTrainer
        The trained one.
    curve : list of [iteration, seconds, score]
        About every ``eval_every`` seconds, and the last after run() (with
        FitLevel applied).
    seconds : float
        Wall time of the run, evaluations included.
    """
    dev = resolve_device(config.device, config.gpu_index)
    probe = INRTrainer(config, operator, sinogram, grid)
    stamps: list[float] = []

    def stamp(info: Any) -> None:
        _sync(dev)
        stamps.append(time.perf_counter())

    probe.run(60, callback=stamp, callback_every=10)
    step_s = (stamps[-1] - stamps[0]) / 50
    del probe
    if dev.type == "cuda":
        gc.collect()                # the probe's CUDA graphs' memory pools go with it
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    evals = max(1, int(seconds / eval_every))
    iterations = max(evals, int(0.95 * seconds / step_s))
    trainer = INRTrainer(config, operator, sinogram, grid)
    curve: list[list[float]] = []

    def record(info: Any) -> None:
        _sync(dev)
        curve.append([info.iteration, round(time.perf_counter() - t0, 2),
                      round(score(trainer.image()), 3)])

    t0 = time.perf_counter()
    trainer.run(iterations, callback=record, callback_every=max(1, iterations // evals))
    _sync(dev)
    elapsed = time.perf_counter() - t0
    curve = [c for c in curve if c[0] < iterations]
    curve.append([iterations, round(elapsed, 2), round(score(trainer.image()), 3)])
    return trainer, curve, elapsed


def _peak_gpu_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def volume_3d(n: int = 256, n_angles: int = 256, seconds: float = 100.0, noise: float = 0.01,
              options: dict[str, Any] | None = None, sirt_iterations: int = 100,
              eval_every: float = 10.0) -> dict[str, Any]:
    """INR vs SIRT3D_CUDA on an n^3 Shepp-Logan, parallel beam, n_angles angles (GPU only).

    The sinogram is the cuda3d projection of the phantom plus Gaussian noise
    (``noise`` x its maximum).  SIRT3D_CUDA runs ``sirt_iterations`` from
    zero (non-negative).  The INR trains with its defaults (slabs of slices)
    for as many iterations as fit in ``seconds`` of wall time (one run, timed on a
    probe trainer first), evaluated about every ``eval_every`` seconds.
    """
    if not astra.use_cuda():
        raise RuntimeError("volume_3d needs ASTRA's CUDA projectors")
    dev = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats(dev)
    vg = astra.create_vol_geom(n, n, n)
    pg = astra.create_proj_geom("parallel3d", 1.0, 1.0, n, int(np.ceil(1.5 * n)),
                                np.linspace(0, np.pi, n_angles, endpoint=False))
    _, phantom = astra.data3d.shepp_logan(vg)
    phantom = phantom.astype(np.float32)
    op = AstraOperator.create(vg, pg)
    clean = op.forward(torch.from_numpy(phantom).cuda())
    gen = torch.Generator(device="cuda").manual_seed(0)
    sino = clean + noise * clean.abs().max() * torch.randn(clean.shape, device="cuda", generator=gen)

    sid = astra.data3d.create("-sino", pg, sino.cpu().numpy())
    rid = astra.data3d.create("-vol", vg, 0)
    cfg = astra.astra_dict("SIRT3D_CUDA")
    cfg.update(ProjectionDataId=sid, ReconstructionDataId=rid, option={"MinConstraint": 0.0})
    alg = astra.algorithm.create(cfg)
    t0 = time.perf_counter()
    astra.algorithm.run(alg, sirt_iterations)
    sirt_seconds = time.perf_counter() - t0
    sirt = astra.data3d.get(rid)
    astra.algorithm.delete(alg)
    astra.data3d.delete([sid, rid])
    sirt_psnr = psnr(sirt, phantom)

    config = INRConfig(**{"min_constraint": 0.0, **(options or {})})
    trainer, curve, inr_seconds = train_for_seconds(
        config, op, sino, volume_grid(vg), seconds,
        lambda image: psnr(image.cpu().numpy(), phantom), eval_every)
    reached = next((c[1] for c in curve if c[2] >= sirt_psnr), None)
    op.close()
    return {"row": f"3D parallel beam {n}^3, {n_angles} angles", "device": machine(dev),
            "noise": noise, "sirt3d_iterations": sirt_iterations, "sirt3d_psnr": sirt_psnr,
            "sirt3d_s": sirt_seconds, "inr_psnr": curve[-1][2], "inr_s": inr_seconds,
            "inr_iterations": trainer.total_iterations, "inr_slice_batch": trainer.slice_batch,
            "inr_slice_sampling": trainer.config.slice_sampling,
            "inr_cuda_graphs": trainer.graphed_steps,
            "inr_seconds_to_reach_sirt_psnr": reached, "psnr_curve": curve,
            "peak_gpu_memory_gb": (_peak_gpu_bytes(dev) or 0) / 2**30,
            "options": trainer.config.to_options(),
            "target": "INR PSNR >= SIRT3D(100) within 120 s"}


def _cpu_precisions() -> tuple[str, ...]:
    """Precisions whose iteration-to-products ratio the CPU rows measure: float32, and
    bf16 where the CPU multiplies it in hardware (emulated, its floor says nothing)."""
    return ("float32", "bf16") if native_bf16() else ("float32",)


def run_speed_benchmarks(args: Any = None) -> list[dict[str, Any]]:
    """The speed rows for this machine: CPU rows always, GPU rows when there is a GPU.

    ``args.quick`` shrinks the CPU problems.
    """
    quick = bool(getattr(args, "quick", False))
    n, its = (96, 10) if quick else (128, 30)
    # Both precisions, named: 'auto' is bf16 on a CPU with bf16 instructions and float32
    # elsewhere.  Without them the bf16 row shows the emulation's cost (bf16_native False).
    rows = [activation_cost("cpu", points=16384 if quick else 65536)]
    rows += [matmul_floor("cpu", n=n, precision=p) for p in _cpu_precisions()]
    rows += [training_speed_2d("cpu", n=n, iterations=its, precision=p)
             for p in ("float32", "bf16")]
    if torch.cuda.is_available() and astra.use_cuda():
        rows += [activation_cost("cuda", points=65536),
                 activation_cost("cuda", points=65536, graphed=True), matmul_floor("cuda", n=256),
                 training_speed_2d("cuda", n=256, iterations=600, cuda_graphs=False),
                 training_speed_2d("cuda", n=256, iterations=600, projector_matrix="off"),
                 training_speed_2d("cuda", n=256, iterations=600)]
        if not quick:
            rows.append(volume_3d(256, 256, seconds=100.0))
    return rows
