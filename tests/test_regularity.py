"""Path norms, Lipschitz bound, regularisers and the choice of the scale c."""

import math

import astra
import numpy as np
import pytest
import torch

import astra_inr
from astra_inr import regularity
from astra_inr.model import INRNetwork

FAST = {"Width": 32, "Depth": 2, "LearningRate": 1e-2}


def _set(net, weights):
    with torch.no_grad():
        for layer, w in zip(net.linear_layers(), weights):
            layer.weight.copy_(torch.tensor(w, dtype=torch.float32))
            layer.bias.fill_(7.0)          # biases must not count


def test_path_norm_of_a_hand_computable_shallow_network():
    net = INRNetwork(2, 2, 1, scale=3.0)
    _set(net, [[[3.0, 4.0], [0.0, 1.0]],      # ||w_1|| = 5, ||w_2|| = 1
               [[2.0, -0.5]]])                # v = (2, -0.5)
    # c * sum_k ||w_k|| |v_k| = 3 * (5 * 2 + 1 * 0.5)
    assert regularity.path_norm(net).item() == pytest.approx(31.5)
    # c^D 1^T |V| |W| 1 = 3 * (2 * 7 + 0.5 * 1)
    assert regularity.deep_path_norm(net) == pytest.approx(43.5)
    # (16/6) * c * ||W||_2 * ||V||_2
    w_norm = np.linalg.norm([[3.0, 4.0], [0.0, 1.0]], 2)
    v_norm = math.hypot(2.0, 0.5)
    assert regularity.lipschitz_bound(net) == pytest.approx(16 / 6 * 3 * w_norm * v_norm, rel=1e-6)


def test_path_norm_of_a_hand_computable_deep_network_sums_its_layers():
    net = INRNetwork(2, 2, 2, scale=2.0)
    w1 = [[1.0, 0.0], [0.0, 2.0]]
    w2 = [[1.0, 1.0], [0.0, 3.0]]
    w3 = [[1.0, -2.0]]
    _set(net, [w1, w2, w3])
    # layer 1 neurons: ||w1 rows|| = (1, 2), ||w2 columns|| = (1, sqrt(10))
    layer1 = 2.0 * (1 * 1 + 2 * math.sqrt(10))
    # layer 2 neurons: ||w2 rows|| = (sqrt(2), 3), |w3| = (1, 2)
    layer2 = 2.0 * (math.sqrt(2) * 1 + 3 * 2)
    per_layer = regularity.path_norm_per_layer(net)
    assert per_layer.tolist() == pytest.approx([layer1, layer2])
    summary = regularity.regularity_summary(net)
    assert summary["path_norm"]["total"] == pytest.approx(sum(summary["path_norm"]["per_layer"]))
    assert summary["path_norm"]["total"] == pytest.approx(layer1 + layer2, rel=1e-6)
    # 1^T |w3| |w2| |w1| 1 = (1, 2) . (|w2| (1, 2)) = (1, 2) . (3, 6) = 15, times c^2
    assert regularity.deep_path_norm(net) == pytest.approx(4 * 15)
    assert "||W_l[k,:]||" in summary["path_norm"]["definition"]


def test_relu_and_fourier_lipschitz_factors():
    net = INRNetwork(2, 3, 1, scale=1.0, activation="relu", fourier_features=4, seed=1)
    b = net.fourier.B.double()
    expected = (2 * math.pi * torch.linalg.matrix_norm(b, 2).item()
                * torch.linalg.matrix_norm(net.hidden[0].weight.double(), 2).item()
                * torch.linalg.matrix_norm(net.output.weight.double(), 2).item())
    assert regularity.lipschitz_bound(net) == pytest.approx(expected, rel=1e-6)


def test_lipschitz_bound_holds_on_samples():
    net = INRNetwork(2, 16, 2, scale=3.0, seed=3)
    x = torch.rand(2000, 2) * 2 - 1
    y = torch.rand(2000, 2) * 2 - 1
    ratio = (net(x) - net(y)).abs() / (x - y).norm(dim=1)
    assert ratio.max().item() <= regularity.lipschitz_bound(net)


def test_generalized_weight_decay_is_the_integral_formula():
    net = INRNetwork(2, 8, 1, scale=1.0, activation="relu", fourier_features=3, seed=0)
    samples = torch.rand(20000, 2) * 2 - 1
    value = regularity.generalized_weight_decay(net, samples, 4.0)
    h = net.hidden_features(samples)
    expected = 0.5 * ((4.0 * h.mean(0)) ** 2).sum() + 0.5 * (net.output.weight ** 2).sum()
    assert value.item() == pytest.approx(expected.item())
    value.backward()                       # differentiable
    assert net.hidden[0].weight.grad is not None


def _alg(prob, iterations, options):
    _, alg = prob.run("INR", iterations, options)
    return alg


def test_path_norm_weight_lowers_the_final_path_norm(small_problem):
    plain = astra_inr.report(_alg(small_problem, 80, {**FAST, "Seed": 2}))
    reg = astra_inr.report(_alg(small_problem, 80, {**FAST, "Seed": 2, "PathNormWeight": 1e-3}))
    assert reg["path_norm"]["total"] < 0.9 * plain["path_norm"]["total"]
    assert reg["regularisers"]["PathNormWeight"] == 1e-3


def test_weight_decay_and_generalized_weight_decay_run_and_are_reported(small_problem):
    wd = astra_inr.report(_alg(small_problem, 30, {**FAST, "WeightDecay": 1e-3}))
    gwd = astra_inr.report(_alg(small_problem, 30, {**FAST, "Regulariser": "generalized_weight_decay",
                                                    "RegulariserWeight": 1e-3,
                                                    "FourierFeatures": 16}))
    assert wd["regularisers"]["WeightDecay"] == 1e-3
    assert gwd["regularisers"]["Regulariser"] == "generalized_weight_decay"
    assert gwd["regularisers"]["FourierFeatures"] == 16
    assert gwd["data_residual"] < 1.0


def test_report_has_regularity_and_its_history(small_problem):
    rep = astra_inr.report(_alg(small_problem, 30, FAST))
    assert set(rep["path_norm"]) >= {"total", "per_layer", "definition"}
    assert len(rep["path_norm"]["per_layer"]) == 2
    assert rep["deep_path_norm"]["value"] > 0 and rep["lipschitz_bound"]["value"] > 0
    history = np.array(rep["regularity_history"])
    assert history.shape[1] == 4 and history[-1, 0] == 30 and list(history[:3, 0]) == [10, 20, 30]


def test_scale_auto_chooses_the_lowest_path_norm_at_matched_fit(small_problem):
    opts = {**FAST, "Scale": "auto", "ScaleCandidates": [1.0, 3.0, 9.0], "ScaleSearchIterations": 40}
    alg = _alg(small_problem, 10, opts)
    rep = astra_inr.report(alg)
    sel = rep["scale_selection"]
    assert [c["scale"] for c in sel["candidates"]] == [1.0, 3.0, 9.0]
    reached = [c for c in sel["candidates"] if c["reached_fit"]]
    assert reached and all(c["data_residual"] <= sel["target_residual"] for c in reached)
    assert sel["chosen"] == min(reached, key=lambda c: c["path_norm"])["scale"]
    assert rep["scale"] == sel["chosen"]
    assert rep["iterations"] == 40 + 10       # the chosen network kept training
    for c in sel["candidates"]:
        assert set(c) >= {"scale", "iterations", "data_residual", "path_norm", "reached_fit", "seconds"}


def test_scale_candidates_accept_a_space_separated_string():
    cfg = astra_inr.INRConfig.from_options({"ScaleCandidates": "1 2.5 4"})
    assert cfg.scale_candidates == (1.0, 2.5, 4.0)
    with pytest.raises(ValueError, match="ScaleCandidates"):
        astra_inr.INRConfig.from_options({"ScaleCandidates": [1, -2]})


def _ct_problem(noise):
    """The real CT slice, 64 x 64, 60 angles, Gaussian noise of ``noise`` x the sinogram maximum."""
    import tifffile
    from conftest import SHARED_DATA
    image = tifffile.imread(SHARED_DATA / "ct_small_attenuation.tif").astype(np.float32)
    image = image.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    vg = astra.create_vol_geom(64, 64)
    pg = astra.create_proj_geom("parallel", 1.0, 96, np.linspace(0, np.pi, 60, endpoint=False))
    pid = astra.create_projector("linear", pg, vg)
    sid, sino = astra.create_sino(image, pid)
    astra.data2d.delete(sid)
    sino = sino + noise * sino.max() * np.random.default_rng(0).standard_normal(sino.shape)
    return pid, astra.data2d.create("-sino", pg, sino.astype(np.float32)), vg


def _inr_report(problem, iterations, options):
    pid, sino_id, vg = problem
    cfg = astra.astra_dict("INR")
    cfg.update(ProjectorId=pid, ProjectionDataId=sino_id,
               ReconstructionDataId=astra.data2d.create("-vol", vg, 0), option=options)
    alg = astra.algorithm.create(cfg)
    astra.algorithm.run(alg, iterations)
    return astra_inr.report(alg)


def test_discrepancy_raises_the_tv_weight_only_when_fitting_below_the_noise():
    noisy = _ct_problem(0.03)
    net = {"Width": 128, "Depth": 2, "TVWeight": 0.1, "TVGradient": "plain"}
    fixed = _inr_report(noisy, 150, {**net, "Discrepancy": 0})
    adaptive = _inr_report(noisy, 150, {**net, "Discrepancy": 1.05})
    target = adaptive["discrepancy_target"]
    assert adaptive["estimated_inconsistency"] == 0.0       # simulated: consistent projections
    assert target == pytest.approx(1.05 * adaptive["data_error_level"])
    assert adaptive["data_error_level"] == pytest.approx(adaptive["estimated_noise_level"])
    assert fixed["discrepancy_target"] == 0 and fixed["tv_weight"] == pytest.approx(0.1)
    # Without the rule the network fits below the noise; with it the weight grows.
    assert fixed["data_residual"] < target
    assert adaptive["tv_weight"] > 0.15 and adaptive["data_residual"] > fixed["data_residual"]
    tv_column = np.array(adaptive["loss_history"])[:, 3]
    assert tv_column[0] == pytest.approx(0.1) and tv_column.min() >= 0.1 - 1e-6
    assert adaptive["regularisers"]["tv_weight_final"] == adaptive["tv_weight"]

    clean = _inr_report(_ct_problem(0.0), 60, net)
    assert clean["tv_weight"] == pytest.approx(0.1)     # the residual never reaches the noise


def test_discrepancy_sets_the_generalized_weight_decay_weight_from_the_noise():
    noisy = _ct_problem(0.03)
    net = {"Width": 128, "Depth": 2, "TVWeight": 0, "Regulariser": "generalized_weight_decay"}
    fixed = _inr_report(noisy, 150, net)
    adaptive = _inr_report(noisy, 150, {**net, "RegulariserWeight": "discrepancy"})
    target = adaptive["regulariser_discrepancy_target"]
    assert target == pytest.approx(1.05 * adaptive["data_error_level"])
    assert adaptive["discrepancy_target"] == 0.0          # no TV: its rule is off
    assert fixed["regulariser_discrepancy_target"] == 0.0
    assert fixed["regularisers"]["regulariser_weight_final"] == pytest.approx(1e-4)
    # The fixed weight lets the network fit below the noise; the rule raises it while it does.
    assert fixed["data_residual"] < target
    history = np.array(adaptive["loss_history"])
    assert adaptive["loss_history_columns"][2:] == ["data_residual", "tv_weight",
                                                    "regulariser_weight"]
    weights = history[:, 4]
    assert weights[0] == pytest.approx(1e-4) and weights.min() >= 1e-4 * (1 - 1e-6)
    # It grows on every step below the target, by exp(0.05 (1 - r^2 / target^2)).
    below = history[:-1, 2] < target
    assert below[-50:].all() and np.all(np.diff(weights)[below] > 0)
    assert adaptive["regularisers"]["regulariser_weight_final"] > 2.5e-4
    assert np.array(fixed["loss_history"])[:, 4] == pytest.approx(1e-4)

    clean = _inr_report(_ct_problem(0.0), 60, {**net, "RegulariserWeight": "discrepancy"})
    # Far above the (tiny) noise level for all 60 steps: the weight stays at its start.
    assert clean["regularisers"]["regulariser_weight_final"] == pytest.approx(1e-4)


def test_discrepancy_regulariser_weight_is_refused_where_nothing_would_follow_it():
    with pytest.raises(ValueError, match="needs a Regulariser"):
        astra_inr.INRConfig.from_options({"RegulariserWeight": "discrepancy"})
    with pytest.raises(ValueError, match="Discrepancy above 0"):
        astra_inr.INRConfig.from_options({"RegulariserWeight": "discrepancy", "Discrepancy": 0,
                                          "Regulariser": "generalized_weight_decay"})
    with pytest.raises(ValueError, match="RegulariserWeight"):
        astra_inr.INRConfig.from_options({"RegulariserWeight": "morozov"})


def test_automatic_tv_weight_follows_the_estimated_noise_level():
    net = {"Width": 64, "Depth": 2, "Discrepancy": 0, "TVGradient": "plain"}
    floors = []
    for noise in (0.0, 0.002, 0.03):
        rep = _inr_report(_ct_problem(noise), 2, net)
        assert rep["options"]["TVWeight"] == "auto"
        assert rep["estimated_inconsistency"] == 0.0
        expected = min(max(12 * rep["estimated_noise_level"], 0.01), 0.1)
        assert rep["tv_weight_floor"] == pytest.approx(expected)
        assert rep["tv_weight"] == pytest.approx(expected)       # Discrepancy 0: fixed
        assert "estimated_noise_level" in rep["tv_weight_floor_definition"]
        floors.append(rep["tv_weight_floor"])
    # Clean data: a light prior; 0.2 % noise: in proportion; 3 %: capped (the rule raises it).
    assert 0.01 <= floors[0] < floors[1] < 0.1 and floors[2] == pytest.approx(0.1)
    given = _inr_report(_ct_problem(0.03), 2, {**net, "TVWeight": 0.2})
    assert given["tv_weight_floor"] == 0.2
    assert given["tv_weight_floor_definition"] == "TVWeight as given"


def test_matched_tv_gradient_weighs_tv_in_least_squares_units_in_proportion_to_the_noise():
    net = {"Width": 64, "Depth": 2}
    floors = []
    for noise in (0.002, 0.03):
        rep = _inr_report(_ct_problem(noise), 2, net)
        assert rep["options"]["TVGradient"] == "matched"
        assert rep["estimated_inconsistency"] == 0.0        # simulated: only white noise
        assert rep["tv_weight_floor"] == pytest.approx(0.1 * rep["estimated_noise_level"])
        # Discrepancy 'auto' is off with the matched gradient: the weight stays put.
        assert rep["regularisers"]["discrepancy_used"] == 0.0
        assert rep["discrepancy_target"] == 0.0
        assert rep["tv_weight"] == pytest.approx(rep["tv_weight_floor"])
        tv = rep["tv_gradient"]
        assert tv["kappa"] == pytest.approx(1.0, rel=0.03)      # detector pixel = voxel here
        assert tv["offset"] == 0.0 and tv["loss_factor"] > 1.0
        floors.append(rep["tv_weight_floor"])
    assert floors[1] > 5 * floors[0]
    plain = _inr_report(_ct_problem(0.03), 2, {**net, "TVGradient": "plain"})
    assert plain["tv_gradient"]["filter"] is None and plain["tv_gradient"]["loss_factor"] == 1.0
    assert plain["regularisers"]["discrepancy_used"] == 1.05
    assert plain["discrepancy_target"] > 0
    # Plain least squares filters nothing, and the rules are the plain gradient's.
    l2 = _inr_report(_ct_problem(0.03), 2, {**net, "DataWeighting": "l2"})
    assert l2["tv_gradient"]["filter"] is None
    assert l2["regularisers"]["discrepancy_used"] == 1.05
    assert l2["tv_weight_floor"] == pytest.approx(0.1)


def test_projection_drift_raises_the_discrepancy_target_and_the_matched_tv_weight():
    pid, sino_id, vg = _ct_problem(0.002)
    sino = astra.data2d.get(sino_id)
    # Each projection scaled by its own factor, 4 % spread: a drifting source.
    drift = 1.0 + 0.04 * np.random.default_rng(1).standard_normal((sino.shape[0], 1))
    drifted = (pid, astra.data2d.create("-sino", astra.data2d.get_geometry(sino_id),
                                        (sino * drift).astype(np.float32)), vg)
    net = {"Width": 64, "Depth": 2, "Discrepancy": 1.05, "TVGradient": "plain"}
    plain = _inr_report((pid, sino_id, vg), 2, net)
    rep = _inr_report(drifted, 2, net)
    inconsistency = rep["estimated_inconsistency"]
    assert inconsistency == pytest.approx(np.std(drift, ddof=1) / np.mean(drift), rel=0.1)
    assert rep["data_error_level"] == pytest.approx(
        np.hypot(rep["estimated_noise_level"], inconsistency))
    assert rep["discrepancy_target"] == pytest.approx(1.05 * rep["data_error_level"])
    assert rep["discrepancy_target"] > 5 * plain["discrepancy_target"]
    # The plain gradient's floor follows the white noise only ...
    assert rep["tv_weight_floor"] == pytest.approx(
        min(max(12 * rep["estimated_noise_level"], 0.01), 0.1))
    # ... the matched one, whose training settles at least squares plus TV, the whole error.
    matched = _inr_report(drifted, 2, {"Width": 64, "Depth": 2})
    assert matched["estimated_inconsistency"] == pytest.approx(inconsistency)
    assert matched["tv_weight_floor"] == pytest.approx(0.1 * matched["data_error_level"])
    assert matched["tv_weight_floor"] > 5 * 0.1 * matched["estimated_noise_level"]
    assert "estimated_inconsistency" in matched["tv_weight_floor_definition"]


@pytest.mark.parametrize("squarings", [False, True])
def test_power_iteration_spectral_norms_match_the_svd(squarings):
    """Both forms of the training-time estimate (CPU steps, GPU squarings) against the SVD,
    from a cold start and warm-started after the weights moved."""
    from astra_inr.regularity import _spectral_norm

    net = INRNetwork(2, 300, 3, 2.0, seed=3)
    vectors: dict = {}
    for k, layer in enumerate(list(net.hidden) + [net.output]):
        w = layer.weight.detach()
        exact = float(torch.linalg.matrix_norm(w.double(), ord=2))
        # Cold: a random layer's top singular values lie close, so the plain steps lag.
        cold = float(_spectral_norm(w, vectors, k, squarings))
        assert cold <= exact * (1 + 1e-6)
        assert cold == pytest.approx(exact, rel=1e-4 if squarings else 2e-2)
        moved = w + 0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(k))
        warm = float(_spectral_norm(moved, vectors, k, squarings))
        exact_moved = float(torch.linalg.matrix_norm(moved.double(), ord=2))
        assert warm == pytest.approx(exact_moved, rel=1e-4 if squarings else 2e-2)
