"""The INR algorithm through ASTRA's own API."""

import astra
import numpy as np
import pytest
import torch

import astra_inr
from astra_inr.metrics import psnr
from conftest import make_problem

FAST = {"Width": 48, "Depth": 2, "LearningRate": 1e-2}


def test_plugin_is_registered_and_documents_every_option():
    assert "INR" in astra.plugin.get_registered()
    text = astra.plugin.get_help("INR")
    for name in astra_inr.INRConfig().to_options():
        assert name in text
    assert "comma" in text


def test_inr_beats_fbp_on_a_noisy_sparse_view_problem():
    # 96 x 96 image, 40 angles, 2% Gaussian noise, simulated on a finer grid.
    prob = make_problem(n=96, n_angles=40, noise=0.02)
    fbp, _ = prob.run("FBP", 1)
    inr, alg = prob.run("INR", 400, {"Width": 128, "LearningRate": 5e-3, "Seed": 1,
                                     "MinConstraint": 0.0})
    rep = astra_inr.report(alg)
    assert rep["iterations"] == 400
    assert psnr(inr, prob.image) > psnr(fbp, prob.image) + 1.0


def test_inr_and_sirt_agree_in_orientation_and_units(small_problem):
    sirt, _ = small_problem.run("SIRT", 200)
    inr, _ = small_problem.run("INR", 200, FAST)
    flips = {"same": inr, "rows reversed": inr[::-1], "cols reversed": inr[:, ::-1],
             "transposed": inr.T}
    corr = {k: np.corrcoef(v.ravel(), sirt.ravel())[0, 1] for k, v in flips.items()}
    assert max(corr, key=corr.get) == "same" and corr["same"] > 0.9
    # Same units: mean values within 10%.
    assert inr.mean() == pytest.approx(sirt.mean(), rel=0.1)


def test_second_run_continues_training(small_problem):
    _, alg = small_problem.run("INR", 60, FAST)
    first = astra_inr.report(alg)
    astra.algorithm.run(alg, 60)
    second = astra_inr.report(alg)
    assert second["iterations"] == 120
    assert second["data_residual"] < first["data_residual"]
    history = np.array(second["loss_history"])
    assert history[0, 0] == 1 and history[-1, 0] == 120
    assert second["seconds"] > first["seconds"]
    # The data object holds the latest image after each run.
    np.testing.assert_array_equal(astra.data2d.get(small_problem.rec_id),
                                  astra_inr.report(alg) and astra.data2d.get(small_problem.rec_id))


def test_report_contents(small_problem):
    _, alg = small_problem.run("INR", 5, {**FAST, "Seed": 3})
    rep = astra_inr.report(alg)
    for key in ("iterations", "data_residual", "loss_history", "seconds", "device", "options"):
        assert key in rep
    assert rep["options"]["Seed"] == 3 and rep["options"]["Width"] == 48
    assert rep["device"] == "cpu" or rep["device"].startswith("cuda")
    assert 0 < rep["data_residual"] < 10
    assert rep["projection_geometry"]["type"] == "parallel"


def test_same_seed_same_image_on_cpu(small_problem):
    a, _ = small_problem.run("INR", 20, {**FAST, "Seed": 7, "Device": "cpu"})
    b, _ = small_problem.run("INR", 20, {**FAST, "Seed": 7, "Device": "cpu"})
    c, _ = small_problem.run("INR", 20, {**FAST, "Seed": 8, "Device": "cpu"})
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _run_scaled(prob, factor, iterations, options):
    sino_id = astra.data2d.create("-sino", prob.proj_geom, prob.sinogram * np.float32(factor))
    cfg = astra.astra_dict("INR")
    cfg.update(ProjectorId=prob.projector_id, ProjectionDataId=sino_id,
               ReconstructionDataId=prob.rec_id, option=options)
    alg = astra.algorithm.create(cfg)
    astra.algorithm.run(alg, iterations)
    return astra.data2d.get(prob.rec_id)


def test_units_scale_with_the_data(small_problem):
    # The data's scale is normalised away exactly: x1024 (exact in floating point)
    # gives the image x1024 to the last bit, with the default network.
    opts = {"Device": "cpu", "Seed": 4}
    a = _run_scaled(small_problem, 1, 30, opts)
    b = _run_scaled(small_problem, 1024, 30, opts)
    np.testing.assert_array_equal(b, 1024 * a)
    # x1000 rounds the data differently (relative 6e-8).  BW-ReLU networks are
    # piecewise linear, so a point crossing a knot flips its slope and training
    # amplifies such differences within tens of iterations: the first steps agree
    # to 1%, and later images differ in detail but not in quality.
    c = _run_scaled(small_problem, 1000, 3, opts)
    d = _run_scaled(small_problem, 1, 3, opts)
    assert np.abs(c - 1000 * d).max() <= 0.01 * np.abs(1000 * d).max()
    e = _run_scaled(small_problem, 1000, 60, opts)
    f = _run_scaled(small_problem, 1, 60, opts)
    assert psnr(e / 1000, small_problem.image) == pytest.approx(psnr(f, small_problem.image), abs=0.5)


@pytest.mark.parametrize("geometry", ["parallel_vec", "fanflat", "fanflat_vec"])
def test_other_2d_geometries(geometry):
    kind = "parallel" if geometry.startswith("parallel") else "fanflat"
    prob = make_problem(n=32, n_angles=30, kind=kind,
                        projector="linear" if kind == "parallel" else "line_fanflat")
    if geometry.endswith("_vec"):
        pg = astra.geom_2vec(prob.proj_geom)
        pid = astra.create_projector("line" if kind == "parallel" else "line_fanflat", pg, prob.vol_geom)
        prob.projector_id = pid
        prob.sino_id = astra.data2d.create("-sino", pg, prob.sinogram)
    sirt, _ = prob.run("SIRT", 100)
    inr, alg = prob.run("INR", 150, FAST)
    assert astra_inr.report(alg)["data_residual"] < 0.15
    assert np.corrcoef(inr.ravel(), sirt.ravel())[0, 1] > 0.85


def test_constraints_bound_the_image(small_problem):
    img, _ = small_problem.run("INR", 30, {**FAST, "MinConstraint": 0.0, "MaxConstraint": 0.5})
    assert img.min() >= 0.0 and img.max() <= 0.5


def test_parallel3d_reconstructs_on_the_cpu():
    n, slices = 24, 3
    vol = np.stack([np.roll(make_problem(n=n, n_angles=4).image, 2 * k, axis=1) for k in range(slices)])
    angles = np.linspace(0, np.pi, 30, endpoint=False)
    vg = astra.create_vol_geom(n, n, slices)
    pg = astra.create_proj_geom("parallel3d", 1.0, 1.0, slices, 36, angles)
    # Simulate with the 2D CPU path per slice (3D CUDA calls would kill a GPU-less process).
    op = astra_inr.AstraOperator.create(vg, pg)
    sino = op.forward(torch.from_numpy(vol)).numpy()
    sid = astra.data3d.create("-sino", pg, sino)
    rid = astra.data3d.create("-vol", vg, 0)
    cfg = astra.astra_dict("INR")
    cfg.update(ProjectionDataId=sid, ReconstructionDataId=rid, option=FAST)   # no ProjectorId in 3D
    alg = astra.algorithm.create(cfg)
    astra.algorithm.run(alg, 200)
    rec = astra.data3d.get(rid)
    assert rec.shape == vol.shape
    assert astra_inr.report(alg)["data_residual"] < 0.15
    for k in range(slices):           # each slice resembles its own phantom slice, not a neighbour's
        corr = [np.corrcoef(rec[k].ravel(), vol[j].ravel())[0, 1] for j in range(slices)]
        assert int(np.argmax(corr)) == k and corr[k] > 0.8


def test_optomo_reconstruct_works(small_problem):
    W = astra.OpTomo(small_problem.projector_id)
    rec = W.reconstruct("INR", small_problem.sinogram, 30, extraOptions=FAST)
    assert rec.shape == small_problem.image.shape and np.isfinite(rec).all()
    assert np.corrcoef(rec.ravel(), small_problem.image.ravel())[0, 1] > 0.5


def _create(cfg):
    return astra.algorithm.create(cfg)


def _cfg(prob, **extra):
    cfg = astra.astra_dict("INR")
    cfg.update(ProjectorId=prob.projector_id, ProjectionDataId=prob.sino_id,
               ReconstructionDataId=prob.rec_id)
    cfg.update(extra)
    return cfg


def test_unknown_option_is_refused_at_create(small_problem):
    with pytest.raises(astra.log.AstraError, match="did you mean 'LearningRate'"):
        _create(_cfg(small_problem, option={"LearnigRate": 1e-3}))


def test_bad_ids_and_mismatched_projector_are_named(small_problem):
    with pytest.raises(astra.log.AstraError, match="ProjectionDataId.*= 987654"):
        _create(_cfg(small_problem, ProjectionDataId=987654))
    with pytest.raises(astra.log.AstraError, match="ReconstructionDataId.*is not an existing"):
        _create(_cfg(small_problem, ReconstructionDataId=987654))
    with pytest.raises(astra.log.AstraError, match="ProjectorId.*required"):
        cfg = _cfg(small_problem)
        del cfg["ProjectorId"]
        _create(cfg)
    other_pg = astra.create_proj_geom("parallel", 1.0, 17, np.linspace(0, np.pi, 5, endpoint=False))
    wrong = astra.create_projector("line", other_pg, small_problem.vol_geom)
    with pytest.raises(astra.log.AstraError, match="projection geometry does not match"):
        _create(_cfg(small_problem, ProjectorId=wrong))


def test_non_finite_sinogram_is_refused(small_problem):
    bad = small_problem.sinogram.copy()
    bad[3, 4] = np.nan
    bad[5, 6] = np.inf
    sid = astra.data2d.create("-sino", small_problem.proj_geom, bad)
    with pytest.raises(astra.log.AstraError, match="2 NaN or infinite"):
        _create(_cfg(small_problem, ProjectionDataId=sid))


def test_zero_iterations_is_an_error_and_the_process_survives(small_problem):
    alg = _create(_cfg(small_problem, option=FAST))
    with pytest.raises(astra.log.AstraError, match="positive integer, got 0"):
        astra.algorithm.run(alg, 0)
    astra.algorithm.run(alg, 2)                       # still usable afterwards
    assert astra_inr.report(alg)["iterations"] == 2


def test_gpu_requested_without_gpu_is_a_clear_error(small_problem, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(astra.log.AstraError, match="Device='cuda'.*no CUDA GPU"):
        _create(_cfg(small_problem, option={"Device": "cuda"}))


def test_report_of_a_non_inr_algorithm_is_refused(small_problem):
    _, alg = small_problem.run("SIRT", 1)
    with pytest.raises(ValueError, match="not an INR algorithm"):
        astra_inr.report(alg)
