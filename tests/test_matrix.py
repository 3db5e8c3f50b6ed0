"""ASTRA's projection matrix as the training operator (ProjectorMatrix)."""

import astra
import numpy as np
import pytest
import torch

from astra_inr import matrix as matrix_module
from astra_inr.config import INRConfig
from astra_inr.fit import INRTrainer
from astra_inr.geometry import volume_grid
from astra_inr.matrix import MatrixOperator, estimated_entries, training_operator
from astra_inr.operator import AstraOperator, project

ANGLES = np.linspace(0, np.pi, 9, endpoint=False)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("geometry, projector", [
    ("parallel", "linear"), ("parallel", "strip"), ("parallel_vec", "line"),
    ("fanflat", "line_fanflat"), ("fanflat_vec", "line_fanflat")])
def test_matrix_applies_the_problems_own_projector(geometry, projector):
    vg = astra.create_vol_geom(12, 15)
    if geometry.startswith("parallel"):
        pg = astra.create_proj_geom("parallel", 1.0, 22, ANGLES)
    else:
        pg = astra.create_proj_geom("fanflat", 1.0, 30, 2 * ANGLES, 60.0, 30.0)
    if geometry.endswith("_vec"):
        pg = astra.geom_2vec(pg)
    g = torch.Generator().manual_seed(1)
    with AstraOperator.create(vg, pg, projector) as op:
        m = MatrixOperator.from_operator(op, "cpu")
        x, y = torch.rand(op.vol_shape, generator=g), torch.rand(op.proj_shape, generator=g)
        assert _rel(m.forward(x), op.forward(x)) < 1e-5
        assert _rel(m.adjoint(y), op.adjoint(y)) < 1e-5
        # The transpose is exact: <A x, y> = <x, A^T y>.
        lhs = float((m.forward(x).double() * y.double()).sum())
        assert abs(lhs - float((x.double() * m.adjoint(y).double()).sum())) < 1e-5 * abs(lhs)
        info = m.describe()
        assert info["kind"] == "matrix" and 0 < info["entries"] <= estimated_entries(op) * 2


def test_stack_with_reversed_rows_and_its_slabs_match_the_slicewise_operator():
    pg3 = astra.create_proj_geom("parallel3d", 1.0, 1.0, 4, 20, ANGLES)
    with AstraOperator.create(astra.create_vol_geom(10, 12, 4), pg3) as op3:
        assert op3.kind == "slicewise3d" and op3.flip_rows
        m = MatrixOperator.from_operator(op3, "cpu")
        g = torch.Generator().manual_seed(2)
        vol, proj = torch.rand(op3.vol_shape, generator=g), torch.rand(op3.proj_shape, generator=g)
        assert _rel(m.forward(vol), op3.forward(vol)) < 1e-5
        assert _rel(m.adjoint(proj), op3.adjoint(proj)) < 1e-5
        idx = torch.tensor([0, 3])
        slab = m.slab(2)
        assert slab.vol_shape == (2, 10, 12) and slab.proj_shape == (2, 9, 20)
        assert _rel(slab.forward(vol[idx]), op3.forward(vol)[idx]) < 1e-5
        with pytest.raises(ValueError, match="n_slices"):
            m.slab(5)


def test_gradient_through_the_matrix_is_its_transpose():
    vg = astra.create_vol_geom(8, 8)
    pg = astra.create_proj_geom("parallel", 1.0, 12, ANGLES)
    with AstraOperator.create(vg, pg, "linear") as op:
        m = MatrixOperator.from_operator(op, "cpu")
        x = torch.rand(8, 8, requires_grad=True)
        w = torch.rand(op.proj_shape)
        (project(x, m) * w).sum().backward()
        assert _rel(x.grad, op.adjoint(w)) < 1e-5


def test_shapes_and_dtypes_are_checked():
    with AstraOperator.create(astra.create_vol_geom(8, 8),
                              astra.create_proj_geom("parallel", 1.0, 12, ANGLES), "line") as op:
        m = MatrixOperator.from_operator(op, "cpu")
        with pytest.raises(ValueError, match=r"shape \(8, 9\), expected \(8, 8\)"):
            m.forward(torch.zeros(8, 9))
        with pytest.raises(TypeError, match="float32"):
            m.adjoint(torch.zeros(op.proj_shape, dtype=torch.float64))


def test_kernel_matrices_are_kept_per_geometry():
    vg = astra.create_vol_geom(9, 9)
    pg = astra.create_proj_geom("parallel", 1.0, 14, ANGLES)
    matrix_module._CACHE.clear()
    a1, _, info1 = matrix_module._build(vg, pg, None, False)
    a2, _, info2 = matrix_module._build(vg, pg, None, False)
    assert info1["kernel"] == "linear" and not info1["cached"] and info2["cached"] and a2 is a1
    other = astra.create_proj_geom("parallel", 1.0, 14, ANGLES + 0.01)
    assert not matrix_module._build(vg, other, None, False)[2]["cached"]


def test_auto_uses_a_matrix_only_on_a_gpu_and_below_its_size(monkeypatch):
    with AstraOperator.create(astra.create_vol_geom(8, 8),
                              astra.create_proj_geom("parallel", 1.0, 12, ANGLES), "line") as op:
        same, why = training_operator(op, torch.device("cpu"), "auto")
        assert same is op and "CPU" in why
        assert training_operator(op, torch.device("cpu"), "off") == (op, "ProjectorMatrix is off")
        m, why = training_operator(op, torch.device("cpu"), "on")
        assert isinstance(m, MatrixOperator) and why is None
        # On a GPU, 'auto' weighs the size before building anything.
        monkeypatch.setattr(matrix_module, "AUTO_MAX_ENTRIES", estimated_entries(op) - 1)
        same, why = training_operator(op, torch.device("cuda"), "auto")
        assert same is op and "entries" in why
    cone_like = AstraOperator("direct3d", -1, (4, 8, 8), (4, 9, 12), cuda=True)
    same, why = training_operator(cone_like, torch.device("cuda"), "auto")
    assert same is cone_like and "cuda3d" in why


def test_trainer_steps_with_the_matrix_equal_those_with_astra_calls():
    vg = astra.create_vol_geom(24, 24)
    pg = astra.create_proj_geom("parallel", 1.0, 36, np.linspace(0, np.pi, 12, endpoint=False))
    _, phantom = astra.data2d.shepp_logan(vg)
    images, reports = {}, {}
    with AstraOperator.create(vg, pg, "linear") as op:
        sino = op.forward(torch.from_numpy(phantom.astype(np.float32)))
        for mode in ("off", "on"):
            trainer = INRTrainer(INRConfig(projector_matrix=mode, width=32, depth=2), op, sino,
                                 volume_grid(vg))
            trainer.run(3)
            images[mode], reports[mode] = trainer.image(), trainer.report()
    # Same operator up to float rounding: a few Adam steps agree closely (longer runs
    # drift apart, as any two runs whose sums round differently do).
    assert _rel(images["on"], images["off"]) < 1e-4
    assert reports["on"]["step_operator"]["kind"] == "matrix"
    assert reports["off"]["step_operator"] == {"kind": "astra",
                                               "matrix_not_used_because": "ProjectorMatrix is off"}


def test_projector_matrix_option_is_validated():
    with pytest.raises(ValueError, match="ProjectorMatrix"):
        INRConfig.from_options({"ProjectorMatrix": "yes"})
