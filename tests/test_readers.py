"""Scan readers: DXchange, NXtomo, TIFF folders, single sinograms, detection and errors.

The NXtomo file and the TIFF folder are built in tmp_path from the real APS
tooth scan, so every reader is checked against the same real numbers.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from astra_inr.io import (
    ScanFormatError,
    detect_format,
    open_scan,
    parse_angles,
)
from astra_inr.preprocess import PreprocessOptions, preprocess

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOOTH = DATA / "aps_tooth_dxchange.h5"
NEUTRON = DATA / "neutron_sinogram_360.tif"
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "scan_dxchange.h5"


@pytest.fixture(scope="module")
def tooth() -> dict[str, np.ndarray]:
    """The tooth scan read with plain h5py: the reference every reader must reproduce."""
    with h5py.File(TOOTH, "r") as f:
        return {"data": f["/exchange/data"][()], "flats": f["/exchange/data_white"][()],
                "darks": f["/exchange/data_dark"][()], "theta": f["/exchange/theta"][()]}


def write_nxtomo(path: Path, tooth: dict[str, np.ndarray], *, entry: str = "scan_0001",
                 radians: bool = False) -> None:
    """NXtomo with frames in a realistic order: darks, flats, projections split by more flats, invalid frames."""
    d, f, k, theta = tooth["data"], tooth["flats"], tooth["darks"], tooth["theta"]
    half = d.shape[0] // 2
    pieces = [(k, 2), (f[:5], 1), (d[:1] * 0, 3), (d[:half], 0), (f[5:], 1), (d[half:], 0), (d[:1] * 0, 3)]
    frames = np.concatenate([p for p, _ in pieces])
    keys = np.concatenate([np.full(len(p), key) for p, key in pieces])
    angles = np.zeros(len(frames))
    angles[keys == 0] = theta
    angles[keys == 3] = 999.0                     # junk: invalid frames must not leak into angles
    with h5py.File(path, "w") as h:
        h.create_group("other")                   # an unrelated group first: the entry is searched for
        g = h.create_group(entry)
        g.attrs["NX_class"] = "NXentry"
        g["definition"] = "NXtomo"
        g["instrument/detector/data"] = frames
        g["instrument/detector/image_key"] = keys.astype(np.int32)
        ang = g.create_dataset("sample/rotation_angle", data=np.deg2rad(angles) if radians else angles)
        ang.attrs["units"] = "rad" if radians else "degree"
        px = g.create_dataset("instrument/detector/x_pixel_size", data=6.5e-6)
        px.attrs["units"] = "m"


def write_tiff_folder(folder: Path, tooth: dict[str, np.ndarray], *, compress_some: bool = True) -> None:
    """One TIFF per frame, numbers *not* zero-padded (so only a natural sort gets the order right)."""
    folder.mkdir()
    for i, image in enumerate(tooth["data"]):
        compression = "zlib" if compress_some and i % 7 == 3 else None   # some files cannot be memory-mapped
        tifffile.imwrite(folder / f"tooth_proj_{i}.tif", image, compression=compression)
    for i, image in enumerate(tooth["flats"]):
        tifffile.imwrite(folder / f"tooth_flat_{i}.tif", image)
    for i, image in enumerate(tooth["darks"]):
        tifffile.imwrite(folder / f"tooth_dark_{i}.tif", image)
    (folder / "angles.txt").write_text("# degrees\n" + "".join(f"{float(a)!r}\n" for a in tooth["theta"]))


# ---------------------------------------------------------------------------
# DXchange
# ---------------------------------------------------------------------------

def test_dxchange_tooth_reads_rows_lazily(tooth):
    scan = open_scan(TOOTH)
    assert scan.format == "dxchange" and scan.values == "counts"
    assert scan.shape == (181, 2, 640) and scan.n_flats == 10 and scan.n_darks == 10
    assert scan.angles.dtype == np.float64
    np.testing.assert_allclose(scan.angles, np.deg2rad(tooth["theta"]), rtol=0, atol=1e-15)
    assert scan.pixel_size is None
    row1 = scan.read_projections(rows=slice(1, 2))
    assert row1.dtype == np.float32 and row1.shape == (181, 1, 640)
    np.testing.assert_array_equal(row1, tooth["data"][:, 1:2])
    np.testing.assert_array_equal(scan.read_projections((0, 2), angles=slice(None, None, 4)),
                                  tooth["data"][::4])
    np.testing.assert_array_equal(scan.read_flats(slice(0, 1)), tooth["flats"][:, :1])
    np.testing.assert_array_equal(scan.read_darks(), tooth["darks"])
    with pytest.raises(ValueError, match="outside the detector's 2 rows"):
        scan.read_projections(rows=slice(1, 5))


def test_dxchange_keeps_no_file_open_and_pickles(tmp_path):
    copy = tmp_path / "tooth.h5"
    copy.write_bytes(TOOTH.read_bytes())
    scan = open_scan(copy)
    clone = pickle.loads(pickle.dumps(scan))            # what a Dask worker receives
    np.testing.assert_array_equal(clone.read_projections((0, 1)), scan.read_projections((0, 1)))
    assert clone.metadata == scan.metadata
    with scan:
        scan.read_flats()
    # No handle is left open: HDF5 refuses a writable open of a file this process has open.
    with h5py.File(copy, "a") as f:
        assert f["/exchange/data"].shape == (181, 2, 640)


def test_dxchange_pixel_size_units(tmp_path):
    assert open_scan(SAMPLE).pixel_size == pytest.approx(0.05)          # stored in mm
    for value, units, expected in [(6.5, "um", 0.0065), (6.5e-6, "m", 0.0065), (0.1, None, None)]:
        path = tmp_path / f"px_{units}.h5"
        with h5py.File(path, "w") as f:
            f["/exchange/data"] = np.ones((3, 2, 4), np.uint16)
            f["/exchange/theta"] = [0.0, 60.0, 120.0]
            ds = f.create_dataset("/measurement/instrument/detector/pixel_size_x", data=value)
            if units:
                ds.attrs["units"] = units
        scan = open_scan(path)
        assert scan.pixel_size == (None if expected is None else pytest.approx(expected))
        if expected is None:
            assert "ignored" in scan.metadata["pixel_size_note"]
    assert open_scan(tmp_path / "px_None.h5", pixel_size=0.02).pixel_size == 0.02


def test_dxchange_inconsistent_shapes_are_errors(tmp_path):
    path = tmp_path / "bad_flats.h5"
    with h5py.File(path, "w") as f:
        f["/exchange/data"] = np.ones((3, 2, 8), np.uint16)
        f["/exchange/data_white"] = np.ones((2, 2, 6), np.uint16)
        f["/exchange/theta"] = [0.0, 60.0, 120.0]
    with pytest.raises(ScanFormatError, match=r"bad_flats.h5: /exchange/data_white frames are 2x6 pixels "
                                              r"but the projections are 2x8"):
        open_scan(path)
    path = tmp_path / "bad_theta.h5"
    with h5py.File(path, "w") as f:
        f["/exchange/data"] = np.ones((3, 2, 8), np.uint16)
        f["/exchange/theta"] = [0.0, 60.0]
    with pytest.raises(ScanFormatError, match="has 2 angles but /exchange/data has 3 projections"):
        open_scan(path)


# ---------------------------------------------------------------------------
# NXtomo and TIFF folder, built from the tooth
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("radians", [False, True])
def test_nxtomo_reads_back_the_tooth(tmp_path, tooth, radians):
    path = tmp_path / "tooth.nxs"
    write_nxtomo(path, tooth, radians=radians)
    scan = open_scan(path)
    assert scan.format == "nxtomo" and scan.metadata["entry"] == "/scan_0001"
    assert scan.shape == (181, 2, 640) and scan.n_flats == 10 and scan.n_darks == 10
    assert scan.metadata["n_invalid"] == 2
    np.testing.assert_allclose(scan.angles, np.deg2rad(tooth["theta"]), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(scan.read_projections(), tooth["data"])
    np.testing.assert_array_equal(scan.read_projections((1, 2), slice(3, None, 5)), tooth["data"][3::5, 1:2])
    np.testing.assert_array_equal(scan.read_flats(), tooth["flats"])
    np.testing.assert_array_equal(scan.read_darks(), tooth["darks"])
    assert scan.pixel_size == pytest.approx(0.0065)


def test_tiff_folder_reads_back_the_tooth(tmp_path, tooth):
    folder = tmp_path / "tooth_tiffs"
    write_tiff_folder(folder, tooth)
    scan = open_scan(folder)
    assert scan.format == "tiff_folder" and scan.shape == (181, 2, 640)
    assert scan.metadata["first_projection"] == "tooth_proj_0.tif"
    assert scan.metadata["last_projection"] == "tooth_proj_180.tif"       # natural, not lexical, order
    np.testing.assert_array_equal(scan.angles, np.deg2rad(tooth["theta"]))
    np.testing.assert_array_equal(scan.read_projections(), tooth["data"])
    np.testing.assert_array_equal(scan.read_projections((1, 2), slice(None, None, 3)), tooth["data"][::3, 1:2])
    np.testing.assert_array_equal(scan.read_flats(), tooth["flats"])
    np.testing.assert_array_equal(scan.read_darks((0, 1)), tooth["darks"][:, :1])
    # An explicit angle spec overrides angles.txt: start:stop:count, stop excluded.
    spec = open_scan(folder, angles="0:180:181")
    np.testing.assert_allclose(spec.angles, np.deg2rad(np.linspace(0, 180, 181, endpoint=False)))


def test_all_layouts_give_the_same_preprocessed_sinogram(tmp_path, tooth):
    write_nxtomo(tmp_path / "tooth.nxs", tooth)
    write_tiff_folder(tmp_path / "tiffs", tooth)
    options = PreprocessOptions(center=296.0)
    reference = preprocess(open_scan(TOOTH), options)
    for path in (tmp_path / "tooth.nxs", tmp_path / "tiffs"):
        other = preprocess(open_scan(path), options)
        np.testing.assert_array_equal(other.data, reference.data)
        np.testing.assert_allclose(other.angles, reference.angles, rtol=0, atol=1e-12)


def test_tiff_folder_patterns(tmp_path, tooth):
    folder = tmp_path / "custom"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"img{i}.tif", tooth["data"][i])
        tifffile.imwrite(folder / f"ob{i}.tif", tooth["flats"][i])
    scan = open_scan(folder, proj_pattern="img*", flat_pattern="ob*", angles=[0.0, 60.0, 120.0])
    assert scan.shape == (3, 2, 640) and scan.n_flats == 3 and scan.n_darks == 0
    assert scan.read_darks() is None
    np.testing.assert_array_equal(scan.read_flats(), tooth["flats"][:3])
    with pytest.raises(ScanFormatError, match="matches both"):
        open_scan(folder, proj_pattern="*", flat_pattern="ob*", angles="0:180:6")


# ---------------------------------------------------------------------------
# Single sinograms
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_single_sinogram_files(tmp_path, tooth, suffix):
    flat = tooth["flats"][:, 0].mean(0)
    dark = tooth["darks"][:, 0].mean(0)
    transmission = ((tooth["data"][:, 0] - dark) / (flat - dark)).astype(np.float32)
    path = tmp_path / f"sino{suffix}"
    if suffix == ".npy":
        np.save(path, transmission)
    else:
        tifffile.imwrite(path, transmission)
    assert detect_format(path) == "sinogram"
    with pytest.raises(ValueError, match="say what they are with values="):
        open_scan(path, angles="0:180:181")                   # float data: no guessing
    with pytest.raises(ValueError, match="give the angles"):
        open_scan(path, values="transmission")
    scan = open_scan(path, angles="0:180:181", values="transmission", pixel_size=0.01)
    assert scan.format == "sinogram" and scan.shape == (181, 1, 640) and scan.pixel_size == 0.01
    np.testing.assert_array_equal(scan.read_projections()[:, 0], transmission)
    assert scan.read_flats() is None
    with pytest.raises(ScanFormatError, match="the angles give 180 angles but the sinogram has 181 rows"):
        open_scan(path, angles="0:180:180", values="transmission")
    # Raw counts with a flat and a dark given as arrays.
    counts = tmp_path / f"counts{suffix}"
    raw = tooth["data"][:, 0].astype(np.uint16)
    np.save(counts, raw) if suffix == ".npy" else tifffile.imwrite(counts, raw)
    scan = open_scan(counts, angles="0:180:181", flat=tooth["flats"][:, 0], dark=dark)
    assert scan.values == "counts" and scan.n_flats == 10 and scan.n_darks == 1
    np.testing.assert_array_equal(scan.read_flats()[:, 0], tooth["flats"][:, 0])
    with pytest.raises(ScanFormatError, match=r"flat has shape \(5,\)"):
        open_scan(counts, angles="0:180:181", flat=np.ones(5))


def test_neutron_sinogram():
    scan = open_scan(NEUTRON, angles="0:360:459:endpoint")
    assert scan.format == "sinogram" and scan.values == "counts"
    assert scan.shape == (459, 1, 503) and scan.metadata["dtype"] == "uint16"
    np.testing.assert_allclose(scan.angles, np.deg2rad(np.linspace(0, 360, 459)))
    raw = tifffile.imread(NEUTRON)
    np.testing.assert_array_equal(scan.read_projections()[:, 0], raw.astype(np.float32))
    assert scan.n_flats == 0 and scan.read_flats() is None


# ---------------------------------------------------------------------------
# Angles, detection, errors
# ---------------------------------------------------------------------------

def test_parse_angles():
    np.testing.assert_allclose(parse_angles("0:180:4"), np.deg2rad([0, 45, 90, 135]))
    np.testing.assert_allclose(parse_angles("0:360:5:endpoint"), np.deg2rad([0, 90, 180, 270, 360]))
    np.testing.assert_allclose(parse_angles([0, 90]), [0, np.pi / 2])
    for bad in ("0:180", "a:b:c", "0:180:0", "10:10:5", "0:180:4:maybe"):
        with pytest.raises(ValueError, match="start:stop:count"):
            parse_angles(bad)


def test_detection_uses_content_not_extension(tmp_path, tooth):
    assert detect_format(TOOTH) == "dxchange"
    disguised = tmp_path / "scan.tif"                       # an HDF5 file with a TIFF name
    disguised.write_bytes(TOOTH.read_bytes())
    assert detect_format(disguised) == "dxchange"
    write_nxtomo(tmp_path / "data.h5", tooth)
    assert detect_format(tmp_path / "data.h5") == "nxtomo"
    np.save(tmp_path / "sino.npy", np.ones((4, 5), np.uint16))
    (tmp_path / "sino.npy").rename(tmp_path / "sino.dat")
    assert detect_format(tmp_path / "sino.dat") == "sinogram"
    assert detect_format(tmp_path) == "tiff_folder"


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        open_scan("/nonexistent/nowhere.h5")


def test_truncated_and_foreign_files(tmp_path):
    truncated = tmp_path / "scan.h5"
    truncated.write_bytes(TOOTH.read_bytes()[: TOOTH.stat().st_size // 2])
    with pytest.raises(ScanFormatError, match="scan.h5"):
        scan = open_scan(truncated)
        scan.read_projections()                                   # if the header survived, reading fails
    junk = tmp_path / "notes.h5"
    junk.write_bytes(b"this is not a scan\n" * 10)
    with pytest.raises(ScanFormatError, match="notes.h5: not an HDF5"):
        open_scan(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["/entry/data"] = np.ones(3)
    with pytest.raises(ScanFormatError, match="other.h5: no /exchange/data and no NXtomo entry"):
        open_scan(other)
    bad_tiff = tmp_path / "bad.tif"
    bad_tiff.write_bytes(b"II*\x00" + b"\x00" * 4)
    with pytest.raises(ScanFormatError, match="bad.tif"):
        open_scan(bad_tiff, angles="0:180:10")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ScanFormatError, match="empty.npy: empty file"):
        open_scan(tmp_path / "empty.npy")


def test_folder_errors(tmp_path, tooth):
    empty = tmp_path / "X"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ScanFormatError, match=r"folder .*X: no TIFF files match '\*proj\*'"):
        open_scan(empty)
    folder = tmp_path / "scan"
    write_tiff_folder(folder, tooth, compress_some=False)
    (folder / "angles.txt").write_text("".join(f"{a}\n" for a in tooth["theta"][:179]))
    with pytest.raises(ScanFormatError, match="angles.txt has 179 angles but 181 projections"):
        open_scan(folder)
    (folder / "angles.txt").unlink()
    with pytest.raises(ScanFormatError, match="no angles.txt"):
        open_scan(folder)
    tifffile.imwrite(folder / "tooth_flat_0.tif", np.ones((2, 600), np.float32))
    with pytest.raises(ScanFormatError, match="flats image tooth_flat_0.tif is 2x600 but the projections are 2x640"):
        open_scan(folder, angles="0:180:181")


def test_nxtomo_errors(tmp_path, tooth):
    path = tmp_path / "bad.nxs"
    with h5py.File(path, "w") as h:
        g = h.create_group("entry")
        g["definition"] = "NXtomo"
        g["instrument/detector/data"] = np.ones((4, 2, 3), np.uint16)
        g["instrument/detector/image_key"] = [0, 0, 1]
    with pytest.raises(ScanFormatError, match="image_key has 3 values but .* has 4 frames"):
        open_scan(path)
    write_nxtomo(path, tooth, entry="a")
    with h5py.File(path, "a") as h:
        h.copy("a", "b")
    with pytest.raises(ScanFormatError, match="several NXtomo entries"):
        open_scan(path)
    assert open_scan(path, entry="b").metadata["entry"] == "/b"


def test_unknown_hint_is_an_error():
    with pytest.raises(ValueError, match=r"hint\(s\) \['proj_pattern'\] do not apply to a dxchange scan"):
        open_scan(TOOTH, proj_pattern="*p*")
    with pytest.raises(ValueError, match="values must be one of"):
        open_scan(TOOTH, values="intensity")
