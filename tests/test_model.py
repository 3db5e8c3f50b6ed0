"""BW-ReLU activation and the INR network."""

import numpy as np
import pytest
import torch

from astra_inr.model import (BW_COEFFICIENTS, BW_MAX_SLOPE, INRNetwork, _KERNELS, _Kernels,
                             bw_relu, bw_relu_reference)


def _grid(lo=-2.0, hi=5.0, n=4001):
    # Includes every knot exactly (step 1/8 divides 1/2) plus points in between.
    return torch.linspace(lo, hi, n, dtype=torch.float32)


def test_closed_form_equals_seven_relu_sum_in_value_and_gradient():
    u = torch.cat([_grid(), torch.randn(20000) * 4 + 1.5]).requires_grad_(True)
    # The seven-ReLU sum in float32 cancels badly for large u: reference in float64.
    u64 = u.detach().double().requires_grad_(True)
    for scale in (1.0, 3.0, 0.7):
        fast = bw_relu(u, scale)
        (g_fast,) = torch.autograd.grad(fast.sum(), u)
        ref = bw_relu_reference(scale * u64)
        (g_ref,) = torch.autograd.grad(ref.sum(), u64)
        assert torch.allclose(fast.double(), ref, atol=2e-6)
        assert torch.allclose(g_fast.double(), g_ref, atol=2e-6)


def test_uncompiled_kernels_equal_the_reference_too(monkeypatch):
    monkeypatch.setenv("ASTRA_INR_COMPILE", "0")
    psi, grad = _Kernels().get("cpu")
    u = torch.randn(300_000) * 3 + 1.5            # more than one CPU chunk
    c = torch.tensor(2.0)
    assert torch.allclose(psi(u, c).double(), bw_relu_reference(2 * u.double()), atol=2e-6)
    g = torch.randn_like(u)
    uu = u.double().requires_grad_(True)
    (ref,) = torch.autograd.grad(bw_relu_reference(2 * uu), uu, g.double())
    assert torch.allclose(grad(u, g, c).double(), ref, atol=2e-6)


def test_shape_facts_from_the_design():
    u = torch.tensor([-1.0, 0.0, 1.0, 1.5, 2.0, 3.0, 4.0])
    v = bw_relu(u)
    assert v[0] == 0 and v[1] == 0 and v[5] == 0 and v[6] == 0      # support [0, 3]
    assert v[2].item() == pytest.approx(-0.5) and v[4].item() == pytest.approx(-0.5)
    assert v[3].item() == pytest.approx(5 / 6)                      # peak at 3/2
    x = _grid(0, 3, 601)
    assert torch.allclose(bw_relu(x), bw_relu(3 - x), atol=1e-6)  # symmetric about 3/2
    assert sum(abs(c) for c in BW_COEFFICIENTS) / 6 == pytest.approx(16)
    slopes = torch.diff(bw_relu_reference(_grid())) / torch.diff(_grid())
    assert slopes.abs().max().item() == pytest.approx(BW_MAX_SLOPE, rel=1e-4)


def test_activation_keeps_no_per_relu_intermediates():
    # The autograd graph holds the pre-activation only (one saved tensor).
    u = torch.randn(64, 16, requires_grad=True)
    out = bw_relu(u, 3.0)
    saved = [t for t in out.grad_fn.saved_tensors if t.numel() > 1]
    assert len(saved) == 1 and saved[0].shape == u.shape


def test_network_shapes_seed_and_rng_isolation():
    x = torch.rand(100, 2) * 2 - 1
    state = torch.random.get_rng_state()
    a = INRNetwork(2, 32, 3, 3.0, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)   # caller's RNG untouched
    b = INRNetwork(2, 32, 3, 3.0, seed=5)
    c = INRNetwork(2, 32, 3, 3.0, seed=6)
    assert a(x).shape == (100,)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))
    assert len(a.linear_layers()) == 4


def test_fourier_features_and_relu_variant():
    x = torch.rand(10, 3)
    net = INRNetwork(3, 16, 2, 1.0, activation="relu", fourier_features=8, seed=0)
    assert net(x).shape == (10,)
    assert net.hidden[0].in_features == 16
    with pytest.raises(ValueError, match="activation"):
        INRNetwork(2, 8, 1, 1.0, activation="tanh")


def test_kernels_are_cached_per_device():
    assert _KERNELS.get("cpu") is _KERNELS.get("cpu")
