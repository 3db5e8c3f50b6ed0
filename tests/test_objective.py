"""Data-derived scales of the objective: the image's bright level from the data."""

import astra
import numpy as np
import pytest
import torch

from astra_inr import AstraOperator
from astra_inr.objective import estimate_peak
from conftest import phantom


@pytest.mark.parametrize("kind", ["parallel", "fanflat"])
def test_peak_estimate_finds_a_small_bright_object_in_a_large_field(kind):
    n = 96
    image = np.zeros((n, n), np.float32)
    image[40:56, 44:60] = phantom(16) * 5.0 + 1.0           # values 1..6 in a 16 x 16 patch
    vg = astra.create_vol_geom(n, n)
    angles = np.linspace(0, np.pi if kind == "parallel" else 2 * np.pi, 90, endpoint=False)
    pg = (astra.create_proj_geom("parallel", 1.0, 144, angles) if kind == "parallel" else
          astra.create_proj_geom("fanflat", 1.5, 144, angles, 400.0, 200.0))
    op = AstraOperator.create(vg, pg)
    y = op.forward(torch.from_numpy(image))
    truth = float(np.quantile(image, 0.99))
    peak = estimate_peak(y, op)
    mean = float(y.double().norm() / op.forward(torch.ones(n, n)).double().norm())
    assert peak == pytest.approx(truth, rel=0.3)
    assert peak > 5 * mean                      # the mean would start the network far too low
    assert estimate_peak(y * 1000.0, op) == pytest.approx(1000.0 * peak, rel=1e-5)
