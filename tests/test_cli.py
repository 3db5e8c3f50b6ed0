"""`astra-inr reconstruct` and `demo`: from files to TIFF stacks with reports."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from astra_inr.cli import main
from astra_inr.io.writers import read_tiff_stack
from astra_inr.results import load
from test_readers import TOOTH, tooth, write_nxtomo, write_tiff_folder  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
FAST_INR = ["--width", "32", "--depth", "2", "--learning-rate", "0.01"]


def test_reconstruct_the_tooth_with_fbp_finds_the_centre(tmp_path):
    out = tmp_path / "tooth"
    rc = main(["reconstruct", str(TOOTH), "--out", str(out), "--algorithm", "FBP", "--rows", "0:1",
               "--quiet"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert abs(report["preprocessing"]["rotation_center"] - 296) <= 2
    vol = read_tiff_stack(out)
    assert vol.shape == (1, 640, 640) and np.isfinite(vol).all()
    assert report["reconstruction"]["algorithm"] == "FBP"
    assert report["provenance"]["versions"]["astra-toolbox"]


def _half_acquisition_scan(tmp_path):
    """A 64 x 64 slice seen over a full turn by 41 columns with the axis at column 4."""
    import astra
    from scipy import ndimage
    image = ndimage.zoom(tifffile.imread(ROOT.parent / "shared" / "data" / "ct_small_attenuation.tif"),
                         0.5, order=1).astype(np.float32)
    yy, xx = np.mgrid[-31.5:32, -31.5:32]
    image *= (xx ** 2 + yy ** 2 < 29 ** 2)
    angles = np.deg2rad(np.arange(0, 360, 2.0))
    projector = astra.create_projector("linear", astra.create_proj_geom("parallel", 1.0, 73, angles),
                                       astra.create_vol_geom(64, 64))
    sino_id, whole = astra.create_sino(image, projector)                  # axis at column 36
    astra.data2d.delete(sino_id)
    astra.projector.delete(projector)
    path = tmp_path / "half_acquisition.tif"
    tifffile.imwrite(path, whole[:, 32:].astype(np.float32))             # axis at column 4
    return path, image


def test_half_acquisition_scan_is_reconstructed_over_its_whole_field(tmp_path):
    from astra_inr.metrics import psnr
    path, image = _half_acquisition_scan(tmp_path)
    common = ["--angles", "0:360:180", "--values", "line_integrals", "--quiet"]
    assert main(["reconstruct", str(path), "--out", str(tmp_path / "fbp"), "--algorithm", "FBP",
                 *common]) == 0
    report = json.loads((tmp_path / "fbp" / "report.json").read_text())
    assert abs(report["preprocessing"]["rotation_center"] - 4.0) < 0.25
    assert report["reconstruction"]["sinogram"].startswith("half acquisition")
    centre = report["preprocessing"]["rotation_center"]
    side = int(np.ceil(40 - centre))                                       # 36 or 37, not 20
    assert read_tiff_stack(tmp_path / "fbp").shape == (1, 2 * side + 1, 2 * side + 1)
    scores = {}
    for algorithm in ("FBP", "SIRT"):
        out = tmp_path / f"{algorithm}64"
        assert main(["reconstruct", str(path), "--out", str(out), "--algorithm", algorithm,
                     "--size", "64", *common]) == 0
        scores[algorithm] = psnr(read_tiff_stack(out)[0], image)
    # Before half acquisitions were recognised: centre 12.88, a 41 x 41 grid, and at 64 x 64
    # FBP 8.67 dB, SIRT 10.80 dB (now 4.00, 29.04 and 33.29).
    assert scores["FBP"] > 22 and scores["SIRT"] > 26, scores


def test_subsets_of_a_half_acquisition_keep_its_whole_field(tmp_path):
    # 120 degrees of the turn is no half acquisition by itself; the grid stays the scan's, so
    # the reference (all angles) and the held-out projections fit the methods' volumes.
    path, _ = _half_acquisition_scan(tmp_path)
    out = tmp_path / "cmp"
    assert main(["compare", str(path), "--out", str(out), "--angles", "0:360:180", "--values",
                 "line_integrals", "--reference", "full", "--limited-angle", "120",
                 "--algorithms", "FBP,SIRT", "--quiet"]) == 0
    result = json.loads((out / "comparison.json").read_text())
    side = int(np.ceil(40 - result["case"]["preprocessing"]["rotation_center"]))
    assert result["case"]["preprocessing"]["field_of_view_columns"] == 2 * side + 1
    for name in ("SIRT", "reference"):
        assert tifffile.imread(out / f"{name}.tif").shape[-2:] == (2 * side + 1, 2 * side + 1)


def test_nxtomo_and_tiff_folder_reconstruct_like_the_dxchange_file(tmp_path, tooth):  # noqa: F811
    nx = tmp_path / "tooth.nxs"
    write_nxtomo(nx, tooth)                     # pixel size 6.5 um: that volume is in 1/mm
    folder = tmp_path / "tooth_tiffs"
    write_tiff_folder(folder, tooth)
    common = ["--algorithm", "SIRT", "--iterations", "20", "--rows", "0:2", "--binning", "2", "--quiet"]
    vols = {}
    for name, src in (("dx", TOOTH), ("nx", nx), ("tif", folder)):
        assert main(["reconstruct", str(src), "--out", str(tmp_path / name), *common]) == 0
        vols[name] = read_tiff_stack(tmp_path / name)
    np.testing.assert_allclose(vols["tif"], vols["dx"], rtol=1e-5, atol=1e-6)
    # Same image, in 1/mm instead of 1/pixel: scaled by the (binned) pixel size.
    np.testing.assert_allclose(vols["nx"] * (2 * 6.5e-3), vols["dx"], rtol=1e-3, atol=1e-5)
    assert json.loads((tmp_path / "nx" / "report.json").read_text())["units"] == "1/mm"


def test_reconstruct_sample_scan_with_inr_writes_model_and_renders(tmp_path):
    out = tmp_path / "inr"
    rc = main(["reconstruct", str(SAMPLE / "scan_tiff"), "--out", str(out), "--rows", "1:3",
               "--binning", "2", "--iterations", "30", "--stripe-removal", "sorting", "--quiet",
               "--pixel-size", "0.05", *FAST_INR])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["reconstruction"]["inr"]["iterations"] == 30
    assert report["options"]["inr"]["width"] == 32 and report["units"] == "1/mm"
    assert abs(report["preprocessing"]["rotation_center"] - 86.0) <= 1.0
    assert sorted(p.name for p in out.glob("*.tif")) == ["slice_00000.tif"]
    result = load(out)
    vol = result.volume()
    assert vol.shape == (1, 80, 80)
    np.testing.assert_allclose(result.render(), vol, rtol=1e-4, atol=1e-6)
    with tifffile.TiffFile(out / "slice_00000.tif") as tif:   # 0.1 mm pixels after binning
        x = tif.pages[0].tags["XResolution"].value
        assert x[0] / x[1] == pytest.approx(100.0)


def test_existing_result_is_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["reconstruct", str(SAMPLE / "scan_dxchange.h5"), "--out", str(out), "--algorithm", "FBP",
            "--rows", "0:1", "--quiet"]
    assert main(args) == 0
    stamp = (out / "report.json").read_text()
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert (out / "report.json").read_text() == stamp
    assert main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--algorithm", "MLEM"], "algorithm"),
    (["--widht", "3"], "unrecognized arguments"),
    (["--rows", "9:12"], "rows"),
    (["--center", "left"], "center"),
])
def test_bad_options_are_one_clear_line(tmp_path, capsys, argv, message):
    try:
        rc = main(["reconstruct", str(SAMPLE / "scan_dxchange.h5"), "--out", str(tmp_path / "x"),
                   "--quiet", *argv])
    except SystemExit as exc:                     # argparse's own usage errors
        rc = exc.code
    assert rc != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_missing_and_corrupt_inputs(tmp_path, capsys):
    assert main(["reconstruct", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "a"), "--quiet"]) == 1
    assert "nope.h5" in capsys.readouterr().err
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert main(["reconstruct", str(bad), "--out", str(tmp_path / "b"), "--quiet"]) == 1
    assert "bad.h5" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
