"""Volume grids and normalised coordinates."""

import astra
import numpy as np
import pytest

from astra_inr import geometry as geo


def test_square_centred_grid_spans_minus_one_to_one():
    grid = geo.volume_grid(astra.create_vol_geom(4, 4))
    y, x = grid.axis_coordinates()
    np.testing.assert_allclose(x, [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(y, [0.75, 0.25, -0.25, -0.75])   # row 0 is the top (largest y)


def test_offset_non_square_window_keeps_isotropic_scaling():
    # 10 mm x 4 mm window centred at (102, -3): the long side maps to [-1, 1].
    vg = astra.create_vol_geom(8, 20, 97.0, 107.0, -5.0, -1.0)
    grid = geo.volume_grid(vg)
    assert grid.voxel_size == pytest.approx((0.5, 0.5))
    coords = grid.coordinates().numpy()
    assert coords.shape == (160, 2)
    assert coords[:, 0].min() == pytest.approx(-0.95) and coords[:, 0].max() == pytest.approx(0.95)
    assert coords[:, 1].max() == pytest.approx(0.35) and coords[:, 1].min() == pytest.approx(-0.35)
    # Same physical spacing along both axes in normalised units.
    assert np.diff(np.unique(coords[:, 0]))[0] == pytest.approx(np.diff(np.unique(coords[:, 1]))[0])


def test_3d_grid_axes_and_upsampling():
    vg = astra.create_vol_geom(6, 8, 4)              # rows, cols, slices
    grid = geo.volume_grid(vg)
    assert grid.shape == (4, 6, 8)
    z, y, x = grid.axis_coordinates()
    assert np.all(np.diff(y) > 0) and np.all(np.diff(z) > 0)  # 3D rows run along +y
    coords = grid.coordinates(upsample=2)
    assert coords.shape == (8 * 12 * 16, 3)
    # Upsampled samples average back to the coarse voxel centres.
    x2 = grid.axis_coordinates(upsample=2)[2]
    np.testing.assert_allclose(x2.reshape(-1, 2).mean(axis=1), x)


def test_projection_shapes_for_every_supported_type():
    angles = np.linspace(0, np.pi, 5, endpoint=False)
    assert geo.projection_shape(astra.create_proj_geom("parallel", 1.0, 7, angles)) == (5, 7)
    assert geo.projection_shape(astra.create_proj_geom("fanflat", 1.0, 7, angles, 50, 20)) == (5, 7)
    assert geo.projection_shape(astra.create_proj_geom("parallel3d", 1.0, 1.0, 3, 7, angles)) == (3, 5, 7)
    cone = astra.create_proj_geom("cone", 1.0, 1.0, 3, 7, angles, 50, 20)
    assert geo.projection_shape(cone) == (3, 5, 7)
    assert geo.projection_shape(astra.geom_2vec(cone)) == (3, 5, 7)
    with pytest.raises(ValueError, match="unsupported projection geometry"):
        geo.projection_shape({"type": "sparse_matrix"})


def test_parallel3d_reduces_to_2d_only_with_one_row_per_slice():
    angles = np.linspace(0, np.pi, 5, endpoint=False)
    vg = astra.create_vol_geom(6, 8, 4)
    vg2, pg2 = geo.parallel3d_as_2d(vg, astra.create_proj_geom("parallel3d", 1.0, 1.0, 4, 9, angles))
    assert vg2["GridRowCount"] == 6 and pg2["DetectorCount"] == 9 and pg2["type"] == "parallel"
    with pytest.raises(ValueError, match="one detector row per slice"):
        geo.parallel3d_as_2d(vg, astra.create_proj_geom("parallel3d", 1.0, 1.0, 5, 9, angles))
    with pytest.raises(ValueError, match="one detector row per slice"):
        geo.parallel3d_as_2d(vg, astra.create_proj_geom("parallel3d", 1.0, 2.0, 4, 9, angles))
    with pytest.raises(ValueError, match="centred in z"):
        shifted = astra.create_vol_geom(6, 8, 4, -4, 4, -3, 3, 0, 4)
        geo.parallel3d_as_2d(shifted, astra.create_proj_geom("parallel3d", 1.0, 1.0, 4, 9, angles))


def test_bad_volume_geometry_is_named():
    with pytest.raises(ValueError, match="GridRowCount"):
        geo.volume_grid({"foo": 1})
