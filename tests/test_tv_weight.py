"""TVWeight='heldout': the TV weight chosen by projections left out of a pixel-grid fit."""

import functools
import math

import astra
import numpy as np
import pytest
import torch

import astra_inr.fit as fit_module
from astra_inr import AstraOperator, INRConfig, INRTrainer, volume_grid
from astra_inr.matrix import MatrixOperator
from astra_inr.tv_weight import MaskedAngles, _vertex, choose_tv_weight, heldout_mask
from conftest import make_problem

SHORT_LADDER = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def test_heldout_mask_takes_one_angle_in_every_from_inside_the_first_interval():
    held = heldout_mask(23, 5)
    assert held.tolist() == [(i % 5) == 2 and i < 22 for i in range(23)]
    assert not held[0] and not held[-1]         # a wedge's bounding angles stay in the fit
    with pytest.raises(ValueError, match="too few"):
        heldout_mask(9, 5)
    with pytest.raises(ValueError, match=">= 2"):
        heldout_mask(40, 1)


@pytest.mark.parametrize("stacked", [False, True])
def test_masked_angles_is_the_adjoint_pair_of_the_kept_angles(stacked):
    prob = make_problem(n=16, n_angles=10)
    op = (MatrixOperator.from_geometry(prob.vol_geom, prob.proj_geom, 2, "cpu") if stacked
          else AstraOperator.from_projector(prob.projector_id))
    keep = torch.tensor([i % 3 != 1 for i in range(10)])
    masked = MaskedAngles(op, keep)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(masked.vol_shape, generator=gen)
    p = torch.rand(masked.proj_shape, generator=gen)
    ax = masked.forward(x)
    assert tuple(ax.shape) == masked.proj_shape and masked.vol_shape[0] in (1, 2)
    # <M A x, p> = <x, A^T M p>, and nothing reaches the dropped angles.
    lhs = float((ax.double() * p.double()).sum())
    rhs = float((x.double() * masked.adjoint(p).double()).sum())
    assert lhs == pytest.approx(rhs, rel=1e-4)
    # Angles on axis 1 either way: 2D data are lifted to (1, angles, detectors).
    dropped = ax.index_select(1, torch.nonzero(~keep).flatten())
    assert float(dropped.abs().max()) == 0.0
    assert float(ax.abs().max()) > 0.0
    with pytest.raises(ValueError, match="angles"):
        MaskedAngles(op, torch.ones(9, dtype=torch.bool))


def test_the_vertex_lies_between_the_neighbours_and_at_the_parabolas_minimum():
    # A parabola in log w with its minimum at w = 2e-3: recovered exactly.
    x_min = math.log(2e-3)
    ws = (1e-3, 3e-3, 1e-2)
    rs = [0.5 + (math.log(w) - x_min) ** 2 for w in ws]
    assert _vertex(ws, rs) == pytest.approx(2e-3, rel=1e-9)
    # A lopsided bracket stays within it; a flat one keeps the middle rung.
    assert 1e-3 <= _vertex(ws, [0.2, 0.1, 5.0]) <= 1e-2
    assert _vertex(ws, [0.1, 0.1, 0.1]) == 3e-3


def _choice(noise, seed=0):
    prob = make_problem(n=32, n_angles=30, noise=noise, seed=seed)
    op = MatrixOperator.from_geometry(prob.vol_geom, prob.proj_geom, 1, "cpu")
    y = torch.from_numpy(prob.sinogram).unsqueeze(0)
    calls = []
    choice = choose_tv_weight(op, y, 0.0, None, ladder=SHORT_LADDER, iterations=150,
                              progress=lambda *a: calls.append(a))
    return choice, calls


def test_noisier_data_get_a_larger_weight_at_the_held_out_minimum():
    clean, calls = _choice(0.002)
    noisy, _ = _choice(0.05)
    for choice in (clean, noisy):
        residuals = {float(w): r for w, r in choice["heldout_residual_by_weight"].items()}
        best = min(residuals, key=residuals.get)
        assert choice["best_weight_tried"] == best
        # The refined weight lies within the best rung's neighbours.
        i = SHORT_LADDER.index(best)
        lo, hi = SHORT_LADDER[max(i - 1, 0)], SHORT_LADDER[min(i + 1, len(SHORT_LADDER) - 1)]
        assert lo <= choice["weight"] <= hi
        assert choice["heldout_angles"] == 6 and choice["angles"] == 30
    assert noisy["weight"] > 3 * clean["weight"]
    # Progress after each rung: (rung, rungs, weight, held-out residual, fit residual).
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1))
    assert all(c[1] == len(SHORT_LADDER) for c in calls)


def test_trainer_chooses_the_weight_before_training_and_reports_it(monkeypatch):
    monkeypatch.setattr(fit_module, "choose_tv_weight",
                        functools.partial(choose_tv_weight, ladder=SHORT_LADDER, iterations=100))
    prob = make_problem(n=24, n_angles=20, noise=0.02)
    op = AstraOperator.from_projector(prob.projector_id)
    tr = INRTrainer(INRConfig(width=24, depth=2, device="cpu", tv_weight="heldout",
                              min_constraint=0.0), op, prob.sinogram, volume_grid(prob.vol_geom))
    assert tr.tv_floor is None and tr.tv_weight is None and tr.tv_filter is not None
    stages = []
    tr.run(12, callback=lambda p: stages.append(p.stage), callback_every=4)
    rep = tr.report()
    choice = rep["tv_weight_choice"]
    assert tr.tv_floor == choice["weight"] == rep["tv_weight_floor"] == rep["tv_weight"]
    assert choice["operator"]["kind"] == "matrix"          # 4x faster than ASTRA's calls on a CPU
    assert "heldout" in rep["tv_weight_floor_definition"]
    assert stages[0].startswith("TV weight ") and stages[-1] == "train"
    assert len([s for s in stages if s.startswith("TV weight")]) == len(
        choice["heldout_residual_by_weight"])
    # The loss history's TV column carries the chosen weight.
    assert np.array(tr.history.as_list())[:, 3] == pytest.approx(choice["weight"])


def test_heldout_needs_the_matched_gradient():
    with pytest.raises(ValueError, match="TVWeight='heldout' needs TVGradient='matched'"):
        INRConfig.from_options({"TVWeight": "heldout", "TVGradient": "plain"})
    with pytest.raises(ValueError, match="DataWeighting='ramp'"):
        INRConfig.from_options({"TVWeight": "heldout", "DataWeighting": "l2"})
    assert INRConfig.from_options({"TVWeight": "HeldOut"}).tv_weight == "heldout"
    with pytest.raises(ValueError, match="'auto' or 'heldout'"):
        INRConfig.from_options({"TVWeight": "strong"})


def test_too_few_angles_to_hold_out_name_the_option():
    prob = make_problem(n=16, n_angles=8)
    op = AstraOperator.from_projector(prob.projector_id)
    tr = INRTrainer(INRConfig(width=8, depth=1, device="cpu", tv_weight="heldout"), op,
                    prob.sinogram, volume_grid(prob.vol_geom))
    with pytest.raises(ValueError, match="TVWeight='heldout' cannot choose.*8 angles are too few"):
        tr.run(2)


def test_the_command_lines_progress_shows_the_ladder_as_one_stage(monkeypatch):
    from astra_inr.cases import case_from_phantom
    from astra_inr.recon import ReconOptions, reconstruct_sinograms
    from conftest import phantom

    monkeypatch.setattr(fit_module, "choose_tv_weight",
                        functools.partial(choose_tv_weight, ladder=SHORT_LADDER, iterations=50))
    sino, _, _ = case_from_phantom(phantom(24), 20, 0.02)
    options = ReconOptions(algorithm="INR", iterations=3, size=24, device="cpu",
                           inr={"tv_weight": "heldout", "width": 8, "depth": 1})
    seen = []
    _, _, info, _ = reconstruct_sinograms(sino, options, lambda *a: seen.append(a))
    ladder = [s for s in seen if s[0] == "TV weight"]
    assert {s[0] for s in seen} == {"TV weight", "INR"} and seen[0][0] == "TV weight"
    assert [s[1] for s in ladder] == list(range(1, len(ladder) + 1))
    assert ladder[0][3].startswith("w 1e-05 held-out residual")
    assert info["inr"]["tv_weight_choice"]["weight"] == info["inr"]["tv_weight"]
