"""Where an interrupted INR run keeps its state, and whether a later run may go on from it.

An INR run of :func:`~astra_inr.recon.reconstruct` saves the trainer's state beside
the result folder, as ``.<name>.checkpoint.pt``: where the data choose its length,
before each of its blocks after the first (``INRTrainer.run_until_fitted``), else
every ``CHECKPOINT_EVERY`` (400) iterations (``INRTrainer.run``).  When the
same scan is reconstructed again into the same folder with the same options (a job
killed at its wall-time limit and started again, a batch run again), the run goes
on from its last checkpoint instead of starting over.  The file is removed once
the result folder is complete.

A checkpoint is used only where it fits: a fingerprint of the preprocessed
sinograms (their values, angles, centre and pixel size), the options, the
package version and the layout of the saved state must all match.  Anything else (another scan, other options, a
file that cannot be read) starts afresh and says why in the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .fit import STATE_FORMAT

__all__ = ["RunCheckpoint", "checkpoint_path"]


def checkpoint_path(out_dir: str | os.PathLike) -> Path:
    """The checkpoint file of the result folder ``out_dir`` (beside it, hidden)."""
    out = Path(out_dir).absolute()
    return out.parent / f".{out.name}.checkpoint.pt"


def _fingerprint(data: np.ndarray, angles: np.ndarray, center: float,
                 pixel_size: float | None, options: Mapping[str, Any], version: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"shape": list(data.shape), "center": float(center),
                              "pixel_size": pixel_size, "options": options,
                              "version": version, "state_format": STATE_FORMAT},
                             sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(angles, dtype=np.float64).tobytes())
    digest.update(memoryview(np.ascontiguousarray(data, dtype=np.float32)).cast("B"))
    return digest.hexdigest()


class RunCheckpoint:
    """The saved state of one result folder's INR run.

    Parameters
    ----------
    out_dir : path
        The result folder the run writes (it need not exist).
    data : numpy.ndarray
        ``(rows, angles, cols)`` float32: the preprocessed sinograms the run fits.
    angles : numpy.ndarray
        Projection angles, radians.
    center : float
        Rotation centre, detector columns.
    pixel_size : float or None
        Detector pixel size, mm.
    options : mapping
        Every option of the reconstruction (JSON-friendly values).
    """

    def __init__(self, out_dir: str | os.PathLike, data: np.ndarray, angles: np.ndarray,
                 center: float, pixel_size: float | None, options: Mapping[str, Any]) -> None:
        from . import __version__

        self.path = checkpoint_path(out_dir)
        self.fingerprint = _fingerprint(data, angles, center, pixel_size, options, __version__)
        #: Why the last save failed (None: every save so far succeeded).
        self.save_failure: str | None = None

    def load(self) -> tuple[dict[str, Any] | None, str]:
        """The saved run state if it fits this run, and what was found.

        Returns
        -------
        (state, finding) : the state or None, and a sentence for the report.
        """
        if not self.path.is_file():
            return None, "no checkpoint"
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or foreign file: start afresh, say why
            return None, f"checkpoint {self.path} unreadable ({type(exc).__name__}): started afresh"
        if not isinstance(saved, dict) or saved.get("fingerprint") != self.fingerprint:
            return None, (f"checkpoint {self.path} is of other data, options or version: "
                          "started afresh")
        return saved["run"], f"resumed from {self.path}"

    def save(self, run_state: dict[str, Any]) -> None:
        """Write the run's state (atomically: a crash mid-write leaves the previous one).

        A checkpoint that cannot be written (disk full, no permission) must not
        end the run it is there to protect: the failure is warned about once,
        kept in ``save_failure`` for the report, and training goes on.
        """
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"fingerprint": self.fingerprint, "run": run_state}, tmp)
            os.replace(tmp, self.path)
        except OSError as exc:
            if self.save_failure is None:
                warnings.warn(f"could not write the checkpoint {self.path} ({exc}); the run goes "
                              "on without one", RuntimeWarning, stacklevel=2)
            self.save_failure = f"{type(exc).__name__}: {exc}"
            if tmp.parent.is_dir():
                tmp.unlink(missing_ok=True)
        else:
            self.save_failure = None

    def remove(self) -> None:
        """Delete the checkpoint (the run's result is complete)."""
        for path in (self.path, self.path.with_name(self.path.name + ".tmp")):
            path.unlink(missing_ok=True)
