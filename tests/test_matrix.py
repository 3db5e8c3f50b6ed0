"""ASTRA's projection matrix as the training operator (ProjectorMatrix)."""

import astra
import numpy as np
import pytest
import torch

from astra_inr import joseph, matrix as matrix_module
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


def _astra_linear_matrix(vg: dict, pg: dict):
    pid = astra.create_projector("linear", pg, vg)
    mid = astra.projector.matrix(pid)
    try:
        return astra.matrix.get(mid).tocsr()
    finally:
        astra.matrix.delete(mid)
        astra.projector.delete(pid)


_TIES = np.array([0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4, np.pi, 1.25 * np.pi, 1.5 * np.pi])


@pytest.mark.parametrize("vg, pg", [
    # Off-centre window, more columns than rows, pixels of 0.37, 45-degree ties.
    (astra.create_vol_geom(30, 41, -7.585, 7.585, -4.45, 6.65),
     astra.create_proj_geom("parallel", 0.45, 70, _TIES)),
    # Detector pixels wider than the image's, arbitrary angles beyond one turn.
    (astra.create_vol_geom(33, 33),
     astra.create_proj_geom("parallel", 2.0, 9, np.random.default_rng(3).uniform(-7, 7, 40))),
    # A shifted, tilted vector geometry whose ray vectors are not unit vectors.
    (astra.create_vol_geom(24, 24),
     {**astra.geom_2vec(astra.create_proj_geom("parallel", 1.2, 40, ANGLES)),
      "Vectors": astra.geom_2vec(astra.create_proj_geom("parallel", 1.2, 40, ANGLES))["Vectors"]
      * np.array([1.7, 1.7, 1.0, 1.0, 1.0, 1.0]) + np.array([0.0, 0.0, 3.3, -1.1, 0.02, 0.0])}),
])
def test_vectorised_linear_kernel_is_astras_matrix(vg, pg):
    ours, theirs = joseph.linear_parallel_matrix(vg, pg), _astra_linear_matrix(vg, pg)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    # Same kernel in float32: entries agree to rounding, so do the products.
    assert ours.nnz == theirs.nnz
    assert abs(ours - theirs).max() <= 1e-4 * theirs.max()
    x = np.random.default_rng(4).random(ours.shape[1]).astype(np.float32)
    assert np.linalg.norm(ours @ x - theirs @ x) <= 1e-5 * np.linalg.norm(theirs @ x)


def test_vectorised_kernel_covers_parallel_square_pixels_only():
    square, pg = astra.create_vol_geom(8, 8), astra.create_proj_geom("parallel", 1.0, 12, ANGLES)
    assert joseph.covers(square, pg) and joseph.covers(square, astra.geom_2vec(pg))
    oblong = astra.create_vol_geom(8, 8, -4, 4, -2, 2)
    fan = astra.create_proj_geom("fanflat", 1.0, 12, ANGLES, 50.0, 20.0)
    assert not joseph.covers(oblong, pg) and not joseph.covers(square, fan)
    with pytest.raises(ValueError, match="parallel"):
        joseph.linear_parallel_matrix(square, fan)
    # The trainer's builder takes it for a cuda-like problem (no CPU projector given) and
    # ASTRA's getter where it does not cover the geometry.
    matrix_module._CACHE.clear()
    assert matrix_module._build(square, pg, None, False)[2]["builder"] == "astra_inr.joseph"
    assert matrix_module._build(square, fan, None, False)[2]["builder"] == "astra.matrix.get"
    # No ASTRA CPU kernel takes oblong pixels: a clear error, which 'auto' turns into a reason.
    with pytest.raises(ValueError, match="square pixels"):
        matrix_module._build(oblong, pg, None, False)


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


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_trainer_steps_with_the_matrix_equal_those_with_astra_calls(precision):
    # bf16: the network's products autocast, the matrix's stay float32 (sparse kernels
    # have no bf16 on the CPU).
    vg = astra.create_vol_geom(24, 24)
    pg = astra.create_proj_geom("parallel", 1.0, 36, np.linspace(0, np.pi, 12, endpoint=False))
    _, phantom = astra.data2d.shepp_logan(vg)
    images, reports = {}, {}
    with AstraOperator.create(vg, pg, "linear") as op:
        sino = op.forward(torch.from_numpy(phantom.astype(np.float32)))
        for mode in ("off", "on"):
            trainer = INRTrainer(INRConfig(projector_matrix=mode, width=32, depth=2,
                                           matmul_precision=precision), op, sino,
                                 volume_grid(vg))
            trainer.run(3)
            images[mode], reports[mode] = trainer.image(), trainer.report()
    # Same operator up to float rounding: a few Adam steps agree closely (longer runs
    # drift apart, as any two runs whose sums round differently do).
    assert _rel(images["on"], images["off"]) < 1e-4
    assert reports["on"]["step_operator"]["kind"] == "matrix"
    assert reports["on"]["matmul_precision"] == precision
    assert reports["off"]["step_operator"] == {"kind": "astra",
                                               "matrix_not_used_because": "ProjectorMatrix is off"}


def test_projector_matrix_option_is_validated():
    with pytest.raises(ValueError, match="ProjectorMatrix"):
        INRConfig.from_options({"ProjectorMatrix": "yes"})
