"""Where a result came from: versions, machine, command, time."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["provenance"]

_PACKAGES = ("astra-inr", "astra-toolbox", "torch", "numpy", "scipy", "tifffile", "h5py")


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """Versions of the software involved, the host, the command line and the time (UTC)."""
    import torch

    info: dict[str, Any] = {
        "versions": {name: _version(name) for name in _PACKAGES},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])
        if sys.argv and sys.argv[0] else None,
        "working_directory": os.getcwd(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import astra

        info["astra_cuda"] = bool(astra.use_cuda())
    except Exception:  # ASTRA missing or broken: provenance must still be written
        info["astra_cuda"] = None
    return info
