"""ASTRA projectors as torch operators: adjointness, gradients, errors."""

import astra
import numpy as np
import pytest
import torch

from astra_inr.operator import AstraOperator, project


def _adjoint_gap(op):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(op.vol_shape, generator=g)
    y = torch.rand(op.proj_shape, generator=g)
    lhs = float((op.forward(x).double() * y.double()).sum())
    rhs = float((x.double() * op.adjoint(y).double()).sum())
    return abs(lhs - rhs) / abs(lhs)


@pytest.mark.parametrize("kind, projector", [("parallel", "line"), ("parallel", "strip"),
                                             ("parallel", "linear"), ("fanflat", "line_fanflat")])
def test_adjoint_identity_2d_cpu(kind, projector):
    vg = astra.create_vol_geom(12, 15)
    angles = np.linspace(0, np.pi, 9, endpoint=False)
    if kind == "parallel":
        pg = astra.create_proj_geom("parallel", 1.0, 22, angles)
    else:
        pg = astra.create_proj_geom("fanflat", 1.0, 30, angles, 60.0, 30.0)
    with AstraOperator.create(vg, pg, projector) as op:
        assert op.kind == "direct2d" and not op.cuda
        assert _adjoint_gap(op) < 1e-6


def test_adjoint_identity_parallel_vec_and_parallel3d_slicewise():
    angles = np.linspace(0, np.pi, 9, endpoint=False)
    pg = astra.geom_2vec(astra.create_proj_geom("parallel", 1.0, 22, angles))
    with AstraOperator.create(astra.create_vol_geom(12, 12), pg, "line") as op:
        assert _adjoint_gap(op) < 1e-6
    pg3 = astra.create_proj_geom("parallel3d", 1.0, 1.0, 3, 20, angles)
    with AstraOperator.create(astra.create_vol_geom(12, 14, 3), pg3) as op3:
        assert op3.kind == "slicewise3d" and op3.proj_shape == (3, 9, 20)
        assert _adjoint_gap(op3) < 1e-6


def test_slicewise_3d_is_the_2d_problem_per_slice_with_rows_reversed():
    angles = np.linspace(0, np.pi, 7, endpoint=False)
    vol = torch.rand(2, 10, 10)
    pg3 = astra.create_proj_geom("parallel3d", 1.0, 1.0, 2, 16, angles)
    with AstraOperator.create(astra.create_vol_geom(10, 10, 2), pg3, "linear") as op3, \
            AstraOperator.create(astra.create_vol_geom(10, 10),
                                 astra.create_proj_geom("parallel", 1.0, 16, angles), "linear") as op2:
        proj = op3.forward(vol)
        for k in range(2):
            assert torch.allclose(proj[k], op2.forward(vol[k].flip(0).contiguous()))


def test_gradient_matches_the_dense_system_matrix():
    vg = astra.create_vol_geom(5, 6)
    pg = astra.create_proj_geom("parallel", 1.0, 8, np.linspace(0, np.pi, 4, endpoint=False))
    pid = astra.create_projector("strip", pg, vg)
    mid = astra.projector.matrix(pid)
    W = torch.from_numpy(astra.matrix.get(mid).toarray()).float()      # (4*8, 5*6)
    astra.matrix.delete(mid)
    op = AstraOperator.from_projector(pid)
    x = torch.rand(5, 6, requires_grad=True)
    g = torch.rand(4, 8)
    out = project(x, op)
    assert torch.allclose(out.reshape(-1), W @ x.detach().reshape(-1), atol=1e-5)
    out.backward(g)
    assert torch.allclose(x.grad.reshape(-1), W.T @ g.reshape(-1), atol=1e-5)
    # Also through torch.autograd.gradcheck-style finite differences of a scalar loss.
    x64 = x.detach().clone().requires_grad_(True)
    loss = (project(x64, op) ** 2).sum()
    loss.backward()
    expected = 2 * W.T @ (W @ x64.detach().reshape(-1))
    assert torch.allclose(x64.grad.reshape(-1), expected, rtol=1e-4, atol=1e-4)
    op.close()
    astra.projector.delete(pid)


def test_operator_created_here_is_freed_and_borrowed_one_is_not():
    vg = astra.create_vol_geom(4, 4)
    pg = astra.create_proj_geom("parallel", 1.0, 6, [0.0, 1.0])
    pid = astra.create_projector("line", pg, vg)
    op = AstraOperator.from_projector(pid)
    op.close()
    astra.projector.projection_geometry(pid)          # still alive: borrowed
    owned = AstraOperator.create(vg, pg, "line")
    owned_id = owned.projector_id
    owned.close()
    with pytest.raises(Exception):
        astra.projector.projection_geometry(owned_id)
    with pytest.raises(RuntimeError, match="closed"):
        owned.forward(torch.zeros(4, 4))
    astra.projector.delete(pid)


def test_clear_errors_for_wrong_shape_dtype_and_type():
    vg = astra.create_vol_geom(4, 4)
    pg = astra.create_proj_geom("parallel", 1.0, 6, [0.0, 1.0])
    with AstraOperator.create(vg, pg, "line") as op:
        with pytest.raises(ValueError, match=r"shape \(5, 4\), expected \(4, 4\)"):
            op.forward(torch.zeros(5, 4))
        with pytest.raises(TypeError, match="float64.*float32"):
            op.forward(torch.zeros(4, 4, dtype=torch.float64))
        with pytest.raises(TypeError, match="torch.Tensor"):
            op.forward(np.zeros((4, 4), np.float32))
        with pytest.raises(ValueError, match="projections has shape"):
            op.adjoint(torch.zeros(3, 6))
        # Non-contiguous input is accepted (copied), results equal.
        x = torch.rand(4, 4)
        assert torch.allclose(op.forward(x.T.contiguous().T), op.forward(x))


def test_3d_geometries_other_than_parallel3d_are_refused_without_gpu(monkeypatch):
    monkeypatch.setattr(astra, "use_cuda", lambda: False)
    angles = np.linspace(0, np.pi, 5, endpoint=False)
    cone = astra.create_proj_geom("cone", 1.0, 1.0, 4, 8, angles, 50, 20)
    with pytest.raises(astra.log.AstraError, match="needs ASTRA's CUDA projectors"):
        AstraOperator.create(astra.create_vol_geom(6, 6, 4), cone)


def test_parallel3d_with_oblong_pixels_is_refused_by_name_without_gpu(monkeypatch):
    monkeypatch.setattr(astra, "use_cuda", lambda: False)
    angles = np.linspace(0, np.pi, 5, endpoint=False)
    pg3 = astra.create_proj_geom("parallel3d", 1.0, 1.0, 2, 12, angles)
    oblong = astra.create_vol_geom(6, 6, 2, -3, 3, -1.5, 1.5, -1, 1)     # pixels 1 x 0.5
    with pytest.raises(ValueError, match="square pixels"):
        AstraOperator.create(oblong, pg3)
