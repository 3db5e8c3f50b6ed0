"""The INR training loop shared by the ASTRA plugin and the command line.

:class:`INRTrainer` fits an :class:`~astra_inr.model.INRNetwork` to a
sinogram through an :class:`~astra_inr.operator.AstraOperator`:

    image(x) = s * f_theta(x)         s: the data's image scale (below)
    loss     = ||W (A image - y)||^2 / ||W0 y||^2  +  regularisers(theta)

minimised with Adam, W the data weighting of :mod:`astra_inr.objective`
(the ramp filter by default; W0: W without its RampFloor) and the regularisers of
:mod:`astra_inr.regularity` (off by default).  Both the loss and the network
output are dimensionless: ``s = ||y|| / ||A 1||`` is the value a uniform
object filling the volume would need to explain the data's energy, so the
same data in other units gives the same network and the image in those units.

Each call of :meth:`INRTrainer.run` continues from the current network and
Adam state; the learning rate is constant for most of the call and decays
at its end (:meth:`INRTrainer.learning_rate_at`).  A call whose residual
reached the data's error level before the decay ends with the weights
averaged over its last steps (IterateAveraging).

Large volumes are evaluated in chunks of voxels: the image is rendered
without autograd, the loss gradient with respect to the image is computed
once, and each chunk is re-evaluated to backpropagate its share, so memory
stays bounded by one chunk's activations whatever the volume size.
"""

from __future__ import annotations

import math
import platform
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from . import regularity
from .config import INRConfig
from .geometry import VolumeGrid
from .model import INRNetwork
from .objective import (MOROZOV_FACTOR, DataFit, TVGradientFilter, constant_level,
                        estimate_inconsistency, estimate_noise_level, estimate_peak,
                        estimate_support)
from .matrix import AUTO_MAX_ENTRIES, MatrixOperator, estimated_entries, training_operator
from .operator import AstraOperator, project
from .passes import (LossPass, RenderPass, StepGraph, constrained_image, graph_passes,
                     quiet_side_stream_warning)
from .tv_weight import choose_tv_weight

__all__ = ["INRField", "INRTrainer", "Progress", "TV_WEIGHT_STAGE", "resolve_device"]

#: Progress.stage while TVWeight='heldout' tries its ladder: this, a space and the weight.
TV_WEIGHT_STAGE = "TV weight"

# Activation memory budget per chunk: about 12 bytes per neuron per voxel
# (pre-activation, activation, linear output) kept for backward: 2 GiB on the
# CPU, a quarter of the GPU's memory.
_CPU_CHUNK_BYTES = 2 << 30
_GPU_CHUNK_FRACTION = 0.25
# Records of the regularity measures (path norms, Lipschitz bound) per run: about
# this many, and never more often than every _REGULARITY_MIN_STEP iterations.
_REGULARITY_RECORDS = 64
_REGULARITY_MIN_STEP = 10
# Eager steps of each network before its whole step is captured as one CUDA graph.
_STEP_GRAPH_WARMUP = 3
# Monte Carlo points per iteration for the generalised weight decay's integrals.
_GWD_SAMPLES = 4096
# RegulariserWeight='discrepancy': the rule starts the weight at the fixed default
# (1e-4) and moves it as the TV weight's (_TV_RATE); at most 1e5 x that (10), only a
# guard: the weight stops growing once the fit reaches the noise, which the regulariser
# alone reaches by shrinking the output layer (the CT slices at 1 % and 3 % noise
# ended their runs below 2700 x, docs/results.md).
_GWD_START = 1e-4
_GWD_MAX_FACTOR = 1e5
# 3D volumes up to this many voxels train on the whole volume every iteration;
# larger ones on slabs of about _SLAB_VOXELS voxels (SliceBatch=0, automatic).
_FULL_BATCH_VOXELS = 1 << 21
_SLAB_VOXELS = 1 << 20
# Discrepancy-controlled TV weight: at most a factor e^0.05 per iteration (x10 in
# about 50 iterations of clear over- or under-fitting) and at most 1000 x the floor.
_TV_RATE = 0.05
_TV_MAX_FACTOR = 1000.0
# TVWeight='auto': the weight in proportion to the estimated relative noise level
# delta, as the optimal Rudin-Osher-Fatemi weight is in proportion to the noise's
# standard deviation.  12: where the discrepancy rule, started from a small weight,
# settled on noisy phantoms (lambda / delta = 11 to 16 at 1 % and 3 % noise, 30 and
# 60 angles, two phantoms, two sizes), and 0.1 on the real tooth scan (delta =
# 0.008), the better of 0.1 and 0.03 there.  At most 0.1: the estimate counts sharp
# edges as noise on coarse detectors (2x on a 64-pixel Shepp-Logan), so noisier data
# start at 0.1 and the discrepancy rule raises the weight from there.  At least 0.01:
# clean sparse data still need a prior to fill the null space.
_TV_PER_NOISE = 12.0
# TVWeight='auto' with TVGradient 'matched' (TVWeight then in least-squares units, as
# compare's TV): the weight in proportion to the data's error level (white noise and
# inconsistency in quadrature), as for Rudin-Osher-Fatemi.
_TV_LSQ_PER_ERROR = 0.1
# Discrepancy='auto' with the plain TV gradient: Morozov's factor, as compare's SIRT and CGLS.
_DISCREPANCY_PLAIN = MOROZOV_FACTOR
_TV_AUTO_MIN = 0.01
_TV_AUTO_MAX = 0.1
# LearningRate 'auto': whole-volume steps, and steps on a batch of slices (a stochastic
# gradient, so smaller steps; measured on a 64^3 Shepp-Logan, 64 angles, 1 % noise,
# batches of 4 random slices: 26.32 / 25.97 / 24.93 dB at 2e-3 / 1e-3 / 5e-3 after 600
# iterations, 29.05 / 26.69 at 2e-3 / 5e-3 after 1200).
_LR_WHOLE = 5e-3
_LR_BATCH = 2e-3
# Iterations chosen by the data (run_until_fitted, the default of the command line and
# compare): the constant-rate part of a run goes on in blocks while the data are still
# under-fitted, then the rate decays once.  A run of 500 that the discrepancy rule balances
# ends near its target (residual 0.89 to 1.06 x the data's error level on 12 of the 16
# benchmark cases, H200), one still fitting far above it (1.7 to 3.2 x: clean Shepp-Logan at
# 30 and 60 angles, the tooth and neutron scans; there one run of 1000 gained +1.2, +2.2,
# +1.3 and +0.3 dB); 1.25 x lies between.  Blocks that lower the residual by less than
# AUTO_MIN_GAIN (AUTO_PATIENCE in a row, below) are a plateau.  Runs of 500 one after
# another (the rate restarted at each) did worse than one longer run: the restart threw the
# fit back (tooth 35.83 -> 35.46 dB).
AUTO_ROUND = 500
AUTO_MAX_ROUNDS = 4
AUTO_UNDERFIT = 1.25
# With the matched TV gradient (Discrepancy 0) nothing holds the residual near the error
# level, and the fitted bound is Morozov's (MOROZOV_FACTOR, 1.05 x the level), as compare
# stops SIRT and CGLS by discrepancy.  1.25 stopped runs there while the data were still
# being fitted beyond it: the Shepp-Logan at 1 % noise left its first block at 1.065 and
# 1.094 x its level, and a second block gained (60 and 30 angles: 28.19 -> 30.16 and
# 29.05 -> 30.29 dB, CPU); the noisy CT slices left theirs at 0.94 to 1.01 x and stop there
# as before.
AUTO_FITTED_MATCHED = MOROZOV_FACTOR
AUTO_MIN_GAIN = 0.01
AUTO_WINDOW = 100
# Both tests read medians.  At the constant rate Adam does not settle on clean data: within a
# hundred steps the residual's largest value is typically 5 to 10 x its smallest, at times 90 x
# (ct-60-n0 and ct-30-n0, CPU), so a mean rises or falls with whether a spike fell in it.
# The bound against the error level reads the median of a block's last AUTO_WINDOW steps.  It
# read the mean of the last 50, and a spike there prolonged runs on noisy data, which is not
# free: sl-60-n1's second block read 1.109 x its level by that mean and 1.022 x by this median;
# its third block cost 1.33 dB (28.80 against 30.13 dB, CPU); sl-30-n1's (1.056 against 1.021 x)
# gained 0.13 dB.  A hundred steps, not fifty: on noisy data the residual wanders by +-10 %
# about the level within a block, and the median of sl-60-n1's last 50 read 1.062 x.
# The plateau test compares the median residual of each block's second half (the steps
# IterateAveraging averages).  On ct-30-n0 one spike raised the second block's 50-step mean from
# 0.0057 to 0.0228, while the median of its second half fell by 17 % (0.0045 -> 0.0037).
# A plateau needs AUTO_PATIENCE blocks in a row whose median is not 1 % below the lowest
# before them.  Adam also catapults: on sl-60-n0 (CPU) the residual jumped from 0.015 to 0.18
# at step 550 and took a hundred steps to settle, which lifted the second block's median
# (0.01555 -> 0.01557) while its last hundred steps sat 18 % below the first block's; the
# run stopped there at 31.10 dB; with two blocks it goes on to 2000 iterations, 34.47 dB.
# Stopping early cost 3.4 dB there (and 1.7 dB on ct-30-n0), going on to 2000 where 1000
# sufficed 0.24 dB (ct-60-n0), so one block without gain does not end a run.
AUTO_PATIENCE = 2

#: Version of the layout of :meth:`INRTrainer.state` (raise it with every change there, so
#: that a checkpoint of an older layout starts afresh instead of failing to restore).
STATE_FORMAT = 1

#: Iterations between the checkpoints of a run of fixed length (``run(checkpoint=...)``):
#: as often as a data-chosen run saves (once per block: ``constant_fraction`` x AUTO_ROUND).
CHECKPOINT_EVERY = 400


class _Float32Matmul:
    """Set torch's float32 matrix-product precision for a block ('high' allows TF32)."""

    def __init__(self, precision: str) -> None:
        self.precision = precision

    def __enter__(self) -> None:
        self._saved = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(self.precision)

    def __exit__(self, *exc) -> None:
        torch.set_float32_matmul_precision(self._saved)


def native_bf16() -> bool | None:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX); None off x86.

    Without those instructions torch emulates bfloat16 products.  Measured on this
    project's CPU with its bf16 instructions hidden (default network, 128 x 128, 100
    angles, two threads): MatmulPrecision bf16 trained at 0.77 x float32's rate where
    oneDNN was limited to AVX-512 without BF16 (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``), and
    at 0.14 x where torch and MKL were limited to AVX2, against 2.0 x with them.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return None
    checks = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not any(callable(check) for check in checks):
        return None                                   # a torch without these queries
    return any(bool(check()) for check in checks if callable(check))


@dataclass(frozen=True)
class Progress:
    """What a progress callback receives after an iteration.

    Attributes
    ----------
    iteration : int
        Iterations done in this run (1-based).
    iterations : int
        Iterations requested for this run.
    total_iterations : int
        Iterations of the current network since it was created.
    loss : float
        Current training loss (before this iteration's update).
    data_residual : float
        ||A x - y|| / ||y|| before this iteration's update.
    learning_rate : float
    seconds : float
        Wall time of this run so far.
    stage : str
        'train', 'scale c=...' while Scale='auto' searches, or 'TV weight w' while
        TVWeight='heldout' tries its ladder: then ``iteration`` / ``iterations``
        count its rungs, ``loss`` is the held-out residual and ``data_residual``
        the residual on the angles fitted.
    """

    iteration: int
    iterations: int
    total_iterations: int
    loss: float
    data_residual: float
    learning_rate: float
    seconds: float
    stage: str = "train"


ProgressCallback = Callable[[Progress], Any]


def resolve_device(device: str, gpu_index: int | None = None) -> torch.device:
    """Map the Device option to a torch device, refusing a GPU that is not there.

    Raises
    ------
    RuntimeError
        ``device='cuda'`` without a CUDA-capable torch and GPU, or a
        ``gpu_index`` beyond the number of GPUs.
    """
    has_cuda = torch.cuda.is_available()
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" and not has_cuda:
        raise RuntimeError("Device='cuda' was requested but torch sees no CUDA GPU "
                           f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
                           "use Device='cpu' or 'auto'")
    if device not in ("auto", "cuda"):
        raise ValueError(f"Device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if not has_cuda:
        return torch.device("cpu")
    index = torch.cuda.current_device() if gpu_index is None else gpu_index
    if index >= torch.cuda.device_count():
        raise RuntimeError(f"GPUindex={index} but only {torch.cuda.device_count()} GPU(s) are visible")
    return torch.device("cuda", index)


def _adam(network: torch.nn.Module, lr: float, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam with PyTorch's fused kernel where this build has it (one pass over all parameters).

    ``capturable``: a CUDA graph may hold the step; the learning rate is then a
    device tensor (set with :func:`_set_learning_rate`), so no replay reads a stale value.
    """
    params = list(network.parameters())
    if capturable:
        lr_t = torch.tensor(float(lr), device=params[0].device)
        for kwargs in ({"fused": True}, {"foreach": True}):
            try:
                return torch.optim.Adam(params, lr=lr_t, capturable=True, **kwargs)
            except (RuntimeError, TypeError, ValueError):
                pass
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def _set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's step size; in place where it is a device tensor (a graph reads it)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _discrepancy_step(factor: torch.Tensor, residual: torch.Tensor, target: float,
                      max_factor: float) -> torch.Tensor:
    """One step of the discrepancy rule for a weight's multiplier (0-d tensors, no sync).

    The multiplier grows by up to exp(_TV_RATE) while the data residual is below
    ``target`` (g = 1 - residual^2 / target^2, clipped to [-1, 1]) and falls while
    above, within [1, ``max_factor``].
    """
    g = (1.0 - (residual / target) ** 2).clamp(-1.0, 1.0)
    return (factor * torch.exp(_TV_RATE * g)).clamp(1.0, max_factor)


def _offset_callback(callback: ProgressCallback | None, done: int,
                     planned: int) -> ProgressCallback | None:
    """``callback`` for a part of a run that starts ``done`` steps in, of ``planned`` in all."""
    if callback is None:
        return None
    return lambda p: callback(replace(p, iteration=done + p.iteration, iterations=planned))


def _record_every(iterations: int) -> int:
    """Iterations between regularity records of a run of ``iterations``."""
    return max(_REGULARITY_MIN_STEP, -(-iterations // _REGULARITY_RECORDS))


def _moved(value: Any, device: torch.device | str) -> Any:
    """``value`` with every tensor in it (nested dicts, lists, tuples) a copy on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device, copy=True)
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_moved(v, device) for v in value)
    return value


class _ThinnedHistory:
    """(iteration, values...) rows, thinned to at most ``max_len`` by doubling the stride."""

    def __init__(self, max_len: int = 512) -> None:
        self.max_len = max_len
        self.stride = 1
        self.items: list[list[float]] = []

    def add(self, iteration: int, *values: float) -> None:
        if iteration % self.stride:
            return
        self.items.append([iteration, *values])
        if len(self.items) > self.max_len:
            self.stride *= 2
            self.items = [it for it in self.items if it[0] % self.stride == 0]

    def as_list(self) -> list[list[float]]:
        return [list(it) for it in self.items]


class INRField:
    """A trained INR as a function on the volume window, in the data's units.

    Parameters
    ----------
    network : INRNetwork
    grid : VolumeGrid
        The reconstruction grid (defines the window and normalisation).
    image_scale : float
        Data units per unit of network output.
    min_constraint, max_constraint : float or None
        Bounds applied to every rendered value.
    chunk_points : int
        Voxels per network evaluation.
    support : torch.Tensor, optional
        bool, ``grid.shape``: where the volume may be non-zero (SupportMask);
        values elsewhere render as 0, on finer grids by nearest voxel.
    """

    def __init__(self, network: INRNetwork, grid: VolumeGrid, image_scale: float,
                 min_constraint: float | None = None, max_constraint: float | None = None,
                 chunk_points: int = 1 << 18, support: torch.Tensor | None = None) -> None:
        self.network = network
        self.grid = grid
        self.image_scale = float(image_scale)
        self.min_constraint = min_constraint
        self.max_constraint = max_constraint
        self.chunk_points = int(chunk_points)
        if support is not None and tuple(support.shape) != tuple(grid.shape):
            raise ValueError(f"support mask has shape {tuple(support.shape)}, the grid {grid.shape}")
        self.support = support

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def chunks(self, n: int) -> list[slice]:
        return [slice(s, min(n, s + self.chunk_points)) for s in range(0, n, self.chunk_points)]

    def to_image(self, output: torch.Tensor, shape: tuple[int, ...],
                 slices: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Network output (N,) -> constrained image of ``shape`` in the data's units.

        ``slices``: the image is those slices (first axis, a range or indices) of the
        grid (a training batch of slices).
        """
        return constrained_image(output, shape, self.image_scale, self.min_constraint,
                                 self.max_constraint, self._support_for(tuple(shape), slices))

    def _support_for(self, shape: tuple[int, ...],
                     slices: slice | torch.Tensor | None) -> torch.Tensor | None:
        if self.support is None:
            return None
        mask = self.support if slices is None else self.support[slices]
        if tuple(mask.shape) == shape:
            return mask
        # Another grid over the same window (render(upsample)): nearest voxel.
        resized = torch.nn.functional.interpolate(mask[None, None].float(), size=shape,
                                                  mode="nearest")
        return resized[0, 0] > 0

    @torch.no_grad()
    def evaluate(self, coords: torch.Tensor) -> torch.Tensor:
        """Network output at coordinates (N, ndim), chunked, without autograd."""
        return torch.cat([self.network(coords[s]) for s in self.chunks(coords.shape[0])])

    @torch.no_grad()
    def render(self, upsample: float = 1, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Evaluate on a finer (or any) grid over the same window.

        Parameters
        ----------
        upsample : float
            Samples per voxel along each axis (2: every voxel becomes 2x2(x2)).
        shape : tuple of int, optional
            Explicit output shape (overrides ``upsample``).

        Returns
        -------
        torch.Tensor
            float32 volume in the data's units, on the network's device.
        """
        out_shape = tuple(shape) if shape is not None else tuple(
            max(1, int(round(n * upsample))) for n in self.grid.shape)
        coords = self.grid.coordinates(shape=out_shape, device=self.device)
        return self.to_image(self.evaluate(coords), out_shape)

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild this field (see :meth:`from_state`)."""
        return {"network": self.network.hyperparameters(),
                "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
                "grid": {"shape": list(self.grid.shape), "minimum": list(self.grid.minimum),
                         "maximum": list(self.grid.maximum), "stacked_2d": self.grid.stacked_2d},
                "image_scale": self.image_scale, "min_constraint": self.min_constraint,
                "max_constraint": self.max_constraint,
                "support": None if self.support is None else self.support.cpu()}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device | str = "cpu") -> "INRField":
        network = INRNetwork.from_hyperparameters(state["network"])
        network.load_state_dict(state["state_dict"])
        g = state["grid"]
        grid = VolumeGrid(tuple(g["shape"]), tuple(g["minimum"]), tuple(g["maximum"]),
                          bool(g.get("stacked_2d", False)))
        support = state.get("support")
        return cls(network.to(device), grid, state["image_scale"], state["min_constraint"],
                   state["max_constraint"], support=None if support is None else support.to(device))


class INRTrainer:
    """Train an INR so that its rendered volume explains a sinogram.

    Parameters
    ----------
    config : INRConfig
    operator : AstraOperator
        The measurement operator A (volume -> projections).
    sinogram : numpy.ndarray or torch.Tensor
        Measured projections y, shape ``operator.proj_shape`` (2D: angles x
        detectors; 3D: detector rows x angles x detector cols), any units.
    grid : VolumeGrid
        Where the volume's voxels lie (defines the network's coordinates).

    Raises
    ------
    ValueError
        For a sinogram of the wrong shape, with NaN/inf values or all zeros,
        or a volume the projector does not see.
    """

    #: Fraction of each run trained at the full learning rate before it decays
    #: (0.8 reached higher PSNR than 0.5 or 0 at equal iterations on sparse-view
    #: phantoms: short runs are still far from converged when the decay starts).
    constant_fraction = 0.8

    def __init__(self, config: INRConfig, operator: AstraOperator,
                 sinogram: np.ndarray | torch.Tensor, grid: VolumeGrid) -> None:
        if tuple(grid.shape) != tuple(operator.vol_shape):
            raise ValueError(f"volume grid shape {grid.shape} does not match the projector's "
                             f"volume shape {operator.vol_shape}")
        self.config = config
        self.operator = operator
        self.grid = grid
        self.device = resolve_device(config.device, config.gpu_index)
        y = sinogram if isinstance(sinogram, torch.Tensor) else torch.from_numpy(np.asarray(sinogram))
        if tuple(y.shape) != tuple(operator.proj_shape):
            raise ValueError(f"projection data has shape {tuple(y.shape)}, the projector expects "
                             f"{operator.proj_shape}")
        y = y.to(device=self.device, dtype=torch.float32).contiguous()
        if not bool(torch.isfinite(y).all()):
            bad = int((~torch.isfinite(y)).sum())
            raise ValueError(f"projection data contains {bad} NaN or infinite values; "
                             "clean or mask them before reconstructing")
        self.y = y
        self.data_fit = DataFit(y, config.data_weighting, config.ramp_floor)
        self.y_norm = float(y.double().norm())
        self._y_norm_t = torch.tensor(self.y_norm, dtype=torch.float32, device=self.device)
        # ||y||^2 per entry of the first axis (detector rows in 3D), so the training
        # loop's relative residual of a slab needs no pass over the data.
        self._y_energy = (y.double() ** 2).flatten(1).sum(1) if y.dim() == 3 else None
        ones = torch.ones(operator.vol_shape, dtype=torch.float32, device=self.device)
        a_one = operator.forward(ones)
        a1_norm = float(torch.linalg.vector_norm(a_one, dtype=torch.float64))
        if a1_norm == 0.0:
            raise ValueError("the projector sees none of the volume: check the geometries")
        #: Mean value of the image over the field of view, in the data's units
        #: (the least-squares constant image ||y|| / ||A 1||); TV is measured
        #: on the image divided by it, so TVWeight means the same in any units.
        self.mean_scale = self.y_norm / a1_norm
        #: Image value per unit of network output, in the data's units: the
        #: bright level of a filtered backprojection (never below the mean),
        #: so that the network's output is of order 1 where the object is,
        #: also for a small object in a large field of view, whose peak is
        #: many times the mean and would take the network thousands of
        #: steps to reach.
        self.image_scale = max(self.mean_scale, estimate_peak(y, operator))
        #: Relative white-noise level ||n|| / ||y|| estimated from the data.
        self.noise_level = estimate_noise_level(y)
        #: Relative error of the projections' totals (0 where not measurable).
        self.inconsistency = estimate_inconsistency(y, operator, self.noise_level)
        #: The data's whole relative error: a volume fitting them closer fits errors.
        self.data_error_level = math.hypot(self.noise_level, self.inconsistency)
        #: Whether TV's gradient is matched to the ramp (TVGradient 'matched' with the ramp
        #: weighting): TVWeight is then in least-squares units, and Discrepancy 'auto' is 0.
        self.tv_matched = matched = (config.tv_gradient == "matched"
                                     and config.data_weighting == "ramp")
        # The smallest TV weight (TVWeight, or its value for 'auto').  With the matched
        # gradient training settles where plain least squares plus TV is stationary, and
        # least squares fits the projections' inconsistency as readily as their white noise,
        # so the weight follows the whole error level.  With the plain gradient only the
        # white noise sets it: the inconsistency varies slowly along the detector, where the
        # ramp-weighted data term hardly follows it.
        #: What TVWeight='heldout' tried and chose (None otherwise, or before the first run).
        self.tv_weight_choice: dict[str, Any] | None = None
        self.tv_floor: float | None
        if config.tv_weight == "heldout":
            self.tv_floor = None            # chosen at the first training step (_choose_tv_weight)
        elif config.tv_weight != "auto":
            self.tv_floor = float(config.tv_weight)
        elif matched:
            self.tv_floor = _TV_LSQ_PER_ERROR * self.data_error_level
        else:
            self.tv_floor = min(max(_TV_PER_NOISE * self.noise_level, _TV_AUTO_MIN), _TV_AUTO_MAX)
        #: Filters TV's gradient as the data term's is weighted (TVGradient), or None.
        # 'heldout' chooses a weight > 0 (its ladder starts above 0).
        with_tv = self.tv_floor is None or self.tv_floor > 0
        self.tv_filter = (TVGradientFilter.match(self.data_fit, operator)
                          if matched and with_tv else None)
        #: The TV term's factor in the training loss per unit of TVWeight: 1, or with the
        #: matched filter the factor that makes TVWeight the weight w of
        #: 1/2 ||A x - y||^2 / ||y||^2 + w mean|grad x| / level (compare's TV): the filtered
        #: training is stationary for ||A x - y||^2 / (y^T R y) + mu mean|grad(x / mean_scale)|,
        #: so mu = 2 w ||y||^2 mean_scale / (y^T R y level).
        self.tv_loss_unit = 1.0
        if self.tv_filter is not None:
            level = constant_level(a_one, y)
            if level > 0:
                self.tv_loss_unit = (2.0 * self.y_norm ** 2 * self.mean_scale
                                     / (self.data_fit.ramp_energy() * level))
        #: Data residual ||A x - y|| / ||y|| below which the TV weight grows
        #: (Discrepancy x data error level); 0: TV weight fixed.
        #: The Discrepancy factor in use ('auto' resolved).
        self.discrepancy = (float(config.discrepancy) if config.discrepancy != "auto"
                            else 0.0 if matched else _DISCREPANCY_PLAIN)
        self.discrepancy_target = self.discrepancy * self.data_error_level if with_tv else 0.0
        #: The Regulariser's weight before the discrepancy rule moves it (RegulariserWeight,
        #: or its start under 'discrepancy'); 0 without a Regulariser.
        adaptive_reg = config.regulariser_weight == "discrepancy"
        self.regulariser_floor = (0.0 if config.regulariser == "none" else
                                  _GWD_START if adaptive_reg else float(config.regulariser_weight))
        #: Data residual below which the Regulariser's weight grows; 0: weight fixed.
        #: Discrepancy 'auto' is Morozov's factor here whatever the TV gradient: the
        #: weight's only rule is this one.
        self.regulariser_discrepancy_target = (
            (_DISCREPANCY_PLAIN if config.discrepancy == "auto" else float(config.discrepancy))
            * self.data_error_level if adaptive_reg else 0.0)
        #: Where the volume may be non-zero (SupportMask), bool of the grid's shape, or None.
        self.support = (estimate_support(y, operator, self.noise_level)
                        if config.support_mask == "auto" and config.min_constraint == 0 else None)
        self.coords = grid.coordinates(device=self.device)
        self._voxel: torch.Tensor | None = None
        #: Matrix-product precision of the network: 'float32', 'tf32' or 'bf16'.
        self.matmul_precision = (("tf32" if self.device.type == "cuda" else "float32")
                                 if config.matmul_precision == "auto" else config.matmul_precision)
        #: Whether the current step's learning rate has begun to decay (bf16 steps it in float32).
        self._decaying = False
        #: On the CPU with bf16 products: whether the CPU has bf16 instructions (None: unknown).
        self.bf16_native = (native_bf16() if self.device.type == "cpu"
                            and self.matmul_precision == "bf16" else None)
        if self.bf16_native is False:
            warnings.warn("MatmulPrecision bf16 on a CPU without bf16 instructions (AVX512-BF16 "
                          "or AMX): torch emulates the products, which trained 1.3 to 7 x slower "
                          "than float32 in the project's measurements; MatmulPrecision float32 "
                          "is faster here", RuntimeWarning, stacklevel=2)
        self._slab_rng = torch.Generator().manual_seed(config.seed)
        #: Whether training steps replayed CUDA graphs (see :mod:`astra_inr.passes`).
        self.graphed_steps = False
        self._graph_failure: str | None = None
        self._chunked_steps: str | None = None
        self._step_graph_failure: str | None = None
        self._side_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        #: The operator of the training steps: ``operator``, or its projection matrix on the
        #: training device (ProjectorMatrix); and why not the matrix, when not.
        self.step_operator, self.matrix_not_used = training_operator(
            operator, self.device, config.projector_matrix)
        self._plan_slabs()
        #: Adam's step size at the start of each run (LearningRate, or its 'auto' value).
        self.learning_rate = (float(config.learning_rate) if config.learning_rate != "auto"
                              else _LR_WHOLE if self._slab_op is None else _LR_BATCH)
        budget = (int(_GPU_CHUNK_FRACTION * torch.cuda.get_device_properties(self.device).total_memory)
                  if self.device.type == "cuda" else _CPU_CHUNK_BYTES)
        self.chunk_points = config.chunk_points or max(
            4096, budget // (12 * config.width * config.depth))
        self.scale_selection: dict[str, Any] | None = None
        scale = config.scale if config.scale != "auto" else None
        self._set_network(self._new_network(scale) if scale is not None else None)
        self.seconds = 0.0
        #: FitLevel's factor at the end of each run() (None where not applied).
        self.level_gains: list[float | None] = []
        # Running mean of the weights over a run's last steps (IterateAveraging).
        self._average: list[torch.Tensor] | None = None
        self._average_steps = 0
        self.iterate_averaging: dict[str, Any] = {"used": False, "why": "no run has ended"}
        self.data_residual: float | None = None
        #: What run_until_fitted did (None: not used).
        self.auto_iterations: dict[str, Any] | None = None
        self._image: torch.Tensor | None = None

    # ------------------------------------------------------------------ network state
    def _new_network(self, scale: float) -> INRNetwork:
        c = self.config
        return INRNetwork(self.grid.ndim, c.width, c.depth, scale, c.activation,
                          c.fourier_features, c.fourier_sigma, c.seed).to(self.device)

    def _set_network(self, network: INRNetwork | None,
                     optimizer: torch.optim.Optimizer | None = None) -> None:
        self.network = network
        self.field = None if network is None else INRField(
            network, self.grid, self.image_scale, self.config.min_constraint,
            self.config.max_constraint, self.chunk_points, self.support)
        self.optimizer = optimizer if optimizer is not None or network is None else \
            _adam(network, self.learning_rate, self._step_graph_unusable() is None)
        self._singular_vectors: dict = {}
        # TVWeight multiplier (>= 1), kept on the device so adapting it costs no sync.
        self._tv_factor = torch.ones((), device=self.device)
        # Regulariser weight multiplier (>= 1), moved by the same rule.
        self._regulariser_factor = torch.ones((), device=self.device)
        # Random points of the training (Jitter, the Regulariser's integrals): drawn from
        # Seed, restarted with each network, so that Seed repeats a run whatever the
        # caller's global random state (a batch's second scan, the scale candidates).
        self._sample_rng = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self.total_iterations = 0
        self.history = _ThinnedHistory()
        self.regularity_history = _ThinnedHistory()
        self._pending_regularity: list[tuple[int, torch.Tensor]] = []
        # Training passes of this network by step shape (CUDA graphs hold its parameters).
        self._passes: dict[tuple[int, ...], tuple[Callable, Callable]] = {}
        # The whole step of this network as one CUDA graph, and the eager steps before it.
        self._step_graph: StepGraph | None = None
        self._step_graph_warm = 0

    @property
    def scale(self) -> float | None:
        """The BW-ReLU scale c in use (None until Scale='auto' has chosen)."""
        return None if self.network is None else self.network.scale

    # ------------------------------------------------------------------ rendering
    def image(self) -> torch.Tensor:
        """The current volume on the voxel grid, in the data's units.

        Returns
        -------
        torch.Tensor
            float32, shape ``grid.shape``, on the training device.

        Raises
        ------
        RuntimeError
            Before the first run when Scale='auto' has not chosen a network yet.
        """
        if self.field is None:
            raise RuntimeError("no network yet: Scale='auto' chooses one at the first run()")
        if self._image is None:
            self._image = self.field.to_image(self.field.evaluate(self.coords), self.grid.shape)
        return self._image

    def render(self, upsample: float = 1, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The continuous INR on a finer (or any) grid; see :meth:`INRField.render`."""
        if self.field is None:
            raise RuntimeError("no network yet: Scale='auto' chooses one at the first run()")
        return self.field.render(upsample, shape)

    # ------------------------------------------------------------------ training
    def _regularisation(self) -> torch.Tensor | None:
        c, net = self.config, self.network
        terms = []
        if c.path_norm_weight > 0:
            terms.append(c.path_norm_weight * regularity.path_norm(net))
        if c.weight_decay > 0:
            terms.append(c.weight_decay * regularity.weight_decay(net))
        if c.regulariser == "generalized_weight_decay" and self.regulariser_floor > 0:
            samples = self._window_samples(_GWD_SAMPLES)
            terms.append((self.regulariser_floor * self._regulariser_factor)
                         * regularity.generalized_weight_decay(net, samples, self._window_volume()))
        return sum(terms) if terms else None

    @property
    def tv_weight(self) -> float | None:
        """The TV weight in use now: the floor (TVWeight) times the discrepancy multiplier.

        None while TVWeight='heldout' has not chosen it (before the first run).
        """
        return None if self.tv_floor is None else self.tv_floor * float(self._tv_factor)

    @property
    def regulariser_weight(self) -> float:
        """The Regulariser's weight in use now (0 without one)."""
        return self.regulariser_floor * float(self._regulariser_factor)

    def _choose_tv_weight(self, callback: ProgressCallback | None) -> None:
        """TVWeight='heldout': the weight by held-out projections (:mod:`astra_inr.tv_weight`).

        Pixel TV runs on the projection matrix where the problem has one of a
        reasonable size (four times faster than ASTRA's calls on the CPU, and
        on the GPU no step waits on the host), else on ASTRA's projector.
        """
        start = time.perf_counter()
        op: AstraOperator | MatrixOperator = self.step_operator
        if isinstance(op, AstraOperator) and estimated_entries(op) <= AUTO_MAX_ENTRIES:
            try:
                op = MatrixOperator.from_operator(op, self.device)
            except ValueError:
                pass                        # slices that see each other: ASTRA's projector
        y = self.y.to(op.data_device) if op.data_device != self.device else self.y

        def relay(rung: int, rungs: int, weight: float, heldout: float, fitted: float) -> None:
            if callback is not None:
                callback(Progress(rung, rungs, self.total_iterations, heldout, fitted, 0.0,
                                  time.perf_counter() - start, f"{TV_WEIGHT_STAGE} {weight:g}"))

        try:
            choice = choose_tv_weight(op, y, self.config.min_constraint,
                                      self.config.max_constraint, progress=relay)
        except ValueError as exc:
            raise ValueError(f"TVWeight='heldout' cannot choose a weight here: {exc}; give "
                             "TVWeight a number or 'auto'") from exc
        finally:
            if op is not self.step_operator:
                op.close()
        choice["operator"] = op.describe()
        self.tv_weight_choice = choice
        self.tv_floor = float(choice["weight"])
        self.seconds += time.perf_counter() - start

    def _adapt_weights(self, residual: torch.Tensor) -> None:
        """Discrepancy principle for the TV and Regulariser weights (:meth:`_adapt_tv`)."""
        self._adapt_tv(residual)
        if self.regulariser_discrepancy_target > 0:
            self._regulariser_factor = _discrepancy_step(
                self._regulariser_factor, residual, self.regulariser_discrepancy_target,
                _GWD_MAX_FACTOR)

    def _adapt_tv(self, residual: torch.Tensor) -> None:
        """Discrepancy principle for the TV weight, one multiplicative step per iteration.

        The data residual r = ||A x - y|| / ||y|| should settle at the
        estimated noise level delta (the rule compare.py applies to SIRT and
        CGLS, with the same Discrepancy factor by default): below it
        the network reproduces noise, so the weight grows by up to
        exp(_TV_RATE) per iteration (g = 1 - r^2 / delta^2, clipped to
        [-1, 1]); above it the weight falls back, never below TVWeight (the
        prior that sparse or limited data need even without noise).
        """
        if self.discrepancy_target <= 0:
            return
        # In place: a captured whole step reads the factor from this very tensor.
        self._tv_factor.copy_(_discrepancy_step(self._tv_factor, residual,
                                                self.discrepancy_target, _TV_MAX_FACTOR))

    def _window_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Normalised window: (x, y[, z]) half-widths over the largest half-extent.
        h = self.grid.half_extent
        half = torch.tensor([(hi - lo) / 2 / h for lo, hi in zip(self.grid.minimum, self.grid.maximum)],
                            dtype=torch.float32, device=self.device)
        return -half, half

    def _window_volume(self) -> float:
        lo, hi = self._window_bounds()
        return float(torch.prod(hi - lo))

    def _window_samples(self, n: int) -> torch.Tensor:
        lo, hi = self._window_bounds()
        return lo + (hi - lo) * torch.rand(n, lo.numel(), device=self.device,
                                           generator=self._sample_rng)

    def _training_coords(self, points: slice | torch.Tensor) -> torch.Tensor:
        coords = self.coords[points]
        if self.config.jitter == 0:
            return coords
        if self._voxel is None:
            self._voxel = torch.tensor([v / self.grid.half_extent for v in self.grid.voxel_size],
                                       dtype=torch.float32, device=self.device)
        shift = torch.rand(coords.shape, device=self.device, generator=self._sample_rng) - 0.5
        return coords + shift * (self.config.jitter * self._voxel)

    def _plan_slabs(self) -> None:
        """Split a 3D volume into batches of slices, one per iteration (SliceBatch)."""
        self._slab_op: AstraOperator | MatrixOperator | None = None
        self._slab_order: list[torch.Tensor] = []
        self.slice_batch = self.grid.shape[0] if self.grid.ndim == 3 else None
        #: TV's slice groups of a batch (total_variation's slice_groups; None: consecutive).
        self._tv_slice_groups: int | None = None
        if self.grid.ndim != 3:
            return
        slices, rows, cols = self.grid.shape
        wanted = self.config.slice_batch or (
            slices if slices * rows * cols <= _FULL_BATCH_VOXELS
            else max(1, _SLAB_VOXELS // (rows * cols)))
        # A divisor of the slice count, so that every batch has the same shape.
        size = max(d for d in range(1, min(wanted, slices) + 1) if slices % d == 0)
        if size == slices:
            return
        try:
            self._slab_op = self.step_operator.slab(size, self.config.gpu_index)
        except ValueError:
            self._slab_op = None       # slices see each other (cone beam): whole volume
            return
        self.slice_batch = size
        if self.config.slice_sampling == "random":
            self._tv_slice_groups = 1
        self._plane_offsets = torch.arange(rows * cols, device=self.device)

    def _next_slab(self) -> torch.Tensor:
        """Slice indices (ascending, on the device) of the next batch; every slice once per epoch.

        'random': each epoch deals the slices out at random, so a batch samples the
        whole volume; 'contiguous': slabs of neighbours in random order.  The
        network is one function of the whole volume, and a slab's gradient pulls
        it towards one height only: on a 64^3 Shepp-Logan (64 angles, 1 % noise,
        batches of 4 slices, 600 iterations, CPU) random slices reached 24.9 dB
        where slabs reached 21.0 (26.3 and 22.6 at learning rate 2e-3).
        """
        if not self._slab_order:
            n, b = self.grid.shape[0], self.slice_batch
            if self.config.slice_sampling == "random":
                batches = torch.randperm(n, generator=self._slab_rng).view(n // b, b)
            else:
                batches = (torch.randperm(n // b, generator=self._slab_rng)[:, None] * b
                           + torch.arange(b))
            self._slab_order = list(batches.sort(dim=1).values.to(self.device).unbind(0))
        return self._slab_order.pop()

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step; returns (loss, relative residual) before the update, on device.

        Also adapts the TV weight to the residual (:meth:`_adapt_tv`).
        """
        if self._step_graph_unusable() is None:
            self._image = None
            return self._whole_step()
        self.optimizer.zero_grad(set_to_none=True)
        if self._slab_op is None:
            shape, operator, rows, points = self.grid.shape, self.step_operator, None, slice(None)
        else:
            rows = self._next_slab()
            plane = self._plane_offsets.numel()
            shape = (self.slice_batch, *self.grid.shape[1:])
            operator, points = self._slab_op, (rows[:, None] * plane + self._plane_offsets).view(-1)
        coords = self._training_coords(points)
        y, wy, norm = self.data_fit.targets(rows)
        # ||y|| of the data seen this step (a slab of empty rows: no division by 0).
        y_norm = (self._y_norm_t if rows is None
                  else self._y_energy[rows].sum().sqrt().float().clamp_min(1e-30))
        support = None if self.support is None else (
            self.support if rows is None else self.support[rows])
        render_args = (coords,) if support is None else (coords, support)
        targets = (y, wy, y_norm, self._tv_factor)
        with self._precision():
            if coords.shape[0] <= self.field.chunk_points:
                render, loss_pass = self._passes_for(shape, operator, norm, render_args, targets)
                image = render(*render_args)
                proj = project(image, operator)
                loss, residual = loss_pass(proj, image, *targets)
                reg = self._regularisation()
                total = loss if reg is None else loss + reg
                total.backward()
            else:
                # Render without autograd, take dL/d(output) once, then backpropagate chunk by chunk.
                self._chunked_steps = (f"steps of {coords.shape[0]} points run in chunks of "
                                       f"{self.field.chunk_points} (ChunkPoints)")
                leaf = self.field.evaluate(coords).float().requires_grad_(True)
                image = self.field.to_image(leaf, shape, rows)
                proj = project(image, operator)
                loss, residual = LossPass(self.data_fit, norm, self.tv_floor * self.tv_loss_unit,
                                          self.mean_scale, self._tv_slice_groups,
                                          self.tv_filter)(proj, image, *targets)
                loss.backward()
                grad = leaf.grad
                for s in self.field.chunks(coords.shape[0]):
                    self.network(coords[s]).float().backward(grad[s])
                reg = self._regularisation()
                total = loss if reg is None else loss + reg
                if reg is not None:
                    reg.backward()
        self.optimizer.step()
        self._image = None
        # A graphed pass returns every output as differentiable: cut the residual's history, or
        # the TV factor computed from it would chain each step's graph to the next.
        residual = residual.detach()
        self._adapt_weights(residual)
        return total.detach(), residual

    def _step_graph_unusable(self) -> str | None:
        """Why a training step is not one CUDA graph replay (None: it is, see :meth:`_whole_step`)."""
        reason = self._graphs_unusable()
        if reason is not None:
            return reason
        if self._slab_op is not None:
            return "steps train batches of slices, drawn anew each step"
        if not isinstance(self.step_operator, MatrixOperator):
            return "steps call ASTRA's projector, which synchronises (ProjectorMatrix)"
        if self.config.jitter > 0:
            return "Jitter draws new coordinates each step"
        if self.coords.shape[0] > self.chunk_points:
            return "steps run in chunks (ChunkPoints)"
        return self._step_graph_failure

    def _whole_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the whole volume as one CUDA graph replay: network, projection by the
        matrix, loss, backward, Adam and the TV rule, with no host work but the launch.

        The first :data:`_STEP_GRAPH_WARMUP` steps of each network run eagerly on a side
        stream (the warm-up that capture needs: the libraries and Adam set up their state
        there), the next one captures the step and replays it; the captured kernels are
        those of the eager step, so the results are the same.  A capture that fails leaves
        the two-pass path in place.
        """
        if self._step_graph is None:
            if self._step_graph_warm < _STEP_GRAPH_WARMUP:
                self._step_graph_warm += 1
                quiet_side_stream_warning()
                main = torch.cuda.current_stream(self.device)
                self._side_stream.wait_stream(main)
                with torch.cuda.stream(self._side_stream), self._precision():
                    out = self._whole_step_body()
                main.wait_stream(self._side_stream)
                return out
            try:
                self._step_graph = StepGraph(self._whole_step_body, self._precision)
            except Exception as exc:  # an op that cannot be captured: two passes from now on
                self._step_graph_failure = (f"whole-step capture failed ({type(exc).__name__}: "
                                            f"{exc})")[:300]
                warnings.warn(f"one-graph training steps not used: {self._step_graph_failure}",
                              RuntimeWarning, stacklevel=3)
                return self._step()
            self.graphed_steps = True
        with self._precision():
            return self._step_graph.replay()

    def _whole_step_body(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole-volume step that :meth:`_whole_step` runs and captures: every tensor it
        reads lives as long as the network (coordinates, support, data, TV factor)."""
        self.optimizer.zero_grad(set_to_none=True)
        render = RenderPass(self.network, self.grid.shape, self.image_scale,
                            self.config.min_constraint, self.config.max_constraint)
        y, wy, norm = self.data_fit.targets()
        loss_pass = LossPass(self.data_fit, norm, self.tv_floor * self.tv_loss_unit,
                             self.mean_scale, tv_filter=self.tv_filter)
        image = render(self.coords) if self.support is None else render(self.coords, self.support)
        proj = project(image, self.step_operator)
        loss, residual = loss_pass(proj, image, y, wy, self._y_norm_t, self._tv_factor)
        loss.backward()
        self.optimizer.step()
        residual = residual.detach()
        self._adapt_tv(residual)
        return loss.detach(), residual

    def _graphs_unusable(self) -> str | None:
        """Why the training passes are not captured as CUDA graphs (None: they are)."""
        c = self.config
        if not c.cuda_graphs:
            return "CudaGraphs is off"
        if self.device.type != "cuda":
            return "not on a GPU"
        if self.matmul_precision == "bf16":
            return "MatmulPrecision bf16 (autocast) is not captured"
        if (c.path_norm_weight > 0 or c.weight_decay > 0
                or self.regulariser_floor > 0):
            return "parameter regularisers are computed outside the graphs"
        return self._graph_failure

    def _passes_for(self, shape: tuple[int, ...], operator: AstraOperator | MatrixOperator,
                    norm: float, render_args: tuple[torch.Tensor, ...],
                    targets: tuple[torch.Tensor, ...]) -> tuple[Callable, Callable]:
        """The render and loss passes of a one-chunk step of ``shape``, as CUDA graphs where
        they can be (captured at the first step of each shape of each network)."""
        if shape in self._passes:
            return self._passes[shape]
        render = RenderPass(self.network, shape, self.image_scale, self.config.min_constraint,
                            self.config.max_constraint)
        loss = LossPass(self.data_fit, norm, self.tv_floor * self.tv_loss_unit, self.mean_scale,
                        self._tv_slice_groups, self.tv_filter)
        passes: tuple[Callable, Callable] = (render, loss)
        if self._graphs_unusable() is None:
            sample_proj = torch.zeros(operator.proj_shape, device=self.device, requires_grad=True)
            sample_image = torch.zeros(shape, device=self.device, requires_grad=True)
            try:
                passes = graph_passes(render, loss, render_args,
                                      (sample_proj, sample_image, *targets))
                self.graphed_steps = True
            except Exception as exc:  # an unsupported op or driver: the eager passes still work
                self._graph_failure = f"capture failed ({type(exc).__name__}: {exc})"[:300]
                warnings.warn(f"CUDA graphs not used: {self._graph_failure}", RuntimeWarning,
                              stacklevel=4)
        self._passes[shape] = passes
        return passes

    def _precision(self):
        """Context for the network passes: TF32 or bf16 matrix products where asked for.

        bf16 only while the learning rate is constant; the steps of the decay, which settle
        the fit, run in float32.  bf16's 8-bit mantissa leaves the fit of clean data short
        (clean 256 x 256 Shepp-Logan: the constant-rate blocks' median residual ended at
        0.020 in bf16, 0.013 in float32), and bf16 throughout ended 1.9 to 2.5 dB below
        float32 there, 0.2 to 0.6 dB with the decay in float32 (docs/defaults.md).
        """
        mode = self.matmul_precision
        if mode == "bf16" and not self._decaying:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return _Float32Matmul("high" if mode == "tf32" else "highest")

    def learning_rate_at(self, i: int, iterations: int) -> float:
        """Learning rate of step ``i`` (0-based) of a run of ``iterations`` steps.

        Constant for the first ``constant_fraction`` of the run (the network
        moves fast while far from the data), then exponential decay down to
        ``learning_rate * learning_rate_decay`` at the last step, so every run
        ends settled whatever its length.
        """
        lr0, decay = self.learning_rate, self.config.learning_rate_decay
        knee = int(self.constant_fraction * iterations)
        if i < knee or iterations - knee <= 1:
            return lr0
        return lr0 * decay ** ((i - knee) / (iterations - knee - 1))

    def _record_regularity(self, iteration: int) -> None:
        """Queue a (path norm, deep path norm, Lipschitz bound) record, on device (no sync)."""
        if self._pending_regularity and self._pending_regularity[-1][0] == iteration:
            return
        with torch.no_grad():
            values = torch.stack([regularity.path_norm(self.network).double(),
                                  regularity.deep_path_norm(self.network, as_tensor=True),
                                  regularity.lipschitz_bound(self.network, self._singular_vectors)])
        self._pending_regularity.append((iteration, values))

    def _flush_regularity(self) -> None:
        items = self.regularity_history.items
        for iteration, values in self._pending_regularity:
            if not items or items[-1][0] != iteration:
                self.regularity_history.add(iteration, *values.cpu().tolist())
        self._pending_regularity = []

    def _train(self, iterations: int, callback: ProgressCallback | None, callback_every: int,
               stage: str = "train", lr_at: Callable[[int], float] | None = None,
               average_from: int | None = None, average_restart: bool = True,
               record_every: int | None = None) -> torch.Tensor:
        """Run ``iterations`` steps on the current network (histories and timers updated).

        ``lr_at(i)`` is step ``i``'s learning rate (default: :meth:`learning_rate_at`
        for a run of ``iterations``).  From step ``average_from`` on, each step's
        weights join the running mean (IterateAveraging; restarted there unless
        ``average_restart`` is False).  The regularity is recorded every
        ``record_every`` iterations (default: about ``_REGULARITY_RECORDS`` times
        over these steps).  Returns the data residual of each step done (fewer
        than ``iterations`` when the callback stopped the run), on the device.
        """
        if self.tv_floor is None:
            self._choose_tv_weight(callback)
        if not self.config.iterate_averaging:
            average_from = None
        if lr_at is None:
            lr_at = lambda i: self.learning_rate_at(i, iterations)  # noqa: E731
        losses = torch.empty(iterations, device=self.device)
        residuals = torch.empty(iterations, device=self.device)
        # TV and Regulariser multipliers per step, recorded only while the discrepancy rule
        # can change them (each record is a device op, and a GPU step is launch-bound).
        adaptive = self.discrepancy_target > 0
        adaptive_reg = self.regulariser_discrepancy_target > 0
        tv_factors = torch.ones(iterations, device=self.device)
        reg_factors = torch.ones(iterations, device=self.device)
        if record_every is None:
            record_every = _record_every(iterations)
        start = time.perf_counter()
        done = 0
        self._image = None
        try:
            for i in range(iterations):
                lr = lr_at(i)
                _set_learning_rate(self.optimizer, lr)
                self._decaying = lr < self.learning_rate
                if adaptive:
                    tv_factors[i] = self._tv_factor
                if adaptive_reg:
                    reg_factors[i] = self._regulariser_factor
                losses[i], residuals[i] = self._step()
                done = i + 1
                if average_from is not None and i >= average_from:
                    self._accumulate_average(restart=average_restart and i == average_from)
                if (self.total_iterations + done) % record_every == 0:
                    self._record_regularity(self.total_iterations + done)
                if callback is not None and (done % callback_every == 0 or done == iterations):
                    info = Progress(done, iterations, self.total_iterations + done,
                                    float(losses[i]), float(residuals[i]), lr,
                                    time.perf_counter() - start, stage)
                    if callback(info) is True:
                        break
        finally:
            self._flush_regularity()
            rows = torch.stack([losses[:done], residuals[:done],
                                self.tv_floor * tv_factors[:done],
                                self.regulariser_floor * reg_factors[:done]], dim=1).cpu().tolist()
            for k, values in enumerate(rows):
                self.history.add(self.total_iterations + k + 1, *values)
            self.total_iterations += done
            self.seconds += time.perf_counter() - start
            self._image = None
            self._decaying = False
        return residuals[:done]

    def run(self, iterations: int, callback: ProgressCallback | None = None,
            callback_every: int = 10,
            checkpoint: Callable[[dict[str, Any]], None] | None = None,
            resume: dict[str, Any] | None = None) -> None:
        """Train for ``iterations`` more iterations.

        With ``Scale='auto'``, the first call first runs the scale search
        (:meth:`choose_scale`) and continues with the chosen network.

        Parameters
        ----------
        iterations : int
            Number of Adam steps, >= 1.
        callback : callable, optional
            Called with a :class:`Progress` every ``callback_every`` iterations
            and after the last; returning True stops the run early.
        callback_every : int
            Iterations between callbacks (each costs a device sync on GPU).
        checkpoint : callable, optional
            Called with the run's state (CPU tensors and plain values, for
            ``torch.save``) every ``CHECKPOINT_EVERY`` iterations, so that an
            interrupted run can go on from there; the run itself is the same.
        resume : dict, optional
            Such a state, from a trainer of the same config, operator and data:
            this fresh trainer restores it (:meth:`restore`) and trains the rest
            of that run (``iterations`` is the saved run's).

        Raises
        ------
        ValueError
            If ``iterations`` is not a positive integer.
        """
        if resume is not None:
            self.restore(resume["trainer"])
            iterations = resume["iterations"]
        if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        if self.network is None:
            self.choose_scale(callback, callback_every)
        iterations = int(iterations)
        knee = int(self.constant_fraction * iterations)
        first_averaged = knee // 2
        done = 0 if resume is None else int(resume["done"])
        parts = [] if resume is None else [resume["residuals"].to(self.device)]
        record_every = _record_every(iterations)
        segment = CHECKPOINT_EVERY if checkpoint is not None else iterations
        while done < iterations:
            if done and checkpoint is not None:
                checkpoint({"trainer": self.state(), "iterations": iterations, "done": done,
                            "residuals": torch.cat(parts).cpu()})
            n = min(segment, iterations - done)
            residuals = self._train(
                n, _offset_callback(callback, done, iterations), callback_every,
                lr_at=lambda i, d=done: self.learning_rate_at(d + i, iterations),
                average_from=(max(first_averaged - done, 0) if done + n > first_averaged
                              else None),
                average_restart=done <= first_averaged, record_every=record_every)
            parts.append(residuals)
            done += len(residuals)
            if len(residuals) < n:
                break
        residuals = torch.cat(parts)
        reached = self._reached_error_level(residuals[:knee])
        self._finish_run(use_average=len(residuals) == iterations and reached)

    def _accumulate_average(self, restart: bool) -> None:
        """Add the current weights to the running mean (a fresh mean when ``restart``)."""
        with torch.no_grad():
            params = [p.detach() for p in self.network.parameters()]
            if restart or self._average is None:
                self._average = [p.clone() for p in params]
                self._average_steps = 1
            else:
                self._average_steps += 1
                torch._foreach_lerp_(self._average, params, 1.0 / self._average_steps)

    def _projections(self) -> tuple[torch.Tensor, float]:
        """A x of the current network's volume and ||A x - y|| / ||y|| (before FitLevel)."""
        self._image = None
        projections = self.operator.forward(self.image())
        residual = float(torch.linalg.vector_norm(projections - self.y, dtype=torch.float64))
        return projections, residual / self.y_norm

    @staticmethod
    def _settled_residual(residuals: torch.Tensor) -> float:
        """The median of the last ``AUTO_WINDOW`` step residuals (Adam's spikes do not move it)."""
        return float(residuals[-AUTO_WINDOW:].median())

    def _reached_error_level(self, residuals: torch.Tensor) -> bool:
        """Whether these steps settled within AUTO_UNDERFIT x the error level (_settled_residual)."""
        if residuals.numel() == 0 or not self.data_error_level > 0:
            return False
        return self._settled_residual(residuals) <= AUTO_UNDERFIT * self.data_error_level

    def _finish_run(self, use_average: bool = False) -> None:
        """End of a run: the averaged weights (IterateAveraging, where ``use_average``),
        FitLevel, a regularity record and the full data residual."""
        if not self.config.iterate_averaging:
            why = "IterateAveraging is off"
        elif not use_average:
            why = ("the run ended before its residual reached "
                   f"{AUTO_UNDERFIT:g} x the data's error level: its last weights are kept")
        elif self._average is None:
            why = "the run was too short to average"
        else:
            why = None
        used = why is None
        residuals: dict[str, float] = {}
        projections = None
        if used:
            # The mean of weights is not the mean of images: where the weights travelled far
            # (a clean fit still sharpening), their mean can be a much worse network.  So it is
            # kept only if it fits the data as well as the last weights or within the level.
            params = list(self.network.parameters())
            with torch.no_grad():
                last = [p.detach().clone() for p in params]
                last_projections, residuals["last"] = self._projections()
                # In place: captured CUDA graphs keep reading the same parameter memory.
                for param, mean in zip(params, self._average):
                    param.copy_(mean)
                projections, residuals["averaged"] = self._projections()
                bound = max(residuals["last"], AUTO_UNDERFIT * self.data_error_level)
                if residuals["averaged"] > bound:
                    for param, value in zip(params, last):
                        param.copy_(value)
                    self._image, projections = None, last_projections
                    used = False
                    why = (f"the averaged weights fit the data worse ({residuals['averaged']:.4g} "
                           f"against {residuals['last']:.4g}): the last weights are kept")
        self.iterate_averaging = {"used": used, "steps": self._average_steps if used else 0,
                                  **({} if used else {"why": why}),
                                  **({"data_residuals": residuals} if residuals else {})}
        self._average, self._average_steps = None, 0
        with torch.no_grad():
            if projections is None:
                projections = self.operator.forward(self.image())
            if self.config.fit_level:
                projections = self._fit_level(projections)
            self._record_regularity(self.total_iterations)
            self._flush_regularity()
            residual = projections - self.y
            self.data_residual = float(torch.linalg.vector_norm(
                residual, dtype=torch.float64)) / self.y_norm

    def run_until_fitted(self, callback: ProgressCallback | None = None,
                         callback_every: int = 10, round_iterations: int | None = None,
                         max_rounds: int | None = None,
                         checkpoint: Callable[[dict[str, Any]], None] | None = None,
                         resume: dict[str, Any] | None = None) -> dict[str, Any]:
        """One run whose length the data choose: ``round_iterations`` x 1 to ``max_rounds``.

        The run's constant learning rate lasts in blocks of
        ``constant_fraction`` x ``round_iterations`` steps.  After each block
        another follows while the data residual ``||A x - y|| / ||y||`` (median
        of the block's last ``AUTO_WINDOW`` steps) is above ``AUTO_UNDERFIT`` x
        the data's estimated error level (the network is still fitting signal:
        where it reaches the noise, the discrepancy rule holds it near that
        level) and, of the last ``AUTO_PATIENCE`` blocks, at least one lowered
        the median residual of its second half by ``AUTO_MIN_GAIN`` below the
        lowest of the blocks before it (a median, because Adam's residual spikes
        within a block; more than one block, because it also catapults over a
        hundred steps); at most ``max_rounds`` blocks.
        With the matched TV gradient (and a TV weight) the bound is
        ``AUTO_FITTED_MATCHED`` x the level instead: there no discrepancy rule
        holds the residual at the level.  Then the learning rate decays
        over the rest, a fifth of the whole, and FitLevel applies: the same
        schedule as :meth:`run` with the chosen length (k blocks = a run of k x
        ``round_iterations``), not k runs that each restart the rate.

        Parameters
        ----------
        callback, callback_every
            As for :meth:`run`; ``Progress.iteration`` counts from the start of
            this run and ``Progress.iterations`` is its length as planned so far
            (it grows by ``round_iterations`` with each further block).
        round_iterations : int, optional
            Iterations per block and its share of the decay (default ``AUTO_ROUND``).
        max_rounds : int, optional
            Most blocks (default ``AUTO_MAX_ROUNDS``).
        checkpoint : callable, optional
            Called with this run's state (a dict of CPU tensors and plain
            values, for ``torch.save``) before each block after the first, so
            that an interrupted run can go on from its last finished block.
        resume : dict, optional
            Such a state, taken from a trainer of the same config, operator
            and data: this fresh trainer restores it (:meth:`restore`) and
            continues the run where it stopped.  ``round_iterations`` and
            ``max_rounds`` are the saved run's.

        Returns
        -------
        dict
            ``blocks`` (iterations, median residual of the last ``AUTO_WINDOW``
            steps and of the second half of each constant-rate block),
            ``iterations`` (the run's length), ``stopped`` (why no further
            block) and ``rule``; also kept as ``self.auto_iterations`` for the
            report.

        Raises
        ------
        ValueError
            If ``round_iterations`` or ``max_rounds`` is not a positive integer.
        """
        if resume is not None:
            self.restore(resume["trainer"])
            round_iterations, max_rounds = resume["round_iterations"], resume["max_rounds"]
        round_iterations = AUTO_ROUND if round_iterations is None else round_iterations
        max_rounds = AUTO_MAX_ROUNDS if max_rounds is None else max_rounds
        for name, value in (("round_iterations", round_iterations), ("max_rounds", max_rounds)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.network is None:
            self.choose_scale(callback, callback_every)
        block = max(1, int(self.constant_fraction * round_iterations))
        lr0, decay = self.learning_rate, self.config.learning_rate_decay
        # Fitted: with the matched TV gradient (its filter exists only with a TV weight) nothing
        # holds the residual at the error level (Discrepancy is 0), so Morozov's bound, as
        # compare stops SIRT and CGLS.
        fitted = AUTO_FITTED_MATCHED if self.tv_filter is not None else AUTO_UNDERFIT
        start = self.total_iterations if resume is None else resume["start"]
        blocks: list[dict[str, float]] = [] if resume is None else list(resume["blocks"])
        stopped = f"{max_rounds} blocks, the most allowed"
        interrupted = False

        reached = False if resume is None else resume["reached"]
        without_gain = 0 if resume is None else resume["without_gain"]
        for k in range(len(blocks), int(max_rounds)):
            if k and checkpoint is not None:
                checkpoint({"trainer": self.state(), "round_iterations": round_iterations,
                            "max_rounds": max_rounds, "start": start, "blocks": list(blocks),
                            "reached": reached, "without_gain": without_gain})
            # Each block averages its second half, kept if it turns out to be the last.
            residuals = self._train(block,
                                    _offset_callback(callback, k * block, (k + 1) * round_iterations),
                                    callback_every, lr_at=lambda i: lr0, average_from=block // 2)
            if len(residuals) < block:
                stopped, interrupted = "the callback stopped the run", True
                break
            now = self._settled_residual(residuals)
            typical = float(residuals[block // 2:].median())
            blocks.append({"iterations": self.total_iterations, "data_residual": now,
                           "median_residual": typical})
            reached = now <= AUTO_UNDERFIT * self.data_error_level
            if now <= fitted * self.data_error_level:
                stopped = (f"median residual {now:.4g} of the block's last {AUTO_WINDOW} steps "
                           f"within {fitted:g} x the data's error level "
                           f"({self.data_error_level:.4g})")
                break
            if k:
                lowest = min(b["median_residual"] for b in blocks[:-1])
                without_gain = without_gain + 1 if typical > (1.0 - AUTO_MIN_GAIN) * lowest else 0
                if without_gain >= AUTO_PATIENCE:
                    medians = ", ".join(f"{b['median_residual']:.4g}" for b in blocks)
                    stopped = (f"in {without_gain} blocks in a row the median residual of the "
                               f"block's second half fell less than {100 * AUTO_MIN_GAIN:g} % "
                               f"below the lowest of the blocks before it (medians {medians})")
                    break
        n_decay = (round_iterations - block) * len(blocks)
        average = not interrupted and reached
        if not interrupted and n_decay > 0:
            done = self._train(n_decay, _offset_callback(callback, len(blocks) * block,
                                                    len(blocks) * round_iterations),
                               callback_every,
                               lr_at=lambda i: lr0 * decay ** (i / max(n_decay - 1, 1)),
                               average_from=0 if average else None, average_restart=False)
            average = average and len(done) == n_decay
        self._finish_run(use_average=average)
        self.auto_iterations = {
            "blocks": blocks, "iterations": self.total_iterations - start, "stopped": stopped,
            "rule": (f"constant learning rate in blocks of {block} iterations, at most "
                     f"{max_rounds}, while the median ||A x - y|| / ||y|| of a block's last "
                     f"{AUTO_WINDOW} steps > {fitted:g} x data_error_level and one of the last "
                     f"{AUTO_PATIENCE} blocks lowered the median of its second half at least "
                     f"{100 * AUTO_MIN_GAIN:g} % below the lowest before it; then the decay over "
                     f"{round_iterations - block} iterations per block")}
        return self.auto_iterations

    def _fit_level(self, projections: torch.Tensor) -> torch.Tensor:
        """Scale the output layer by the plain least-squares gain of the volume; returns A(g x).

        ``g = <A x, y> / ||A x||^2``.  Exact for the constrained image: a
        lower bound of 0, the support mask and the image scale all commute
        with a positive factor (an upper bound would not, hence not with
        MaxConstraint; nor with another lower bound, where g x would move the
        bound).  A factor <= 0 (a volume that does not explain the data at
        all) is not applied.
        """
        lower, upper = self.config.min_constraint, self.config.max_constraint
        gain = 0.0
        if upper is None and lower in (None, 0):
            # float64 accumulation without float64 copies of the (possibly GB-sized) projections.
            energy = float((projections * projections).sum(dtype=torch.float64))
            cross = float((projections * self.y).sum(dtype=torch.float64))
            gain = cross / energy if energy > 0 else 0.0
        if not (math.isfinite(gain) and gain > 0):
            self.level_gains.append(None)
            return projections
        out = self.network.output
        out.weight.mul_(gain)
        out.bias.mul_(gain)
        self._image = None
        self.level_gains.append(gain)
        return projections * gain

    # ------------------------------------------------------------------ scale selection
    def choose_scale(self, callback: ProgressCallback | None = None,
                     callback_every: int = 10) -> dict[str, Any]:
        """Choose c by the lowest path norm at matched data fit (``Scale='auto'``).

        Every candidate c of ``ScaleCandidates`` trains a fresh network (same
        seed) for ``ScaleSearchIterations``.  The common data-fit target is
        the larger of 1.1 x the best residual any candidate reached and the
        estimated noise level (fitting below the noise is fitting noise).
        Among the candidates whose residual reached the target, the one with
        the lowest per-neuron path norm *at the moment it first reached it*
        wins: at equal fit, the most regular function.  Cost: candidates x
        ScaleSearchIterations iterations, once.

        Returns
        -------
        dict
            ``candidates`` (each: ``scale``, ``iterations``, ``data_residual``,
            ``path_norm``, ``reached_fit``, ``seconds``), ``target_residual``,
            ``chosen`` and the rule; also stored in the report.
        """
        budget = self.config.scale_search_iterations
        runs = []
        for c in self.config.scale_candidates:
            self._set_network(self._new_network(c))
            t0 = self.seconds
            self._train(budget, callback, callback_every, stage=f"scale c={c:g}")
            history = np.array(self.history.as_list())            # iteration, loss, residual
            path = np.array(self.regularity_history.as_list())    # iteration, path norm, ...
            runs.append({"scale": c, "network": self.network, "optimizer": self.optimizer,
                         "history": self.history, "regularity_history": self.regularity_history,
                         "tv_factor": self._tv_factor,
                         "regulariser_factor": self._regulariser_factor,
                         "residuals": history[:, [0, 2]], "path_norms": path[:, :2],
                         "seconds": self.seconds - t0})
        best = min(float(r["residuals"][:, 1].min()) for r in runs)
        target = max(1.1 * best, self.data_error_level)
        candidates = []
        for r in runs:
            res = r["residuals"]
            hit = np.nonzero(res[:, 1] <= target)[0]
            entry = {"scale": r["scale"], "seconds": r["seconds"],
                     "data_residual": float(res[:, 1].min()), "reached_fit": bool(hit.size)}
            if hit.size:
                it = int(res[hit[0], 0])
                # Path norm recorded closest to (at or after) the iteration the target was hit.
                pn = r["path_norms"]
                k = int(np.searchsorted(pn[:, 0], it)) if it <= pn[-1, 0] else len(pn) - 1
                entry.update(iterations=it, path_norm=float(pn[min(k, len(pn) - 1), 1]))
            else:
                entry.update(iterations=budget, path_norm=float(r["path_norms"][-1, 1]))
            candidates.append(entry)
        reached = [e for e in candidates if e["reached_fit"]]
        chosen = min(reached, key=lambda e: e["path_norm"])
        winner = next(r for r in runs if r["scale"] == chosen["scale"])
        self._set_network(winner["network"], winner["optimizer"])
        self._tv_factor = winner["tv_factor"]
        self._regulariser_factor = winner["regulariser_factor"]
        self.total_iterations = budget
        self.history = winner["history"]
        self.regularity_history = winner["regularity_history"]
        self.scale_selection = {
            "candidates": candidates, "chosen": chosen["scale"], "target_residual": target,
            "rule": ("each candidate trains ScaleSearchIterations from the same seed; target = "
                     "max(1.1 x best residual reached, estimated noise level); among candidates "
                     "reaching it, lowest per-neuron path norm when first reaching it"),
            "iterations_per_candidate": budget,
        }
        return self.scale_selection

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """Everything training carries from one step to the next, on the CPU (for torch.save).

        With :meth:`restore` on a trainer built from the same config, operator
        and data, training continues exactly as it would have (on the CPU the
        same numbers): the network and Adam's moments, the adaptive weights,
        the random generators, the slice batches' epoch, the running mean of
        IterateAveraging, the histories and what the scale search and
        TVWeight='heldout' chose.  Taken between steps, never mid-step.
        """
        if self.network is None:
            raise RuntimeError("no network yet: Scale='auto' chooses one at the first run()")
        cpu = lambda value: _moved(value, "cpu")  # noqa: E731

        return {
            "scale": float(self.network.scale),
            "network": cpu(self.network.state_dict()),
            "optimizer": cpu(self.optimizer.state_dict()),
            "tv_factor": float(self._tv_factor),
            "regulariser_factor": float(self._regulariser_factor),
            "sample_rng": self._sample_rng.get_state(),
            "slab_rng": self._slab_rng.get_state(),
            "slab_order": cpu(self._slab_order),
            "average": cpu(self._average),
            "singular_vectors": cpu(self._singular_vectors),
            "average_steps": self._average_steps,
            "total_iterations": self.total_iterations,
            "seconds": self.seconds,
            "history": (self.history.stride, self.history.as_list()),
            "regularity_history": (self.regularity_history.stride,
                                   self.regularity_history.as_list()),
            "tv_floor": self.tv_floor,
            "tv_weight_choice": self.tv_weight_choice,
            "scale_selection": self.scale_selection,
            "level_gains": list(self.level_gains),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` of a trainer of the same problem (before any step here).

        Raises
        ------
        RuntimeError
            If this trainer has already trained (its CUDA graphs would hold
            the memory that restoring replaces).
        ValueError
            If the state's network does not fit this trainer's config.
        """
        if self.total_iterations or (self.network is not None and self._passes):
            raise RuntimeError("restore a state into a fresh trainer, before its first step")
        network = self._new_network(float(state["scale"]))
        try:
            network.load_state_dict(state["network"])
        except RuntimeError as exc:
            raise ValueError(f"the saved network does not fit this configuration: {exc}") from exc
        self._set_network(network)
        # Adam's moments come from the state, its settings stay this trainer's: the state
        # may come from another device, and where CUDA graphs hold the step the step size
        # must stay a device tensor (a float would be baked into the graph) and capturable.
        self.optimizer.load_state_dict({"state": state["optimizer"]["state"],
                                        "param_groups": self.optimizer.state_dict()["param_groups"]})
        self._tv_factor.fill_(state["tv_factor"])
        self._regulariser_factor.fill_(state["regulariser_factor"])
        self._sample_rng.set_state(state["sample_rng"])
        self._slab_rng.set_state(state["slab_rng"])
        self._slab_order = _moved(state["slab_order"], self.device)
        self._average = _moved(state["average"], self.device)
        self._singular_vectors = _moved(state["singular_vectors"], self.device)
        self._average_steps = int(state["average_steps"])
        self.total_iterations = int(state["total_iterations"])
        self.seconds = float(state["seconds"])
        for name in ("history", "regularity_history"):
            history = _ThinnedHistory()
            history.stride, history.items = state[name][0], [list(r) for r in state[name][1]]
            setattr(self, name, history)
        self.tv_floor = state["tv_floor"]
        self.tv_weight_choice = state["tv_weight_choice"]
        self.scale_selection = state["scale_selection"]
        self.level_gains = list(state["level_gains"])
        self._image = None

    # ------------------------------------------------------------------ reporting
    def report(self) -> dict[str, Any]:
        """Training state as a JSON-friendly dict (see astra_inr.report)."""
        c = self.config
        out: dict[str, Any] = {
            "iterations": self.total_iterations,
            "data_residual": self.data_residual,
            "data_residual_definition": "||A x - y||_2 / ||y||_2 on the full data",
            "estimated_noise_level": self.noise_level,
            "estimated_noise_level_definition": (
                "white noise ||n|| / ||y||: the median absolute second difference along the "
                "detector (objective.estimate_noise_level)"),
            "estimated_inconsistency": self.inconsistency,
            "estimated_inconsistency_definition": (
                "relative error of the projection lines' totals, which a parallel beam keeps "
                "equal at every angle: their spread over the angles beyond the white noise's "
                "(0 where it does not apply: fan or cone beam, object reaching past the detector)"),
            "data_error_level": self.data_error_level,
            "loss_history": self.history.as_list(),
            "loss_history_columns": ["iteration", "loss", "data_residual", "tv_weight",
                                     "regulariser_weight"],
            "discrepancy_target": self.discrepancy_target,
            "discrepancy_definition": ("the TV weight grows while ||A x - y|| / ||y|| is below "
                                       "Discrepancy x data_error_level (estimated_noise_level and "
                                       "estimated_inconsistency in quadrature), and falls back "
                                       "towards TVWeight while above"),
            "tv_weight": self.tv_weight,
            "regulariser_discrepancy_target": self.regulariser_discrepancy_target,
            "regulariser_discrepancy_definition": (
                "RegulariserWeight='discrepancy': the Regulariser's weight starts at "
                f"{_GWD_START:g} and grows while ||A x - y|| / ||y|| is below Discrepancy "
                "('auto': Morozov's factor) x data_error_level, falling back towards the start "
                "while above (0: weight fixed)"),
            "learning_rate": self.learning_rate,
            "iterate_averaging": self.iterate_averaging,
            "level_fit": {
                "gains": self.level_gains,
                "rule": ("FitLevel: after each run() the output layer is multiplied by "
                         "<A x, y> / ||A x||^2, the plain least-squares level of the volume "
                         "(None: not applied; never with MaxConstraint or a MinConstraint "
                         "other than 0)"),
            },
            "support_mask": {
                "applied": self.support is not None,
                "free_fraction": (None if self.support is None
                                  else float(self.support.float().mean())),
                "rule": ("SupportMask='auto' with MinConstraint 0: voxels with at least a quarter "
                         "of their projection weight on rays outside the object's shadow (|data| "
                         "< 4 x the estimated noise standard deviation beyond the outermost "
                         "detector elements above it) are held at 0"),
            },
            "tv_weight_floor": self.tv_floor,
            "tv_weight_floor_definition": (
                "TVWeight as given" if c.tv_weight not in ("auto", "heldout") else
                "TVWeight='heldout': the weight by held-out projections (tv_weight_choice)"
                if c.tv_weight == "heldout" else
                f"TVWeight='auto' with the matched TV gradient: {_TV_LSQ_PER_ERROR:g} x "
                "data_error_level (estimated_noise_level and estimated_inconsistency in "
                "quadrature), in least-squares units (tv_gradient)"
                if self.tv_matched else
                f"TVWeight='auto': {_TV_PER_NOISE:g} x estimated_noise_level, clipped to "
                f"[{_TV_AUTO_MIN:g}, {_TV_AUTO_MAX:g}]"),
            "tv_gradient": {
                "filter": (None if self.tv_filter is None
                           else "kappa x 2D ramp |w| (cycles per voxel) + offset, within slices"),
                "kappa": None if self.tv_filter is None else self.tv_filter.kappa,
                "offset": None if self.tv_filter is None else self.tv_filter.offset,
                "loss_factor": self.tv_loss_unit,
                "rule": ("TVGradient='matched' with DataWeighting 'ramp': TV's gradient is "
                         "filtered as backprojection turns the data term's ramp weighting "
                         "(A^T W^2 = (kappa Lambda + offset) A^T; kappa: the detector pixel's "
                         "width in voxels), so training settles where 1/2 ||A x - y||^2 / "
                         "||y||^2 + tv_weight x mean|grad x| / level is stationary (level: the "
                         "best constant image's), as compare's TV; in the loss TV is weighted "
                         "tv_weight x loss_factor, and the loss recorded is the ramp-weighted "
                         "one"),
            },
            "loss_definition": ("||W (A x - y)||^2 / ||W0 y||^2 + regularisers, before each update "
                                "(W0: W without the ramp floor); W: "
                                + (f"sqrt of (the ramp filter along the detector + {c.ramp_floor:g} "
                                   "x its Nyquist value)"
                                   if c.data_weighting == "ramp" else "identity")),
            "seconds": self.seconds,
            "device": str(self.device),
            "image_scale": self.image_scale,
            "image_scale_definition": ("image value per unit of network output: the 99th "
                                       "percentile of a least-squares scaled filtered "
                                       "backprojection, at least mean_scale"),
            "mean_scale": self.mean_scale,
            "scale": self.scale,
            "chunk_points": self.chunk_points,
            "slice_batch": self.slice_batch,
            # How a batch below the whole volume was drawn (None: whole volume per step).
            "slice_sampling": self.config.slice_sampling if self._slab_op is not None else None,
            "matmul_precision": self.matmul_precision,
            # The products of the steps whose learning rate decays (bf16: float32).
            "decay_precision": "float32" if self.matmul_precision == "bf16"
            else self.matmul_precision,
            # bf16 on the CPU: whether it had bf16 instructions (None: not asked or unknown).
            "bf16_native": self.bf16_native,
            "cuda_graphs": {"used": self.graphed_steps,
                            "not_used_because": None if self.graphed_steps
                            else self._graphs_unusable() or self._chunked_steps
                            or "no training step yet",
                            # One replay per step (network, projection, loss, Adam, TV rule),
                            # else two passes around the projection.
                            "whole_step": self._step_graph is not None,
                            "whole_step_not_used_because": None if self._step_graph is not None
                            else self._step_graph_unusable() or "fewer steps than the warm-up"},
            "options": c.to_options(),
            "regularisers": {"PathNormWeight": c.path_norm_weight, "WeightDecay": c.weight_decay,
                             "Regulariser": c.regulariser,
                             "RegulariserWeight": c.regulariser_weight, "TVWeight": c.tv_weight,
                             "Discrepancy": c.discrepancy, "discrepancy_used": self.discrepancy,
                             "tv_weight_final": self.tv_weight,
                             "regulariser_weight_final": self.regulariser_weight,
                             "TVGradient": c.tv_gradient,
                             "FourierFeatures": c.fourier_features,
                             "MinConstraint": c.min_constraint, "SupportMask": c.support_mask,
                             "MaxConstraint": c.max_constraint, "Jitter": c.jitter,
                             "DataWeighting": c.data_weighting, "RampFloor": c.ramp_floor,
                             "FitLevel": c.fit_level, "IterateAveraging": c.iterate_averaging},
            "volume": self.grid.to_dict(),
            "operator": self.operator.describe(),
            # What the training steps projected with (ProjectorMatrix).
            "step_operator": (self.step_operator.describe() if self.matrix_not_used is None
                              else {"kind": "astra",
                                    "matrix_not_used_because": self.matrix_not_used}),
        }
        if self.network is not None:
            out["parameters"] = sum(p.numel() for p in self.network.parameters())
            out.update(regularity.regularity_summary(self.network))
            out["lipschitz_bound"]["value_image_units_per_world_unit"] = (
                out["lipschitz_bound"]["value"] * self.image_scale / self.grid.half_extent)
            out["regularity_history"] = self.regularity_history.as_list()
            out["regularity_history_columns"] = ["iteration", "path_norm", "deep_path_norm",
                                                 "lipschitz_bound"]
        if self.scale_selection is not None:
            out["scale_selection"] = self.scale_selection
        if self.tv_weight_choice is not None:
            out["tv_weight_choice"] = self.tv_weight_choice
        if self.auto_iterations is not None:
            out["auto_iterations"] = self.auto_iterations
        return out
