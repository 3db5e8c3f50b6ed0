#!/usr/bin/env python
"""Does the lowest path norm at matched data fit pick a good BW-ReLU scale c?

For one realistic case -- the real CT slice in ../shared/data/ct_small_attenuation.tif
(128 x 128, 1/mm), simulated with a 'strip' projector on a 2x finer grid, N
parallel angles and Gaussian noise, reconstructed with the 'linear' projector
(no inverse crime) -- train one INR per candidate c exactly as Scale='auto'
does (same seed, same budget) and print, per c: the iteration at which the
data residual first reached the common target, the path norm there, the PSNR
there and at the end of the budget, and which c Scale='auto' chooses.

    python scripts/scale_study.py [--angles 60] [--noise 0.01] [--iterations 300]
                                  [--width 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import astra
import numpy as np
import tifffile
import torch

from astra_inr import AstraOperator, INRConfig, INRTrainer, volume_grid
from astra_inr.metrics import psnr, ssim

ROOT = Path(__file__).resolve().parents[1]


def simulate(image: np.ndarray, n_angles: int, noise: float, seed: int = 0):
    n = image.shape[0]
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, int(1.5 * n), angles)
    fine = np.kron(image, np.ones((2, 2), np.float32))
    vg_fine = astra.create_vol_geom(2 * n, 2 * n, -n / 2, n / 2, -n / 2, n / 2)
    sim = astra.create_projector("strip", pg, vg_fine)
    sid, sino = astra.create_sino(fine, sim)
    astra.data2d.delete(sid)
    astra.projector.delete(sim)
    rng = np.random.default_rng(seed)
    sino = sino + noise * np.abs(sino).max() * rng.standard_normal(sino.shape)
    return vg, pg, sino.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=ROOT.parent / "shared/data/ct_small_attenuation.tif")
    ap.add_argument("--angles", type=int, default=60)
    ap.add_argument("--noise", type=float, default=0.01, help="Gaussian sigma / max of the sinogram")
    ap.add_argument("--iterations", type=int, default=300, help="budget per candidate")
    ap.add_argument("--width", type=int, default=300)
    ap.add_argument("--candidates", default="1 2 3 5 8")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    truth = tifffile.imread(args.image).astype(np.float32)
    vg, pg, sino = simulate(truth, args.angles, args.noise)
    op = AstraOperator.create(vg, pg, "linear")
    grid = volume_grid(vg)
    base = INRConfig(width=args.width, min_constraint=0.0, scale_candidates=args.candidates,
                     scale_search_iterations=args.iterations, device="cpu")

    # What Scale='auto' chooses (its own search, same seed and budget).
    auto = INRTrainer(base.replace(scale="auto"), op, sino, grid)
    t0 = time.perf_counter()
    selection = auto.choose_scale()
    search_seconds = time.perf_counter() - t0

    rows = []
    for cand in selection["candidates"]:
        c = cand["scale"]
        tr = INRTrainer(base.replace(scale=c), op, sino, grid)
        psnr_at = {}

        def track(p, tr=tr, psnr_at=psnr_at):
            psnr_at[p.total_iterations] = psnr(tr.image().cpu().numpy(), truth)

        tr.run(args.iterations, callback=track, callback_every=10)
        final = tr.image().cpu().numpy()
        hit = cand["iterations"]
        near = min(psnr_at, key=lambda i: abs(i - hit))
        rows.append({"scale": c, "reached_fit": cand["reached_fit"], "iterations_to_target": hit,
                     "path_norm_at_target": cand["path_norm"], "psnr_at_target": psnr_at[near],
                     "psnr_final": psnr(final, truth), "ssim_final": ssim(final, truth),
                     "data_residual_final": tr.data_residual})

    print(f"case: {args.image.name} {truth.shape[0]}x{truth.shape[1]}, {args.angles} angles, noise "
          f"{args.noise:g} of max, width {args.width}, budget {args.iterations} its/candidate, "
          f"target residual {selection['target_residual']:.4f}, search {search_seconds:.0f} s "
          f"({torch.get_num_threads()} threads)")
    print(f"{'c':>5} {'reached':>7} {'it@target':>9} {'pathnorm@target':>15} {'PSNR@target':>11} "
          f"{'PSNR end':>8} {'SSIM end':>8} {'residual end':>12}")
    for r in rows:
        mark = "  <- chosen" if r["scale"] == selection["chosen"] else ""
        print(f"{r['scale']:>5g} {str(r['reached_fit']):>7} {r['iterations_to_target']:>9} "
              f"{r['path_norm_at_target']:>15.1f} {r['psnr_at_target']:>11.2f} {r['psnr_final']:>8.2f} "
              f"{r['ssim_final']:>8.3f} {r['data_residual_final']:>12.4f}{mark}")
    best = max(rows, key=lambda r: r["psnr_final"])
    print(f"best PSNR at the end: c = {best['scale']:g}; Scale='auto' chose c = {selection['chosen']:g}")
    if args.json:
        args.json.write_text(json.dumps({"case": vars(args) | {"image": str(args.image),
                                                                "json": str(args.json)},
                                         "selection": selection, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
