"""``astra-inr demo``: the bundled simulated scan reconstructed four ways and compared.

Reads ``sample_data/scan_dxchange.h5`` (raw counts with flats and darks, an
off-centre axis, defective columns), preprocesses it (automatic centre, dead
pixels interpolated, rings removed), reconstructs two slices with FBP, SIRT,
CGLS and INR, and writes the comparison against the known phantom.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tifffile

from .cases import case_from_scan
from .compare import compare_methods
from .comparison_report import markdown_table, write_comparison
from .progress import ProgressBar
from .recon import ReconOptions

__all__ = ["run_demo", "default_sample_data"]

DEMO_ROWS = (1, 3)


def default_sample_data() -> Path:
    """``sample_data/`` of a source checkout (it is not part of an installed wheel)."""
    return Path(__file__).resolve().parents[1] / "sample_data"


def run_demo(out: str | Path, data: str | Path | None = None, iterations: int | None = None,
             overwrite: bool = False, quiet: bool = False) -> Path:
    """Reconstruct the sample scan with FBP, SIRT, CGLS and INR; write the comparison to ``out``."""
    folder = Path(data) if data is not None else default_sample_data()
    scan_path, phantom_path = folder / "scan_dxchange.h5", folder / "phantom.tif"
    if not scan_path.is_file() or not phantom_path.is_file():
        raise FileNotFoundError(f"{folder} has no scan_dxchange.h5 and phantom.tif; run "
                                "`python scripts/make_sample_data.py` in a source checkout or pass --data")
    phantom = tifffile.imread(phantom_path)
    a, b = DEMO_ROWS
    # The phantom lies on a 128 x 128 grid of detector pixels centred on the axis.
    options = ReconOptions(rows=f"{a}:{b}", stripe_removal="sorting", size=phantom.shape[-1],
                           iterations=iterations)
    sino, _, case, _ = case_from_scan(scan_path, options)
    case["reference"] = f"the simulated phantom ({phantom_path.name}, rows {a}:{b})"
    case["title"] = f"sample scan, rows {a}:{b}: FBP, SIRT, CGLS and INR"
    progress = None if quiet else ProgressBar()
    results = compare_methods(sino, ["FBP", "SIRT", "CGLS", "INR"], options,
                              reference=np.asarray(phantom[a:b]), progress=progress)
    path = write_comparison(out, results, case, np.asarray(phantom[a:b]), overwrite=overwrite)
    if not quiet:
        print(markdown_table(results), file=sys.stderr)
        print(f"wrote {path}", file=sys.stderr)
    return path
