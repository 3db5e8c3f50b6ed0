"""Preprocessing: from a raw :class:`~astra_inr.io.Scan` to line-integral sinograms ASTRA can reconstruct.

One entry point, :func:`preprocess`; one job per module:

* :mod:`~astra_inr.preprocess.options` -- :class:`PreprocessOptions` and the :class:`Sinograms` result.
* :mod:`~astra_inr.preprocess.flatfield` -- flat/dark correction, open-beam columns, ``-log``, dead pixels.
* :mod:`~astra_inr.preprocess.stripes` -- stripe (ring) removal.
* :mod:`~astra_inr.preprocess.center` -- rotation-centre finding.
* :mod:`~astra_inr.preprocess.geometry` -- centring shift, exact ASTRA geometry, binning.
* :mod:`~astra_inr.preprocess.pipeline` -- :func:`preprocess`, row block by row block.

Array conventions: raw projections ``(angles, rows, cols)`` as files store them;
output sinograms ``(rows, angles, cols)`` (detector rows first, like ASTRA 3D
projection data; one row is one 2D ASTRA sinogram ``(angles, cols)``).  Angles
in radians, pixel sizes in mm, centres in detector pixels (0-based column index
of the pixel *centre* the rotation axis projects onto).
"""

from __future__ import annotations

from .center import (
    CENTER_METHODS,
    CENTER_REFERENCES,
    find_center,
    find_center_pairs,
    find_center_pairs_indices,
    find_center_vo,
)
from .flatfield import (
    find_dead_pixels,
    flat_dark_correct,
    interpolate_dead_pixels,
    interpolate_invalid_samples,
    minus_log,
    normalise_by_columns,
)
from .geometry import bin_sinograms, binned_center, center_sinogram, parallel_geometry
from .options import PreprocessOptions, Sinograms
from .pipeline import Progress, preprocess
from .stripes import (
    STRIPE_METHODS,
    STRIPE_REFERENCE,
    remove_dead_stripes,
    remove_large_stripes,
    remove_stripes,
    remove_stripes_sorting,
)

__all__ = [
    "PreprocessOptions",
    "Sinograms",
    "preprocess",
    "flat_dark_correct",
    "normalise_by_columns",
    "minus_log",
    "find_dead_pixels",
    "interpolate_dead_pixels",
    "interpolate_invalid_samples",
    "remove_stripes",
    "remove_stripes_sorting",
    "remove_large_stripes",
    "remove_dead_stripes",
    "find_center",
    "find_center_vo",
    "find_center_pairs",
    "find_center_pairs_indices",
    "center_sinogram",
    "parallel_geometry",
    "bin_sinograms",
    "binned_center",
]
