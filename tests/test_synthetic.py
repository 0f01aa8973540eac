"""Analytic checks of the procedural test scene (immersivedepth.scenes.synthetic) and its bundled output.

The independent reference here is a sphere tracer over exact signed distance functions written in
this file from the primitives' public parameters: it finds the first surface along a ray without
using any of the scene's intersection code.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from immersivedepth import sphere
from immersivedepth.eval.metrics import psnr
from immersivedepth.scenes.synthetic import (
    SCENE_VERSION,
    Box,
    Cylinder,
    Lighting,
    Material,
    Room,
    Scene,
    Sphere,
    Wave,
    make_scene,
)

# ----------------------------------------------------------------------------------------------------------------------
# independent exact SDFs (positive outside a solid; the room's is positive inside the room)


def sdf_prim(prim, p: np.ndarray) -> np.ndarray:
    if prim.kind == "room":
        lo, hi = np.asarray(prim.lo), np.asarray(prim.hi)
        return np.minimum(p - lo, hi - p).min(axis=1)
    if prim.kind == "box":
        lo, hi = np.asarray(prim.lo), np.asarray(prim.hi)
        q = np.abs(p - (lo + hi) / 2) - (hi - lo) / 2
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
    if prim.kind == "sphere":
        return np.linalg.norm(p - np.asarray(prim.center), axis=1) - prim.radius
    if prim.kind == "cylinder":
        cx, cz = prim.center_xz
        rad = np.hypot(p[:, 0] - cx, p[:, 2] - cz) - prim.radius
        ym, hh = (prim.y0 + prim.y1) / 2, (prim.y1 - prim.y0) / 2
        q = np.stack([rad, np.abs(p[:, 1] - ym) - hh], axis=1)
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
    raise AssertionError(prim.kind)


def sdf_scene(scene, p):
    return np.min([sdf_prim(q, p) for q in scene.primitives], axis=0)


def sphere_trace(scene, o, d, n_iter=3000, eps=1e-11):
    """First hit distance along unit rays ``d`` from ``o`` by sphere tracing; NaN where not converged."""
    t = np.zeros(len(d))
    active = np.ones(len(d), dtype=bool)
    for _ in range(n_iter):
        if not active.any():
            break
        idx = np.nonzero(active)[0]
        s = sdf_scene(scene, o[idx] + t[idx, None] * d[idx])
        t[idx] += s
        active[idx[s < eps]] = False
    t[active] = np.nan
    return t


def random_dirs(n, seed):
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


FREE_POSITIONS = [(0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (-0.3, 0.4, -0.5), (0.2, -0.6, 0.4)]


@pytest.fixture(scope="module")
def scene():
    return make_scene("living_room")


# ----------------------------------------------------------------------------------------------------------------------
# layout


def test_layout_room_and_clearance(scene):
    lo, hi = scene.bounds
    np.testing.assert_array_equal(lo, [-3.0, -1.4, -4.0])
    np.testing.assert_array_equal(hi, [3.5, 1.4, 2.8])
    kinds = [o.kind for o in scene.objects]
    assert kinds.count("sphere") == 2 and kinds.count("cylinder") == 2 and kinds.count("box") >= 3
    origin = np.zeros((1, 3))
    for obj in scene.objects:
        assert sdf_prim(obj, origin)[0] >= 0.8, obj.name  # novel views 0.5 m away stay in free space
        assert np.all(sdf_prim(scene.room, np.asarray(obj.mesh()[0])) >= -1e-12), obj.name  # inside the room


def test_axis_rays_hit_the_walls_at_their_coordinates(scene):
    d = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float)
    r = scene.cast(np.zeros(3), d)
    np.testing.assert_allclose(r["distance"], [3.5, 3.0, 1.4, 1.4, 2.8, 4.0], rtol=0, atol=1e-12)
    assert np.all(r["object_id"] == 0)
    np.testing.assert_allclose(r["normal"], -d, atol=0)
    o = np.array([0.3, 0.2, -0.5])
    r = make_scene("empty_room").cast(o, d)
    np.testing.assert_allclose(r["distance"], [3.2, 3.3, 1.2, 1.6, 3.3, 3.5], rtol=0, atol=1e-12)


def test_ray_to_sphere_centre_hits_at_norm_minus_radius(scene):
    for pos in FREE_POSITIONS:
        pos = np.asarray(pos)
        for s in (o for o in scene.objects if o.kind == "sphere"):
            v = np.asarray(s.center) - pos
            d = (v / np.linalg.norm(v))[None, :]
            r = scene.cast(pos, d)
            assert r["object_id"][0] == scene.object_names.index(s.name)
            assert abs(r["distance"][0] - (np.linalg.norm(v) - s.radius)) < 1e-12
            np.testing.assert_allclose(r["normal"][0], -d[0], atol=1e-12)


def test_hits_lie_on_the_hit_primitive_and_match_sphere_tracing(scene):
    for k, pos in enumerate(FREE_POSITIONS):
        d = random_dirs(4000, seed=k)
        o = np.broadcast_to(np.asarray(pos, float), d.shape)
        r = scene.cast(o, d)
        assert np.all(r["object_id"] >= 0) and np.all(np.isfinite(r["distance"]))
        p = r["point"]
        np.testing.assert_allclose(np.linalg.norm(p - o, axis=1), r["distance"], rtol=1e-14, atol=1e-14)
        for pid, prim in enumerate(scene.primitives):
            sel = r["object_id"] == pid
            if sel.any():  # implicit surface equation of that primitive
                assert np.abs(sdf_prim(prim, p[sel])).max() < 1e-9, prim.name
        assert sdf_scene(scene, p).min() > -1e-9  # not inside any other solid
        # normals: unit, facing the ray, equal to the surface gradient for spheres
        n = r["normal"]
        np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-12)
        assert np.all(np.einsum("ij,ij->i", n, d) < 0)
        for pid, prim in enumerate(scene.primitives):
            sel = r["object_id"] == pid
            if prim.kind == "sphere" and sel.any():
                np.testing.assert_allclose(n[sel], (p[sel] - prim.center) / prim.radius, atol=1e-12)
        # nearest hit: an independent sphere tracer finds the same first surface
        t = sphere_trace(scene, np.asarray(o), d)
        conv = np.isfinite(t)
        assert conv.mean() > 0.99
        np.testing.assert_allclose(t[conv], r["distance"][conv], rtol=0, atol=1e-8)


def test_axis_parallel_and_grazing_rays(scene):
    # rays exactly along the floor plane and along box faces (d components of 0) must not produce NaN
    o = np.array([[0.0, -1.4 + 1e-12, 0.0], [0.0, -0.64, -1.0], [0.0, 0.0, 0.0]])
    d = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    r = scene.cast(o, d)
    assert np.all(np.isfinite(r["distance"])) and np.all(np.isfinite(r["normal"]))
    np.testing.assert_allclose(r["distance"][2], 3.5, atol=1e-12)


def test_panorama_distance_is_the_hit_point_norm(scene):
    pos = np.array([0.2, -0.1, -0.3])
    h, w = 32, 64
    r = scene.render_panorama(h, w, pos)
    assert r["rgb"].shape == (h, w, 3) and r["rgb"].dtype == np.float32
    assert r["distance"].shape == (h, w) and r["distance"].dtype == np.float32
    assert 0.0 <= r["rgb"].min() and r["rgb"].max() <= 1.0
    d = sphere.erp_directions(h, w, np.float64)
    c = scene.cast(pos, d.reshape(-1, 3))
    np.testing.assert_allclose(r["distance"].ravel(), np.linalg.norm(c["point"] - pos, axis=1), rtol=1e-7)
    hit = pos + r["distance64"][..., None] * d
    assert np.abs(sdf_scene(scene, hit.reshape(-1, 3))).max() < 1e-9


def test_render_camera_planar_depth(scene):
    pos = (0.1, 0.0, 0.2)
    cams = [sphere.tangent_cameras(size=(24, 32), level=0)[3],
            sphere.TangentCamera(R=sphere.look_at_rotation((0.3, -0.4, -1.0)),
                                 K=np.array([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]]), height=24, width=32)]
    for cam in cams:
        r = scene.render_camera(cam, pos)
        np.testing.assert_allclose(r["depth"], r["distance64"] / cam.ray_norm_factor(), rtol=1e-6)
        np.testing.assert_allclose(sphere.planar_depth_to_distance(r["depth"].astype(np.float64), cam),
                                   r["distance"], rtol=1e-6)
        ref = scene.cast(np.asarray(pos), cam.rays().reshape(-1, 3))["distance"].reshape(24, 32)
        np.testing.assert_allclose(r["distance64"], ref, rtol=1e-12)


def test_renders_are_deterministic():
    a = make_scene().render_panorama(32, 64, (0.1, 0.0, 0.0), supersample=2)
    b = make_scene().render_panorama(32, 64, (0.1, 0.0, 0.0), supersample=2)
    for k in ("rgb", "distance", "normal", "object_id"):
        np.testing.assert_array_equal(a[k], b[k])
    assert make_scene().describe() == make_scene().describe()


def test_supersampled_distance_is_the_centre_ray_and_window_is_a_crop(scene):
    full1 = scene.render_panorama(32, 64)
    full3 = scene.render_panorama(32, 64, supersample=3)
    np.testing.assert_array_equal(full1["distance"], full3["distance"])
    assert np.abs(full1["rgb"] - full3["rgb"]).max() > 0  # the sub-pixel rays really differ
    crop = scene.render_panorama(32, 64, supersample=3, window=(5, 20, 40, 64))
    np.testing.assert_array_equal(crop["rgb"], full3["rgb"][5:20, 40:64])
    np.testing.assert_array_equal(crop["distance"], full3["distance"][5:20, 40:64])


def test_textures_are_band_limited_at_512x256(scene):
    # floor at grazing angles + object edges: 1 sample per pixel is already close to a 6x6 supersampled render
    win = (150, 200, 0, 256)
    ref = scene.render_panorama(256, 512, window=win, supersample=6)["rgb"]
    one = scene.render_panorama(256, 512, window=win, supersample=1)["rgb"]
    assert psnr(one, ref) > 38.0
    three = scene.render_panorama(256, 512, window=win, supersample=3)["rgb"]
    assert psnr(three, ref) > psnr(one, ref) + 5.0


def test_texture_prefilter_equals_footprint_average():
    """The analytic prefilter equals the mean point-sampled albedo over the ray's Gaussian angular footprint."""
    wave = Wave((4.0, 0.0, 1.5), (0.3, 0.3, 0.3), 0.4)
    mat = Material("test", (0.5, 0.5, 0.5), (wave,))
    flat = Material("flat", (0.5, 0.5, 0.5))
    room = Room((-3.0, -1.4, -4.0), (3.5, 1.4, 2.8), (flat, flat, mat, flat, flat, flat))  # textured floor
    scene = Scene("t", room, [], Lighting(ambient=1.0))
    cone = 0.01
    xg, wg = np.polynomial.hermite_e.hermegauss(24)  # probabilists' Gauss-Hermite: E[f(N(0,1))]
    wg = wg / wg.sum()
    attenuation = []
    for d in ([0.0, -1.0, 0.0], [0.3, -0.5, -0.8], [0.1, -0.36, -0.93]):  # normal to grazing (69 deg) incidence
        d = np.asarray(d) / np.linalg.norm(d)
        u = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
        u /= np.linalg.norm(u)
        v = np.cross(d, u)
        a, b = np.meshgrid(xg * cone, xg * cone, indexing="ij")
        dd = d[None, :] + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v
        dd /= np.linalg.norm(dd, axis=1, keepdims=True)
        point = scene.cast(np.zeros(3), dd)["rgb"][:, 0].astype(np.float64)
        avg = float(np.sum(point * np.outer(wg, wg).ravel()))
        centre = scene.cast(np.zeros(3), d[None, :], cone=cone)
        np.testing.assert_allclose(centre["normal"][0], [0.0, 1.0, 0.0])  # the textured floor
        analytic = float(centre["rgb"][0, 0])
        unfiltered = float(scene.cast(np.zeros(3), d[None, :])["rgb"][0, 0])
        # agreement to 3% of the wave amplitude (the footprint is only locally affine at grazing incidence)
        assert abs(analytic - avg) < 0.03 * abs(unfiltered - 0.5) + 2e-6, (d, analytic, avg)
        attenuation.append((analytic - 0.5) / (unfiltered - 0.5))
    assert attenuation[0] > 0.9 and attenuation[2] < 0.6  # the grazing ray's texture is strongly filtered


def test_texture_prefilter_formula():
    k = np.array([2.0, 0.0, 0.0])
    mat = Material("m", (0.5, 0.5, 0.5), (Wave(tuple(k), (0.4, 0.4, 0.4), 0.0),))
    p = np.zeros((2, 3))
    n = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    theta = math.radians(60)
    d = np.array([[0.0, 0.0, -1.0], [math.sin(theta), 0.0, -math.cos(theta)]])
    s = 0.05
    alb = mat.albedo(p, n, d, np.full(2, s))[:, 0]
    np.testing.assert_allclose(alb[0], 0.5 + 0.4 * math.exp(-2 * math.pi**2 * s**2 * 4.0), rtol=1e-12)
    np.testing.assert_allclose(alb[1], 0.5 + 0.4 * math.exp(-2 * math.pi**2 * s**2 * 4.0 / math.cos(theta) ** 2),
                               rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# occupancy, surfaces, mesh


def test_occupancy(scene):
    assert not scene.occupancy(np.array(FREE_POSITIONS)).any()
    inside = []
    for o in scene.objects:
        if o.kind == "box":
            inside.append((np.asarray(o.lo) + np.asarray(o.hi)) / 2)
        elif o.kind == "sphere":
            inside.append(np.asarray(o.center) + [0.0, 0.99 * o.radius, 0.0])
        else:
            inside.append([o.center_xz[0] + 0.99 * o.radius, (o.y0 + o.y1) / 2, o.center_xz[1]])
    assert scene.occupancy(np.array(inside)).all()
    outside_room = np.array([[3.6, 0, 0], [0, 1.5, 0], [0, 0, -4.01], [-3.2, -1.5, 3.0]])
    assert scene.occupancy(outside_room).all()
    ball = next(o for o in scene.objects if o.name == "ball_floor")
    just_out = np.asarray(ball.center) + [0.0, 1.001 * ball.radius, 0.0]
    assert not scene.occupancy(just_out[None, :])[0]
    # agrees with the independent SDF on random points
    pts = np.random.default_rng(3).uniform([-3.5, -1.6, -4.5], [4.0, 1.6, 3.2], size=(20000, 3))
    sdf = sdf_scene(scene, pts)
    clear = np.abs(sdf) > 1e-9
    np.testing.assert_array_equal(scene.occupancy(pts)[clear], sdf[clear] < 0)


def test_sample_surface(scene):
    p, n = scene.sample_surface(20000, seed=1)
    assert p.shape == (20000, 3) and n.shape == (20000, 3)
    assert np.abs(sdf_scene(scene, p)).max() < 1e-9  # on a surface, inside no solid
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-12)
    # normals = gradient of the SDF (out of the objects, into the room), finite differences
    e = 1e-5
    g = np.stack([(sdf_scene(scene, p + e * np.eye(3)[i]) - sdf_scene(scene, p - e * np.eye(3)[i])) / (2 * e)
                  for i in range(3)], axis=1)
    smooth = np.linalg.norm(g, axis=1) > 0.999  # away from edges, where the gradient is defined
    assert smooth.mean() > 0.9
    np.testing.assert_allclose(n[smooth], g[smooth], atol=1e-4)
    # area-uniform: the share of points on the floor matches its share of the total area
    floor_share = 6.5 * 6.8 / scene.surface_area()
    on_floor = np.mean(np.abs(p[:, 1] + 1.4) < 1e-12)
    assert abs(on_floor - floor_share) < 4 * math.sqrt(floor_share * (1 - floor_share) / len(p)) + 0.01
    q, _ = scene.sample_surface(20000, seed=1)
    np.testing.assert_array_equal(p, q)  # deterministic


def test_sample_surface_visible_from(scene):
    pos = np.array([0.1, 0.0, -0.2])
    p, _ = scene.sample_surface(500, seed=2, visible_from=pos)
    assert p.shape == (500, 3)
    v = p - pos
    dist = np.linalg.norm(v, axis=1)
    t = sphere_trace(scene, np.broadcast_to(pos, p.shape), v / dist[:, None])
    conv = np.isfinite(t)
    assert conv.mean() > 0.98
    np.testing.assert_allclose(t[conv], dist[conv], atol=1e-7)


def test_mesh(scene):
    import trimesh

    v, f = scene.mesh(sphere_level=3, cylinder_segments=64)
    assert v.dtype == np.float64 and f.dtype == np.int64 and f.min() == 0 and f.max() == len(v) - 1
    assert np.abs(sdf_scene(scene, v)).max() < 1e-9  # every vertex lies on a surface
    m = trimesh.Trimesh(v, f, process=False)
    lo, hi = scene.bounds
    room_vol = float(np.prod(hi - lo))
    solid = 0.0
    for o in scene.objects:
        if o.kind == "box":
            solid += float(np.prod(np.asarray(o.hi) - np.asarray(o.lo)))
        elif o.kind == "sphere":
            solid += 4 / 3 * math.pi * o.radius**3
        else:
            solid += math.pi * o.radius**2 * (o.y1 - o.y0)
    # signed volume: the room faces inward (negative), objects outward; tessellation loses a little volume
    assert m.volume == pytest.approx(solid - room_vol, abs=0.02 * solid)
    assert m.volume < -room_vol + solid + 1e-9


# ----------------------------------------------------------------------------------------------------------------------
# errors


def test_errors_name_the_problem(scene):
    with pytest.raises(ValueError, match="unknown synthetic scene 'nope'.*living_room"):
        make_scene("nope")
    with pytest.raises(ValueError, match=r"inside an object or outside the room.*free space"):
        scene.render_panorama(8, 16, position=(0.3, -0.67, -2.0))  # inside the table top
    with pytest.raises(ValueError, match="outside the room"):
        scene.render_panorama(8, 16, position=(0.0, 2.0, 0.0))
    with pytest.raises(ValueError, match="unit vectors"):
        scene.cast(np.zeros(3), np.array([[2.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"dirs must have shape \(N,3\)"):
        scene.cast(np.zeros(3), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="supersample must be an integer >= 1"):
        scene.render_panorama(8, 16, supersample=0)
    with pytest.raises(ValueError, match="window"):
        scene.render_panorama(8, 16, window=(0, 9, 0, 16))
    with pytest.raises(ValueError, match="lo < hi"):
        Box("b", (0, 0, 0), (1, -1, 1), Material("m", (0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match="radius > 0"):
        Sphere("s", (0, 0, 0), 0.0, Material("m", (0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match="y1 > y0"):
        Cylinder("c", (0, 0), 0.1, 1.0, 0.5, Material("m", (0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match="6 face materials"):
        Room((-1, -1, -1), (1, 1, 1), ())
    with pytest.raises(ValueError, match=r"origins \(2, 3\) and dirs \(1, 3\) must have the same shape"):
        scene.cast(np.zeros((2, 3)), np.array([[1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="height and width must be >= 1, got 0x16"):
        scene.render_panorama(0, 16)
    with pytest.raises(ValueError, match="camera position must be 3 finite numbers"):
        scene.render_panorama(8, 16, position=(0.0, float("nan"), 0.0))
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        scene.sample_surface(-1)
    with pytest.raises(ValueError, match="Room bounds must satisfy lo < hi"):
        Room((1, -1, -1), (1, 1, 1), (Material("m", (0.5, 0.5, 0.5)),) * 6)
    with pytest.raises(RuntimeError, match=r"of 20000 points visible from .*raise max_rounds"):
        scene.sample_surface(20000, visible_from=(0.3, -1.0, -2.0), max_rounds=1)  # under the table: ~49% seen


# ----------------------------------------------------------------------------------------------------------------------
# the generator script and the committed example data


def _load_script(repo_root):
    spec = importlib.util.spec_from_file_location("make_example_scene", repo_root / "scripts/make_example_scene.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_writes_everything(tmp_path, repo_root):
    from immersivedepth.io import read_distance, read_panorama

    mod = _load_script(repo_root)
    assert mod.parse_offset("z-0.50") == [0.0, 0.0, -0.5]
    with pytest.raises(ValueError, match="must look like 'x\\+0.20'"):
        mod.parse_offset("q+1")
    with pytest.raises(ValueError, match="is not a number"):
        mod.parse_offset("x+abc")
    assert mod.main(["--out-dir", str(tmp_path), "--width", "32", "--gt-width", "16", "--supersample", "1",
                     "--gt-supersample", "2", "--offsets", "x+0.20", "y-0.30"]) == 0
    out = tmp_path / "living_room"
    assert read_panorama(out / "image.png").shape == (16, 32, 3)
    assert read_distance(out / "image_distance.npy").shape == (16, 32)
    poses = json.loads((out / "poses.json").read_text())["poses"]
    assert [p["name"] for p in poses] == ["x+0.20", "y-0.30"]
    assert poses[1]["position"] == [0.0, -0.3, 0.0]
    for p in poses:
        assert read_distance(out / "gt" / f"{p['name']}_distance.npy").shape == (8, 16)
        assert read_panorama(out / "gt" / f"{p['name']}.png").shape == (8, 16, 3)
    meta = json.loads((out / "scene.json").read_text())
    assert meta["units"] == "metres" and meta["generator_version"] == SCENE_VERSION
    assert "--width 32" in meta["command"]
    with pytest.raises(SystemExit, match="--width must be an even number >= 2, got 33"):
        mod.main(["--out-dir", str(tmp_path), "--width", "33"])
    with pytest.raises(SystemExit, match="not in free space"):
        mod.main(["--out-dir", str(tmp_path), "--width", "32", "--offsets", "y+2.00"])


@pytest.fixture(scope="module", params=["living_room", "cluttered_room"])
def example_dir(repo_root, request):
    d = repo_root / "example_data" / request.param
    if not (d / "scene.json").is_file():
        pytest.fail(f"bundled example missing at {d}; run python scripts/make_example_scene.py")
    return d


def test_committed_example_is_the_generators_output(example_dir):
    """The committed files equal a fresh render (full distance map, an RGB crop, one novel-view pose)."""
    from immersivedepth.io import find_distance_beside, read_distance, read_panorama

    meta = json.loads((example_dir / "scene.json").read_text())
    assert meta["generator_version"] == SCENE_VERSION, "example_data is stale: rerun scripts/make_example_scene.py"
    scene = make_scene(meta["scene"])
    assert meta["description"] == json.loads(json.dumps(scene.describe()))
    img = meta["image"]
    h, w, k = img["height"], img["width"], img["supersample"]

    assert find_distance_beside(example_dir / "image.png") == example_dir / "image_distance.npy"
    dist = np.load(example_dir / "image_distance.npy")
    assert dist.dtype == np.float32 and dist.shape == (h, w)
    fresh = scene.render_panorama(h, w, prefilter=False)["distance"]  # distance does not depend on texture
    np.testing.assert_allclose(dist, fresh, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(read_distance(example_dir / "image_distance.npy"), dist)

    rgb = read_panorama(example_dir / "image.png")
    assert rgb.shape == (h, w, 3)
    win = (h // 2 - 40, h // 2 + 40, w // 2 - 60, w // 2 + 60)  # objects, the far wall and the floor
    crop = scene.render_panorama(h, w, supersample=k, window=win)["rgb"]
    diff = np.abs(np.round(crop * 255) - np.round(rgb[win[0]:win[1], win[2]:win[3]] * 255))
    assert diff.max() <= 1 and diff.mean() < 0.01

    poses = json.loads((example_dir / "poses.json").read_text())["poses"]
    assert 4 <= len(poses) <= 6
    gt = meta["ground_truth"]
    for p in poses:
        assert (example_dir / "gt" / f"{p['name']}.png").is_file()
        assert (example_dir / "gt" / f"{p['name']}_distance.npy").is_file()
        assert p["width"] == gt["width"] and p["height"] == gt["height"]
        assert not scene.occupancy(np.asarray([p["position"]]))[0]
    p = poses[-1]
    g = np.load(example_dir / "gt" / f"{p['name']}_distance.npy")
    fresh = scene.render_panorama(gt["height"], gt["width"], p["position"], prefilter=False)["distance"]
    np.testing.assert_allclose(g, fresh, rtol=1e-6, atol=0)
    g_rgb = read_panorama(example_dir / "gt" / f"{p['name']}.png")
    gwin = (100, 140, 200, 300)
    crop = scene.render_panorama(gt["height"], gt["width"], p["position"], supersample=gt["supersample"],
                                 window=gwin)["rgb"]
    diff = np.abs(np.round(crop * 255) - np.round(g_rgb[gwin[0]:gwin[1], gwin[2]:gwin[3]] * 255))
    assert diff.max() <= 1 and diff.mean() < 0.01

    total = sum(f.stat().st_size for f in example_dir.rglob("*") if f.is_file())
    assert total < 6e6, f"{example_dir} is {total / 1e6:.1f} MB; keep the example data small"


def test_cluttered_room_disoccludes_enough(repo_root):
    """The inpainting benchmark scene: objects 0.7-1.6 m from the centre, and every ground-truth panorama 0.5 m away
    has >= 4 % of its area (solid angle) hidden from the centre (exact ray casting from the centre)."""
    from immersivedepth import sphere

    scene = make_scene("cluttered_room")
    for o in scene.objects:
        desc = o.describe()
        if "center_xz" in desc or "center" in desc:
            c = desc.get("center_xz") or desc["center"][::2]
        else:
            c = ((desc["min"][0] + desc["max"][0]) / 2, (desc["min"][2] + desc["max"][2]) / 2)
        assert 0.7 <= float(np.hypot(*c)) <= 1.6, o.name
    assert scene.render_panorama(64, 128)["distance"].min() >= 0.7 * 0.95  # nearest surface seen ~0.7 m away
    example = repo_root / "example_data" / "cluttered_room"
    poses = json.loads((example / "poses.json").read_text())["poses"]
    offsets = sorted({round(float(np.linalg.norm(p["position"])), 2) for p in poses})
    assert offsets == [0.2, 0.5]
    for p in poses:
        g = np.load(example / "gt" / f"{p['name']}_distance.npy").astype(np.float64)
        pts = sphere.erp_points(p["position"], g).reshape(-1, 3)
        r = np.linalg.norm(pts, axis=1)
        hit = scene.cast(np.zeros(3), pts / r[:, None])["distance"]
        hidden = (hit < r * (1 - 1e-3) - 1e-3).reshape(g.shape)
        frac = float((sphere.pixel_solid_angle(*g.shape) * hidden).sum() / (4 * np.pi))
        if np.linalg.norm(p["position"]) > 0.4:
            assert frac >= 0.04, f"{p['name']}: only {frac:.1%} disoccluded"


# ----------------------------------------------------------------------------------------------------------------------
# openings onto a far background at infinity (scene "open_room")


def test_openings_lead_to_the_far_background_and_it_stays_put():
    scene = make_scene("open_room")
    door = next(o for o in scene.room.openings if o.name == "door_east")
    lo, hi = scene.bounds
    # a ray through the middle of the door: no hit, the far colour of its direction
    target = np.array([hi[0], 0.5 * (door.lo[1] + door.hi[1]), 0.5 * (door.lo[2] + door.hi[2])])
    d = target / np.linalg.norm(target)
    res = scene.cast(np.zeros(3), d[None])
    assert np.isinf(res["distance"][0]) and res["object_id"][0] == -1 and np.isnan(res["point"][0]).all()
    np.testing.assert_allclose(res["rgb"][0], np.clip(scene.far_color(d[None]), 0, 1)[0], atol=1e-6)
    # the same direction from another free-space position through the same door: the same colour (infinity)
    res2 = scene.cast(np.array([0.3, 0.0, -0.4]), d[None])
    assert np.isinf(res2["distance"][0])
    np.testing.assert_array_equal(res2["rgb"], res["rgb"])
    # just beside the door frame the wall is hit at the exact plane distance
    beside = np.array([hi[0], door.hi[1] + 0.05, target[2]])
    db = beside / np.linalg.norm(beside)
    hit = scene.cast(np.zeros(3), db[None])
    assert hit["object_id"][0] == 0
    np.testing.assert_allclose(hit["distance"][0], np.linalg.norm(beside), rtol=1e-12)
    # the far background has texture (not a flat colour) and is band-limited by the pixel footprint
    dirs = sphere.erp_directions(64, 128).reshape(-1, 3).astype(np.float64)
    far = scene.far_color(dirs)
    assert far.std(axis=0).min() > 0.03
    assert np.abs(scene.far_color(dirs, np.full(len(dirs), 0.5)) - scene.far.base).max() < np.abs(
        far - scene.far.base).max()
    # rooms without openings are unchanged: the living room's description has no openings / far entries
    assert "openings" not in make_scene("living_room").describe()["room"]
    assert "far" in scene.describe() and len(scene.describe()["room"]["openings"]) == 2


def test_committed_open_room_example(repo_root):
    """``example_data/open_room`` is the generator's output with sensor-style ground truth (0 = no return where
    the ray leaves through an opening), and its novel views show the far content unshifted."""
    from immersivedepth.io import read_panorama

    d = repo_root / "example_data" / "open_room"
    meta = json.loads((d / "scene.json").read_text())
    assert meta["generator_version"] == SCENE_VERSION and meta["scene"] == "open_room"
    scene = make_scene("open_room")
    assert meta["description"] == json.loads(json.dumps(scene.describe()))
    h, w, k = meta["image"]["height"], meta["image"]["width"], meta["image"]["supersample"]
    dist = np.load(d / "image_distance.npy")
    fresh = scene.render_panorama(h, w, prefilter=False)["distance"]
    np.testing.assert_array_equal(dist == 0, np.isinf(fresh))
    assert 0.01 < float((dist == 0).mean()) < 0.05  # the door and the window, like replica_office's doorway
    np.testing.assert_allclose(dist[dist > 0], fresh[np.isfinite(fresh)], rtol=1e-6)
    rgb = read_panorama(d / "image.png")
    win = (h // 2 - 30, h // 2 + 10, 3 * w // 4 - 30, 3 * w // 4 + 10)  # around the door (longitude ~ +90 deg)
    crop = scene.render_panorama(h, w, supersample=k, window=win)["rgb"]
    assert np.abs(np.round(crop * 255) - np.round(rgb[win[0]:win[1], win[2]:win[3]] * 255)).max() <= 1
    # novel views: every far pixel shows the far colour of its direction, whatever the camera position
    gt = meta["ground_truth"]
    gdirs = sphere.erp_directions(gt["height"], gt["width"]).astype(np.float64)
    ang = math.pi / gt["height"]
    for p in json.loads((d / "poses.json").read_text())["poses"]:
        g_rgb = read_panorama(d / "gt" / f"{p['name']}.png")
        g_d = np.load(d / "gt" / f"{p['name']}_distance.npy")
        far = g_d == 0
        inner = far & np.roll(far, 1, 0) & np.roll(far, -1, 0) & np.roll(far, 1, 1) & np.roll(far, -1, 1)
        assert inner.sum() > 50, p["name"]
        want = scene.far_color(gdirs[inner], np.full(int(inner.sum()), scene.footprint_scale * ang / 3))
        assert np.abs(g_rgb[inner] - want).mean() < 2 / 255, p["name"]
