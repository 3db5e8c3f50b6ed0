"""Write a comparison: comparison.json, .csv, .md, .png and each method's volume.

The figure shows the middle slice of every method beside the reference in
one grey window, the difference to the reference in one symmetric window,
and a line profile through the slice centre; each panel is labelled with the
method, PSNR/SSIM and time.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tifffile

from .compare import MethodResult
from .io.writers import result_folder, write_json

__all__ = ["write_comparison", "markdown_table"]


def _fmt(x: Any, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _has_heldout(results: Mapping[str, MethodResult]) -> bool:
    return any(r.heldout_residual is not None for r in results.values())


def markdown_table(results: Mapping[str, MethodResult]) -> str:
    """The table of comparison.md: one row per method (held-out columns when scored)."""
    held = _has_heldout(results)
    header = ["method", "PSNR (dB)", "SSIM", "seconds", "iterations", "data residual"]
    header += ["held-out residual", "held-out ramp-weighted"] if held else []
    header.append("iteration choice")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
        choice = r.choice.split(" (PSNR by checkpoint")[0]
        cells = [name, _fmt(r.psnr, ".2f"), _fmt(r.ssim, ".3f"), f"{r.seconds:.2f}",
                 str(r.iterations), f"{r.data_residual:.4f}"]
        if held:
            cells += [_fmt(r.heldout_residual, ".4f"), _fmt(r.heldout_residual_ramp, ".4f")]
        lines.append("| " + " | ".join(cells + [choice]) + " |")
    return "\n".join(lines)


def _figure(path: Path, results: Mapping[str, MethodResult], reference: np.ndarray | None,
            title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def middle(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v)
        return v[v.shape[0] // 2] if v.ndim == 3 else v

    panels = ([("reference", middle(reference), None)] if reference is not None else []) + \
        [(name, middle(r.volume), r) for name, r in results.items()]
    pool = np.concatenate([p[1].ravel() for p in panels])
    if reference is not None:
        lo, hi = float(np.min(reference)), float(np.max(reference))
    else:
        lo, hi = (float(v) for v in np.percentile(pool, [0.5, 99.5]))
    n = len(panels)
    rows = 3 if reference is not None else 2
    fig = plt.figure(figsize=(2.8 * n, 2.9 * rows + 0.4), constrained_layout=True)
    grid = fig.add_gridspec(rows, n)
    row_line = panels[0][1].shape[0] // 2
    for i, (name, img, r) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        label = name if r is None else (
            f"{name} ({r.iterations} it)\n"
            + (f"PSNR {r.psnr:.2f} dB  SSIM {r.ssim:.3f}\n" if r.psnr is not None else "")
            + f"{r.seconds:.1f} s")
        ax.set_title(label, fontsize=9)
        ax.axhline(row_line, color="tab:orange", lw=0.6, ls="--")
        ax.set_axis_off()
    if reference is not None:
        ref = middle(reference)
        diffs = [img - ref for _, img, r in panels if r is not None]
        span = float(np.percentile(np.abs(np.concatenate([d.ravel() for d in diffs])), 99.5)) or 1.0
        for i, (name, img, r) in enumerate(panels):
            ax = fig.add_subplot(grid[1, i])
            ax.set_axis_off()
            if r is None:
                ax.text(0.5, 0.5, f"difference to reference\nwindow +/- {span:.3g}",
                        ha="center", va="center", fontsize=9, transform=ax.transAxes)
                continue
            ax.imshow(img - ref, cmap="RdBu_r", vmin=-span, vmax=span, interpolation="nearest")
            ax.set_title(f"{name} - reference", fontsize=9)
    ax = fig.add_subplot(grid[rows - 1, :])
    for name, img, r in panels:
        style = {"color": "black", "lw": 1.6} if r is None else {"lw": 1.0}
        ax.plot(img[row_line], label=name, **style)
    ax.set_xlabel("column (pixels)")
    ax.set_ylabel("value")
    ax.set_title(f"line profile through row {row_line} (dashed line)", fontsize=9)
    ax.legend(fontsize=8, ncol=min(len(panels), 5))
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_comparison(out_dir: str | os.PathLike, results: Mapping[str, MethodResult],
                     case: dict[str, Any], reference: np.ndarray | None = None,
                     overwrite: bool = False) -> Path:
    """Write the comparison folder (atomically).

    Files: ``comparison.json`` (``{"methods": {name: {psnr, ssim, seconds,
    data_residual, iterations, iteration_choice, [heldout_residual,
    heldout_residual_ramp], ...}}, "case": case}``),
    ``comparison.csv``, ``comparison.md``, ``comparison.png``,
    ``<METHOD>.tif`` (each volume, float32) and ``reference.tif``.
    """
    final = Path(out_dir)
    with result_folder(final, overwrite) as tmp:
        for name, r in results.items():
            tifffile.imwrite(tmp / f"{name}.tif", np.asarray(r.volume, np.float32))
        if reference is not None:
            tifffile.imwrite(tmp / "reference.tif", np.asarray(reference, np.float32))
        buf = io.StringIO()
        writer = csv.writer(buf)
        held = _has_heldout(results)
        writer.writerow(["method", "psnr_db", "ssim", "seconds", "iterations", "data_residual"]
                        + (["heldout_residual", "heldout_residual_ramp"] if held else [])
                        + ["iteration_choice"])
        for name, r in results.items():
            writer.writerow([name, r.psnr, r.ssim, f"{r.seconds:.4f}", r.iterations,
                             f"{r.data_residual:.6f}"]
                            + ([r.heldout_residual, r.heldout_residual_ramp] if held else [])
                            + [r.choice])
        (tmp / "comparison.csv").write_text(buf.getvalue())
        title = case.get("title", "comparison")
        md = [f"# {title}", "", case.get("description", ""), "",
              f"Reference: {case.get('reference', 'none')}", "", markdown_table(results), "",
              "PSNR uses the reference's data range; SSIM is the Gaussian-window SSIM averaged "
              "over slices; seconds are the wall time of the reconstruction kept."
              + (" Held-out: each volume projected at the angles no method was given, "
                 "||A x - y|| / ||y|| there, plain and ramp-weighted (the ramp weighs detector "
                 "frequencies as an image-domain error weighs the image's); both include those "
                 "projections' own noise, so lower is better but the floor is not 0." if held else ""),
              ""]
        (tmp / "comparison.md").write_text("\n".join(md))
        _figure(tmp / "comparison.png", results, reference, title)
        # Written last: a folder with comparison.json is complete.
        write_json(tmp / "comparison.json",
                   {"methods": {n: r.summary() for n, r in results.items()}, "case": case})
    return final
