"""BW-ReLU activation and the implicit neural representation (INR) network.

The BW-ReLU neuron of DESIGN.md is the cubic B-spline wavelet written as a
combination of seven ReLUs,

    psi(u) = (1/6) [r(u) - 8 r(u-1/2) + 23 r(u-1) - 32 r(u-3/2)
                    + 23 r(u-2) - 8 r(u-5/2) + r(u-3)],   r = ReLU.

It is piecewise linear with knots 0, 1/2, ..., 3, supported on [0, 3] and
symmetric about 3/2.  With t = min(|u - 3/2|, 3/2) it has the closed form

    psi = 5/6 - (8/3) t + (23/6) relu(t - 1/2) - (4/3) relu(t - 1),

which is what :func:`bw_relu` evaluates: four elementwise passes instead of
seven ReLUs, exactly zero outside the support, and a backward pass that needs
only the pre-activation ``u`` (the slope is piecewise constant).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "BW_KNOTS",
    "BW_COEFFICIENTS",
    "BW_MAX_SLOPE",
    "bw_relu",
    "bw_relu_reference",
    "BWReLU",
    "INRNetwork",
]

#: Knots of psi and the ReLU coefficients multiplying r(u - knot), before the 1/6.
BW_KNOTS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
BW_COEFFICIENTS: tuple[float, ...] = (1.0, -8.0, 23.0, -32.0, 23.0, -8.0, 1.0)
#: Largest |slope| of psi (on [1, 2]): 16/6.  Used by Lipschitz bounds.
BW_MAX_SLOPE: float = 16.0 / 6.0

# Slope of psi on each of the 8 intervals (-inf,0], (0,.5], ..., (2.5,3], (3,inf).
_SLOPES = (0.0, 1 / 6, -7 / 6, 16 / 6, -16 / 6, 7 / 6, -1 / 6, 0.0)

# Elements per chunk for the uncompiled CPU path: 2^16 float32 values
# (256 kB) keep the elementwise passes inside the core's cache, about 3x
# faster than whole-tensor passes at 65536 x 300 on 2 cores.
_CPU_CHUNK = 1 << 16

#: Set ASTRA_INR_COMPILE=0 to use the uncompiled kernels (same values, slower).
_COMPILE_ENV = "ASTRA_INR_COMPILE"


def bw_relu_reference(u: torch.Tensor) -> torch.Tensor:
    """psi(u) as the literal sum of seven ReLUs (slow; for tests and docs)."""
    out = torch.zeros_like(u)
    for knot, coef in zip(BW_KNOTS, BW_COEFFICIENTS):
        out = out + coef * torch.relu(u - knot)
    return out / 6.0


def _psi(u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    t = (u * c - 1.5).abs().clamp(max=1.5)
    out = 5.0 / 6.0 - (8.0 / 3.0) * t + (23.0 / 6.0) * torch.relu(t - 0.5) \
        - (4.0 / 3.0) * torch.relu(t - 1.0)
    # At t = 3/2 the terms cancel to 0 only up to rounding; make it exact.
    return torch.where(t >= 1.5, 0.0, out)


def _psi_grad(u: torch.Tensor, grad_out: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    v, s = u * c, _SLOPES
    # At a knot take the left slope, as autograd does for the ReLU sum (relu'(0) = 0).
    slope = torch.where(v <= 1.5,
                        torch.where(v <= 0.5, torch.where(v <= 0.0, s[0], s[1]),
                                    torch.where(v <= 1.0, s[2], s[3])),
                        torch.where(v <= 2.5, torch.where(v <= 2.0, s[4], s[5]),
                                    torch.where(v <= 3.0, s[6], s[7])))
    return (slope * c) * grad_out


def _chunked(fn: Callable[..., torch.Tensor], c: torch.Tensor,
             *tensors: torch.Tensor) -> torch.Tensor:
    flats = [t.reshape(-1) for t in tensors]
    n = flats[0].numel()
    if tensors[0].device.type != "cpu" or n <= _CPU_CHUNK:
        return fn(*tensors, c)
    out = torch.empty_like(flats[0])
    for start in range(0, n, _CPU_CHUNK):
        out[start:start + _CPU_CHUNK] = fn(*(f[start:start + _CPU_CHUNK] for f in flats), c)
    return out.view_as(tensors[0])


class _Kernels:
    """psi(c u) and its gradient, fused by torch.compile where it works.

    Uncompiled, psi is about ten elementwise passes over memory; compiled
    (C++/OpenMP on the CPU, Triton on the GPU) it is one pass and costs about
    what a plain ReLU costs.  Compilation happens once per device type on
    first use (tens of seconds cold, cached on disk by PyTorch afterwards);
    if it fails, for instance without a C++ compiler, the uncompiled kernels
    give the same values, more slowly, and a warning says so.  The scale c is
    passed as a 0-d tensor so that a new c does not trigger a recompilation.
    """

    def __init__(self) -> None:
        self._by_device: dict[str, tuple[Callable, Callable]] = {}

    def get(self, device_type: str) -> tuple[Callable, Callable]:
        if device_type not in self._by_device:
            self._by_device[device_type] = self._build(device_type)
        return self._by_device[device_type]

    @staticmethod
    def _eager() -> tuple[Callable, Callable]:
        return (lambda u, c: _chunked(_psi, c, u), lambda u, g, c: _chunked(_psi_grad, c, u, g))

    def _build(self, device_type: str) -> tuple[Callable, Callable]:
        if os.environ.get(_COMPILE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
            return self._eager()
        try:
            psi = torch.compile(_psi, dynamic=True)
            grad = torch.compile(_psi_grad, dynamic=True)
            probe = torch.linspace(-1.0, 4.0, 64, device=device_type)
            one = torch.ones((), device=device_type)
            # Generated code may fuse multiply-adds: equal up to float32 rounding.
            ok = torch.allclose(psi(probe, one), _psi(probe, one), rtol=1e-5, atol=1e-6) and \
                torch.allclose(grad(probe, probe, one), _psi_grad(probe, probe, one),
                               rtol=1e-5, atol=1e-6)
            if not ok:
                raise RuntimeError("compiled BW-ReLU differs from the reference")
        except Exception as exc:  # no compiler, unsupported platform, ...
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            warnings.warn(f"BW-ReLU kernels could not be compiled on {device_type} "
                          f"({type(exc).__name__}: {first_line}); using the slower "
                          "uncompiled kernels (same results)", RuntimeWarning, stacklevel=3)
            return self._eager()

        # Flat inputs: one dynamic dimension compiles once for every layer shape.
        def flat(fn: Callable) -> Callable:
            return lambda *ts: fn(*(t.reshape(-1) if t.dim() else t for t in ts)).view_as(ts[0])
        return flat(psi), flat(grad)


_KERNELS = _Kernels()


_SCALE_TENSORS: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}


def _scale_tensor(c: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The scale c as a 0-d tensor on ``device``, made once per (c, dtype, device).

    Made once because copying a Python number to the GPU synchronises the
    stream, which a CUDA graph capture of the network forbids (the capture
    runs after warm-up calls that create it).
    """
    key = (c, dtype, device)
    if key not in _SCALE_TENSORS:
        _SCALE_TENSORS[key] = torch.tensor(c, dtype=dtype, device=device)
    return _SCALE_TENSORS[key]


class _BWReLUFunction(torch.autograd.Function):
    """psi(c u) with a backward pass that keeps only the pre-activation u."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, c: float) -> torch.Tensor:  # type: ignore[override]
        c_t = _scale_tensor(float(c), u.dtype, u.device)
        ctx.save_for_backward(u, c_t)
        return _KERNELS.get(u.device.type)[0](u, c_t)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        u, c_t = ctx.saved_tensors
        return _KERNELS.get(u.device.type)[1](u, grad_out.contiguous(), c_t), None


def bw_relu(u: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Evaluate the BW-ReLU wavelet psi(scale * u) elementwise in closed form.

    Parameters
    ----------
    u : torch.Tensor
        Pre-activations, any shape, floating point.
    scale : float
        The global scale c; the result is psi(c u).

    Returns
    -------
    torch.Tensor
        psi(c u), same shape and dtype; differentiable in ``u``.
    """
    return _BWReLUFunction.apply(u, scale)


class BWReLU(nn.Module):
    """psi(c * u): the BW-ReLU activation with the global scale ``c``."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return bw_relu(u, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class _ScaledReLU(nn.Module):
    """Plain ReLU of c*u, the comparison activation (``Activation='relu'``)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.relu(u * self.scale)


ACTIVATIONS = {"bw_relu": BWReLU, "relu": _ScaledReLU}


class FourierFeatures(nn.Module):
    """gamma(x) = [sin(2 pi B x), cos(2 pi B x)] with a fixed random B.

    Parameters
    ----------
    in_features : int
        Coordinate dimension (2 or 3).
    n_frequencies : int
        Rows of B; the output has ``2 * n_frequencies`` features.
    sigma : float
        Standard deviation of B's entries, in cycles per unit of the
        normalised coordinate (the field of view spans [-1, 1]).
    generator : torch.Generator
        Source of B, so that the features follow the seed.
    """

    def __init__(self, in_features: int, n_frequencies: int, sigma: float,
                 generator: torch.Generator) -> None:
        super().__init__()
        b = torch.randn(n_frequencies, in_features, generator=generator) * sigma
        self.register_buffer("B", b)

    @property
    def out_features(self) -> int:
        return 2 * self.B.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = (2.0 * math.pi) * (x @ self.B.T)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class INRNetwork(nn.Module):
    """Coordinate MLP: [Fourier features] -> (Linear -> psi(c .)) x depth -> Linear.

    Parameters
    ----------
    in_features : int
        Coordinate dimension: 2 for a slice, 3 for a volume.
    width : int
        Neurons per hidden layer.
    depth : int
        Number of hidden (activated) layers, at least 1.
    scale : float
        The global BW-ReLU scale ``c`` shared by all layers.
    activation : {'bw_relu', 'relu'}
        Hidden activation.
    fourier_features : int
        Number of random Fourier frequencies in front of the MLP; 0 for none.
    fourier_sigma : float
        Standard deviation of those frequencies (cycles per unit coordinate).
    seed : int
        Seeds the initialisation (PyTorch's default Linear initialisation)
        and the Fourier matrix, independently of the global RNG.

    Notes
    -----
    Input ``x`` has shape (N, in_features) in normalised coordinates
    (see :mod:`astra_inr.geometry`); output has shape (N,) and is
    dimensionless: the caller multiplies it by the data's image scale.
    """

    def __init__(self, in_features: int, width: int, depth: int, scale: float,
                 activation: str = "bw_relu", fourier_features: int = 0,
                 fourier_sigma: float = 10.0, seed: int = 0) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if depth < 1 or width < 1:
            raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
        self._hyper = dict(in_features=in_features, width=width, depth=depth, scale=float(scale),
                           activation=activation, fourier_features=fourier_features,
                           fourier_sigma=fourier_sigma, seed=seed)
        generator = torch.Generator().manual_seed(int(seed))
        self.in_features = in_features
        self.scale = float(scale)
        self.activation_name = activation
        self.fourier: FourierFeatures | None = None
        n_in = in_features
        if fourier_features > 0:
            self.fourier = FourierFeatures(in_features, fourier_features, fourier_sigma, generator)
            n_in = self.fourier.out_features
        init_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        # PyTorch's default Linear init draws from the global CPU generator:
        # run it on a forked, seeded copy so the caller's RNG stays untouched.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(init_seed)
            self.hidden = nn.ModuleList()
            for _ in range(depth):
                self.hidden.append(nn.Linear(n_in, width))
                n_in = width
            self.output = nn.Linear(n_in, 1)
        self.activation = ACTIVATIONS[activation](scale)

    def hidden_features(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of the last hidden layer, shape (N, width)."""
        h = self.fourier(x) if self.fourier is not None else x
        for layer in self.hidden:
            h = self.activation(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden_features(x)).squeeze(-1)

    def hyperparameters(self) -> dict:
        """Constructor arguments that rebuild this architecture (see :meth:`from_hyperparameters`)."""
        return dict(self._hyper)

    @classmethod
    def from_hyperparameters(cls, hyper: dict) -> "INRNetwork":
        return cls(**hyper)

    def linear_layers(self) -> Sequence[nn.Linear]:
        """Hidden layers followed by the output layer, in order."""
        return [*self.hidden, self.output]
