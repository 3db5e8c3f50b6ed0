"""An interrupted INR run goes on from its last block as if it had never stopped."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from astra_inr import AstraOperator, INRConfig, INRTrainer, volume_grid
from conftest import make_problem
from test_training_paths import _volume_problem

FAST = dict(width=24, depth=2, learning_rate=1e-2, device="cpu")


class Killed(BaseException):
    """Stands for the process being killed while a run trains."""


def _problem(kind):
    if kind == "slice":
        prob = make_problem(n=20, n_angles=12, noise=0.01)
        return (AstraOperator.from_projector(prob.projector_id), prob.sinogram,
                volume_grid(prob.vol_geom))
    _, vg, _, op, sino = _volume_problem(slices=4)
    return op, sino, volume_grid(vg)


def _saved(state):
    """The state as it comes back from a file (torch.save, then torch.load as weights)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# The slice with the adaptive TV weight (TVGradient 'plain') and random points (Jitter); batches
# of slices (their epoch and generator); the scale search and TVWeight 'heldout', whose choices
# the run must keep.
CASES = [("slice", dict(tv_gradient="plain", discrepancy=5.0, jitter=0.5)),
         ("slices", dict(slice_batch=2)),
         ("slice", dict(scale="auto", scale_candidates=(1.0, 3.0), scale_search_iterations=20)),
         ("slice", dict(tv_weight="heldout"))]


@pytest.mark.parametrize("kind,options", CASES)
def test_a_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_run(kind, options):
    op, sino, grid = _problem(kind)
    config = INRConfig(**FAST, **options)
    plan = dict(round_iterations=10, max_rounds=3)

    whole = INRTrainer(config, op, sino, grid)
    saved_whole = []
    out = whole.run_until_fitted(checkpoint=saved_whole.append, **plan)
    assert len(out["blocks"]) == 3, "the test needs a run of three blocks"
    assert len(saved_whole) == 2                        # before the second and the third block

    first = INRTrainer(config, op, sino, grid)
    saved = []

    def save_then_die(state):
        saved.append(_saved(state))
        if len(saved) == 2:                             # killed while the third block trains
            raise Killed

    with pytest.raises(Killed):
        first.run_until_fitted(checkpoint=save_then_die, **plan)

    if config.discrepancy != "auto":                    # the rule had moved the TV weight
        assert saved[-1]["trainer"]["tv_factor"] > 1.0
    again = INRTrainer(config, op, sino, grid)
    resumed = again.run_until_fitted(resume=saved[-1])
    assert resumed["blocks"] == out["blocks"] and resumed["iterations"] == out["iterations"]
    assert resumed["stopped"] == out["stopped"]
    np.testing.assert_array_equal(again.image().numpy(), whole.image().numpy())
    assert again.history.as_list() == whole.history.as_list()
    assert again.report()["iterate_averaging"] == whole.report()["iterate_averaging"]
    assert again.scale == whole.scale and again.scale_selection == first.scale_selection
    assert again.tv_weight_choice == first.tv_weight_choice


@pytest.mark.parametrize("kind,options", CASES[:2])
def test_a_run_of_fixed_length_saves_on_its_way_and_resumes_to_the_same_end(kind, options,
                                                                             monkeypatch):
    from astra_inr import fit

    # Checkpoints every 7 of 30 steps: the averaging starts (step 12) and the decay (24)
    # inside segments.
    monkeypatch.setattr(fit, "CHECKPOINT_EVERY", 7)
    op, sino, grid = _problem(kind)
    config = INRConfig(**FAST, **options)

    def trainer():
        t = INRTrainer(config, op, sino, grid)
        t.data_error_level = 1.0                        # the run "reaches" it: its mean is kept
        return t

    plain = trainer()
    plain.run(30)
    saving = trainer()
    states = []
    saving.run(30, checkpoint=states.append)
    assert [s["done"] for s in states] == [7, 14, 21, 28]
    assert plain.report()["iterate_averaging"]["used"]
    np.testing.assert_array_equal(saving.image().numpy(), plain.image().numpy())
    assert saving.history.as_list() == plain.history.as_list()
    assert saving.regularity_history.as_list() == plain.regularity_history.as_list()

    killed = trainer()

    def save_then_die(state):
        states.append(_saved(state))
        if state["done"] == 21:
            raise Killed

    states.clear()
    with pytest.raises(Killed):
        killed.run(30, checkpoint=save_then_die)
    again = trainer()
    again.run(1, resume=states[-1])                     # the saved run's length is kept
    assert again.total_iterations == 30
    np.testing.assert_array_equal(again.image().numpy(), plain.image().numpy())
    assert again.history.as_list() == plain.history.as_list()
    assert again.regularity_history.as_list() == plain.regularity_history.as_list()
    assert again.report()["iterate_averaging"] == plain.report()["iterate_averaging"]


def test_restore_keeps_the_trainers_own_adam_settings_a_cuda_graph_needs(monkeypatch):
    # A GPU trainer whose steps are CUDA graphs holds the step size as a device tensor and a
    # capturable Adam; a state saved on the CPU (a float step size) must not undo that.
    from astra_inr import fit

    op, sino, grid = _problem("slice")
    cpu = INRTrainer(INRConfig(**FAST), op, sino, grid)
    cpu.run(3)
    state = _saved(cpu.state())
    adam = fit._adam

    def as_for_graphs(network, lr, capturable=False):
        optimizer = adam(network, lr)
        optimizer.param_groups[0]["lr"] = torch.tensor(float(lr))
        optimizer.param_groups[0]["capturable"] = True
        return optimizer

    monkeypatch.setattr(fit, "_adam", as_for_graphs)
    graphed = INRTrainer(INRConfig(**FAST), op, sino, grid)
    graphed.restore(state)
    group = graphed.optimizer.param_groups[0]
    assert isinstance(group["lr"], torch.Tensor) and group["capturable"] is True
    moments = graphed.optimizer.state[group["params"][0]]
    saved = cpu.optimizer.state[cpu.optimizer.param_groups[0]["params"][0]]
    torch.testing.assert_close(moments["exp_avg"], saved["exp_avg"], rtol=0, atol=0)


def test_restore_refuses_a_trainer_that_has_trained_and_a_network_of_another_shape():
    op, sino, grid = _problem("slice")
    trainer = INRTrainer(INRConfig(**FAST), op, sino, grid)
    trainer.run(2)
    state = trainer.state()
    with pytest.raises(RuntimeError, match="fresh trainer"):
        trainer.restore(state)
    wider = INRTrainer(INRConfig(**{**FAST, "width": 30}), op, sino, grid)
    with pytest.raises(ValueError, match="does not fit this configuration"):
        wider.restore(state)


def test_a_killed_reconstruction_goes_on_from_its_checkpoint_when_run_again(tmp_path, monkeypatch,
                                                                             capsys):
    from astra_inr import checkpoint as ckpt
    from astra_inr import fit
    from astra_inr.cli import main
    from astra_inr.io.writers import read_tiff_stack

    monkeypatch.setattr(fit, "AUTO_ROUND", 10)            # blocks of 8 steps, not 400
    monkeypatch.setattr(fit, "AUTO_MAX_ROUNDS", 3)
    scan = Path(__file__).resolve().parents[1] / "sample_data" / "scan_dxchange.h5"
    args = ["--rows", "0:2", "--binning", "2", "--width", "24", "--depth", "2",
            "--learning-rate", "0.01"]
    out, whole = tmp_path / "rec", tmp_path / "whole"
    assert main(["reconstruct", str(scan), "--out", str(whole), "--quiet", *args]) == 0
    blocks = json.loads((whole / "report.json").read_text())["reconstruction"]["inr"]
    assert len(blocks["auto_iterations"]["blocks"]) == 3, "the test needs a run of three blocks"
    assert not ckpt.checkpoint_path(whole).exists()       # removed with the result written

    save = ckpt.RunCheckpoint.save

    def save_then_die(self, state):
        save(self, state)
        if state["trainer"]["total_iterations"] == 16:     # killed in the third block
            raise Killed

    monkeypatch.setattr(ckpt.RunCheckpoint, "save", save_then_die)
    with pytest.raises(Killed):
        main(["reconstruct", str(scan), "--out", str(out), "--quiet", *args])
    assert ckpt.checkpoint_path(out).is_file() and not out.exists()
    monkeypatch.setattr(ckpt.RunCheckpoint, "save", save)

    # A run with other options does not take it.
    other = tmp_path / "other"
    shutil.copy(ckpt.checkpoint_path(out), ckpt.checkpoint_path(other))
    assert main(["reconstruct", str(scan), "--out", str(other), "--quiet", *args, "--seed", "1"]) == 0
    found = json.loads((other / "report.json").read_text())["reconstruction"]["checkpoint"]
    assert found["resumed_at_iteration"] is None and "other data, options" in found["found"]

    capsys.readouterr()
    assert main(["reconstruct", str(scan), "--out", str(out), *args]) == 0
    assert "resumed from" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())["reconstruction"]
    assert report["checkpoint"]["resumed_at_iteration"] == 16
    assert report["iterations"] == json.loads((whole / "report.json").read_text())[
        "reconstruction"]["iterations"]
    np.testing.assert_array_equal(read_tiff_stack(out), read_tiff_stack(whole))
    assert not ckpt.checkpoint_path(out).exists()


def test_a_killed_reconstruction_of_given_iterations_goes_on_from_its_checkpoint(tmp_path,
                                                                                 monkeypatch):
    from astra_inr import checkpoint as ckpt
    from astra_inr import fit
    from astra_inr.cli import main
    from astra_inr.io.writers import read_tiff_stack

    monkeypatch.setattr(fit, "CHECKPOINT_EVERY", 8)
    scan = Path(__file__).resolve().parents[1] / "sample_data" / "scan_dxchange.h5"
    args = ["--rows", "0:2", "--binning", "2", "--width", "24", "--depth", "2",
            "--learning-rate", "0.01", "--iterations", "20", "--quiet"]
    whole, out = tmp_path / "whole", tmp_path / "rec"
    assert main(["reconstruct", str(scan), "--out", str(whole), *args]) == 0
    save = ckpt.RunCheckpoint.save

    def save_then_die(self, state):
        save(self, state)
        if state["done"] == 16:
            raise Killed

    monkeypatch.setattr(ckpt.RunCheckpoint, "save", save_then_die)
    with pytest.raises(Killed):
        main(["reconstruct", str(scan), "--out", str(out), *args])
    monkeypatch.setattr(ckpt.RunCheckpoint, "save", save)
    assert main(["reconstruct", str(scan), "--out", str(out), *args]) == 0
    report = json.loads((out / "report.json").read_text())["reconstruction"]
    assert report["checkpoint"]["resumed_at_iteration"] == 16 and report["iterations"] == 20
    np.testing.assert_array_equal(read_tiff_stack(out), read_tiff_stack(whole))
    assert not ckpt.checkpoint_path(out).exists()
    # Killed again; --restart then starts afresh although the checkpoint fits.
    monkeypatch.setattr(ckpt.RunCheckpoint, "save", save_then_die)
    with pytest.raises(Killed):
        main(["reconstruct", str(scan), "--out", str(out), *args, "--overwrite"])
    monkeypatch.setattr(ckpt.RunCheckpoint, "save", save)
    assert ckpt.checkpoint_path(out).is_file()
    assert main(["reconstruct", str(scan), "--out", str(out), *args, "--overwrite",
                 "--restart"]) == 0
    found = json.loads((out / "report.json").read_text())["reconstruction"]["checkpoint"]
    assert found["resumed_at_iteration"] is None and found["found"] == "no checkpoint"
    assert not ckpt.checkpoint_path(out).exists()


def test_a_checkpoint_is_written_into_new_folders_and_a_failed_write_does_not_end_the_run(
        tmp_path):
    from astra_inr.checkpoint import RunCheckpoint

    data, angles = np.ones((1, 4, 6), np.float32), np.linspace(0, np.pi, 4, endpoint=False)
    nested = RunCheckpoint(tmp_path / "new" / "folders" / "rec", data, angles, 2.5, None, {})
    nested.save({"done": 1})                             # the result folder's parents appear later
    assert nested.load() == ({"done": 1}, f"resumed from {nested.path}")
    (tmp_path / "file").write_text("not a folder")
    blocked = RunCheckpoint(tmp_path / "file" / "rec", data, angles, 2.5, None, {})
    with pytest.warns(RuntimeWarning, match="could not write the checkpoint"):
        blocked.save({"done": 1})
    assert blocked.save_failure and not blocked.path.exists()
    other = RunCheckpoint(tmp_path / "new" / "folders" / "rec", data, angles, 2.5, None,
                          {"seed": 1})
    assert other.load()[0] is None                      # other options: not this run's state
