"""Training paths that exist for speed and scale: chunks, slabs, precision. Same results, less memory."""

import dataclasses

import astra
import numpy as np
import pytest
import torch

from astra_inr import AstraOperator, INRConfig, INRTrainer, volume_grid
from conftest import make_problem

FAST = dict(width=24, depth=2, learning_rate=1e-2, device="cpu")


def _trainer(prob, **kw):
    op = AstraOperator.from_projector(prob.projector_id)
    return INRTrainer(INRConfig(**{**FAST, **kw}), op, prob.sinogram, volume_grid(prob.vol_geom))


def test_chunked_evaluation_equals_unchunked():
    prob = make_problem(n=24, n_angles=16, noise=0.01)
    whole = _trainer(prob)
    chunked = _trainer(prob, chunk_points=100)          # 576 voxels in 6 chunks
    assert len(chunked.field.chunks(chunked.coords.shape[0])) == 6
    whole.run(5)
    chunked.run(5)
    np.testing.assert_allclose(chunked.image().numpy(), whole.image().numpy(), rtol=1e-4, atol=1e-5)
    hw = np.array(whole.history.as_list())
    hc = np.array(chunked.history.as_list())
    np.testing.assert_allclose(hc, hw, rtol=1e-4)


def _volume_problem(slices=6, n=16):
    vol = np.zeros((slices, n, n), np.float32)
    for k in range(slices):
        vol[k, 3 + k % 3:12, 4:10 + k % 4] = 1.0
    vg = astra.create_vol_geom(n, n, slices)
    pg = astra.create_proj_geom("parallel3d", 1.0, 1.0, slices, 24,
                                np.linspace(0, np.pi, 20, endpoint=False))
    op = AstraOperator.create(vg, pg)
    return vol, vg, pg, op, op.forward(torch.from_numpy(vol))


def test_slabs_of_slices_cover_the_volume_once_per_epoch():
    vol, vg, pg, op, sino = _volume_problem()
    tr = INRTrainer(INRConfig(**FAST, slice_batch=2), op, sino, volume_grid(vg))
    assert tr.slice_batch == 2 and tr._slab_op is not None
    batches = [tr._next_slab().tolist() for _ in range(30)]
    for epoch in range(10):
        dealt = batches[3 * epoch:3 * epoch + 3]
        assert sorted(k for b in dealt for k in b) == list(range(6))
        assert all(b == sorted(b) for b in dealt)
    # Drawn over the whole volume, not only neighbours.
    assert any(b[1] - b[0] > 1 for b in batches)
    tr.run(150)
    rep = tr.report()
    assert rep["slice_batch"] == 2 and rep["slice_sampling"] == "random"
    assert rep["data_residual"] < 0.2
    rec = tr.image().numpy()
    for k in range(vol.shape[0]):
        assert np.corrcoef(rec[k].ravel(), vol[k].ravel())[0, 1] > 0.8


def test_learning_rate_auto_is_smaller_for_batches_of_slices():
    vol, vg, pg, op, sino = _volume_problem()
    options = {k: v for k, v in FAST.items() if k != "learning_rate"}
    batches = INRTrainer(INRConfig(**options, slice_batch=2), op, sino, volume_grid(vg))
    whole = INRTrainer(INRConfig(**options), op, sino, volume_grid(vg))
    given = INRTrainer(INRConfig(**options, slice_batch=2, learning_rate=3e-3), op, sino,
                       volume_grid(vg))
    assert (batches.learning_rate, whole.learning_rate, given.learning_rate) == (2e-3, 5e-3, 3e-3)
    assert batches.optimizer.param_groups[0]["lr"] == 2e-3
    assert batches.learning_rate_at(0, 100) == 2e-3
    assert batches.learning_rate_at(99, 100) == pytest.approx(2e-4)
    assert batches.report()["learning_rate"] == 2e-3
    assert batches.report()["options"]["LearningRate"] == "auto"


def test_contiguous_slabs_are_neighbours_once_per_epoch():
    vol, vg, pg, op, sino = _volume_problem()
    tr = INRTrainer(INRConfig(**FAST, slice_batch=2, slice_sampling="contiguous"), op, sino,
                    volume_grid(vg))
    firsts = [tr._next_slab().tolist() for _ in range(6)]
    assert all(b[1] == b[0] + 1 for b in firsts)
    assert sorted(b[0] for b in firsts[:3]) == [0, 2, 4] == sorted(b[0] for b in firsts[3:])
    tr.run(20)
    assert tr.report()["slice_sampling"] == "contiguous"
    whole = INRTrainer(INRConfig(**FAST), op, sino, volume_grid(vg))
    assert whole.report()["slice_sampling"] is None        # whole volume per step


def test_support_mask_holds_carved_voxels_at_zero_in_slabs_and_renders():
    vol, vg, pg, op, sino = _volume_problem()
    tr = INRTrainer(INRConfig(**FAST, slice_batch=2, min_constraint=0.0), op, sino, volume_grid(vg))
    support = tr.support.numpy()
    assert support.shape == vol.shape and support[vol > 0].all() and not support.all()
    tr.run(20)
    rec = tr.image().numpy()
    assert (rec[~support] == 0).all() and rec[support].max() > 0
    fine = tr.render(upsample=2).numpy()
    assert (fine[~np.kron(support, np.ones((2, 2, 2), bool))] == 0).all()
    rep = tr.report()["support_mask"]
    assert rep["applied"] and rep["free_fraction"] == pytest.approx(support.mean())
    # Off, or without a zero lower bound (nothing says the object is non-negative): no mask.
    for options in ({"support_mask": "off", "min_constraint": 0.0}, {}):
        other = INRTrainer(INRConfig(**FAST, **options), op, sino, volume_grid(vg))
        assert other.support is None and not other.report()["support_mask"]["applied"]


def test_slab_size_divides_the_slice_count_and_whole_volume_when_small():
    vol, vg, pg, op, sino = _volume_problem(slices=6)
    assert INRTrainer(INRConfig(**FAST, slice_batch=4), op, sino, volume_grid(vg)).slice_batch == 3
    assert INRTrainer(INRConfig(**FAST), op, sino, volume_grid(vg)).slice_batch == 6


def test_slab_operator_projects_like_the_whole_volume():
    vol, vg, pg, op, sino = _volume_problem()
    slab = op.slab(2)
    x = torch.from_numpy(vol)
    for first in (0, 2, 4):
        np.testing.assert_allclose(slab.forward(x[first:first + 2].contiguous()).numpy(),
                                   sino[first:first + 2].numpy(), rtol=1e-5, atol=1e-5)
    for apart in ([0, 3], [1, 5]):              # slices drawn apart (SliceSampling 'random')
        np.testing.assert_allclose(slab.forward(x[apart].contiguous()).numpy(),
                                   sino[apart].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_matmul_precision_options_train(precision):
    prob = make_problem(n=24, n_angles=16)
    tr = _trainer(prob, matmul_precision=precision)
    tr.run(20)
    assert tr.report()["matmul_precision"] == precision
    assert np.isfinite(tr.image().numpy()).all() and tr.data_residual < 0.5
    assert torch.get_float32_matmul_precision() == "highest"       # restored after each step


@pytest.mark.parametrize("native", [True, False, None])
def test_bf16_on_a_cpu_without_bf16_instructions_warns_and_is_reported(monkeypatch, native):
    import warnings
    from astra_inr import fit
    monkeypatch.setattr(fit, "native_bf16", lambda: native)
    prob = make_problem(n=16, n_angles=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = _trainer(prob, matmul_precision="bf16")
        plain = _trainer(prob, matmul_precision="float32")
    slow = [w for w in caught if "without bf16 instructions" in str(w.message)]
    assert len(slow) == (1 if native is False else 0)
    assert tr.report()["bf16_native"] is native
    assert plain.report()["bf16_native"] is None                     # not asked for bf16


def test_bf16_steps_whose_learning_rate_decays_run_in_float32():
    """MatmulPrecision bf16 trains at the constant rate in bf16 and settles in float32."""
    prob = make_problem(n=16, n_angles=8)
    tr = _trainer(prob, matmul_precision="bf16")
    dtypes, steps = [], []
    real_step = tr._step

    def step():
        dtypes.clear()
        out = real_step()
        steps.append(dtypes[0] if dtypes else None)    # the network's output dtype
        return out
    tr._step = step
    tr.run(1)                                            # builds the network
    tr.network.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    steps.clear()
    tr.run(20)                           # constant rate for 16 steps and the 17th, then decay
    assert steps == [torch.bfloat16] * 17 + [torch.float32] * 3
    assert tr.report()["decay_precision"] == "float32"
    assert _trainer(prob).report()["decay_precision"] == "float32"          # float32 throughout


def test_native_bf16_reads_the_cpu_or_says_it_does_not_know(monkeypatch):
    from astra_inr import fit
    monkeypatch.setattr(fit.platform, "machine", lambda: "aarch64")
    assert fit.native_bf16() is None
    monkeypatch.setattr(fit.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert fit.native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert fit.native_bf16() is True


def test_tv_weight_lowers_the_total_variation_and_is_reported():
    from astra_inr.objective import total_variation

    prob = make_problem(n=32, n_angles=20, noise=0.03)
    plain = _trainer(prob, seed=3)
    smooth = _trainer(prob, seed=3, tv_weight=0.3)
    plain.run(80)
    smooth.run(80)
    tv = [float(total_variation(t.image() / t.image_scale)) for t in (plain, smooth)]
    assert tv[1] < 0.8 * tv[0]
    assert smooth.report()["regularisers"]["TVWeight"] == 0.3


def test_total_variation_within_slice_groups():
    """A batch of slices drawn apart: differences along the first axis only within groups."""
    from astra_inr.objective import total_variation

    x = torch.rand(6, 5, 7)
    torch.testing.assert_close(total_variation(x, slice_groups=6), total_variation(x))
    pairs = torch.stack([total_variation(x[k:k + 2]) for k in (0, 2, 4)]).mean()
    torch.testing.assert_close(total_variation(x, slice_groups=2), pairs)
    singles = torch.stack([total_variation(x[k]) for k in range(6)]).mean()
    torch.testing.assert_close(total_variation(x, slice_groups=1), singles)
    img = torch.rand(5, 7)
    torch.testing.assert_close(total_variation(img, slice_groups=1), total_variation(img))
    with pytest.raises(ValueError, match="groups of 4"):
        total_variation(x, slice_groups=4)


def test_total_variation_of_known_images():
    from astra_inr.objective import total_variation

    flat = torch.ones(8, 8)
    assert float(total_variation(flat, eps=0.0)) == 0.0
    ramp = torch.arange(8.0).repeat(8, 1)            # slope 1 along columns, replicated edge
    assert float(total_variation(ramp, eps=0.0)) == pytest.approx(7 / 8)
    cube = torch.zeros(4, 4, 4)
    cube[2:] = 1.0                                    # one step between slices 1 and 2
    assert float(total_variation(cube, eps=0.0)) == pytest.approx(16 / 64)


def _plain_gain(trainer):
    ax = trainer.operator.forward(trainer.image()).double()
    y = trainer.y.double()
    return float((ax * y).sum() / (ax * ax).sum())


def test_fit_level_scales_the_network_to_the_least_squares_level_of_the_data():
    prob = make_problem(n=24, n_angles=16, noise=0.01)
    free = _trainer(prob, seed=1, fit_level=False, tv_weight=0.3, min_constraint=0.0)
    fitted = _trainer(prob, seed=1, tv_weight=0.3, min_constraint=0.0)
    free.run(30)
    fitted.run(30)
    before = free.image().clone()
    gain = _plain_gain(free)
    assert abs(gain - 1) > 1e-3                       # TV left the level off the data's
    # Same training, then the factor folded into the output layer: exactly g x.
    (g,) = fitted.level_gains
    assert g == pytest.approx(gain, rel=1e-5)
    np.testing.assert_allclose(fitted.image().numpy(), g * before.numpy(), rtol=1e-4, atol=1e-6)
    assert _plain_gain(fitted) == pytest.approx(1.0, abs=1e-5)
    assert fitted.data_residual < free.data_residual
    fitted.run(10)                                    # one factor per run() call, in the report
    assert len(fitted.report()["level_fit"]["gains"]) == 2
    assert free.report()["level_fit"]["gains"] == [] and free.level_gains == []


def test_fit_level_is_skipped_where_a_bound_would_not_commute_with_the_factor():
    prob = make_problem(n=24, n_angles=16)
    for bounds in ({"max_constraint": 0.5}, {"min_constraint": -0.1}):
        tr = _trainer(prob, seed=1, **bounds)
        tr.run(5)
        assert tr.level_gains == [None]
        assert tr.report()["level_fit"]["gains"] == [None]


def test_step_passes_equal_the_field_and_the_objective():
    """The render pass is the field's image and the loss pass the data term plus TV, also for
    a slab's rows and support (what a captured graph replays with new inputs)."""
    from astra_inr.objective import total_variation
    from astra_inr.passes import LossPass, RenderPass

    vol, vg, pg, op, sino = _volume_problem()
    tr = INRTrainer(INRConfig(**FAST, slice_batch=2, min_constraint=0.0, tv_weight=0.2), op, sino,
                    volume_grid(vg))
    tr.run(3)
    # Slices 1 and 4 with their detector rows: a batch drawn apart (SliceSampling 'random').
    rows, plane = torch.tensor([1, 4]), 16 * 16
    coords = tr.coords[(rows[:, None] * plane + torch.arange(plane)).view(-1)]
    assert tr._tv_slice_groups == 1
    render = RenderPass(tr.network, (2, 16, 16), tr.image_scale, 0.0, None)
    with torch.no_grad():
        image = render(coords, tr.support[rows])
        expected = tr.field.to_image(tr.field.evaluate(coords), (2, 16, 16), rows)
        torch.testing.assert_close(image, expected)
        proj = tr._slab_op.forward(image)
        y, wy, norm = tr.data_fit.targets(rows)
        factor = torch.tensor(3.0)
        y_norm = y.norm()
        loss, residual = LossPass(tr.data_fit, norm, 0.2, tr.mean_scale, 1)(proj, image, y, wy,
                                                                             y_norm, factor)
    torch.testing.assert_close(y, sino[[1, 4]])
    data_term = tr.data_fit(proj, rows)
    torch.testing.assert_close(loss, data_term + 0.6 * (
        total_variation(image[0] / tr.mean_scale) + total_variation(image[1] / tr.mean_scale)) / 2)
    torch.testing.assert_close(residual, (proj - y).norm() / y_norm)


def test_seed_repeats_runs_with_random_points_whatever_the_global_random_state():
    prob = make_problem(n=24, n_angles=16, noise=0.02)
    options = dict(jitter=0.5, regulariser="generalized_weight_decay", regulariser_weight=1e-2)
    images = []
    for draws in (0, 1000):
        torch.rand(draws)                   # what a caller may have drawn before
        tr = _trainer(prob, **options)
        tr.run(4)
        images.append(tr.image())
    torch.testing.assert_close(images[0], images[1], rtol=0, atol=0)
    other = _trainer(prob, **options, seed=1)
    other.run(4)
    assert not torch.equal(other.image(), images[0])


def test_report_says_why_cuda_graphs_were_not_used():
    prob = make_problem(n=24, n_angles=16)
    tr = _trainer(prob)
    assert tr.report()["cuda_graphs"] == {"used": False, "not_used_because": "not on a GPU",
                                          "whole_step": False,
                                          "whole_step_not_used_because": "not on a GPU"}
    off = _trainer(prob, cuda_graphs=False)
    assert off.report()["cuda_graphs"]["not_used_because"] == "CudaGraphs is off"
    # Parameter regularisers, a weight the discrepancy rule sets among them, stay eager; the
    # reason is asked as a GPU would ask it (no CUDA call is made).
    for weight in (1e-3, "discrepancy"):
        reg = _trainer(prob, regulariser="generalized_weight_decay", regulariser_weight=weight)
        reg.device = torch.device("cuda", 0)
        assert reg._graphs_unusable() == "parameter regularisers are computed outside the graphs"


def test_the_whole_step_that_a_gpu_captures_is_the_training_step():
    """The body :class:`StepGraph` captures on a GPU (run eagerly here, with the projection
    matrix) makes the same steps as the two-pass path: same network, same Adam, same TV rule."""
    prob = make_problem(n=24, n_angles=16, noise=0.02)
    runs = []
    for whole in (False, True):
        tr = _trainer(prob, projector_matrix="on", tv_weight=0.05, discrepancy=50.0)
        for _ in range(4):
            loss, residual = tr._whole_step_body() if whole else tr._step()
        runs.append((tr.render(), float(loss), float(residual), float(tr._tv_factor)))
    (a, *sa), (b, *sb) = runs
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert sb == pytest.approx(sa, rel=1e-5) and sa[2] > 1.0     # the TV rule acted


class _NoStream:
    """Stands in for a CUDA stream on the CPU (the whole-step path's bookkeeping only)."""

    def wait_stream(self, other):
        pass


def _whole_step_trainer(prob, monkeypatch, graph_class):
    """A CPU trainer whose steps take the whole-step path, with ``graph_class`` for StepGraph."""
    from contextlib import nullcontext

    import astra_inr.fit as fit_module
    monkeypatch.setattr(fit_module, "StepGraph", graph_class)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _NoStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: nullcontext())
    tr = _trainer(prob, projector_matrix="on")
    tr._side_stream = _NoStream()
    tr._step_graph_unusable = lambda: tr._step_graph_failure    # as on a GPU
    return tr


def test_whole_step_path_warms_up_captures_once_and_replays(monkeypatch):
    """Three eager steps, one capture (not a step), then replays: as many steps as asked."""
    prob = make_problem(n=24, n_angles=16, noise=0.02)
    captures = []

    class RecordingGraph:                      # like StepGraph: capture records, replay runs
        def __init__(self, step, context):
            captures.append(step)
            self.step = step

        def replay(self):
            return self.step()

    tr = _whole_step_trainer(prob, monkeypatch, RecordingGraph)
    tr.run(8)
    reference = _trainer(prob, projector_matrix="on")        # two passes per step
    reference.run(8)
    assert len(captures) == 1 and tr.total_iterations == 8
    torch.testing.assert_close(tr.render(), reference.render())
    report = tr.report()["cuda_graphs"]
    assert report["used"] and report["whole_step"] and report["whole_step_not_used_because"] is None


def test_a_failed_whole_step_capture_falls_back_to_two_passes(monkeypatch):
    prob = make_problem(n=24, n_angles=16, noise=0.02)

    class FailingGraph:
        def __init__(self, step, context):
            raise RuntimeError("operation not permitted when stream is capturing")

    tr = _whole_step_trainer(prob, monkeypatch, FailingGraph)
    with pytest.warns(RuntimeWarning, match="one-graph training steps not used"):
        tr.run(6)
    assert tr.total_iterations == 6 and len(tr.history.as_list()) == 6
    report = tr.report()["cuda_graphs"]
    assert not report["whole_step"]
    assert "capture failed (RuntimeError: operation not permitted" in report[
        "whole_step_not_used_because"]


def test_learning_rate_held_in_a_tensor_is_set_in_place():
    from astra_inr.fit import _set_learning_rate
    lr = torch.tensor(1e-3)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=lr, foreach=False)
    _set_learning_rate(opt, 5e-4)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(5e-4)
    plain = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=1e-3)
    _set_learning_rate(plain, 2e-4)
    assert plain.param_groups[0]["lr"] == 2e-4


@pytest.mark.skipif(not (torch.cuda.is_available() and astra.use_cuda()),
                    reason="CUDA graphs need a GPU visible to torch and ASTRA")
def test_graphed_steps_equal_eager_steps_on_a_gpu():
    """Same seed, same data, with and without graphs: the graphs replay the same kernels."""
    vol, vg, pg, op, sino = _volume_problem(slices=4)
    runs = []
    for graphs in (False, True):
        tr = INRTrainer(INRConfig(width=24, depth=2, min_constraint=0.0, slice_batch=2,
                                  cuda_graphs=graphs), AstraOperator.create(vg, pg),
                        sino.cuda(), volume_grid(vg))
        tr.run(20)
        runs.append((tr.image().cpu(), np.array(tr.history.as_list()), tr.graphed_steps))
    assert runs[1][2] and not runs[0][2]
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=1e-5)


@pytest.mark.skipif(not (torch.cuda.is_available() and astra.use_cuda()),
                    reason="CUDA graphs need a GPU visible to torch and ASTRA")
def test_whole_step_graph_equals_eager_steps_on_a_gpu():
    """2D with the projection matrix: one graph per step against eager steps, same seed."""
    prob = make_problem(n=32, n_angles=20, noise=0.02)
    runs = []
    for graphs in (False, True):
        tr = INRTrainer(INRConfig(width=24, depth=2, min_constraint=0.0, cuda_graphs=graphs,
                                  projector_matrix="on"),
                        AstraOperator.from_projector(prob.projector_id),
                        torch.from_numpy(prob.sinogram).cuda(), volume_grid(prob.vol_geom))
        tr.run(20)
        runs.append((tr.image().cpu(), np.array(tr.history.as_list()),
                     tr.report()["cuda_graphs"]["whole_step"]))
    assert runs[1][2] and not runs[0][2]
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=1e-5)


def test_train_for_seconds_is_one_run_scored_along_the_way():
    """The 3D speed row's timed training: one run (one learning-rate schedule), its length from
    a probe's step time, scores in iteration order, the last one after run() ended."""
    from astra_inr.metrics import psnr
    from astra_inr.speed import train_for_seconds

    prob = make_problem(n=16, n_angles=12)
    op = AstraOperator.from_projector(prob.projector_id)
    scored = []

    def score(image):
        scored.append(image.clone())
        return psnr(image.numpy(), prob.image)

    tr, curve, seconds = train_for_seconds(INRConfig(width=16, depth=2, device="cpu"), op,
                                           prob.sinogram, volume_grid(prob.vol_geom), 1.0, score,
                                           eval_every=0.25)
    iterations = [c[0] for c in curve]
    assert iterations == sorted(iterations) and len(curve) >= 2
    assert iterations[-1] == tr.total_iterations and len(tr.level_gains) == 1   # one run()
    assert curve[-1][1] == pytest.approx(seconds, abs=0.01)
    torch.testing.assert_close(scored[-1], tr.image())
    assert curve[-1][2] == pytest.approx(psnr(tr.image().numpy(), prob.image), abs=1e-3)


def _scripted_training(trainer, monkeypatch, residuals):
    """Replace trainer._train: constant-rate blocks end at the next residual of ``residuals``."""
    values = iter(residuals)
    calls = []
    trainer.averaging_calls = []

    def train(iterations, callback, callback_every, stage="train", lr_at=None,
              average_from=None, average_restart=True):
        rates = [lr_at(i) for i in range(iterations)]
        calls.append(rates)
        trainer.averaging_calls.append((average_from, average_restart))
        trainer.total_iterations += iterations
        if len(set(rates)) > 1:                     # the decay
            return torch.zeros(iterations)
        value = next(values)                        # one level, or one residual per step
        return torch.as_tensor(value, dtype=torch.float32).expand(iterations).clone()

    monkeypatch.setattr(trainer, "_train", train)
    return calls


@pytest.mark.parametrize("residuals, blocks, why", [
    ([0.011], 1, "within"),                         # fitted after the first block
    ([0.1, 0.012], 2, "within"),                    # <= 1.25 x the error level 0.01
    ([0.1, 0.0995, 0.0994], 3, "less than 1 %"),    # two blocks in a row gained < 1 %
    ([0.1, 0.0995, 0.05, 0.0499], 4, "most allowed"),  # one block without gain goes on
    ([0.5, 0.4, 0.3, 0.2, 0.1], 4, "most allowed"),  # still fitting: stops at max_rounds
])
def test_run_until_fitted_stops_at_the_error_level_a_plateau_or_the_most_blocks(
        monkeypatch, residuals, blocks, why):
    prob = make_problem(n=16, n_angles=12)
    # The plain TV gradient: the residual alone decides (the matched one's rule: below).
    tr = _trainer(prob, tv_gradient="plain")
    tr.data_error_level = 0.01
    calls = _scripted_training(tr, monkeypatch, residuals)
    out = tr.run_until_fitted(round_iterations=10, max_rounds=4)
    assert "1.25 x data_error_level" in out["rule"]
    # k constant blocks of 8, then one decay of 2 per block: the learning rates of one
    # run of 10 k iterations, step for step (not k runs that restart the rate).
    assert [len(c) for c in calls] == [8] * blocks + [2 * blocks]
    rates = [lr for c in calls for lr in c]
    assert rates == pytest.approx([tr.learning_rate_at(i, 10 * blocks)
                                   for i in range(10 * blocks)])
    assert out["iterations"] == tr.total_iterations == 10 * blocks
    assert [b["data_residual"] for b in out["blocks"]] == pytest.approx(residuals[:blocks])
    assert why in out["stopped"]
    assert tr.report()["auto_iterations"] == out
    # Each block averages its second half; the decay continues the last block's mean only
    # when the run reached its error level (the stub trains nothing, so nothing is averaged).
    fitted = why == "within"
    assert tr.averaging_calls == [(4, True)] * blocks + [(0 if fitted else None, False)]
    if not fitted:
        assert "last weights are kept" in tr.report()["iterate_averaging"]["why"]
    for bad in ({"max_rounds": 0}, {"round_iterations": 2.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            tr.run_until_fitted(**bad)


@pytest.mark.parametrize("residuals, blocks, why", [
    ([0.0104], 1, "within 1.05 x"),
    ([0.0120, 0.0104], 2, "within 1.05 x"),        # within 1.25 x, not yet within 1.05 x
    ([0.0120, 0.0119, 0.0119], 3, "less than 1 %"),  # a plateau between the two bounds
])
def test_run_until_fitted_with_matched_tv_stops_at_morozovs_bound(monkeypatch, residuals,
                                                                  blocks, why):
    prob = make_problem(n=16, n_angles=12)
    tr = _trainer(prob)
    assert tr.tv_filter is not None and tr.tv_weight > 0     # the defaults: matched TV
    tr.data_error_level = 0.01
    calls = _scripted_training(tr, monkeypatch, residuals)
    out = tr.run_until_fitted(round_iterations=10, max_rounds=4)
    assert [len(c) for c in calls] == [8] * blocks + [2 * blocks]
    assert why in out["stopped"] and "1.05 x data_error_level" in out["rule"]
    # Within 1.25 x the level the decay continues the last block's mean, as with the plain
    # gradient: the bound decides the length, not the averaging.
    assert tr.averaging_calls[-1] == (0, False)


SPIKE = [0.05] * 7 + [0.5]          # a block at 0.05 whose last step spikes ten-fold


@pytest.mark.parametrize("residuals, blocks", [
    # The spike lifts the last steps' mean to 2.75 x the first block's (not their median), and
    # the block's typical level (the median of its second half) halved: the run goes on (to a
    # plateau of two).
    ([0.1, SPIKE, 0.0496, 0.0495], 4),
    # Calm blocks after one whose mean a spike inflated: the mean fell five-fold, the
    # typical level not at all, a plateau.
    ([SPIKE, 0.05, 0.05], 3),
])
def test_run_until_fitted_judges_a_plateau_by_each_blocks_median_not_by_spikes(
        monkeypatch, residuals, blocks):
    from astra_inr import fit
    monkeypatch.setattr(fit, "AUTO_WINDOW", 2)
    tr = _trainer(make_problem(n=16, n_angles=12), tv_gradient="plain")
    tr.data_error_level = 0.001                                # far below: never fitted
    _scripted_training(tr, monkeypatch, residuals)
    out = tr.run_until_fitted(round_iterations=10, max_rounds=4)
    assert len(out["blocks"]) == blocks and "less than 1 %" in out["stopped"]
    assert "median residual of the block's second half" in out["stopped"]
    medians = [float(np.median(np.broadcast_to(r, 8)[4:])) for r in residuals[:blocks]]
    assert [b["median_residual"] for b in out["blocks"]] == pytest.approx(medians)
    # The bound's reading: the (lower) median of the last AUTO_WINDOW steps, deaf to the spike.
    assert [b["data_residual"] for b in out["blocks"]] == pytest.approx(
        [float(np.sort(np.broadcast_to(r, 8)[-2:])[0]) for r in residuals[:blocks]])


def test_run_until_fitted_reads_the_error_level_bound_by_a_median_not_a_spike(monkeypatch):
    """A block settled within 1.05 x the level whose last step spikes is fitted: the run stops.

    The mean of the same steps (2.03 x) would have asked for another block, which on noisy
    data fits the noise (sl-60-n1: 1.33 dB lost, docs/results.md)."""
    from astra_inr import fit
    monkeypatch.setattr(fit, "AUTO_WINDOW", 4)
    tr = _trainer(make_problem(n=16, n_angles=12))          # matched TV: Morozov's 1.05 x
    tr.data_error_level = 0.01
    settled_then_spike = [0.0104] * 7 + [0.05]
    _scripted_training(tr, monkeypatch, [settled_then_spike, 0.0104, 0.0104])
    out = tr.run_until_fitted(round_iterations=10, max_rounds=4)
    assert len(out["blocks"]) == 1 and "last 4 steps within 1.05 x" in out["stopped"]
    assert out["blocks"][0]["data_residual"] == pytest.approx(0.0104)
    assert "median ||A x - y|| / ||y|| of a block's last 4 steps" in out["rule"]


# A catapult: the residual jumps six-fold and stays up for most of the block's second half,
# so its median rises above the first block's although the fit goes on improving after it.
CATAPULT = [0.05] * 4 + [0.3, 0.3, 0.3, 0.04]


def test_run_until_fitted_lets_one_block_without_gain_pass(monkeypatch):
    tr = _trainer(make_problem(n=16, n_angles=12), tv_gradient="plain")
    tr.data_error_level = 0.001                                # far below: never fitted
    _scripted_training(tr, monkeypatch, [0.1, CATAPULT, 0.04, 0.0399])
    out = tr.run_until_fitted(round_iterations=10, max_rounds=4)
    medians = [b["median_residual"] for b in out["blocks"]]
    assert medians[1] > medians[0]                  # the catapult's block: no gain
    assert len(medians) == 4 and "most allowed" in out["stopped"]
    assert "one of the last 2 blocks" in out["rule"]


def test_reconstruct_without_iterations_lets_the_data_choose_them(monkeypatch):
    from astra_inr import fit
    from astra_inr.cases import case_from_phantom
    from astra_inr.compare import compare_methods
    from astra_inr.recon import ReconOptions
    from conftest import phantom

    monkeypatch.setattr(fit, "AUTO_ROUND", 6)
    monkeypatch.setattr(fit, "AUTO_MAX_ROUNDS", 3)
    sino, ref, case = case_from_phantom(phantom(16), 12, noise=0.0)
    options = ReconOptions(size=16, inr={k: v for k, v in FAST.items() if k != "device"})
    seen = []
    r = compare_methods(sino, ["INR"], options, ref,
                        progress=lambda stage, done, total, msg: seen.append((done, total)))["INR"]
    # Progress counts from the run's start towards its length as planned so far.
    assert seen[-1] == (r.iterations, r.iterations)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert r.choice.startswith("chosen by the data: ")
    # A 16-pixel clean phantom is far from fitted after a block of 4 steps: more blocks.
    assert r.iterations in (12, 18)
    given = compare_methods(sino, ["INR"], dataclasses.replace(options, iterations=6),
                            ref)["INR"]
    assert given.iterations == 6 and given.choice == "given"


def _trainer_whose_step_k_sets_every_weight_to_k(monkeypatch, error_level):
    """A built trainer (FitLevel off) whose steps report a residual of 0.5 and set every
    weight to the step's number, so a mean over a window is the window's mid value."""
    tr = _trainer(make_problem(n=12, n_angles=8), fit_level=False)
    tr.run(1)                                           # builds the network
    tr.data_error_level = error_level
    params = list(tr.network.parameters())
    tr.step_count = 0

    def step():
        tr.step_count += 1
        with torch.no_grad():
            for p in params:
                p.fill_(float(tr.step_count))
        return torch.tensor(0.0), torch.tensor(0.5)

    monkeypatch.setattr(tr, "_step", step)
    return tr, params


@pytest.mark.parametrize("error_level, averaged", [(1.0, True), (1e-9, False)])
def test_a_run_at_its_error_level_ends_with_the_mean_of_its_last_weights(
        monkeypatch, error_level, averaged):
    tr, params = _trainer_whose_step_k_sets_every_weight_to_k(monkeypatch, error_level)
    tr.run(20)                  # constant rate for 16 steps: the mean runs over steps 8..20
    expected = np.mean(np.arange(9, 21)) if averaged else 20.0
    assert all(torch.allclose(p, torch.full_like(p, expected)) for p in params)
    info = tr.report()["iterate_averaging"]
    assert info["used"] is averaged and (info["steps"] == 12 if averaged else "why" in info)
    # Off: the last weights, whatever the residual.
    tr.config = dataclasses.replace(tr.config, iterate_averaging=False)
    tr.step_count = 0
    tr.run(20)
    assert torch.allclose(params[0], torch.full_like(params[0], 20.0))
    assert tr.report()["iterate_averaging"] == {"used": False, "steps": 0,
                                                "why": "IterateAveraging is off"}


def test_averaged_weights_that_fit_worse_than_the_last_are_not_kept(monkeypatch):
    # Steps report 0.5: within 1.25 x the level 0.4.
    tr, params = _trainer_whose_step_k_sets_every_weight_to_k(monkeypatch, 0.4)
    # The last weights fit to 0.1, their mean to 0.6: above both 0.1 and 1.25 x 0.4.
    # The last weights' projections stand in as the data themselves, the mean's as twice them.
    fits = iter([(tr.y.clone(), 0.1), (2 * tr.y, 0.6)])
    monkeypatch.setattr(tr, "_projections", lambda: next(fits))
    tr.run(20)
    assert all(torch.allclose(p, torch.full_like(p, 20.0)) for p in params)
    info = tr.report()["iterate_averaging"]
    assert not info["used"] and "fit the data worse" in info["why"]
    assert info["data_residuals"] == {"last": 0.1, "averaged": 0.6}
    # The run's residual comes from the last weights' projections, not from another pass.
    assert tr.data_residual == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_speed_rows_name_both_precisions(monkeypatch, native):
    """The benchmark's CPU rows time float32 and bf16 by name (never 'auto', which differs
    between CPUs), and the products-alone floor of bf16 only where it is not emulated."""
    from astra_inr import speed
    calls = []
    monkeypatch.setattr(speed, "native_bf16", lambda: native)
    monkeypatch.setattr(speed, "activation_cost", lambda *a, **k: {"row": "activation"})
    monkeypatch.setattr(speed, "matmul_floor",
                        lambda *a, **k: calls.append(("floor", k["precision"])) or {})
    monkeypatch.setattr(speed, "training_speed_2d",
                        lambda *a, **k: calls.append(("train", k["precision"])) or {})
    monkeypatch.setattr(speed.torch.cuda, "is_available", lambda: False)
    rows = speed.run_speed_benchmarks(None)
    assert len(rows) == len(calls) + 1
    floors = [p for kind, p in calls if kind == "floor"]
    assert floors == (["float32", "bf16"] if native else ["float32"])
    assert [p for kind, p in calls if kind == "train"] == ["float32", "bf16"]
