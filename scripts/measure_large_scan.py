#!/usr/bin/env python
"""Measure lazy preprocessing on a DXchange file larger than a typical test: peak memory and time.

Writes a synthetic DXchange scan (default 1500 angles x 384 rows x 1800 columns
uint16, about 2.1 GB, plus 20 flats and 10 darks) into ``--dir``, chunk by
chunk so writing it needs little memory, then runs
:func:`astra_inr.preprocess.preprocess` on it in a fresh child process and
prints that process's peak resident memory (``ru_maxrss``), its wall time and
the file size.  The file is deleted afterwards unless ``--keep`` is given.

The sample is a few cylinders (parallel to the rotation axis) rotating about
a known, off-centre axis, so the automatic centre can be checked too.

Run from the project root::

    python scripts/measure_large_scan.py --dir /tmp --block-rows 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

TRUE_CENTRE_OFFSET = 23.4          # axis right of the detector centre, in columns
# (x, y, radius) as fractions of half the detector width, and the line integral through the centre.
CYLINDERS = ((-0.22, 0.13, 0.33, 1.5), (0.28, -0.09, 0.17, 1.0), (0.0, 0.33, 0.09, 0.8))
FLAT_COUNTS, DARK_COUNTS = 20000.0, 100.0


def line_integrals(angles: np.ndarray, n_cols: int, centre: float) -> np.ndarray:
    """``(angles, cols)`` exact line integrals of the cylinders, all inside the field of view."""
    u = np.arange(n_cols, dtype=np.float64) - centre
    half = n_cols / 2
    out = np.zeros((angles.size, n_cols))
    for x, y, r, peak in CYLINDERS:
        x, y, r = x * half, y * half, r * half
        s = x * np.cos(angles) + y * np.sin(angles)
        out += peak / r * np.sqrt(np.clip(r ** 2 - (u[None] - s[:, None]) ** 2, 0, None))
    return out


def write_scan(path: Path, n_angles: int, n_rows: int, n_cols: int, chunk: int = 50) -> float:
    """Write the DXchange file chunk by chunk; return the true rotation centre (file pixels)."""
    rng = np.random.default_rng(7)
    centre = (n_cols - 1) / 2 + TRUE_CENTRE_OFFSET
    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    row_gain = (1.0 + 0.1 * np.linspace(-1, 1, n_rows))[:, None].astype(np.float32)   # rows differ a little
    beam = (FLAT_COUNTS * (1 - 0.2 * np.linspace(-1, 1, n_cols) ** 2)).astype(np.float32)
    with h5py.File(path, "w") as f:
        # Contiguous layout, as many beamline writers produce: a row block is one strided read.
        data = f.create_dataset("/exchange/data", shape=(n_angles, n_rows, n_cols), dtype=np.uint16)
        for a0 in range(0, n_angles, chunk):
            a1 = min(a0 + chunk, n_angles)
            li = line_integrals(np.deg2rad(theta[a0:a1]), n_cols, centre).astype(np.float32)
            counts = DARK_COUNTS + beam * np.exp(-li[:, None, :] * row_gain[None])
            counts += rng.normal(0.0, 1.0, counts.shape).astype(np.float32) * np.sqrt(counts)
            data[a0:a1] = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
        flats = DARK_COUNTS + beam[None, None] + rng.normal(0, 140, (20, n_rows, n_cols))
        f["/exchange/data_white"] = np.clip(np.rint(flats), 0, 65535).astype(np.uint16)
        darks = DARK_COUNTS + rng.normal(0, 10, (10, n_rows, n_cols))
        f["/exchange/data_dark"] = np.clip(np.rint(darks), 0, 65535).astype(np.uint16)
        f["/exchange/theta"] = theta
        f["/exchange/theta"].attrs["units"] = "degrees"
    return centre


def run_preprocess(path: Path, block_rows: int, binning: int, stripe: str, memmap_dir: Path | None) -> dict:
    """Child-process body: preprocess the file and report peak RSS and time."""
    from astra_inr.io import open_scan
    from astra_inr.preprocess import PreprocessOptions, preprocess

    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # imports (numpy, astra, ...)
    scan = open_scan(path)
    options = PreprocessOptions(block_rows=block_rows, binning=binning, stripe_removal=stripe)
    out = None
    if memmap_dir is not None:
        shape = (scan.n_rows // binning, scan.n_angles, scan.n_cols // binning)
        out = np.lib.format.open_memmap(memmap_dir / "sinograms.npy", mode="w+", dtype=np.float32, shape=shape)
    t0 = time.perf_counter()
    result = preprocess(scan, options, out=out)
    seconds = time.perf_counter() - t0
    block_mb = scan.n_angles * options.block_rows * scan.n_cols * 4 / 2 ** 20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    output_mb = result.data.nbytes / 2 ** 20
    return {
        "wall_s": round(seconds, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "baseline_rss_mb": round(baseline_mb, 1),
        "output_mb": round(output_mb, 1),
        # What processing needed beyond the imports and the output itself (a memory-mapped
        # output's resident pages count in RSS too, though the OS may evict them).
        "overhead_mb": round(peak_mb - baseline_mb - output_mb, 1),
        "raw_block_float32_mb": round(block_mb, 1),
        "output_in": "memmap" if memmap_dir is not None else "memory",
        "rotation_center": result.report["rotation_center"],
        "rotation_center_method": result.report["rotation_center_method"],
        "transmission_clipped": result.report["transmission_clipped"],
        "blocks": result.report["blocks"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where to write the big file")
    parser.add_argument("--angles", type=int, default=1500)
    parser.add_argument("--rows", type=int, default=384)
    parser.add_argument("--cols", type=int, default=1800)
    parser.add_argument("--block-rows", type=int, default=16)
    parser.add_argument("--binning", type=int, default=1)
    parser.add_argument("--stripe", default="none", choices=("none", "sorting", "all"))
    parser.add_argument("--memmap", action="store_true", help="write the output to a .npy memory map in --dir")
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)   # internal: run the measurement
    args = parser.parse_args()

    if args.child is not None:
        memmap_dir = args.child.parent if args.memmap else None
        print(json.dumps(run_preprocess(args.child, args.block_rows, args.binning, args.stripe, memmap_dir)))
        return

    workdir = Path(tempfile.mkdtemp(prefix="astra_inr_large_", dir=args.dir))
    path = workdir / "large_scan_dxchange.h5"
    try:
        t0 = time.perf_counter()
        centre = write_scan(path, args.angles, args.rows, args.cols)
        write_s = time.perf_counter() - t0
        size_gb = path.stat().st_size / 1e9
        print(f"wrote {path}: {args.angles} x {args.rows} x {args.cols} uint16, {size_gb:.2f} GB "
              f"in {write_s:.0f} s; true rotation centre {centre:.2f}", flush=True)
        # A fresh process, so that ru_maxrss measures preprocessing alone (not the writing above).
        command = [sys.executable, __file__, "--child", str(path), "--block-rows", str(args.block_rows),
                   "--binning", str(args.binning), "--stripe", args.stripe] + (["--memmap"] if args.memmap else [])
        done = subprocess.run(command, check=True, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(file_gb=round(size_gb, 2), true_rotation_center=round(centre, 2),
                      cpu_count=os.cpu_count(),
                      machine_memory_gb=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1))
        print(json.dumps(result, indent=2))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            for item in workdir.iterdir():
                item.unlink()
            workdir.rmdir()


if __name__ == "__main__":
    main()
