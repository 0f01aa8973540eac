"""Mesh and point cloud straight from the distance panorama (render/depth_mesh.py, stage.export_depth_products)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree
from test_render_support import scene_sdf

from immersivedepth import sphere
from immersivedepth.io import read_ply
from immersivedepth.render.depth_mesh import DepthMeshOptions, depth_mesh, point_cloud
from immersivedepth.render.stage import export_depth_products
from immersivedepth.scenes.synthetic import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene("living_room")


@pytest.fixture(scope="module")
def pano(scene):
    return scene.render_panorama(128, 256)


@pytest.fixture(scope="module")
def mesh(pano):
    return depth_mesh(pano["rgb"], pano["distance"])


def test_vertices_sit_on_the_pixels_rays(pano, mesh):
    pix = mesh.info["pixel_index"]
    grid = pix >= 0
    dirs = sphere.erp_directions(128, 256, np.float64).reshape(-1, 3)[pix[grid]]
    expect = dirs * pano["distance"].reshape(-1)[pix[grid], None]
    np.testing.assert_allclose(mesh.vertices[grid], expect, atol=1e-5)
    np.testing.assert_allclose(mesh.colors[grid], pano["rgb"].reshape(-1, 3)[pix[grid]], atol=1e-6)


def test_depth_mesh_close_to_true_surfaces(scene, pano, mesh):
    """Bounds: every kept triangle's centroid lies within 8 cm of a true surface (only room corners are cut
    off that much; a triangle bridging a depth discontinuity is up to 0.7 m off, see the next test), 99 % within
    2 cm, and visible surface points are within 2.5 cm of the mesh on average (the grid is 1.4 degrees per
    pixel, about 4-10 cm on the walls)."""
    tm = mesh.to_trimesh()
    v = mesh.vertices.astype(np.float64)
    off = np.abs(scene_sdf(scene, v[mesh.faces].mean(axis=1)))
    assert off.max() < 0.08 and np.percentile(off, 99) < 0.02 and off.mean() < 0.005
    gt, _ = scene.sample_surface(5000, visible_from=np.zeros(3))
    dense, _ = trimesh.sample.sample_surface(tm, 400_000, seed=2)
    d, _ = cKDTree(dense).query(gt)
    assert d.mean() < 0.025


def test_discontinuities_and_grazing_triangles_are_cut(pano):
    # no cut: triangles bridge the table edge to the floor behind it
    loose = depth_mesh(pano["rgb"], pano["distance"], DepthMeshOptions(max_depth_ratio=1e9, max_grazing_deg=90))
    strict = depth_mesh(pano["rgb"], pano["distance"])
    assert len(strict.faces) < len(loose.faces)
    e_loose = np.linalg.norm(np.diff(loose.vertices[loose.faces][:, [0, 1, 2, 0]], axis=1), axis=2).max()
    e_strict = np.linalg.norm(np.diff(strict.vertices[strict.faces][:, [0, 1, 2, 0]], axis=1), axis=2).max()
    assert e_loose > 1.0 and e_strict < 0.5
    from test_render_support import scene_sdf as sdf

    scene = make_scene("living_room")
    off_loose = np.abs(sdf(scene, loose.vertices[loose.faces].astype(np.float64).mean(axis=1)))
    assert off_loose.max() > 0.3


def test_floor_normals_point_up_and_walls_face_the_centre(scene, mesh):
    v = mesh.vertices.astype(np.float64)
    f = mesh.faces
    cen = v[f].mean(axis=1)
    floor_y = scene.bounds[0][1]
    on_floor = np.abs(cen[:, 1] - floor_y) < 1e-4
    assert on_floor.sum() > 500
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    fn /= np.linalg.norm(fn, axis=1, keepdims=True)
    assert fn[on_floor][:, 1].min() > 0.999  # float32 distances tilt tiny triangles near the nadir slightly
    assert np.median(np.abs(fn[on_floor][:, [0, 2]])) < 1e-4
    # every triangle faces the panorama centre
    assert np.all(np.einsum("ij,ij->i", fn, cen) < 0)


def test_poles_closed_and_stride(pano):
    m = depth_mesh(pano["rgb"], pano["distance"], DepthMeshOptions(stride=4))
    assert m.info["grid"] == [32, 64]
    poles = m.vertices[m.info["pixel_index"] == -1]
    assert len(poles) == 2 * 64  # one pole vertex per fan triangle (own texture coordinate), two poles
    assert len(np.unique(poles, axis=0)) == 2
    assert poles[:, 1].max() > 1.3 and poles[:, 1].min() < -1.3  # ceiling and floor heights (1.4 m)
    with pytest.raises(ValueError, match="stride 5 must divide the panorama size 128x256"):
        depth_mesh(pano["rgb"], pano["distance"], DepthMeshOptions(stride=5))


def test_invalid_pixels_leave_holes_not_spikes(pano):
    d = pano["distance"].copy()
    d[60:70, 100:120] = 0.0
    d[10, 10] = np.nan
    m = depth_mesh(None, d)
    assert m.colors is None
    assert np.isfinite(m.vertices).all()
    assert np.linalg.norm(m.vertices, axis=1).min() > 0.5  # no vertex collapsed onto the centre


def test_bad_inputs(pano):
    with pytest.raises(ValueError, match=r"distance must be an \(H, W\) map"):
        depth_mesh(None, np.zeros((4, 8, 3)))
    with pytest.raises(ValueError, match=r"rgb must be \(H, W, 3\) matching distance"):
        depth_mesh(np.zeros((4, 4, 3)), pano["distance"])
    with pytest.raises(ValueError, match="every triangle was cut"):
        depth_mesh(None, np.zeros((8, 16)))
    with pytest.raises(ValueError, match="unknown option"):
        DepthMeshOptions.from_mapping({"strid": 2})


def test_point_cloud(pano):
    pts, cols, nrm = point_cloud(pano["rgb"], pano["distance"], pano["normal"].astype(np.float32))
    assert pts.shape == (128 * 256, 3) and cols.shape == pts.shape and nrm.shape == pts.shape
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), pano["distance"].reshape(-1), rtol=1e-5)


def test_export_depth_products_load_back(tmp_path, pano):
    res = export_depth_products(tmp_path, pano["rgb"], pano["distance"])
    for fmt in ("glb", "ply", "obj"):
        tm = trimesh.load(tmp_path / f"depth_mesh.{fmt}", force="mesh", process=False)
        assert len(tm.faces) == res["depth_mesh_faces"]
        cols = np.asarray(tm.visual.vertex_colors)[:, :3]
        assert cols.std() > 5  # real colours, not a flat default
    ply = read_ply(tmp_path / "points.ply")
    assert len(ply["points"]) == res["n_points"] == 128 * 256
    assert ply["colors"] is not None and ply["normals"] is not None
    # normals face the centre (from the surface into the free space)
    assert np.mean(np.einsum("ij,ij->i", ply["normals"], ply["points"]) < 0) > 0.99
    # floor points: normal +y
    floor = np.abs(ply["points"][:, 1] + 1.4) < 1e-3
    assert floor.sum() > 100 and np.median(ply["normals"][floor][:, 1]) > 0.99
    np.testing.assert_allclose(ply["colors"] / 255.0, pano["rgb"].reshape(-1, 3), atol=1 / 255 + 1e-6)


def test_textured_export_maps_the_panorama(tmp_path, pano):
    res = export_depth_products(tmp_path, pano["rgb"], pano["distance"], points=False)
    names = sorted(p.split("/")[-1] for p in res["depth_mesh_textured"])
    assert names == ["depth_mesh_texture.png", "depth_mesh_textured.glb", "depth_mesh_textured.mtl",
                     "depth_mesh_textured.obj"]
    assert "map_Kd depth_mesh_texture.png" in (tmp_path / "depth_mesh_textured.mtl").read_text()
    tm = trimesh.load(tmp_path / "depth_mesh_textured.obj", process=False)
    assert tm.visual.kind == "texture"
    img = np.asarray(tm.visual.material.image)[..., :3]
    assert img.shape == (128, 256, 3)
    # each grid vertex's texture coordinate lands on its own pixel, whose colour is the panorama's
    uv, v = tm.visual.uv, np.asarray(tm.vertices)
    col = np.floor(uv[:, 0] * 256).astype(int) % 256
    row = np.floor((1 - uv[:, 1]) * 128).astype(int)
    grid = (row >= 0) & (row < 128) & (np.abs(np.abs(v[:, 1]) - 1.4) > 1e-3)  # skip pole vertices
    lon, lat = sphere.dir_to_lonlat(v[grid] / np.linalg.norm(v[grid], axis=1, keepdims=True))
    u_px, v_px = sphere.lonlat_to_pixel(lon, lat, 256, 128)
    np.testing.assert_array_equal(col[grid], np.round(u_px).astype(int) % 256)
    np.testing.assert_array_equal(row[grid], np.round(v_px).astype(int))
    np.testing.assert_allclose(img[row[grid], col[grid]] / 255.0, pano["rgb"][row[grid], col[grid]],
                               atol=1 / 255 + 1e-6)
    glb = trimesh.load(tmp_path / "depth_mesh_textured.glb", force="mesh", process=False)
    assert glb.visual.kind == "texture" and len(glb.faces) == len(tm.faces)
