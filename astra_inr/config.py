"""The one validated configuration of an INR reconstruction.

Every option has an ASTRA-style CamelCase name (what users put in
``cfg['option']`` or pass on the command line) and a snake_case field here.
Values are checked once, in :meth:`INRConfig.__post_init__`; a bad value
raises ``ValueError`` naming the option, the value and what is expected, and
an unknown name lists the valid ones.

ASTRA converts option values before a plugin sees them (True -> 1,
None -> 'None', lists -> lists of floats); :meth:`INRConfig.from_options`
undoes that.  ASTRA aborts the whole process on a string option containing a
comma, so no option here ever needs one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .options import coerce_all, option as _opt, unknown_names_error

__all__ = ["INRConfig", "option_help", "option_table_markdown"]


@dataclass
class INRConfig:
    """Options of the INR algorithm (snake_case fields; CamelCase in ASTRA)."""

    width: int = _opt(300, "Width", "Neurons per hidden layer.", "int")
    depth: int = _opt(3, "Depth", "Number of hidden BW-ReLU layers.", "int")
    scale: float | str = _opt(
        2.0, "Scale", "Global BW-ReLU scale c in psi(c (W x + b)); larger c lets each neuron "
        "resolve finer detail.  'auto': train each of ScaleCandidates for "
        "ScaleSearchIterations, keep those reaching the common data-fit target and choose the "
        "lowest path norm.", "auto|positive")
    scale_candidates: tuple = _opt(
        (1.0, 2.0, 3.0, 5.0, 8.0), "ScaleCandidates", "The grid of c tried by Scale='auto' "
        "(a list; in a string separate by spaces, never commas).", "float_list")
    scale_search_iterations: int = _opt(
        200, "ScaleSearchIterations", "Training iterations per candidate for Scale='auto' (the "
        "search costs this times the number of candidates, once, before the first run).",
        "positive_int")
    activation: str = _opt("bw_relu", "Activation", "Hidden activation: 'bw_relu' (the "
                           "B-spline wavelet of ReLUs) or 'relu' (for comparison).", "choice",
                           ("bw_relu", "relu"))
    learning_rate: float | str = _opt(
        "auto", "LearningRate", "Adam step size at the start of each run; 'auto': 5e-3 where "
        "each step trains the whole volume, 2e-3 where it trains a batch of slices (SliceBatch), "
        "whose gradients are noisier.", "auto|positive")
    learning_rate_decay: float = _opt(
        0.1, "LearningRateDecay", "Factor the learning rate falls by, exponentially, over the "
        "last fifth of each call of run(); the next run restarts at LearningRate with the network and Adam state "
        "kept.", "fraction")
    data_weighting: str = _opt(
        "ramp", "DataWeighting", "Residual weighting of the data term: 'ramp' (ramp filter "
        "along the detector; well conditioned, fits edges early) or 'l2' (plain least "
        "squares).", "choice", ("ramp", "l2"))
    ramp_floor: float = _opt(
        0.0, "RampFloor", "With DataWeighting='ramp': this fraction of the ramp's Nyquist "
        "value is added at every detector frequency, so the slowest ones, which the pure ramp "
        "(0) all but ignores, also steer the fit.  For data whose coarse content drifts while "
        "training (neutron scan: +1.5 dB at 0.05); it slows the edges elsewhere (tooth: "
        "-1.6 dB).", "unit_interval")
    iterate_averaging: bool = _opt(
        True, "IterateAveraging", "End a run whose data residual reached the data's error level "
        "(within 1.25 x, before the decay) with the network's weights averaged over its last "
        "steps: the second half of the constant learning rate and the decay.  There Adam's "
        "fixed-size steps keep the weights moving around the fit the discrepancy rule holds, "
        "and their mean lies closer to it; a run still descending towards the data keeps its "
        "last weights.  The report's iterate_averaging says whether it was used.", "bool")
    fit_level: bool = _opt(
        True, "FitLevel", "At the end of each run(), scale the network's output so that the "
        "volume's overall level fits the data by plain least squares (one factor, folded into "
        "the output layer): the ramp-weighted data term barely sees that level and total "
        "variation lowers contrast, while FBP and SIRT set it from all the data.  Skipped with "
        "MaxConstraint or a MinConstraint other than 0 (the factor would move the bound).",
        "bool")
    seed: int = _opt(0, "Seed", "Seeds the network initialisation and the training's random "
                     "points (Jitter, the Regulariser's integrals): same seed, same result on "
                     "the CPU.", "int")
    device: str = _opt("auto", "Device", "Where the network trains: 'auto' (CUDA when torch "
                       "sees a GPU), 'cpu' or 'cuda'.", "choice", ("auto", "cpu", "cuda"))
    gpu_index: int | None = _opt(None, "GPUindex", "CUDA device index for the network and "
                                 "ASTRA's GPU projectors (default: the current device).",
                                 "optional_int")
    min_constraint: float | None = _opt(None, "MinConstraint", "Lower bound on voxel values, in "
                                        "the data's units (e.g. 0 for attenuation).",
                                        "optional_float")
    max_constraint: float | None = _opt(None, "MaxConstraint", "Upper bound on voxel values.",
                                        "optional_float")
    support_mask: str = _opt(
        "auto", "SupportMask", "'auto': when MinConstraint is 0 (a non-negative object), voxels "
        "that a quarter or more of their rays see outside the object's shadow (data within 4 "
        "noise standard deviations of zero beyond its outermost detector elements) are held at "
        "0, space carving of the convex hull; 'off': the whole volume is free.", "choice",
        ("auto", "off"))
    path_norm_weight: float = _opt(
        0.0, "PathNormWeight", "Adds this times the per-neuron path norm to the loss "
        "(smoother functions at some cost in data fit).", "nonneg")
    weight_decay: float = _opt(0.0, "WeightDecay", "Adds this times 1/2 sum ||W||_F^2 (weights, "
                               "not biases) to the loss.", "nonneg")
    tv_weight: float | str = _opt(
        "auto", "TVWeight", "Weight of the mean isotropic total variation of the rendered image: "
        "edge-preserving smoothing against noise and streaks.  With TVGradient 'matched' it "
        "is the weight w of 1/2 ||A x - y||^2 / ||y||^2 + w mean|grad x| / m (m: the level of "
        "the constant image that fits the data best), the units of astra-inr compare's TV; "
        "'auto': 0.1 times the data's error level estimated from the data (the white noise "
        "and, in quadrature, the projections' inconsistency, as for Discrepancy; in "
        "proportion to the error, as for Rudin-Osher-Fatemi denoising); 'heldout': chosen "
        "before training by the projections left out of a fit, one angle in five held out, "
        "total variation on the pixel grid fitted to the others along a ladder of weights, "
        "the weight predicting the held-out angles best (the best weight depends on the "
        "object as well as the noise; needs TVGradient 'matched').  With 'plain' it "
        "weighs TV of the image divided by its mean over the field of view against the "
        "ramp-weighted data term; 'auto': 12 times the white-noise level, within [0.01, 0.1].  "
        "With Discrepancy > 0 this is the smallest weight used; 0: no TV.",
        "auto|heldout|nonneg")
    tv_gradient: str = _opt(
        "matched", "TVGradient", "'matched': the TV term's gradient is filtered within slices by "
        "the image's 2D ramp, the twin of the ramp weighting along the detector (backprojection "
        "commutes with the ramp), so training keeps the ramp's conditioning but settles where "
        "plain least squares plus TV is stationary, the fit white noise calls for (with "
        "DataWeighting 'l2' nothing is filtered, and TVWeight and Discrepancy act as with "
        "'plain').  'plain': TV's own gradient beside the "
        "ramp-weighted data term, which trusts the fast detector frequencies, where noise "
        "dominates, far more than the slow ones (the former default; with Discrepancy 'auto' "
        "it gives the former defaults).", "choice", ("matched", "plain"))
    discrepancy: float | str = _opt(
        "auto", "Discrepancy", "Morozov's discrepancy principle for the TV weight: whenever the "
        "data residual ||Ax - y|| / ||y|| falls below this times the data's error level "
        "estimated from the data (white noise and, for parallel beams, the spread of the "
        "projections' totals over the angles; the network starts fitting noise) the TV weight "
        "grows, and it shrinks back towards TVWeight while the residual is above (0: TVWeight "
        "fixed).  'auto': 0 with TVGradient 'matched' (Morozov's rule over-smooths least "
        "squares plus TV on noisy data), 1.05 with 'plain'.  The same factor drives "
        "RegulariserWeight 'discrepancy' (there 'auto' is 1.05).", "auto|nonneg")
    regulariser: str = _opt(
        "none", "Regulariser", "'generalized_weight_decay': adds RegulariserWeight times "
        "1/2 sum_k (integral of neuron k)^2 + 1/2 ||output weights||^2 (last hidden layer; "
        "integrals by Monte Carlo over the volume window), after the sample-complexity "
        "analysis of Fourier-feature ReLU networks (which assumes FourierFeatures; on noisy "
        "sparse data that pairing fitted the noise, docs/results.md).", "choice",
        ("none", "generalized_weight_decay"))
    regulariser_weight: float | str = _opt(
        1e-4, "RegulariserWeight", "Weight of Regulariser relative to the normalised data "
        "term.  'discrepancy': Morozov's discrepancy principle sets it: from 1e-4 it grows "
        "while the data residual ||Ax - y|| / ||y|| is below Discrepancy times the data's "
        "estimated error level (Discrepancy 'auto': 1.05 here) and falls back towards 1e-4 "
        "while above, as the rule moves the TV weight.",
        "discrepancy|nonneg")
    fourier_features: int = _opt(0, "FourierFeatures", "Random Fourier frequencies in front of "
                                 "the network (0: plain coordinates).", "nonneg_int")
    fourier_sigma: float = _opt(3.0, "FourierSigma", "Standard deviation of those frequencies, "
                                "in cycles across half the field of view.", "positive")
    jitter: float = _opt(
        0.0, "Jitter", "Fraction of a voxel by which training coordinates are moved at random "
        "each iteration (0: voxel centres only; 1: anywhere in the voxel, which makes the INR "
        "consistent between voxel centres for render(upsample) at some cost in sharpness).",
        "unit_interval")
    slice_batch: int = _opt(
        0, "SliceBatch", "3D parallel beam: slices per training iteration, with their "
        "detector rows, every slice once per epoch (0: the whole volume up to 2M voxels, else "
        "about 1M voxels per iteration).", "nonneg_int")
    slice_sampling: str = _opt(
        "random", "SliceSampling", "3D parallel beam with SliceBatch below the slice count: "
        "which slices an iteration trains, 'random' (drawn over the whole volume, total "
        "variation within slices) or 'contiguous' (a slab of neighbours, total variation also "
        "across them).", "choice", ("random", "contiguous"))
    matmul_precision: str = _opt(
        "auto", "MatmulPrecision", "Matrix products of the network: 'float32', 'tf32' "
        "(tensor cores, 10-bit mantissa inputs) or 'bf16' (autocast while the learning rate "
        "is constant, float32 in its decay); 'auto' is tf32 on a GPU and float32 on the CPU.  "
        "On a CPU with bf16 instructions (AVX512-BF16, AMX) bf16 products ran 1.7 to 2.3 x "
        "faster and scored -0.6 to +0.6 dB from float32 at the length the data chose, the clean "
        "Shepp-Logan once its decay ran in float32 (docs/defaults.md); without them torch "
        "emulates it, 1.3 to 7 x slower than float32, and a warning says so.",
        "choice",
        ("auto", "float32", "tf32", "bf16"))
    cuda_graphs: bool = _opt(
        True, "CudaGraphs", "On a GPU, replay the network's passes and the loss of each "
        "training step as CUDA graphs (a small problem's step is otherwise bound by the cost of "
        "launching its many small kernels).  Used where a step is one chunk of points; not with "
        "MatmulPrecision bf16 or parameter regularisers; the report says whether it was used.",
        "bool")
    projector_matrix: str = _opt(
        "auto", "ProjectorMatrix", "Training steps project with ASTRA's projection matrix "
        "(astra.projector.matrix of the problem's CPU projector, or of the CPU kernel closest "
        "to the CUDA one) held on the training device as a sparse matrix, instead of calling "
        "ASTRA at each step: on a GPU no step then waits on the host, and the backprojection "
        "is the exact transpose.  'auto': on a GPU for 2D problems and stacks of 2D slices "
        "whose matrix has at most about 2.5e7 entries, where steps are bound by the host "
        "(built once per geometry on the CPU, about 1 s at 256 x 256 and 100 angles); 'on': "
        "wherever slices are independent 2D problems (parallel3d too); 'off': ASTRA's "
        "projector at every step.", "choice",
        ("auto", "on", "off"))
    chunk_points: int = _opt(0, "ChunkPoints", "Voxels evaluated per network pass; bounds "
                             "memory for large volumes (0: automatic).", "nonneg_int")
    verbose: bool = _opt(False, "Verbose", "Print progress lines while training.", "bool")

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        coerce_all(self)
        if self.width < 1 or self.depth < 1:
            raise ValueError(f"Width and Depth must be >= 1, got Width={self.width}, Depth={self.depth}")
        if (self.min_constraint is not None and self.max_constraint is not None
                and self.min_constraint >= self.max_constraint):
            raise ValueError(f"MinConstraint ({self.min_constraint}) must be below MaxConstraint "
                             f"({self.max_constraint})")
        if self.tv_weight == "heldout" and (self.tv_gradient != "matched"
                                            or self.data_weighting != "ramp"):
            # The held-out choice is made by pixel TV, whose weight means the same as INR's
            # only where training settles at least squares plus TV.
            raise ValueError(f"TVWeight='heldout' needs TVGradient='matched' and "
                             f"DataWeighting='ramp' (got {self.tv_gradient!r} and "
                             f"{self.data_weighting!r}); give a number or 'auto' instead")
        if self.regulariser_weight == "discrepancy" and (self.regulariser == "none"
                                                         or self.discrepancy == 0):
            # Refused rather than ignored: nothing would follow the discrepancy rule.
            raise ValueError(
                "RegulariserWeight='discrepancy' needs a Regulariser (got "
                f"{self.regulariser!r}) and a Discrepancy above 0 (got {self.discrepancy!r})")
        if self.ramp_floor > 0 and self.data_weighting != "ramp":
            # Refused rather than ignored: a user who sets it expects it to act.
            raise ValueError(f"RampFloor={self.ramp_floor:g} needs DataWeighting='ramp' "
                             f"(got {self.data_weighting!r}); leave RampFloor at 0 with 'l2'")

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> "INRConfig":
        """Build from ASTRA-style CamelCase options, refusing unknown names.

        Raises
        ------
        ValueError
            For an unknown option (the message lists the valid names) or a bad value.
        """
        options = dict(options or {})
        by_astra = {f.metadata["name"]: f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in options if k not in by_astra]
        if unknown:
            raise unknown_names_error(unknown, by_astra, "INR option")
        return cls(**{by_astra[k]: v for k, v in options.items()})

    def to_options(self) -> dict[str, Any]:
        """The resolved options, CamelCase, JSON-friendly."""
        return {f.metadata["name"]: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> "INRConfig":
        return dataclasses.replace(self, **changes)


def option_help() -> str:
    """A text table of every option, its default and meaning (for get_help and --help)."""
    lines = []
    for f in dataclasses.fields(INRConfig):
        default = f.default
        lines.append(f"  {f.metadata['name']:<18} default {default!r:<10} {f.metadata['doc']}")
    return "\n".join(lines)


def _markdown_default(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" for v in value)
    return str(value)


def option_table_markdown() -> str:
    """The README's option table (option, default, meaning), one row per option."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(INRConfig):
        doc = f.metadata["doc"].replace("|", "\\|")
        rows.append(f"| `{f.metadata['name']}` | {_markdown_default(f.default)} | {doc} |")
    return "\n".join(rows)
