"""astra-inr: an ``INR`` reconstruction algorithm for the ASTRA Toolbox.

Importing this package registers the ASTRA plugin ``INR`` in the current
process (ASTRA loads no plugins by itself: worker processes must import
``astra_inr`` too).  The small public API:

* :func:`report` -- the training report of an INR algorithm id.
* :func:`export` / :func:`load` -- result folders (TIFF stack, report.json,
  model) and re-rendering the continuous INR on finer grids.
* :class:`INRConfig` -- the validated options.
* :class:`INRTrainer` -- the training loop on any :class:`AstraOperator`.
* :class:`AstraOperator`, :func:`project` -- ASTRA projectors for torch.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

import astra

from .config import INRConfig
from .fit import INRTrainer, Progress
from .geometry import VolumeGrid, volume_grid
from .model import INRNetwork, bw_relu
from .operator import AstraOperator, project
from .plugin import INRPlugin, export, report
from .results import load

try:
    __version__ = _version("astra-inr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

astra.plugin.register(INRPlugin)

__all__ = [
    "AstraOperator",
    "INRConfig",
    "INRNetwork",
    "INRPlugin",
    "INRTrainer",
    "Progress",
    "VolumeGrid",
    "bw_relu",
    "export",
    "load",
    "project",
    "report",
    "volume_grid",
    "__version__",
]
