"""Regularity of a trained INR from its weights: path norms, a Lipschitz bound, regularisers.

Notation: the network is x -> [gamma(x)] -> h_1 -> ... -> h_D -> f with
hidden layers h_l = psi(c (W_l h_{l-1} + b_l)), W_l of shape (width, n_in),
and output f = W_{D+1} h_D + b_{D+1}.  All measures are of the
dimensionless network f on normalised coordinates (see
:mod:`astra_inr.geometry`); the image in the data's units is s * f, with s
the report's ``image_scale``.

Per-neuron path norm (the BW-ReLU regularity measure)::

    P = c * sum_{l=1..D} sum_k ||W_l[k, :]||_2 * ||W_{l+1}[:, k]||_2

i.e. for every hidden neuron the norm of its input weights times the norm of
its output weights (biases excluded), times the scale c.  For one hidden
layer it is c * sum_k ||w_k|| |v_k|.  At equal data fit a lower P means a
more regular function; it is what :func:`choose_scale` minimises.

Deep path norm (the standard ReLU-network measure, with the scale factors)::

    P_deep = c^D * 1^T |W_{D+1}| |W_D| ... |W_1| 1

Lipschitz bound (of f with respect to the normalised coordinates)::

    L <= Lip(gamma) * prod_{l=1..D} (c * s_psi * ||W_l||_2) * ||W_{D+1}||_2

with ||.||_2 the spectral norm, s_psi the activation's largest |slope|
(16/6 for BW-ReLU, 1 for ReLU) and Lip(gamma) = 2 pi ||B||_2 for Fourier
features (1 without).  In image units per world unit it is s * L / h, h the
half-extent of the volume window.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .model import BW_MAX_SLOPE, INRNetwork

__all__ = [
    "PATH_NORM_DEFINITION",
    "DEEP_PATH_NORM_DEFINITION",
    "LIPSCHITZ_DEFINITION",
    "path_norm_per_layer",
    "path_norm",
    "deep_path_norm",
    "lipschitz_bound",
    "generalized_weight_decay",
    "weight_decay",
    "regularity_summary",
]

PATH_NORM_DEFINITION = ("c * sum_l sum_k ||W_l[k,:]||_2 * ||W_{l+1}[:,k]||_2 over hidden neurons k "
                        "of hidden layer l (input weights times output weights; biases excluded)")
DEEP_PATH_NORM_DEFINITION = "c^D * 1^T |W_{D+1}| |W_D| ... |W_1| 1 (D hidden layers)"
LIPSCHITZ_DEFINITION = ("Lip(gamma) * prod_l (c * max|psi'| * ||W_l||_2) * ||W_{D+1}||_2, spectral "
                        "norms; max|psi'| = 16/6 for bw_relu, 1 for relu; Lip(gamma) = 2 pi ||B||_2 "
                        "with Fourier features, else 1; with respect to normalised coordinates")


def _weights(net: INRNetwork) -> list[torch.Tensor]:
    return [layer.weight for layer in net.linear_layers()]


def path_norm_per_layer(net: INRNetwork) -> torch.Tensor:
    """Per-neuron path norm of each hidden layer, differentiable.

    Returns
    -------
    torch.Tensor
        Shape ``(D,)``: entry l is ``c * sum_k ||W_l[k,:]|| * ||W_{l+1}[:,k]||``.
    """
    weights = _weights(net)
    terms = []
    for w_in, w_out in zip(weights[:-1], weights[1:]):
        terms.append(net.scale * (w_in.norm(dim=1) * w_out.norm(dim=0)).sum())
    return torch.stack(terms)


def path_norm(net: INRNetwork) -> torch.Tensor:
    """Total per-neuron path norm (sum of :func:`path_norm_per_layer`), differentiable."""
    return path_norm_per_layer(net).sum()


@torch.no_grad()
def deep_path_norm(net: INRNetwork, as_tensor: bool = False) -> float | torch.Tensor:
    """``c^D * 1^T |W_{D+1}| ... |W_1| 1``, computed in float64 (a 0-d tensor if ``as_tensor``)."""
    v = torch.ones(_weights(net)[0].shape[1], dtype=torch.float64, device=_weights(net)[0].device)
    for w in _weights(net):
        v = w.detach().double().abs() @ v
    value = v.sum() * net.scale ** len(net.hidden)
    return value if as_tensor else float(value)


def _spectral_norm(w: torch.Tensor, vectors: dict | None, key: int,
                   squarings: bool | None = None) -> torch.Tensor:
    """Largest singular value: exact (float64 SVD) or, with ``vectors``, by power iteration.

    The power iteration starts from the last call's vector and never
    synchronises a GPU.  Two forms, for the two kinds of device: on the CPU,
    50 steps of ``w^T (w v)`` (cheap in arithmetic); on a GPU, where a record
    during training is bound by kernel launches, ``(w^T w)^1024`` by ten
    normalised matrix squarings (about 35 launches instead of 250; the
    squarings' arithmetic, 10 products of 300 x 300 matrices per layer,
    would add a few percent to a CPU iteration).  Measured on freshly
    initialised 300 x 300 layers, whose largest singular values lie close
    together: squarings within 5e-5 of the SVD from a cold start, 50 plain
    steps 0.1 to 1 % low; warm-started during training both agree closely.
    ``squarings`` overrides the choice (None: by ``w``'s device).
    """
    if vectors is None:
        return torch.linalg.matrix_norm(w.detach().double(), ord=2)
    w = w.detach()
    v = vectors.get(key)
    if v is None or v.shape[0] != w.shape[1] or v.device != w.device:
        v = torch.ones(w.shape[1], dtype=w.dtype, device=w.device)
    if w.is_cuda if squarings is None else squarings:
        m = w.T @ w
        for _ in range(10):
            m = m / m.norm().clamp_min(1e-30)
            m = m @ m
        v = m @ v
        v = v / v.norm().clamp_min(1e-30)
    else:
        for _ in range(50):
            v = w.T @ (w @ v)
            v = v / v.norm().clamp_min(1e-30)
    vectors[key] = v
    return (w @ v).norm()


@torch.no_grad()
def lipschitz_bound(net: INRNetwork, power_iteration: dict | None = None) -> float | torch.Tensor:
    """Upper bound on the Lipschitz constant of the network (see module docstring).

    Parameters
    ----------
    power_iteration : dict, optional
        Cache of singular vectors: estimate the spectral norms by warm-started
        power iteration (for frequent records during training) and return a
        0-d tensor; by default exact SVDs and a float.
    """
    slope = BW_MAX_SLOPE if net.activation_name == "bw_relu" else 1.0
    factors = []
    if net.fourier is not None:
        factors.append(2.0 * math.pi * _spectral_norm(net.fourier.B, power_iteration, -1))
    weights = _weights(net)
    for k, w in enumerate(weights[:-1]):
        factors.append(net.scale * slope * _spectral_norm(w, power_iteration, k))
    factors.append(_spectral_norm(weights[-1], power_iteration, len(weights)))
    bound = torch.stack([torch.as_tensor(f, dtype=torch.float64, device=factors[-1].device)
                         for f in factors]).prod()
    return bound if power_iteration is not None else float(bound)


def weight_decay(net: INRNetwork) -> torch.Tensor:
    """``1/2 * sum_l ||W_l||_F^2`` over all linear layers (biases excluded), differentiable."""
    return 0.5 * sum((w ** 2).sum() for w in _weights(net))


def generalized_weight_decay(net: INRNetwork, samples: torch.Tensor,
                             domain_volume: float) -> torch.Tensor:
    """``1/2 sum_k (int_Omega h_k)^2 + 1/2 ||a||^2`` for the last hidden layer, differentiable.

    h_k is the k-th neuron of the last hidden layer and a the output weights;
    each integral over the volume window Omega is estimated by Monte Carlo,
    ``domain_volume * mean(h_k(samples))``.

    Parameters
    ----------
    samples : torch.Tensor
        ``(n, in_features)`` points drawn uniformly in Omega (normalised coordinates).
    domain_volume : float
        Measure of Omega in normalised coordinates (e.g. 4 for [-1, 1]^2).
    """
    h = net.hidden_features(samples)
    integrals = domain_volume * h.mean(dim=0)
    return 0.5 * (integrals ** 2).sum() + 0.5 * (net.output.weight ** 2).sum()


@torch.no_grad()
def regularity_summary(net: INRNetwork) -> dict[str, Any]:
    """Path norms and Lipschitz bound with their definitions (JSON-friendly)."""
    per_layer = [float(v) for v in path_norm_per_layer(net)]
    return {
        "path_norm": {"total": float(sum(per_layer)), "per_layer": per_layer,
                      "definition": PATH_NORM_DEFINITION},
        "deep_path_norm": {"value": deep_path_norm(net), "definition": DEEP_PATH_NORM_DEFINITION},
        "lipschitz_bound": {"value": lipschitz_bound(net), "definition": LIPSCHITZ_DEFINITION},
    }
