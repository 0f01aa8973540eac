"""Meshes from a density field (render/mesh.py): seamless chunked marching tetrahedra, threshold, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree
from test_render_support import AnalyticSceneField, scene_sdf, true_color

from immersivedepth import sphere
from immersivedepth.render.mesh import (
    FieldMeshOptions,
    Mesh,
    auto_density_threshold,
    decimate,
    export_mesh,
    extract_isosurface,
    field_mesh,
    remove_small_components,
    vertex_normals,
)

C = np.array([0.1, -0.05, 0.07])
R = 0.55


def ball(p):
    """Positive inside a ball of radius R about C (a smooth 'density' with level 0 on the sphere)."""
    return R - np.linalg.norm(p - C, axis=1)


def _tri_set(v, f):
    tri = np.round(v[f], 6)
    tri = np.sort(tri.view([("", tri.dtype)] * 3).reshape(len(f), 3), axis=1)
    return {tuple(map(tuple, t.tolist())) for t in tri}


def test_chunked_extraction_has_no_seams():
    v1, f1, _ = extract_isosurface(ball, [-1, -1, -1], [1, 1, 1], 40, 0.0, slab=1000, sparse=False, progress=False)
    v2, f2, info = extract_isosurface(ball, [-1, -1, -1], [1, 1, 1], 40, 0.0, slab=3, brick=6, sparse=True,
                                      coarse_per_brick=2, progress=False)
    # same surface whichever way it was chunked: identical vertex positions and triangles
    assert len(v1) == len(v2) and len(f1) == len(f2)
    np.testing.assert_array_equal(np.unique(v1, axis=0), np.unique(v2, axis=0))
    assert _tri_set(v1, f1) == _tri_set(v2, f2)
    m = trimesh.Trimesh(v2, f2, process=False)
    assert m.is_watertight and m.is_winding_consistent  # vertices shared across the 13 slab borders
    assert m.volume == pytest.approx(4 / 3 * np.pi * R**3, rel=0.02)  # positive volume: normals point outward
    assert info["evaluated_points"] < info["dense_points"]  # sparse bricks skipped the empty corners
    # vertices lie on the sphere up to the linear-interpolation error of a 0.05 voxel
    assert np.abs(np.linalg.norm(v2 - C, axis=1) - R).max() < 0.01
    # normals point from the dense inside to the free outside
    n = vertex_normals(v2, f2)
    radial = (v2 - C) / np.linalg.norm(v2 - C, axis=1, keepdims=True)
    assert np.min(np.sum(n * radial, axis=1)) > 0.95


def test_edge_refinement_removes_interpolation_bias():
    step = lambda p: np.where(np.linalg.norm(p - C, axis=1) < R, 100.0, 0.0)  # a density step, no gradient
    h = 2.0 / 31
    v0, _, _ = extract_isosurface(step, [-1, -1, -1], [1, 1, 1], 32, 50.0, sparse=False, progress=False)
    v8, _, _ = extract_isosurface(step, [-1, -1, -1], [1, 1, 1], 32, 50.0, sparse=False, refine_steps=10,
                                  progress=False)
    e0 = np.abs(np.linalg.norm(v0 - C, axis=1) - R)
    e8 = np.abs(np.linalg.norm(v8 - C, axis=1) - R)
    assert e0.max() > 0.2 * h  # edge midpoints: up to half a voxel off
    assert e8.max() < h / 2**10 * 2  # bisection to 1/1024 of an edge


def test_auto_threshold_finds_the_level_of_the_depth_surface():
    sigma_max, beta, radius = 300.0, 0.02, 2.0
    dens = lambda p: sigma_max / (1 + np.exp(-(np.linalg.norm(p, axis=1) - radius) / beta))  # free inside radius 2
    dist = np.full((32, 64), radius)
    thr, err = auto_density_threshold(dens, dist, n_rays=512, n_samples=256)
    # the first crossing of sigma_max/2 is exactly at the distance map's surface
    assert thr / sigma_max == pytest.approx(0.5, abs=0.02)
    assert err < 1e-4


def test_remove_small_components():
    v1, f1, _ = extract_isosurface(ball, [-1, -1, -1], [1, 1, 1], 24, 0.0, sparse=False, progress=False)
    small = lambda p: 0.15 - np.linalg.norm(p - np.array([2.5, 0, 0]), axis=1)
    v2, f2, _ = extract_isosurface(small, [2, -0.5, -0.5], [3, 0.5, 0.5], 12, 0.0, sparse=False, progress=False)
    v = np.concatenate([v1, v2])
    f = np.concatenate([f1, f2 + len(v1)])
    vk, fk, kept, n_rm = remove_small_components(v, f, min_fraction=0.05)
    assert n_rm == 1 and len(fk) == len(f1) and kept.sum() == len(v1) and kept[: len(v1)].all()
    np.testing.assert_array_equal(vk, v1)
    _, fk0, _, n0 = remove_small_components(v, f, min_fraction=0.0)
    assert n0 == 0 and len(fk0) == len(f)


def test_decimation_optional():
    v, f, _ = extract_isosurface(ball, [-1, -1, -1], [1, 1, 1], 24, 0.0, sparse=False, progress=False)
    out, msg = decimate(Mesh(v, f), target_faces=len(f) // 4)
    try:
        import fast_simplification  # noqa: F401
    except ImportError:
        assert "fast_simplification" in msg and out.faces is f
    else:
        assert len(out.faces) <= len(f) // 4 * 1.1


# ----------------------------------------------------------------------------------------------- living room
@pytest.fixture(scope="module")
def room_field():
    return AnalyticSceneField(beta=0.005, sigma_max=400.0)


@pytest.fixture(scope="module")
def room_pano(room_field):
    return room_field.scene.render_panorama(48, 96)


@pytest.fixture(scope="module")
def room_mesh(room_field, room_pano):
    opts = FieldMeshOptions(resolution=48, auto_n_rays=1024, auto_n_samples=96, chunk=65536)
    with torch.no_grad():
        return field_mesh(room_field, opts, distance=room_pano["distance"], progress=False)


def test_field_mesh_matches_the_true_surfaces(room_field, room_mesh):
    """Mesh <-> ground truth on surfaces visible from the centre. Bound: 0.3 voxel (mesh -> GT, mean) and
    0.5 voxel (GT -> mesh, mean); the lattice spacing here is 0.15 m."""
    scene, m = room_field.scene, room_mesh
    h = m.info["spacing"]
    assert 0.1 < h < 0.2
    v = m.vertices.astype(np.float64)
    r = np.linalg.norm(v, axis=1)
    seen = scene.cast(np.zeros(3), v / r[:, None])["distance"]
    vis = r <= seen * 1.01 + 0.5 * h
    assert vis.mean() > 0.6
    d_mesh_gt = np.abs(scene_sdf(scene, v[vis]))
    assert d_mesh_gt.mean() < 0.3 * h and np.percentile(d_mesh_gt, 95) < 0.5 * h
    gt, _ = scene.sample_surface(5000, visible_from=np.zeros(3))
    samples, _ = trimesh.sample.sample_surface(m.to_trimesh(), 200_000, seed=0)
    d_gt_mesh, _ = cKDTree(samples).query(gt)
    assert d_gt_mesh.mean() < 0.5 * h and np.percentile(d_gt_mesh, 90) < h
    # colours are the colour field's at the vertices
    np.testing.assert_allclose(m.colors, true_color(v).astype(np.float32), atol=1e-5)
    assert 0.0 < m.info["threshold_rel_err"] < 0.02


def test_field_mesh_floor_normal_points_up(room_field, room_mesh):
    m = room_mesh
    v = m.vertices.astype(np.float64)
    cen = v[m.faces].mean(axis=1)
    floor_y = room_field.scene.bounds[0][1]
    # faces whose nearest surface is the floor
    on_floor = np.abs(scene_sdf(room_field.scene, cen) - (cen[:, 1] - floor_y)) < 1e-6
    on_floor &= cen[:, 1] - floor_y < 0.05
    assert on_floor.sum() > 50
    fn = np.cross(v[m.faces[:, 1]] - v[m.faces[:, 0]], v[m.faces[:, 2]] - v[m.faces[:, 0]])
    fn /= np.linalg.norm(fn, axis=1, keepdims=True)
    assert np.median(fn[on_floor][:, 1]) > 0.999
    assert np.mean(m.normals[np.unique(m.faces[on_floor])][:, 1] > 0.9) > 0.9


def test_field_mesh_clip_keeps_unseen_space_solid(room_field, room_mesh, room_pano):
    """No surface floats in space the panorama never saw: every vertex is at most a margin (5 % + 2 voxels,
    + 1 voxel for the edge it sits on) behind the distance map (dilated by two pixels so silhouettes survive);
    hidden backs of objects are closed along the visibility boundary instead."""
    from scipy import ndimage

    v = room_mesh.vertices.astype(np.float64)
    r = np.linalg.norm(v, axis=1)
    dmax = ndimage.maximum_filter(room_pano["distance"].astype(np.float64), size=5, mode=("nearest", "wrap"))
    d = sphere.erp_sample_dirs(dmax, v / r[:, None])
    h = room_mesh.info["spacing"]
    assert np.all(r <= d * 1.05 + 3 * h + 1e-6)
    # and the room's outer walls are never meshed from outside: no vertex beyond the field box
    lo, hi = (b.numpy() for b in room_field.bounds)
    assert np.all(v >= lo - 1e-6) and np.all(v <= hi + 1e-6)


@pytest.mark.parametrize("fmt", ["glb", "ply", "obj"])
def test_exported_meshes_load_back_with_colours(tmp_path, room_mesh, fmt):
    (path,) = export_mesh(room_mesh, tmp_path, "mesh", formats=[fmt])
    assert path.name == f"mesh.{fmt}"
    tm = trimesh.load(path, force="mesh", process=False)
    assert len(tm.faces) == len(room_mesh.faces)
    assert len(tm.vertices) == len(room_mesh.vertices)
    cols = np.asarray(tm.visual.vertex_colors)[:, :3].astype(np.float64) / 255
    np.testing.assert_allclose(cols, room_mesh.colors, atol=1 / 255 + 1e-6)
    # y-up, world units: the bounding box is the room's (allowing the closing surfaces at the margin)
    lo, hi = room_mesh.vertices.min(0), room_mesh.vertices.max(0)
    np.testing.assert_allclose(tm.bounds[0], lo, atol=1e-5)
    np.testing.assert_allclose(tm.bounds[1], hi, atol=1e-5)


def test_field_mesh_bad_options(room_field):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['resolutoin'\]"):
        FieldMeshOptions.from_mapping({"resolutoin": 64})
    with pytest.raises(ValueError, match="threshold must be > 0"):
        field_mesh(room_field, FieldMeshOptions(resolution=8, threshold=-1.0), progress=False)
    with pytest.raises(ValueError, match="threshold must be a number or 'auto'"):
        field_mesh(room_field, FieldMeshOptions(resolution=8, threshold="otsu"), progress=False)
    with pytest.raises(ValueError, match=r"field mesh is empty at density threshold .*lower"):
        field_mesh(room_field, FieldMeshOptions(resolution=8, threshold=1e9, colors=False), progress=False)


class _ShellField(torch.nn.Module):
    """Free ball of radius 2 seen from the centre; the density net also holds fog (|x| < 1, never sampled by the
    renderer: the occupancy grid is empty there) and the shell is thin (density falls back to 0 beyond 2.3, where
    the grid is empty again) — the two artefacts a briefly trained field shows."""

    def __init__(self):
        super().__init__()
        self.bounds = (torch.full((3,), -3.0), torch.full((3,), 3.0))
        field = self

        class Occ:
            @staticmethod
            def query(x):
                r = x.norm(dim=-1)
                return (r > 1.6) & (r < 2.45)

        self.occupancy = Occ()
        field.sigma_max = 200.0

    def density(self, x):
        r = x.norm(dim=-1)
        shell = torch.sigmoid((r - 2.0) / 0.01) * torch.sigmoid((2.3 - r) / 0.01)
        fog = torch.sigmoid((1.0 - r) / 0.01)
        return self.sigma_max * (shell + 0.8 * fog)

    def color(self, x, d=None):
        return true_color(x)


@pytest.mark.parametrize("use_occupancy", [True, False])
def test_field_mesh_sees_the_field_as_the_renderer_does(use_occupancy):
    kw = dict(resolution=40, threshold=100.0, use_occupancy=use_occupancy, min_component_fraction=0.0)
    dist = np.full((32, 64), 2.0)
    m = field_mesh(_ShellField(), FieldMeshOptions(**kw), distance=dist, progress=False)
    r = np.linalg.norm(m.vertices, axis=1)
    # the shell's back face (r = 2.3) is carved away: beyond the first crossing along central rays is solid
    assert np.sum(np.abs(r - 2.3) < 0.05) == 0
    if use_occupancy:
        # only the observed surface: the fog ball in never-sampled cells is gone too
        assert np.abs(r - 2.0).max() < 0.01
        assert m.info["evaluated_points"] < m.info["dense_points"]
    else:
        assert np.sum(np.abs(r - 1.0) < 0.01) > 100
    # without carving the back face is there
    m2 = field_mesh(_ShellField(), FieldMeshOptions(clip_to_visible=False, **kw), distance=dist, progress=False)
    assert np.sum(np.abs(np.linalg.norm(m2.vertices, axis=1) - 2.3) < 0.05) > 100
