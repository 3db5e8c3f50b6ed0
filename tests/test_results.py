"""Exporting results: TIFF stack, report, model, atomic folders, re-rendering."""

import json
import os

import astra
import numpy as np
import pytest
import tifffile
import torch

import astra_inr
from astra_inr.io.writers import result_folder
from astra_inr.metrics import psnr

FAST = {"Width": 32, "Depth": 2, "LearningRate": 1e-2}


def _trained(prob, its=40):
    _, alg = prob.run("INR", its, FAST)
    return alg


def test_export_2d_writes_one_tiff_equal_to_the_data_object(small_problem, tmp_path):
    alg = _trained(small_problem)
    out = astra_inr.export(alg, tmp_path / "rec", units="mm")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["model.pt", "report.json", "slice_00000.tif"]
    image = tifffile.imread(out / "slice_00000.tif")
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, astra.data2d.get(small_problem.rec_id))
    with tifffile.TiffFile(out / "slice_00000.tif") as tif:
        page = tif.pages[0]
        assert page.tags["ResolutionUnit"].value == 3                  # centimetre
        x_res = page.tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(10.0)              # 1 mm pixels
        desc = json.loads(page.description)
    assert desc["volume"]["shape"] == [32, 32] and desc["units"] == "mm"
    report = json.loads((out / "report.json").read_text())
    for key in ("path_norm", "deep_path_norm", "lipschitz_bound", "provenance", "options"):
        assert key in report
    versions = report["provenance"]["versions"]
    assert versions["torch"] and versions["numpy"] and versions["astra-toolbox"]
    assert report["output"]["files"][-1] == "report.json"


def test_export_3d_writes_one_tiff_per_slice(tmp_path):
    n, slices = 16, 3
    vg = astra.create_vol_geom(n, n, slices)
    pg = astra.create_proj_geom("parallel3d", 1.0, 1.0, slices, 24,
                                np.linspace(0, np.pi, 12, endpoint=False))
    vol = np.zeros((slices, n, n), np.float32)
    vol[:, 4:12, 5:10] = 1.0
    op = astra_inr.AstraOperator.create(vg, pg)
    sid = astra.data3d.create("-sino", pg, op.forward(torch.from_numpy(vol)).numpy())
    rid = astra.data3d.create("-vol", vg, 0)
    cfg = astra.astra_dict("INR")
    cfg.update(ProjectionDataId=sid, ReconstructionDataId=rid, option=FAST)
    alg = astra.algorithm.create(cfg)
    astra.algorithm.run(alg, 20)
    out = astra_inr.export(alg, tmp_path / "vol")
    assert sorted(p.name for p in out.glob("*.tif")) == [f"slice_{k:05d}.tif" for k in range(slices)]
    loaded = astra_inr.load(out)
    np.testing.assert_array_equal(loaded.volume(), astra.data3d.get(rid))
    z = [json.loads(tifffile.TiffFile(out / f"slice_{k:05d}.tif").pages[0].description)["slice_z"]
         for k in range(slices)]
    assert z == pytest.approx([-1.0, 0.0, 1.0])


def test_export_refuses_to_overwrite_unless_asked(small_problem, tmp_path):
    alg = _trained(small_problem, 10)
    out = astra_inr.export(alg, tmp_path / "rec")
    before = (out / "slice_00000.tif").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        astra_inr.export(alg, out)
    astra.algorithm.run(alg, 10)
    astra_inr.export(alg, out, overwrite=True)
    assert (out / "slice_00000.tif").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["rec"]          # no temporary leftovers


def test_a_failed_write_leaves_no_folder(tmp_path):
    target = tmp_path / "half"
    with pytest.raises(RuntimeError):
        with result_folder(target) as tmp:
            (tmp / "slice_00000.tif").write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_overwrite_keeps_the_old_result(tmp_path):
    target = tmp_path / "rec"
    with result_folder(target) as tmp:
        (tmp / "report.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with result_folder(target, overwrite=True) as tmp:
            raise RuntimeError("killed")
    assert (target / "report.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["rec"]


def test_render_2x_averages_back_to_the_1x_image(small_problem, tmp_path):
    # Jitter trains the INR anywhere inside each voxel, so the function between
    # voxel centres is constrained by the data too.
    _, alg = small_problem.run("INR", 60, {**FAST, "Jitter": 1.0})
    out = astra_inr.export(alg, tmp_path / "rec")
    loaded = astra_inr.load(out)
    one = loaded.render()
    np.testing.assert_allclose(one, loaded.volume(), rtol=1e-5, atol=1e-6)
    two = loaded.render(upsample=2)
    assert two.shape == (64, 64)
    pooled = two.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    # Where an edge crosses a voxel its centre value and the mean of its four
    # sub-samples legitimately differ; elsewhere they agree.
    assert np.linalg.norm(pooled - one) / np.linalg.norm(one) < 0.08
    assert pooled.mean() == pytest.approx(one.mean(), rel=0.01)
    assert psnr(pooled, small_problem.image) == pytest.approx(psnr(one, small_problem.image), abs=1.0)
    odd = loaded.render(shape=(20, 50))
    assert odd.shape == (20, 50) and np.isfinite(odd).all()


def test_export_before_any_run_and_of_other_algorithms(small_problem, tmp_path):
    cfg = astra.astra_dict("INR")
    cfg.update(ProjectorId=small_problem.projector_id, ProjectionDataId=small_problem.sino_id,
               ReconstructionDataId=small_problem.rec_id, option=FAST)
    alg = astra.algorithm.create(cfg)
    with pytest.raises(RuntimeError, match="has not run"):
        astra_inr.export(alg, tmp_path / "x")
    _, sirt = small_problem.run("SIRT", 1)
    with pytest.raises(ValueError, match="not an INR algorithm"):
        astra_inr.export(sirt, tmp_path / "y")
    with pytest.raises(FileNotFoundError, match="not a finished result"):
        astra_inr.load(tmp_path)
