"""The pipeline: from a raw :class:`~astra_inr.io.Scan` to line-integral sinograms ASTRA can reconstruct.

One entry point, :func:`preprocess`, runs these steps row block by row block
(peak memory is about one block of raw projections plus the output):

1. **Flat/dark correction** ``T = (P - D) / (F - D)`` with averaged flats ``F``
   and darks ``D``.  Pixels with a non-positive denominator ``F - D`` and
   samples with ``T < min_transmission`` (including ``T <= 0``) are clipped and
   **counted** in the report.  Scans without flat fields (e.g. a neutron
   sinogram) are normalised by open-beam columns at the detector edge
   (``flat_columns``); with flats, ``flat_columns`` also corrects beam-intensity
   fluctuations per projection.
2. **Dead pixels**: pixels whose flat minus dark is not positive, or whose
   transmission is below ``min_transmission`` at *every* angle (dead, stuck at
   the dark level) are interpolated from their neighbours along the row.
   Single samples with no counts above dark (transmission <= 0, e.g. a column
   that is dead for part of the scan) are interpolated along the row too.
3. ``-log`` to line integrals.
4. Optional **stripe (ring) removal** after Vo, Atwood & Drakopoulos (2018),
   "Superior techniques for eliminating ring artifacts in X-ray
   micro-tomography", Opt. Express 26(22), 28396: ``'sorting'`` is their
   algorithm 3 (sorting-based, for full and partial stripes); ``'all'`` runs
   algorithms 6 (unresponsive stripes), 5 (large stripes) and 3 in turn, with
   the safeguards described in
   :func:`~astra_inr.preprocess.stripes.remove_large_stripes` and
   :func:`~astra_inr.preprocess.stripes.remove_dead_stripes`.  Applied to line
   integrals, where a detector gain error is an additive column offset.
5. **Rotation centre**: automatic (``center='auto'``) or given, always reported
   in detector pixels of the *file* (0-based, before binning or cropping).  For
   180-degree scans the method of Vo, Atwood & Drakopoulos (2014), "Reliable
   method for calculating the center of rotation in parallel-beam tomography",
   Opt. Express 22(16), 19078 (sinogram and its mirror joined into a 360-degree
   sinogram; the centre minimises the Fourier energy outside the double wedge an
   object of finite size can fill); for scans with projections 180 degrees apart
   (360-degree scans) cross-correlation of each projection with its mirrored
   partner.  Estimated per detector row; the median over rows is used.
6. **Binning** ``K x K`` (averages of line integrals, so that the linear model
   holds), a **row range** of the file and **every k-th angle**.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from ..io.scan import Scan
from .center import CENTER_REFERENCES, find_center
from .flatfield import (
    _resolve_columns,
    find_dead_pixels,
    flat_dark_correct,
    interpolate_dead_pixels,
    interpolate_invalid_samples,
    minus_log,
    normalise_by_columns,
)
from .geometry import _check_center, bin_sinograms, binned_center, field_of_view, is_half_acquisition
from .options import PreprocessOptions, Sinograms
from .stripes import remove_stripes

__all__ = ["preprocess", "Progress"]

Progress = Callable[[int, int], None]


def _mean_field(frames: np.ndarray | None) -> np.ndarray | None:
    return None if frames is None else frames.mean(axis=0, dtype=np.float64).astype(np.float32)


def _check_scan(scan: Scan, options: PreprocessOptions) -> tuple[int, int]:
    """Validate options against the scan; return the file rows [start, stop) actually used."""
    n_rows, n_cols = scan.n_rows, scan.n_cols
    start, stop = (0, None) if options.rows is None else options.rows
    stop = n_rows if stop is None else stop
    if stop > n_rows:
        raise ValueError(f"rows {start}:{stop} outside {scan.path.name}'s {n_rows} detector rows")
    k = options.binning
    kr = _row_binning(scan, options)
    if stop - start < kr:
        raise ValueError(f"binning {k} needs at least {k} detector rows; rows {start}:{stop} give "
                         f"{stop - start}" + (" (a single sinogram has one row)" if n_rows == 1 else ""))
    if n_cols < k:
        raise ValueError(f"binning {k} is larger than the detector's {n_cols} columns")
    if scan.values == "counts" and scan.n_flats == 0 and options.flat_columns is None:
        raise ValueError(f"{scan.path.name} holds raw counts but no flat fields: give "
                         f"flat_columns (open-beam columns, e.g. '0:30') or a flat field")
    if options.flat_columns is not None:
        if scan.values == "line_integrals":
            raise ValueError(f"{scan.path.name} already holds line integrals: flat_columns (open-beam "
                             f"normalisation) applies only to counts or transmission")
        _resolve_columns(options.flat_columns, n_cols)
    if options.center != "auto":
        _check_center(options.center, n_cols)
    if options.angles_step > scan.n_angles:
        raise ValueError(f"angles_step {options.angles_step} is larger than the scan's {scan.n_angles} angles")
    return start, start + kr * ((stop - start) // kr)


def _row_binning(scan: Scan, options: PreprocessOptions) -> int:
    """Rows averaged per output row: the binning, except for a single-row scan (a sinogram),
    which is binned along the detector only."""
    return 1 if scan.n_rows == 1 else options.binning


def preprocess(scan: Scan, options: PreprocessOptions | None = None, progress: Progress | None = None,
               out: np.ndarray | None = None) -> Sinograms:
    """Line-integral sinograms from a scan, processed row block by row block.

    Parameters
    ----------
    scan : Scan
        From :func:`astra_inr.io.open_scan`.
    options : PreprocessOptions, optional
        Defaults: all rows, no binning, all angles, automatic centre, no stripe removal.
    progress : callable(done, total), optional
        Called after each row block with the number of blocks done and the total.
    out : array-like, optional
        Where to write the result, ``(rows_out, angles_out, cols_out)`` float32,
        e.g. a ``numpy.memmap`` for outputs larger than memory.  Allocated in
        memory when omitted.

    Returns
    -------
    Sinograms
        ``data`` ``(rows_out, angles_out, cols_out)`` float32 line integrals,
        ``angles`` (radians), ``pixel_size`` (mm after binning), ``center``
        (binned columns) and ``report``.

    Raises
    ------
    ValueError
        Options that do not fit the scan (rows outside the detector, raw counts
        without any flat field, a centre outside the detector, automatic centre
        on less than 180 degrees, ...).
    """
    options = options or PreprocessOptions()
    t0 = time.perf_counter()
    first_row, last_row = _check_scan(scan, options)
    k = options.binning
    kr = _row_binning(scan, options)
    n_cols_out = scan.n_cols // k
    angle_sel = slice(0, scan.n_angles, options.angles_step)
    angles = scan.angles[angle_sel].copy()
    shape_out = ((last_row - first_row) // kr, angles.size, n_cols_out)
    if out is None:
        out = np.empty(shape_out, dtype=np.float32)
    elif tuple(out.shape) != shape_out:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {shape_out} (rows, angles, cols)")

    block = kr * math.ceil(options.block_rows / kr)
    starts = list(range(first_row, last_row, block))
    n_centre = min(options.center_rows, last_row - first_row)
    centre_rows = sorted(set(np.linspace(first_row, last_row - 1, n_centre).round().astype(int).tolist()))
    centre_sinos: dict[int, np.ndarray] = {}
    counts = {"denominator_nonpositive_pixels": 0, "open_beam_nonpositive": 0,
              "transmission_nonpositive": 0, "transmission_clipped": 0, "nonfinite_line_integrals": 0}
    dead_columns: set[int] = set()
    dead_pixels = 0
    hopeless_rows = 0
    hopeless_lines = 0
    interpolated_samples = 0
    stripe_report: dict[str, Any] = {"method": options.stripe_removal}

    for number, r0 in enumerate(starts):
        r1 = min(r0 + block, last_row)
        rows = slice(r0, r1)
        values = scan.read_projections(rows, angle_sel)                 # (angles, nb, cols) float32
        dead = np.zeros(values.shape[1:], dtype=bool)
        if scan.values in ("counts", "transmission"):
            bad_den = None
            if scan.values == "counts":
                flat = _mean_field(scan.read_flats(rows))
                dark = _mean_field(scan.read_darks(rows))
                values, bad_den, c = flat_dark_correct(values, flat, dark)
                counts["denominator_nonpositive_pixels"] += c["denominator_nonpositive_pixels"]
            if options.flat_columns is not None:
                values, c = normalise_by_columns(values, options.flat_columns)
                counts["open_beam_nonpositive"] += c["open_beam_nonpositive"]
            dead = find_dead_pixels(values, bad_den, options.min_transmission)
            # Non-positive transmission means no counts above dark: a missing measurement
            # (e.g. a partly dead column), not an attenuation; interpolated below when asked.
            invalid = ~(values > 0) & ~dead[None] if options.dead_pixels == "interpolate" else None
            values, c = minus_log(values, options.min_transmission)
            for key, n in c.items():
                counts[key] += n
        else:
            invalid = ~np.isfinite(values)
            counts["nonfinite_line_integrals"] += int(invalid.sum())
            values[invalid] = 0.0
            if options.dead_pixels != "interpolate":
                invalid = None
        if invalid is not None and invalid.any():
            interpolated_samples += int(invalid.sum())
            hopeless_lines += interpolate_invalid_samples(values, invalid)
        del invalid
        if dead.any():
            dead_pixels += int(dead.sum())
            dead_columns.update(np.flatnonzero(dead.any(axis=0)).tolist())
            if options.dead_pixels == "interpolate":
                hopeless_rows += interpolate_dead_pixels(values, dead)
        # A view, not a copy: (nb, angles, cols) is written into `out` by the strided copy below.
        sinos = values.transpose(1, 0, 2)
        del values
        sinos, stripe_report = _merge_stripes(sinos, options, stripe_report)
        for r in centre_rows:
            if r0 <= r < r1:
                centre_sinos[r] = sinos[r - r0].copy()
        o0 = (r0 - first_row) // kr
        binned = bin_sinograms(sinos, k, kr)
        out[o0:o0 + binned.shape[0]] = binned
        del sinos, binned
        if progress is not None:
            progress(number + 1, len(starts))

    if options.center == "auto":
        stack = np.stack([centre_sinos[r] for r in centre_rows])
        center, method, per_row = find_center(stack, angles, options.center_method)
        per_row_report = {str(r): round(c, 3) for r, c in zip(centre_rows, per_row)}
    else:
        center, method, per_row_report = float(options.center), "manual", {}
    deg = np.rad2deg(angles)
    report: dict[str, Any] = {
        "scan": str(scan.path), "format": scan.format, "values": scan.values,
        "shape_in": list(scan.shape), "shape_out": list(shape_out),
        "rows": [first_row, last_row], "binning": k, "row_binning": kr,
        "angles_step": options.angles_step,
        "n_angles": int(angles.size), "angle_range_deg": [float(deg.min()), float(deg.max())],
        "cols_dropped": scan.n_cols - n_cols_out * k,
        "block_rows": block, "blocks": len(starts),
        "flat_field": _flat_field_summary(scan, options),
        "flat_columns": options.to_dict()["flat_columns"],
        "n_flats": scan.n_flats, "n_darks": scan.n_darks,
        "min_transmission": options.min_transmission, **counts,
        "dead_pixels": dead_pixels, "dead_pixel_handling": options.dead_pixels,
        "dead_columns": sorted(dead_columns)[:1000], "dead_column_count": len(dead_columns),
        "dead_rows_uncorrectable": hopeless_rows,
        "interpolated_samples": interpolated_samples, "lines_uncorrectable": hopeless_lines,
        "stripe_removal": stripe_report,
        "rotation_center": round(center, 4), "rotation_center_method": method,
        "rotation_center_reference": CENTER_REFERENCES[method],
        "rotation_center_rows": per_row_report,
        "center": round(binned_center(center, k), 4),
        # The reconstruction grid's default width (binned columns), fixed here from every
        # angle kept, so that subsets of these angles are reconstructed on the same grid.
        "half_acquisition": is_half_acquisition(angles, n_cols_out, binned_center(center, k)),
        "field_of_view_columns": field_of_view(angles, n_cols_out, binned_center(center, k)),
        "pixel_size_mm": None if scan.pixel_size is None else scan.pixel_size * k,
        "options": options.to_dict(), "seconds": round(time.perf_counter() - t0, 3),
    }
    return Sinograms(data=out, angles=angles, pixel_size=report["pixel_size_mm"],
                     center=binned_center(center, k), report=report)


def _flat_field_summary(scan: Scan, options: PreprocessOptions) -> str:
    """What normalised the data, in words, for the report."""
    steps = []
    if scan.values == "counts" and scan.n_flats:
        steps.append("flats and darks" if scan.n_darks else "flats (no darks)")
    if options.flat_columns is not None:
        steps.append("open-beam columns")
    return ", then ".join(steps) if steps else "none"


def _merge_stripes(sinos: np.ndarray, options: PreprocessOptions,
                   report: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Run stripe removal on a block and add its counts to the running report."""
    if options.stripe_removal == "none":
        return sinos, report
    corrected, block_report = remove_stripes(sinos, options.stripe_removal, size=options.stripe_size,
                                             large_size=options.stripe_large_size, snr=options.stripe_snr)
    merged = dict(block_report)
    for key in ("dead_stripe_columns", "large_stripe_columns", "large_stripe_rows_skipped"):
        if key in block_report:
            merged[key] = report.get(key, 0) + block_report[key]
    return corrected, merged
