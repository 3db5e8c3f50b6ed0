"""`astra-inr compare`: fair baselines, the four output files, their contents."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy.ndimage import gaussian_filter

from astra_inr.cases import AngleSubset, case_from_phantom, held_out_angles, subset_angles
from astra_inr.cli import main
from astra_inr.compare import _HeldOutResidual, compare_methods
from astra_inr.recon import ReconOptions
from conftest import phantom
from test_readers import TOOTH

FAST_INR = ["--width", "32", "--depth", "2", "--learning-rate", "0.01", "--iterations", "60"]


def _check_outputs(out: Path, methods):
    for name in ("comparison.json", "comparison.csv", "comparison.md", "comparison.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "comparison.json").read_text())
    assert list(data["methods"]) == methods
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["method"] for r in rows] == methods
    table = (out / "comparison.md").read_text()
    for m in methods:
        assert f"| {m} |" in table
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def test_compare_on_a_small_phantom(tmp_path):
    image = tmp_path / "phantom.tif"
    tifffile.imwrite(image, phantom(48))
    out = tmp_path / "cmp"
    rc = main(["compare", "--phantom", str(image), "--angles", "30", "--noise", "0.01",
               "--out", str(out), "--quiet", *FAST_INR])
    assert rc == 0
    data = _check_outputs(out, ["FBP", "SIRT", "CGLS", "INR"])
    methods = data["methods"]
    for m, v in methods.items():
        assert 5 < v["psnr"] < 60 and -1 <= v["ssim"] <= 1 and v["seconds"] >= 0
        assert v["data_residual"] > 0
    assert "best PSNR against the reference" in methods["SIRT"]["iteration_choice"]
    assert methods["FBP"]["iteration_choice"] == "one pass, filter ram-lak"
    (gain,) = methods["INR"]["level_gains"]            # FitLevel's factor, one run
    assert 0.5 < gain < 2
    assert data["case"]["simulation"]["projector"].startswith("strip")
    assert tifffile.imread(out / "reference.tif").shape == (1, 48, 48)
    # The ladder's choice really is the best checkpoint.
    assert methods["SIRT"]["psnr"] == pytest.approx(
        max(float(x.split(": ")[1]) for x in
            methods["SIRT"]["iteration_choice"].split("checkpoint: ")[1].rstrip(")").split(", ")),
        abs=0.01)


def test_compare_on_the_tooth_against_its_full_data_reconstruction(tmp_path):
    out = tmp_path / "tooth"
    rc = main(["compare", str(TOOTH), "--rows", "0:2", "--binning", "2", "--reference", "full",
               "--reference-iterations", "100", "--angles-step", "4", "--algorithms", "FBP,CGLS,INR",
               "--out", str(out), "--quiet", *FAST_INR])
    assert rc == 0
    data = _check_outputs(out, ["FBP", "CGLS", "INR"])
    assert "SIRT on all 181 angles" in data["case"]["reference"]
    assert "100 iterations given" in data["case"]["reference"]
    assert data["case"]["angles"]["count"] == 46
    for v in data["methods"].values():
        assert v["psnr"] is not None and v["psnr"] > 10
        # Scored on the 135 projections the subset left out as well.
        assert 0 < v["heldout_residual"] < 0.5 and 0 < v["heldout_residual_ramp"] < 1
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert all(0 < float(r["heldout_residual_ramp"]) < 1 for r in rows)
    assert "held-out ramp-weighted" in (out / "comparison.md").read_text()


def test_a_subset_without_reference_is_scored_on_the_left_out_projections(tmp_path):
    out = tmp_path / "no_reference"
    rc = main(["compare", str(TOOTH), "--rows", "0:2", "--binning", "2", "--angles-step", "4",
               "--algorithms", "FBP,CGLS", "--out", str(out), "--quiet"])
    assert rc == 0
    data = _check_outputs(out, ["FBP", "CGLS"])
    assert not (out / "reference.tif").exists()
    for v in data["methods"].values():
        assert v["psnr"] is None and 0 < v["heldout_residual"] < 0.5
    # CGLS stopped at the noise level predicts unseen angles better than one FBP pass.
    fbp, cgls = data["methods"]["FBP"], data["methods"]["CGLS"]
    assert cgls["heldout_residual_ramp"] < fbp["heldout_residual_ramp"]


def test_held_out_angles_are_the_complement_of_the_subset():
    sino, _, _ = case_from_phantom(phantom(32), 40)
    subset = AngleSubset(step=3)
    kept, held = subset_angles(sino, subset), held_out_angles(sino, subset)
    assert len(kept.angles) + len(held.angles) == 40
    assert not set(kept.angles.tolist()) & set(held.angles.tolist())
    both = np.concatenate([kept.angles, held.angles])
    order = np.argsort(both)
    np.testing.assert_array_equal(both[order], sino.angles)
    np.testing.assert_array_equal(np.concatenate([kept.data, held.data], axis=1)[:, order],
                                  sino.data)
    assert held_out_angles(sino, AngleSubset(step=1)) is None


def test_held_out_residual_scores_predictions_of_unseen_angles():
    image = phantom(32)
    sino, _, _ = case_from_phantom(image, 40)
    subset = AngleSubset(step=2)
    kept, held = subset_angles(sino, subset), held_out_angles(sino, subset)
    from astra_inr.recon import _geometries
    vg = _geometries(kept, 32)[0]
    scorer = _HeldOutResidual(held, 32, vg, 1, cuda=False)
    try:
        zero = scorer(np.zeros((1, 32, 32), np.float32))
        assert zero == pytest.approx((1.0, 1.0), abs=1e-6)
        truth = scorer(image[None].astype(np.float32))
        # The true image predicts the unseen projections up to the projector mismatch.
        assert truth[0] < 0.05 and truth[1] < 0.1
        blurred = scorer(gaussian_filter(image, 1.5).astype(np.float32)[None])
        # A blurred image predicts them worse, by far more in the ramp-weighted residual.
        assert blurred[0] > 2 * truth[0] and blurred[1] > 2 * truth[1]
        assert blurred[1] - truth[1] > 2 * (blurred[0] - truth[0])
    finally:
        scorer.close()
    results = compare_methods(kept, ["FBP", "SIRT"], ReconOptions(size=32), heldout=held)
    for r in results.values():
        assert truth[1] < r.heldout_residual_ramp < 1 and r.summary()["heldout_residual"] > 0
    for bad in (replace(held, data=np.concatenate([held.data, held.data])),
                replace(held, pixel_size=2 * (held.pixel_size or 1.0))):
        with pytest.raises(ValueError, match="held-out projections .* do not match"):
            compare_methods(kept, ["FBP"], ReconOptions(size=32), heldout=bad)


def test_without_reference_baselines_stop_by_discrepancy(tmp_path):
    sino, ref, case = case_from_phantom(phantom(32), 20, noise=0.02)
    results = compare_methods(sino, ["SIRT", "CGLS"], ReconOptions(size=32))
    for r in results.values():
        assert r.psnr is None and "discrepancy principle" in r.choice
    # Each stopped at the first checkpoint within 1.05 x the noise level or where
    # the residual stagnated (< 1% lower than at the previous checkpoint).
    for r in results.values():
        residuals = list(r.extra["residual_by_checkpoint"].items())
        target = r.extra["discrepancy_target"]
        stops = [int(k) for i, (k, v) in enumerate(residuals)
                 if v <= target or (i and residuals[i - 1][1] - v < 0.01 * residuals[i - 1][1])]
        assert r.iterations == stops[0] == int(residuals[-1][0])


def test_angle_subsets():
    angles = np.deg2rad(np.arange(0, 180, 1.0))
    assert len(AngleSubset(step=4).indices(angles)) == 45
    assert len(AngleSubset(count=30).indices(angles)) == 30
    wedge = AngleSubset(limited_deg=120).indices(angles)
    assert np.rad2deg(angles[wedge]).max() < 120 and len(wedge) == 120
    with pytest.raises(ValueError, match="either"):
        AngleSubset(step=2, count=3)


def test_compare_input_errors(tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path / "x"), "--quiet"]) == 1
    assert "INPUT or --phantom" in capsys.readouterr().err
    assert main(["compare", str(TOOTH), "--reference", "full", "--out", str(tmp_path / "y"),
                 "--quiet"]) == 1
    assert "fewer angles" in capsys.readouterr().err
    assert main(["compare", str(TOOTH), "--algorithms", "FBP,ART", "--out", str(tmp_path / "z"),
                 "--rows", "0:1", "--quiet"]) == 1
    assert "unknown method" in capsys.readouterr().err
