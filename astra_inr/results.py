"""Result folders: the volume as a TIFF stack, report.json beside it, the trained model.

Layout of a result folder::

    slice_00000.tif ...   float32, one per slice (one file for 2D); voxel size
                          in the resolution tags, geometry in the description
    report.json           the training report, regularity, provenance (written last)
    model.pt              INR only: weights and architecture, for load().render()

:func:`save_result` writes the folder atomically (see
:func:`astra_inr.io.writers.result_folder`); :func:`load` reads it back and
re-evaluates the continuous INR on any grid over the same window.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fit import INRField
from .geometry import VolumeGrid
from .io.writers import REPORT_NAME, read_tiff_stack, result_folder, write_json, write_tiff_stack
from .provenance import provenance

__all__ = ["MODEL_NAME", "SavedResult", "load", "save_result"]

MODEL_NAME = "model.pt"
_MODEL_FORMAT = 1


def save_result(out_dir: str | os.PathLike, volume: np.ndarray, report: dict[str, Any],
                grid: VolumeGrid, *, field: INRField | None = None, options: dict[str, Any] | None = None,
                units: str | None = None, overwrite: bool = False) -> Path:
    """Write a result folder; it appears under ``out_dir`` only when complete.

    Parameters
    ----------
    out_dir : path
    volume : numpy.ndarray
        ``grid.shape`` float32, in the data's units.
    report : dict
        JSON-friendly report; provenance and the list of files are added.
    grid : VolumeGrid
        The voxel grid (voxel size and window go into the TIFF tags/description).
    field : INRField, optional
        The trained INR, saved as ``model.pt`` for :meth:`SavedResult.render`.
    options : dict, optional
        The options that produced it, stored with the model.
    units : str, optional
        World units of the geometry ('mm' writes standard resolution tags).
    overwrite : bool
        Replace an existing folder (only once the new one is complete).

    Returns
    -------
    Path
        The final folder.

    Raises
    ------
    FileExistsError
        ``out_dir`` exists and ``overwrite`` is False.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if tuple(volume.shape) != tuple(grid.shape):
        raise ValueError(f"volume shape {volume.shape} differs from the grid {grid.shape}")
    final = Path(out_dir).absolute()
    with result_folder(final, overwrite) as tmp:
        description = {"software": "astra-inr", "volume": grid.to_dict(), "units": units}
        if grid.ndim == 3:
            lo, hi, n = grid.minimum[2], grid.maximum[2], grid.shape[0]
            description["slice_z"] = list(lo + (np.arange(n) + 0.5) * (hi - lo) / n)
        files = [p.name for p in write_tiff_stack(volume, tmp, grid.voxel_size, units, description)]
        if field is not None:
            torch.save({"format": _MODEL_FORMAT, "field": field.state(), "options": options or {}},
                       tmp / MODEL_NAME)
            files.append(MODEL_NAME)
        full = dict(report)
        full["provenance"] = provenance()
        full["output"] = {"folder": str(final), "files": files + [REPORT_NAME], "units": units,
                          "dtype": "float32", "shape": list(volume.shape)}
        write_json(tmp / REPORT_NAME, full)
    return final


class SavedResult:
    """A result folder read back: the report, the volume, and the INR to re-render.

    Parameters
    ----------
    path : path
        A folder written by :func:`save_result`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        report_path = self.path / REPORT_NAME
        if not report_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a finished result folder (no {REPORT_NAME})")
        self.report: dict[str, Any] = json.loads(report_path.read_text())
        self._field = None

    def volume(self) -> np.ndarray:
        """The saved volume as written (float32, ``(rows, cols)`` or ``(slices, rows, cols)``)."""
        return read_tiff_stack(self.path)

    def field(self) -> INRField:
        """The trained INR; results of FBP/SIRT/CGLS have none (FileNotFoundError)."""
        if self._field is None:
            model = self.path / MODEL_NAME
            if not model.is_file():
                raise FileNotFoundError(f"{self.path} holds no trained INR ({MODEL_NAME}); only INR "
                                        "results can be re-rendered")
            saved = torch.load(model, map_location="cpu", weights_only=True)
            if saved.get("format") != _MODEL_FORMAT:
                raise ValueError(f"{model}: unknown model format {saved.get('format')!r}")
            self._field = INRField.from_state(saved["field"])
        return self._field

    def render(self, upsample: float = 1, shape: tuple[int, ...] | None = None,
               device: str | torch.device = "cpu") -> np.ndarray:
        """Evaluate the continuous INR over the same window on a finer (or any) grid.

        Parameters
        ----------
        upsample : float
            Samples per voxel along each axis: 2 gives twice the rows, columns
            (and slices), each voxel split in 2x2(x2).
        shape : tuple of int, optional
            Explicit output shape (overrides ``upsample``).

        Returns
        -------
        numpy.ndarray
            float32, in the data's units.
        """
        field = self.field()
        field.network.to(device)
        return field.render(upsample, shape).cpu().numpy()


def load(path: str | os.PathLike) -> SavedResult:
    """Open a result folder written by :func:`save_result` / :func:`astra_inr.export`."""
    return SavedResult(path)
