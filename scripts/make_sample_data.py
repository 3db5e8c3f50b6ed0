#!/usr/bin/env python
"""Write ``sample_data/``: a small simulated parallel-beam scan, as a beamline records it.

What the scan holds, so that every stage of a real pipeline has work to do:

* raw detector counts (uint16) with Poisson noise, 20 flat fields with a
  smooth beam profile and 10 dark fields with an offset;
* 120 projections over 180 degrees, 4 detector rows, 160 columns of
  0.05 mm, the rotation axis 6.5 columns right of the detector centre;
* a dead column, a hot column and a column of lower gain (ring artefacts);
* the phantom: modified Shepp-Logan slices (different per row) in linear
  attenuation (1/mm), simulated on a 2x finer grid and detector than the
  reconstruction uses, so that reconstructing with ASTRA's projectors is
  not an inverse crime.

Layouts written:

* ``scan_dxchange.h5`` -- DXchange: /exchange/data, data_white, data_dark,
  theta (degrees); pixel size and rotation centre as metadata;
* ``scan_tiff/`` -- ``proj_NNNNN.tif``, ``flat_NNNNN.tif``, ``dark_NNNNN.tif``
  and ``angles.txt`` (degrees, one per line);
* ``phantom.tif`` -- the ground truth on the reconstruction grid
  (4 x 128 x 128, 1/mm; slice k belongs to detector row k);
* ``README.md`` -- this description with the numbers.

Run from the project root:  python scripts/make_sample_data.py [--out sample_data]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import astra
import h5py
import numpy as np
import tifffile

N_ANGLES = 120
N_ROWS = 4
N_COLS = 160
PIXEL_MM = 0.05
GRID = 128                  # reconstruction grid (pixels of PIXEL_MM)
AXIS_OFFSET_PX = 6.5        # rotation axis right of the detector centre, in columns
FLAT_COUNTS = 20000.0
DARK_COUNTS = 100.0
MU_MAX = 0.2                # 1/mm, the phantom's brightest value
N_FLATS, N_DARKS = 20, 10
SEED = 20261127


def phantom_slices(fine: int) -> np.ndarray:
    """Modified Shepp-Logan per row, varied so slices differ; shape (rows, fine, fine), 1/mm."""
    vg = astra.create_vol_geom(fine, fine)
    _, base = astra.data2d.shepp_logan(vg)
    slices = []
    yy, xx = np.mgrid[-1:1:fine * 1j, -1:1:fine * 1j]
    for k in range(N_ROWS):
        img = base.copy()
        # A small dense insert that moves with the row: the slices are not copies.
        cx, cy = -0.25 + 0.15 * k, 0.55 - 0.1 * k
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < 0.06 ** 2] = 0.9
        slices.append(img * MU_MAX)
    return np.stack(slices).astype(np.float32)


def simulate(out: Path) -> dict:
    rng = np.random.default_rng(SEED)
    fine = 2 * GRID
    mu_fine = phantom_slices(fine)
    angles_deg = np.linspace(0.0, 180.0, N_ANGLES, endpoint=False)
    angles = np.deg2rad(angles_deg)

    # Fine detector (half-width pixels) wide enough to crop an off-centre window from.
    pad = 32
    fine_cols = 2 * (N_COLS + 2 * pad)
    vg = astra.create_vol_geom(fine, fine, -GRID * PIXEL_MM / 2, GRID * PIXEL_MM / 2,
                               -GRID * PIXEL_MM / 2, GRID * PIXEL_MM / 2)
    pg = astra.create_proj_geom("parallel", PIXEL_MM / 2, fine_cols, angles)
    pid = astra.create_projector("strip", pg, vg)
    line_integrals = []
    for k in range(N_ROWS):
        sid, sino = astra.create_sino(mu_fine[k], pid)
        astra.data2d.delete(sid)
        binned = sino.reshape(N_ANGLES, fine_cols // 2, 2).mean(axis=2)   # (angles, N_COLS + 2 pad)
        line_integrals.append(binned)
    astra.projector.delete(pid)
    line_integrals = np.stack(line_integrals, axis=1)                      # (angles, rows, cols+2pad)

    # The axis projects onto the centre of the padded detector; crop a window
    # whose centre lies AXIS_OFFSET_PX columns left of it (integer shift), and
    # the half column by interpolation.
    shift_int = int(np.floor(AXIS_OFFSET_PX))
    frac = AXIS_OFFSET_PX - shift_int
    start = pad - shift_int
    window = line_integrals[..., start - 1:start + N_COLS]
    cropped = (1 - frac) * window[..., 1:] + frac * window[..., :-1]

    col = np.arange(N_COLS)
    beam = FLAT_COUNTS * (1.0 - 0.25 * ((col - N_COLS / 2) / (N_COLS / 2)) ** 2)
    beam = np.broadcast_to(beam * (1 + 0.03 * np.arange(N_ROWS)[:, None]), (N_ROWS, N_COLS))
    gain = np.ones((N_ROWS, N_COLS))
    gain[:, 97] = 0.85                                                     # a weaker column
    expected = DARK_COUNTS + gain * beam * np.exp(-cropped)
    proj = rng.poisson(expected).astype(np.float64)
    flats = rng.poisson(DARK_COUNTS + gain * beam, size=(N_FLATS, N_ROWS, N_COLS)).astype(np.float64)
    darks = rng.poisson(DARK_COUNTS, size=(N_DARKS, N_ROWS, N_COLS)).astype(np.float64)
    # Detector defects the gain correction cannot fix: they give rings.
    proj[:, :, 41] = DARK_COUNTS                                           # dead column
    proj[:, :, 123] = np.minimum(proj[:, :, 123] * 1.4, 65535)            # hot column
    to_u16 = (lambda a: np.clip(np.rint(a), 0, 65535).astype(np.uint16))
    proj, flats, darks = to_u16(proj), to_u16(flats), to_u16(darks)

    truth = mu_fine.reshape(N_ROWS, GRID, 2, GRID, 2).mean(axis=(2, 4)).astype(np.float32)
    centre = (N_COLS - 1) / 2 + AXIS_OFFSET_PX
    meta = {"pixel_size_mm": PIXEL_MM, "rotation_center_px": centre,
            "angles_deg": "0 to 180 (endpoint excluded)", "n_angles": N_ANGLES,
            "rows": N_ROWS, "cols": N_COLS, "flat_counts": FLAT_COUNTS,
            "dark_counts": DARK_COUNTS, "phantom_units": "1/mm", "seed": SEED}

    out.mkdir(parents=True, exist_ok=True)
    with h5py.File(out / "scan_dxchange.h5", "w") as f:
        f.create_dataset("exchange/data", data=proj)
        f.create_dataset("exchange/data_white", data=flats)
        f.create_dataset("exchange/data_dark", data=darks)
        f.create_dataset("exchange/theta", data=angles_deg)
        f["exchange/theta"].attrs["units"] = "degrees"
        f.create_dataset("measurement/instrument/detector/pixel_size_x", data=PIXEL_MM)
        f.create_dataset("measurement/instrument/detector/pixel_size_y", data=PIXEL_MM)
        f["measurement/instrument/detector/pixel_size_x"].attrs["units"] = "mm"
        f["measurement/instrument/detector/pixel_size_y"].attrs["units"] = "mm"
        f.attrs["simulated_rotation_center_px"] = centre
        f.attrs["description"] = "astra-inr sample scan (simulated); see README.md"

    tiff_dir = out / "scan_tiff"
    tiff_dir.mkdir(exist_ok=True)
    for old in tiff_dir.glob("*.tif"):
        old.unlink()
    for i, p in enumerate(proj):
        tifffile.imwrite(tiff_dir / f"proj_{i:05d}.tif", p)
    for i, p in enumerate(flats):
        tifffile.imwrite(tiff_dir / f"flat_{i:05d}.tif", p)
    for i, p in enumerate(darks):
        tifffile.imwrite(tiff_dir / f"dark_{i:05d}.tif", p)
    (tiff_dir / "angles.txt").write_text("".join(f"{a:.6f}\n" for a in angles_deg))

    tifffile.imwrite(out / "phantom.tif", truth,
                     resolution=(1 / PIXEL_MM, 1 / PIXEL_MM), resolutionunit="MILLIMETER",
                     description=json.dumps({"units": "1/mm", "pixel_size_mm": PIXEL_MM}))
    (out / "README.md").write_text(
        "# sample_data (generated by scripts/make_sample_data.py; do not edit)\n\n"
        + (__doc__ or "").split("Run from")[0].strip() + "\n\n```json\n"
        + json.dumps(meta, indent=2) + "\n```\n")
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "sample_data")
    args = parser.parse_args()
    meta = simulate(args.out)
    print(f"wrote {args.out}: {meta['n_angles']} angles x {meta['rows']} rows x {meta['cols']} columns, "
          f"rotation centre {meta['rotation_center_px']} px")


if __name__ == "__main__":
    main()
