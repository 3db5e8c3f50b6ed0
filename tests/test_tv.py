"""TV on the pixel grid (astra_inr.tv) and the TV method of `compare`."""

import astra
import numpy as np
import pytest
import torch

import astra_inr.compare as compare_module
from astra_inr.cases import case_from_phantom
from astra_inr.compare import compare_methods, score
from astra_inr.matrix import MatrixOperator
from astra_inr.recon import ReconOptions
from astra_inr.tv import TVProblem, divergence, gradient, operator_norm
from conftest import phantom


def _problem(n=24, angles=12, noise=0.0, seed=0, **kwargs):
    sino, ref, _ = case_from_phantom(phantom(n), angles, noise=noise, seed=seed)
    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, sino.data.shape[-1], sino.angles)
    op = MatrixOperator.from_geometry(vg, pg, 1, "cpu")
    y = torch.from_numpy(sino.data.astype(np.float32))
    return TVProblem(op, y, **kwargs), op, y, ref


def test_divergence_is_minus_the_adjoint_of_the_gradient():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 9, generator=gen, dtype=torch.float64)
    g = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64)
    assert float((gradient(x) * g).sum()) == pytest.approx(-float((x * divergence(g)).sum()),
                                                           rel=1e-12)
    # Nothing crosses slices: a slice's gradient does not see its neighbours.
    x2 = x.clone()
    x2[1] += 5.0
    assert torch.equal(gradient(x)[:, 0], gradient(x2)[:, 0])


def test_operator_norm_matches_the_largest_singular_value():
    problem, op, _, _ = _problem(16, 8)
    dense = np.stack([op.forward(torch.eye(256)[k].reshape(1, 16, 16)).reshape(-1).numpy()
                      for k in range(256)], axis=1)
    largest = np.linalg.norm(dense, 2)
    assert operator_norm(op, torch.device("cpu"), iterations=100) == pytest.approx(largest,
                                                                                   rel=1e-3)
    # The step sizes rest on an estimate above the true norm.
    assert problem.describe()["operator_norm"] > largest


def test_without_weight_it_solves_the_non_negative_least_squares_problem():
    problem, op, y, ref = _problem(24, 48)
    state = problem.run(problem.start(), 0.0, 2000)
    assert float(state.x.min()) >= 0.0
    # Clean data from many angles: the data are fitted (the phantom is simulated on a
    # finer grid with another kernel, so not exactly).
    assert problem.residual(state.x) < 0.02
    assert problem.residual(state.x) <= problem.residual(torch.from_numpy(ref)) * 1.05


def test_the_result_minimises_the_objective():
    problem, _, _, _ = _problem(24, 10, noise=0.02)
    weight = 3e-3
    x = problem.run(problem.start(), weight, 3000).x
    best = problem.objective(x, weight)
    gen = torch.Generator().manual_seed(0)
    step = 0.05 * problem.level
    for _ in range(20):
        d = torch.randn(x.shape, generator=gen)
        moved = (x + step * d / d.abs().max()).clamp(min=0.0)
        assert problem.objective(moved, weight) > best
    # Smoothing a little lowers TV but costs more in the data term, and the reverse.
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    assert problem.objective(blurred, weight) > best


def test_a_larger_weight_gives_a_smoother_image_and_fits_the_data_less():
    problem, _, _, _ = _problem(24, 10, noise=0.02)
    tv, res = [], []
    for weight in (1e-4, 1e-3, 1e-2):
        x = problem.run(problem.start(), weight, 1500).x
        tv.append(float(gradient(x).pow(2).sum(0).sqrt().sum()))
        res.append(problem.residual(x))
    assert tv[0] > tv[1] > tv[2] and res[0] < res[1] < res[2]


def test_weight_means_the_same_in_any_units():
    problem, op, y, _ = _problem(24, 10, noise=0.02)
    scaled = TVProblem(op, y * 1000.0)
    x = problem.run(problem.start(), 1e-3, 300).x
    x_scaled = scaled.run(scaled.start(), 1e-3, 300).x
    assert scaled.level == pytest.approx(1000.0 * problem.level, rel=1e-5)
    torch.testing.assert_close(x_scaled / 1000.0, x, rtol=1e-3, atol=1e-4 * float(x.max()))


def test_bounds_are_kept():
    problem, _, _, _ = _problem(24, 10, noise=0.05, lower=0.0, upper=0.6)
    x = problem.run(problem.start(), 1e-4, 300).x
    assert float(x.min()) >= 0.0 and float(x.max()) <= np.float32(0.6)
    unbounded, _, _, _ = _problem(24, 10, noise=0.05, lower=None)
    assert float(unbounded.run(unbounded.start(), 1e-4, 300).x.min()) < 0.0


def test_bad_input_is_refused():
    problem, op, y, _ = _problem(16, 8)
    with pytest.raises(ValueError, match="does not match"):
        TVProblem(op, y[:, :4])
    with pytest.raises(ValueError, match="all zero"):
        TVProblem(op, torch.zeros_like(y))
    with pytest.raises(ValueError, match="upper bound"):
        TVProblem(op, y, lower=1.0, upper=0.5)
    with pytest.raises(ValueError, match="weight must be"):
        problem.run(problem.start(), -1.0, 1)
    with pytest.raises(ValueError, match="step_ratio must be"):
        TVProblem(op, y, step_ratio=0.0)


@pytest.fixture
def short_ladder(monkeypatch):
    monkeypatch.setattr(compare_module, "TV_LADDER", (1e-4, 1e-3, 1e-2))
    monkeypatch.setattr(compare_module, "TV_ITERATIONS", 200)


def test_compare_tunes_tv_on_its_ladder(short_ladder):
    sino, ref, _ = case_from_phantom(phantom(32), 12, noise=0.02)
    results = compare_methods(sino, ["CGLS", "TV"], ReconOptions(size=32), ref)
    tv = results["TV"]
    by_weight = dict(item.split(": ") for item in
                     tv.choice.split("(PSNR by weight: ")[1].rstrip(")").split(", "))
    assert len(by_weight) == 3
    assert tv.extra["tv_weight"] == max((1e-4, 1e-3, 1e-2), key=lambda w: float(by_weight[f"{w:g}"]))
    assert f"{tv.psnr:.2f}" == by_weight[f"{tv.extra['tv_weight']:g}"]
    assert tv.iterations == 200 * (1 + (1e-4, 1e-3, 1e-2).index(tv.extra["tv_weight"]))
    # Along the ladder (smallest weight first) the fit loosens.
    residuals = list(tv.extra["residual_by_weight"].values())
    assert residuals == sorted(residuals)
    assert tv.extra["tv_problem"]["operator"]["kind"] == "matrix"
    assert float(tv.volume.min()) >= 0.0          # MinConstraint 0, as for SIRT
    # Sparse noisy data of a piecewise-constant phantom: TV's home ground.
    assert tv.psnr > results["CGLS"].psnr + 1.0
    assert score(tv.volume, ref) == pytest.approx((tv.psnr, tv.ssim))


def test_compare_without_reference_stops_tv_by_discrepancy(short_ladder):
    sino, _, _ = case_from_phantom(phantom(32), 12, noise=0.02)
    tv = compare_methods(sino, ["TV"], ReconOptions(size=32))["TV"]
    residuals = {float(k): v for k, v in tv.extra["residual_by_weight"].items()}
    limit = max(tv.extra["discrepancy_target"], 1.01 * min(residuals.values()))
    assert tv.psnr is None and "discrepancy principle" in tv.choice
    # The largest weight whose fit stays within the data's error level; the search
    # stops at the first weight beyond it (or at the end of the ladder).
    within = [w for w, r in residuals.items() if r <= limit]
    assert tv.extra["tv_weight"] == max(within)
    beyond = [w for w, r in residuals.items() if r > limit]
    assert beyond == [] or beyond == [max(residuals)]
