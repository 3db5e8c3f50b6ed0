"""Preprocessing: flat/dark guards, -log, dead pixels, stripes, centre, binning, geometry, pipeline."""

from __future__ import annotations

from pathlib import Path

import astra
import h5py
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from astra_inr.io import open_scan
from astra_inr.preprocess import (
    PreprocessOptions,
    bin_sinograms,
    center_sinogram,
    find_center,
    find_dead_pixels,
    flat_dark_correct,
    minus_log,
    normalise_by_columns,
    parallel_geometry,
    preprocess,
    remove_stripes,
    remove_stripes_sorting,
)
from astra_inr.preprocess.geometry import field_of_view, is_half_acquisition, weight_half_acquisition

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOOTH = DATA / "aps_tooth_dxchange.h5"
NEUTRON = DATA / "neutron_sinogram_360.tif"
CT = DATA / "ct_small_attenuation.tif"
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "scan_dxchange.h5"
TOOTH_CENTRE_BY_HAND = 296.0


def disks_sinogram(angles: np.ndarray, n_cols: int, center: float,
                   disks=((-20, 10, 25, 0.02), (30, -15, 12, 0.05), (5, 35, 8, 0.08), (-10, -30, 5, 0.1))
                   ) -> np.ndarray:
    """Exact parallel-beam sinogram ``(angles, cols)`` of disks ``(x, y, radius, mu)`` (pixels),
    rotating about an axis that projects onto column ``center``; independent of ASTRA."""
    u = np.arange(n_cols) - center
    out = np.zeros((angles.size, n_cols))
    for x, y, r, mu in disks:
        s = x * np.cos(angles) + y * np.sin(angles)
        out += 2 * mu * np.sqrt(np.clip(r ** 2 - (u[None] - s[:, None]) ** 2, 0, None))
    return out.astype(np.float32)


def blobs_sinogram(angles: np.ndarray, n_cols: int, center: float,
                   blobs=((-20, 10, 20, 1.0), (30, -15, 10, 0.8), (5, 35, 8, 0.6), (-25, -30, 12, 0.5))
                   ) -> np.ndarray:
    """Exact sinogram of Gaussian blobs ``(x, y, sigma, peak line integral)``: smooth everywhere."""
    u = np.arange(n_cols) - center
    out = np.zeros((angles.size, n_cols))
    for x, y, sigma, peak in blobs:
        s = x * np.cos(angles) + y * np.sin(angles)
        out += peak * np.exp(-(u[None] - s[:, None]) ** 2 / (2 * sigma ** 2))
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def tooth_raw() -> dict[str, np.ndarray]:
    with h5py.File(TOOTH, "r") as f:
        return {"data": f["/exchange/data"][()].astype(np.float64),
                "flat": f["/exchange/data_white"][()].mean(0), "dark": f["/exchange/data_dark"][()].mean(0)}


@pytest.fixture(scope="module")
def tooth_auto():
    """The tooth with every default: automatic centre."""
    return preprocess(open_scan(TOOTH))


def write_scan(path: Path, data: np.ndarray, flats: np.ndarray, darks: np.ndarray, theta_deg: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        f["/exchange/data"] = data
        f["/exchange/data_white"] = flats
        f["/exchange/data_dark"] = darks
        f["/exchange/theta"] = theta_deg
    return path


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"binning": 0}, "binning must be a positive integer, got 0"),
    ({"binning": 1.5}, "binning must be a positive integer"),
    ({"angles_step": True}, "angles_step must be a positive integer"),
    ({"center": "middle"}, "center must be 'auto' or a column number"),
    ({"center": float("nan")}, "center must be 'auto' or a finite column number"),
    ({"stripe_removal": "fft"}, r"stripe_removal must be one of \('none', 'sorting', 'all'\), got 'fft'"),
    ({"stripe_size": 20}, "stripe_size must be an odd integer >= 3"),
    ({"rows": (5, 2)}, "rows stop must be an integer > start"),
    ({"rows": "a:b"}, "rows must be integers 'start:stop'"),
    ({"flat_columns": "left"}, "flat_columns must look like 'start:stop'"),
    ({"min_transmission": 0.0}, r"min_transmission must be in \(0, 1\)"),
    ({"center_method": "guess"}, "center_method must be one of"),
    ({"dead_pixels": "drop"}, "dead_pixels must be 'interpolate' or 'keep'"),
])
def test_options_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PreprocessOptions(**kwargs)


def test_options_normalise_and_serialise():
    options = PreprocessOptions(rows="10:", flat_columns="0:30", center=12)
    assert options.rows == (10, None) and options.flat_columns == slice(0, 30) and options.center == 12.0
    assert options.to_dict()["flat_columns"] == "0:30" and options.to_dict()["rows"] == [10, None]
    assert PreprocessOptions(rows=slice(2, 4)).rows == (2, 4)


def test_options_checked_against_the_scan():
    scan = open_scan(TOOTH)
    with pytest.raises(ValueError, match="rows 0:9 outside aps_tooth_dxchange.h5's 2 detector rows"):
        preprocess(scan, PreprocessOptions(rows=(0, 9)))
    with pytest.raises(ValueError, match="binning 4 needs at least 4 detector rows"):
        preprocess(scan, PreprocessOptions(binning=4))
    with pytest.raises(ValueError, match="rotation centre 700.0 outside the detector's columns 0..639"):
        preprocess(scan, PreprocessOptions(center=700))
    neutron = open_scan(NEUTRON, angles="0:360:459:endpoint")
    with pytest.raises(ValueError, match="raw counts but no flat fields: give flat_columns"):
        preprocess(neutron)


# ---------------------------------------------------------------------------
# Flat/dark, -log, dead pixels
# ---------------------------------------------------------------------------

def test_flat_dark_guards_and_counts():
    dark = np.full((1, 4), 100.0, np.float32)
    flat = np.array([[1100.0, 1100.0, 100.0, 1100.0]], np.float32)       # column 2: flat == dark
    proj = np.array([[[600.0, 50.0, 500.0, 1100.0]],                     # column 1: below dark
                     [[350.0, 100.0, 500.0, 100.0]]], np.float32)         # (angles=2, rows=1, cols=4)
    transmission, bad, counts = flat_dark_correct(proj.copy(), flat, dark)
    assert counts == {"denominator_nonpositive_pixels": 1}
    np.testing.assert_array_equal(bad, [[False, False, True, False]])
    np.testing.assert_allclose(transmission[:, 0, [0, 3]], [[0.5, 1.0], [0.25, 0.0]])
    dead = find_dead_pixels(transmission, bad, 1e-3)
    np.testing.assert_array_equal(dead, [[False, True, True, False]])   # column 1 sees no beam at any angle
    line_integrals, counts = minus_log(transmission.copy(), 1e-3)
    assert counts == {"transmission_nonpositive": 3, "transmission_clipped": 3}
    np.testing.assert_allclose(line_integrals[:, 0, 0], [np.log(2), np.log(4)], rtol=1e-6)
    assert np.all(np.isfinite(line_integrals)) and line_integrals.max() == pytest.approx(-np.log(1e-3))


def test_normalise_by_open_beam_columns():
    values = np.ones((3, 2, 10), np.float32) * np.array([2.0, 4.0, 8.0], np.float32)[:, None, None]
    values[..., 5:] *= 0.5
    out, counts = normalise_by_columns(values, slice(0, 3))
    assert counts == {"open_beam_nonpositive": 0}
    np.testing.assert_allclose(out[..., :5], 1.0)
    np.testing.assert_allclose(out[..., 5:], 0.5)


def test_preprocess_is_minus_log_of_flat_dark_corrected_tooth(tooth_raw):
    sino = preprocess(open_scan(TOOTH), PreprocessOptions(center=296.0))
    expected = -np.log((tooth_raw["data"] - tooth_raw["dark"]) / (tooth_raw["flat"] - tooth_raw["dark"]))
    assert sino.data.shape == (2, 181, 640) and sino.data.dtype == np.float32
    np.testing.assert_allclose(sino.data, expected.transpose(1, 0, 2), rtol=1e-4, atol=1e-5)
    assert sino.report["transmission_clipped"] == 0 and sino.report["dead_pixels"] == 0


def test_dead_pixels_are_counted_and_interpolated(tmp_path):
    angles = np.deg2rad(np.linspace(0, 180, 60, endpoint=False))
    truth = np.stack([blobs_sinogram(angles, 64, 31.5, ((0, 5, 8, 1.0), (-6, -4, 5, 0.7)))] * 2)
    flat = np.full((2, 64), 1000.0)
    counts = (1000.0 * np.exp(-truth)).transpose(1, 0, 2) + 10.0         # (angles, rows, cols)
    counts[:, 0, 20] = 10.0                                                # dead pixel: stuck at dark
    flats = np.stack([flat + 10.0] * 3)
    flats[:, 1, 40] = 10.0                                                 # flat == dark: no gain information
    counts[5, 1, 50] = 0.0                                                 # one sample with no counts
    path = write_scan(tmp_path / "dead.h5", counts, flats, np.full((2, 2, 64), 10.0), np.rad2deg(angles))
    sino = preprocess(open_scan(path), PreprocessOptions(center=31.5))
    report = sino.report
    assert report["dead_pixels"] == 2 and report["dead_columns"] == [20, 40]
    assert report["denominator_nonpositive_pixels"] == 1
    assert report["transmission_nonpositive"] == 60 + 1 and report["interpolated_samples"] == 1
    # Interpolated from the neighbours: close to the truth, far from the clipped -log(1e-3) = 6.9.
    np.testing.assert_allclose(sino.data[0, :, 20], truth[0, :, 20], atol=0.02)
    np.testing.assert_allclose(sino.data[1, :, 40], truth[1, :, 40], atol=0.02)
    assert abs(sino.data[1, 5, 50] - truth[1, 5, 50]) < 0.02
    kept = preprocess(open_scan(path), PreprocessOptions(center=31.5, dead_pixels="keep"))
    assert kept.data[0, :, 20].min() == pytest.approx(-np.log(1e-3), rel=1e-5)
    np.testing.assert_array_equal(kept.data[1, :, 40], 0.0)            # no flat information: transmission 1


# ---------------------------------------------------------------------------
# Stripe removal
# ---------------------------------------------------------------------------

def _ring(fixed: np.ndarray, clean: np.ndarray, cols) -> float:
    """Ring amplitude: the mean error of the given columns over all angles."""
    return float(np.abs((fixed - clean)[:, cols].mean(axis=0)).max())


def test_sorting_removes_a_stripe_and_keeps_a_clean_sinogram():
    angles = np.deg2rad(np.linspace(0, 180, 180, endpoint=False))
    clean = blobs_sinogram(angles, 160, 82.0)
    for col in (20, 57, 100):                                             # air, edge, inside the sample
        striped = clean.copy()
        striped[:, col] += 0.3                                             # a column offset: a ring
        fixed = remove_stripes_sorting(striped, size=21)
        assert _ring(fixed, clean, [col]) < 0.3 / 15
    unchanged = remove_stripes_sorting(clean, size=21)
    assert np.linalg.norm(unchanged - clean) / np.linalg.norm(clean) < 0.03
    assert _ring(unchanged, clean, slice(None)) < 0.03                   # and it adds no rings
    # The same through remove_stripes(), on (rows, angles, cols), with a report that names the method.
    out, report = remove_stripes(np.stack([striped, striped]), "sorting")
    np.testing.assert_array_equal(out[1], fixed)
    assert report["algorithms"] == [3] and "Vo" in report["reference"]


def test_all_stripe_methods_handle_large_and_dead_stripes():
    angles = np.deg2rad(np.linspace(0, 180, 180, endpoint=False))
    clean = blobs_sinogram(angles, 160, 82.0) + np.random.default_rng(0).normal(0, 0.01, (180, 160))
    clean = clean.astype(np.float32)
    striped = clean.copy()
    striped[:, 57:61] += 0.3                                              # a wide stripe
    striped[:, 30] = striped[:, 30].mean()                               # an unresponsive column
    fixed, report = remove_stripes(striped, "all")
    assert report["algorithms"] == [6, 5, 3] and report["large_stripe_rows_skipped"] == 0
    assert report["large_stripe_columns"] >= 4 and report["dead_stripe_columns"] >= 1
    assert _ring(fixed, clean, slice(57, 61)) < 0.3 / 10
    dead_before = np.abs(striped[:, 30] - clean[:, 30]).mean()
    assert np.abs(fixed[:, 30] - clean[:, 30]).mean() < dead_before / 5
    unchanged, report = remove_stripes(clean, "all")
    assert report["large_stripe_columns"] == 0 and report["dead_stripe_columns"] == 0
    assert np.linalg.norm(unchanged - clean) / np.linalg.norm(clean) < 0.03


# ---------------------------------------------------------------------------
# Rotation centre
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("center", [70.3, 95.55])
def test_centre_of_synthetic_off_centre_sinograms(center):
    a180 = np.deg2rad(np.linspace(0, 180, 150, endpoint=False))
    a360 = np.deg2rad(np.linspace(0, 360, 300, endpoint=False))
    found, method, _ = find_center(disks_sinogram(a180, 160, center), a180)
    assert method == "vo" and abs(found - center) < 0.5
    found, method, _ = find_center(disks_sinogram(a360, 160, center), a360)
    assert method == "pairs" and abs(found - center) < 0.5
    noisy = disks_sinogram(a180, 160, center) + np.random.default_rng(1).normal(0, 0.02, (150, 160))
    assert abs(find_center(noisy, a180)[0] - center) < 0.5
    with pytest.raises(ValueError, match="needs at least 180 degrees"):
        find_center(disks_sinogram(a180[:100], 160, center), a180[:100])


@pytest.mark.parametrize("center, n_cols", [(6.2, 80), (10.5, 90), (83.4, 90)])
def test_centre_of_half_acquisition_scans(center, n_cols):
    # The disks reach 60 columns from the axis: an 80 to 90 column detector sees them only
    # over a full turn with the axis near one edge, sharing 2 c + 1 columns with the opposite
    # view.  (The plain cross-correlation found 23.2, 25.0 and 66.0: it grows with the overlap.)
    a360 = np.deg2rad(np.linspace(0, 360, 400, endpoint=False))
    disks = ((-20, 10, 25, 0.02), (30, -15, 12, 0.05), (5, 35, 8, 0.08), (-40, -30, 5, 0.1))
    sino = disks_sinogram(a360, n_cols, center, disks=disks)
    sino += np.random.default_rng(3).normal(0, 0.01 * sino.max(), sino.shape).astype(np.float32)
    found, method, _ = find_center(sino, a360)
    assert method == "pairs" and abs(found - center) < 0.1


def test_tooth_centre_is_found(tooth_auto):
    report = tooth_auto.report
    assert report["rotation_center_method"] == "vo"
    assert abs(report["rotation_center"] - TOOTH_CENTRE_BY_HAND) <= 2.0
    assert set(report["rotation_center_rows"]) == {"0", "1"}
    assert tooth_auto.center == pytest.approx(report["rotation_center"], abs=1e-3)


def test_sample_data_centre_is_the_simulated_one():
    sino = preprocess(open_scan(SAMPLE))                  # simulated with the axis at column 86.0
    assert abs(sino.report["rotation_center"] - 86.0) < 0.5
    assert sino.report["dead_columns"] == [41]            # the simulated dead column
    assert sino.pixel_size == pytest.approx(0.05)


def test_neutron_360_with_edge_normalisation():
    raw = tifffile.imread(NEUTRON).astype(np.float64)
    sino = preprocess(open_scan(NEUTRON, angles="0:360:459:endpoint"), PreprocessOptions(flat_columns="0:30"))
    report = sino.report
    assert report["flat_field"] == "open-beam columns" and report["flat_columns"] == "0:30"
    assert report["n_angles"] == 459 and report["angle_range_deg"] == [0.0, 360.0]
    good = raw > 0
    expected = -np.log(np.where(good, raw, 1) / raw[:, :30].mean(axis=1, keepdims=True))
    np.testing.assert_allclose(sino.data[0][good], expected[good], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.exp(-sino.data[0, :, :30]).mean(axis=1), 1.0, rtol=1e-5)  # open beam
    assert report["transmission_nonpositive"] == np.count_nonzero(~good) > 0
    assert report["interpolated_samples"] == np.count_nonzero(~good)
    assert sino.data[0][~good].max() < 3.0                                 # interpolated, not clipped to 6.9
    # 360 degrees: all angles kept, centre from opposite pairs, agreeing with Vo's method on half.
    assert report["rotation_center_method"] == "pairs"
    vo, _, _ = find_center(sino.data, sino.angles, "vo")
    assert abs(report["rotation_center"] - vo) < 1.0
    assert 240 < report["rotation_center"] < 250


# ---------------------------------------------------------------------------
# Binning, rows, angles, blocks
# ---------------------------------------------------------------------------

def test_binning_rows_and_angles_step():
    scan = open_scan(SAMPLE)
    full = preprocess(scan, PreprocessOptions(center=86.0))
    binned = preprocess(scan, PreprocessOptions(center=86.0, binning=2))
    assert binned.data.shape == (2, 120, 80) and binned.pixel_size == pytest.approx(0.1)
    np.testing.assert_allclose(binned.data, bin_sinograms(full.data, 2), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(binned.data[0, :, 3], full.data[0:2, :, 6:8].mean(axis=(0, 2)), rtol=1e-5)
    assert binned.center == pytest.approx((86.0 - 0.5) / 2)               # bin j covers file pixels 2j, 2j+1
    assert binned.report["rotation_center"] == 86.0                        # reported in file pixels
    rows = preprocess(scan, PreprocessOptions(center=86.0, rows=(1, 3)))
    np.testing.assert_array_equal(rows.data, full.data[1:3])
    assert rows.report["rows"] == [1, 3]
    odd = preprocess(scan, PreprocessOptions(center=86.0, rows=(1, 4), binning=2))
    assert odd.report["rows"] == [1, 3] and odd.data.shape == (1, 120, 80)   # a leftover row is dropped
    step = preprocess(scan, PreprocessOptions(center=86.0, angles_step=4))
    np.testing.assert_array_equal(step.data, full.data[:, ::4])
    np.testing.assert_array_equal(step.angles, scan.angles[::4])


def test_row_blocks_give_the_same_result_and_report_progress(tmp_path):
    scan = open_scan(SAMPLE)
    calls = []
    one_block = preprocess(scan, PreprocessOptions(center=86.0, stripe_removal="sorting"))
    by_rows = preprocess(scan, PreprocessOptions(center=86.0, stripe_removal="sorting", block_rows=1),
                         progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(by_rows.data, one_block.data)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)] and by_rows.report["blocks"] == 4
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=(4, 120, 160))
    written = preprocess(scan, PreprocessOptions(center=86.0, stripe_removal="sorting", block_rows=3), out=out)
    assert written.data is out
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), one_block.data)


def test_value_kinds_of_single_sinograms_agree(tmp_path, tooth_raw):
    counts = tooth_raw["data"][:, 0].astype(np.float32)
    transmission = ((tooth_raw["data"][:, 0] - tooth_raw["dark"][0]) /
                    (tooth_raw["flat"][0] - tooth_raw["dark"][0])).astype(np.float32)
    np.save(tmp_path / "counts.npy", counts)
    np.save(tmp_path / "t.npy", transmission)
    np.save(tmp_path / "li.npy", -np.log(transmission))
    options = PreprocessOptions(center=296.0)
    reference = preprocess(open_scan(TOOTH), PreprocessOptions(center=296.0, rows=(0, 1))).data
    spec = "0:180:181"
    from_counts = preprocess(open_scan(tmp_path / "counts.npy", angles=spec, values="counts",
                                       flat=tooth_raw["flat"][0], dark=tooth_raw["dark"][0]), options)
    from_t = preprocess(open_scan(tmp_path / "t.npy", angles=spec, values="transmission"), options)
    from_li = preprocess(open_scan(tmp_path / "li.npy", angles=spec, values="line_integrals"), options)
    for result in (from_counts, from_t, from_li):
        assert result.data.shape == (1, 181, 640)
        np.testing.assert_allclose(result.data, reference, rtol=1e-4, atol=1e-5)
    assert from_li.report["flat_field"] == "none"


# ---------------------------------------------------------------------------
# Geometry: centring shift and parallel_vec, checked with ASTRA 2D CPU projectors
# ---------------------------------------------------------------------------

def _forward(image: np.ndarray, proj_geom: dict) -> np.ndarray:
    vol_geom = astra.create_vol_geom(*image.shape)
    projector = astra.create_projector("linear", proj_geom, vol_geom)
    sino_id, sino = astra.create_sino(image, projector)
    astra.data2d.delete(sino_id)
    astra.projector.delete(projector)
    return sino


def test_parallel_vec_puts_the_axis_on_the_given_column():
    angles = np.deg2rad(np.linspace(0, 180, 30, endpoint=False))
    point = np.zeros((64, 64), np.float32)
    point[31:33, 31:33] = 1.0                                              # around the origin (the axis)
    sino = _forward(point, parallel_geometry(angles, 64, None, 40.0))
    centroid = (sino * np.arange(64)).sum(1) / sino.sum(1)
    np.testing.assert_allclose(centroid, 40.0, atol=1e-3)
    plain = parallel_geometry(angles, 64, 0.5, 31.5)
    assert plain["type"] == "parallel" and plain["DetectorWidth"] == 0.5
    vec = parallel_geometry(angles, 64, 0.5, 40.0)
    assert vec["type"] == "parallel_vec"
    np.testing.assert_allclose(np.linalg.norm(vec["Vectors"][:, 4:], axis=1), 0.5)


@pytest.mark.parametrize("center, tolerance", [(86.5, 1e-5), (70.25, 5e-3)])
def test_centring_shift_agrees_with_parallel_vec(center, tolerance):
    image = tifffile.imread(CT).astype(np.float32)
    yy, xx = np.mgrid[-63.5:64, -63.5:64]
    image *= (xx ** 2 + yy ** 2 < 50 ** 2)                                 # inside the field of view
    angles = np.deg2rad(np.linspace(0, 180, 90, endpoint=False))
    off_centre = _forward(image, parallel_geometry(angles, 160, None, center))
    centred = center_sinogram(off_centre, center)
    width = 160 + int(np.ceil(abs(2 * center - 159)))
    assert centred.shape == (90, width)
    reference = _forward(image, astra.create_proj_geom("parallel", 1.0, width, angles))
    assert np.linalg.norm(centred - reference) / np.linalg.norm(reference) < tolerance


def test_half_acquisition_is_a_full_turn_with_the_axis_near_an_edge():
    turn = np.deg2rad(np.linspace(0, 360, 400, endpoint=False))
    half_turn = np.deg2rad(np.linspace(0, 180, 200, endpoint=False))
    assert is_half_acquisition(turn, 80, 6.2) and is_half_acquisition(turn, 80, 73.0)
    assert field_of_view(turn, 80, 6.2) == 2 * 73 + 1                     # 72.8 columns rounded up
    assert field_of_view(turn, 80, 73.0) == 2 * 73 + 1
    assert not is_half_acquisition(turn, 80, 39.5) and field_of_view(turn, 80, 39.5) == 80
    assert not is_half_acquisition(half_turn, 80, 6.2) and field_of_view(half_turn, 80, 6.2) == 80
    # A sparse subset of the turn, with no view opposite another, is still the whole turn.
    sparse = np.deg2rad(np.arange(0, 360, 8.0) + 1.0)
    assert is_half_acquisition(sparse, 80, 6.2)
    assert not is_half_acquisition(np.deg2rad(np.arange(0, 250, 8.0)), 80, 6.2)


def test_weighted_half_acquisition_gives_the_fbp_of_the_whole_field():
    image = tifffile.imread(CT).astype(np.float32)
    yy, xx = np.mgrid[-63.5:64, -63.5:64]
    image *= (xx ** 2 + yy ** 2 < 60 ** 2)
    angles = np.deg2rad(np.linspace(0, 360, 360, endpoint=False))
    whole = _forward(image, astra.create_proj_geom("parallel", 1.0, 145, angles))   # axis at 72
    half = whole[:, 65:137]                                                # axis at column 7
    weighted = weight_half_acquisition(half, 7.0)
    assert weighted.shape == (360, 129)                                    # columns -64..64
    # Each line counts once: its two measurements' weights add up to 2.
    ratio = weighted / np.where(whole[:, 8:137] > 0, whole[:, 8:137], np.inf)
    inside = (whole[:, 8:137] > 0.1) & (whole[:, 8:137][:, ::-1] > 0.1)
    np.testing.assert_allclose((ratio + ratio[:, ::-1])[inside], 2.0, rtol=1e-5)
    # FBP over the turn: as if the detector had spanned the whole field (the same columns:
    # the ramp filter's constant term depends on the detector's width).
    rec = _fbp(weighted, angles, size=128)
    full = _fbp(whole[:, 8:137], angles, size=128)
    assert np.linalg.norm(rec - full) / np.linalg.norm(full) < 1e-3
    assert np.linalg.norm(rec - image) / np.linalg.norm(image) < 0.25


def _fbp(sinogram: np.ndarray, angles: np.ndarray, size: int = 512) -> np.ndarray:
    proj_geom = astra.create_proj_geom("parallel", 1.0, sinogram.shape[1], angles)
    vol_geom = astra.create_vol_geom(size, size)
    sino_id = astra.data2d.create("-sino", proj_geom, sinogram)
    rec_id = astra.data2d.create("-vol", vol_geom)
    projector = astra.create_projector("linear", proj_geom, vol_geom)
    cfg = astra.astra_dict("FBP")
    cfg.update(ProjectionDataId=sino_id, ReconstructionDataId=rec_id, ProjectorId=projector)
    alg = astra.algorithm.create(cfg)
    astra.algorithm.run(alg)
    image = astra.data2d.get(rec_id)
    astra.algorithm.delete(alg)
    astra.data2d.delete([sino_id, rec_id])
    astra.projector.delete(projector)
    return image


def test_tooth_fbp_is_sharpest_at_the_found_centre(tooth_auto):
    centre = tooth_auto.center
    sharpness = {}
    for offset in (-6.0, 0.0, 6.0):
        image = _fbp(center_sinogram(tooth_auto.data[0], centre + offset), tooth_auto.angles)
        smooth = ndimage.gaussian_filter(image, 2.0)                      # gradients of structure, not noise
        gy, gx = np.gradient(smooth)
        sharpness[offset] = ((gx ** 2 + gy ** 2).sum(), image.var(), np.abs(image).sum())
    for off in (-6.0, 6.0):
        assert sharpness[0.0][0] > sharpness[off][0]          # gradient energy
        assert sharpness[0.0][1] > sharpness[off][1]          # variance
        assert sharpness[0.0][2] < sharpness[off][2] * 0.99   # misalignment smears mass: larger L1
    # The Sinograms helpers give the same geometry and centring as the functions.
    assert tooth_auto.geometry()["type"] == "parallel_vec"
    np.testing.assert_array_equal(tooth_auto.centered()[0], center_sinogram(tooth_auto.data[0], centre))


def test_a_single_sinogram_is_binned_along_the_detector_only(tmp_path):
    from astra_inr.io import open_scan
    counts = np.full((30, 40), 1000, dtype=np.uint16)
    counts[:, 10:30] = 500                          # an absorber in the middle columns
    path = tmp_path / "sino.npy"
    np.save(path, counts)
    scan = open_scan(path, angles="0:180:30", values="counts")
    sino = preprocess(scan, PreprocessOptions(binning=2, flat_columns="0:4", center=19.5))
    assert sino.data.shape == (1, 30, 20)
    assert sino.report["row_binning"] == 1 and sino.report["binning"] == 2
    np.testing.assert_allclose(sino.data[0, :, 5:15], np.log(2), rtol=1e-5)
