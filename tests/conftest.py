"""Shared fixtures: small tomography problems built with ASTRA's 2D CPU projectors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import astra
import numpy as np
import pytest

import astra_inr  # noqa: F401  (registers the INR plugin)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@dataclass
class Problem2D:
    """A phantom, its geometry and a (noisy) sinogram as ASTRA objects."""

    image: np.ndarray
    vol_geom: dict
    proj_geom: dict
    projector_id: int
    sinogram: np.ndarray
    sino_id: int
    rec_id: int

    def run(self, algorithm: str, iterations: int, options: dict | None = None,
            projector_id: int | None = None) -> tuple[np.ndarray, int]:
        """Run an ASTRA algorithm on the sinogram; returns (image, alg id)."""
        cfg = astra.astra_dict(algorithm)
        cfg["ProjectorId"] = self.projector_id if projector_id is None else projector_id
        cfg["ProjectionDataId"] = self.sino_id
        cfg["ReconstructionDataId"] = self.rec_id
        if options:
            cfg["option"] = options
        alg = astra.algorithm.create(cfg)
        astra.algorithm.run(alg, iterations)
        return astra.data2d.get(self.rec_id), alg


def phantom(n: int) -> np.ndarray:
    """Modified Shepp-Logan, n x n, values in [0, 1]."""
    _, img = astra.data2d.shepp_logan(astra.create_vol_geom(n, n))
    return img.astype(np.float32)


def make_problem(n: int = 64, n_angles: int = 40, noise: float = 0.0, seed: int = 0,
                 detector: int | None = None, kind: str = "parallel",
                 projector: str = "linear") -> Problem2D:
    """Simulate on a 2x finer grid with a different projector (no inverse crime)."""
    image = phantom(n)
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    det = detector or int(np.ceil(n * 1.5))
    vg = astra.create_vol_geom(n, n)
    if kind == "parallel":
        pg = astra.create_proj_geom("parallel", 1.0, det, angles)
    elif kind == "fanflat":
        pg = astra.create_proj_geom("fanflat", 1.5, det, angles, 4.0 * n, 2.0 * n)
    else:
        raise ValueError(kind)
    # Simulation: the phantom upsampled 2x through a strip projector.
    fine = np.kron(image, np.ones((2, 2), np.float32))
    vg_fine = astra.create_vol_geom(2 * n, 2 * n, -n / 2, n / 2, -n / 2, n / 2)
    sim_proj = astra.create_projector("strip" if kind == "parallel" else "strip_fanflat", pg, vg_fine)
    sid, sino = astra.create_sino(fine, sim_proj)
    astra.data2d.delete(sid)
    astra.projector.delete(sim_proj)
    if noise:
        rng = np.random.default_rng(seed)
        sino = sino + noise * np.abs(sino).max() * rng.standard_normal(sino.shape)
    sino = sino.astype(np.float32)
    pid = astra.create_projector(projector, pg, vg)
    sino_id = astra.data2d.create("-sino", pg, sino)
    rec_id = astra.data2d.create("-vol", vg, 0)
    return Problem2D(image, vg, pg, pid, sino, sino_id, rec_id)


@pytest.fixture
def small_problem() -> Problem2D:
    return make_problem(n=32, n_angles=24, noise=0.01)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"the shared real-data folder is missing: {SHARED_DATA}")
    return SHARED_DATA
