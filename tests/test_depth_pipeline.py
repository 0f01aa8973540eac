"""The 360 depth pipeline end to end, its config, model registry, normals and output files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from immersivedepth import io, sphere
from immersivedepth.depth.normals import normals_from_distance
from immersivedepth.depth.oracle import BoxRoomScene, OracleDepthModel
from immersivedepth.depth.outputs import DEPTH_FILES, write_depth_outputs
from immersivedepth.depth.pipeline import DepthConfig, estimate_distance, fit_global_scale
from immersivedepth.depth.registry import DepthModelError, build_depth_models

H, W = 128, 256
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def room():
    scene = BoxRoomScene()
    return scene.render_panorama(H, W)


def small_cfg(**over):
    cfg = {"progress": False, "models": [], "align": {"samples": 4000}, **over}
    return DepthConfig.from_mapping(cfg)


def oracle(**kw):
    kw.setdefault("input_size", 64)
    return OracleDepthModel(scene="box", **kw)


def abs_rel(pred, gt):
    ok = (pred > 0) & (gt > 0)
    return float(np.mean(np.abs(pred[ok] - gt[ok]) / gt[ok]))


# --------------------------------------------------------------------------- pipeline
def test_estimate_distance_is_metric_with_a_reference(room):
    res = estimate_distance(room["rgb"], [("o", oracle(noise=0.01))], small_cfg(), reference=room["distance"])
    assert res.distance.shape == (H, W) and res.distance.dtype == np.float32
    assert abs_rel(res.distance, room["distance"]) < 0.02  # no further scale fit: metric output
    assert res.normals.shape == (H, W, 3) and res.confidence.shape == (H, W)
    assert 0 <= res.confidence.min() and res.confidence.max() <= 1
    info = res.info
    assert info["n_tiles"] == 20 and info["tiles_without_overlap"] == []
    assert len(info["tile_scale"]) == 20
    for key in ("align_time", "blend_time", "network_time", "total_time"):
        assert info[key] >= 0
    assert info["units"].startswith("metric")


def test_relative_output_and_known_points(room):
    gt = room["distance"]
    rel = estimate_distance(room["rgb"], [("o", oracle())], small_cfg(relative_median=2.0))
    assert np.median(rel.distance) == pytest.approx(2.0, rel=1e-3)
    pts = [(10.0, 30.0, float(gt[30, 10])), (200.0, 90.0, float(gt[90, 200])), (100.0, 64.0, float(gt[64, 100]))]
    met = estimate_distance(room["rgb"], [("o", oracle())], small_cfg(), known_points=pts)
    assert abs_rel(met.distance, gt) < 0.02
    assert met.info["units"].startswith("metric")


def test_output_size_and_gradient_blend(room):
    cfg = small_cfg(output_size=[64, 128], blend={"mode": "gradient"})
    res = estimate_distance(room["rgb"], [("o", oracle(noise=0.01))], cfg)
    ref = BoxRoomScene().render_panorama(64, 128)["distance"]
    s = np.median(ref / res.distance)
    assert abs_rel(res.distance * s, ref) < 0.02
    assert res.info["poisson_iterations"] >= 1


def test_several_fovs_per_face(room):
    cfg = small_cfg(tiles={"fov_deg": [80.0, 105.0]})
    res = estimate_distance(room["rgb"], [("o", oracle(noise=0.01, input_size=48))], cfg, reference=room["distance"])
    assert res.info["n_tiles"] == 40 and res.info["align_components"] == 1
    assert abs_rel(res.distance, room["distance"]) < 0.02


def test_two_models_are_fused(room):
    models = [("a", oracle(seed=1, warp_amplitude=0.2)), ("b", oracle(seed=2, input_size=48, blur_sigma=1.0))]
    res = estimate_distance(room["rgb"], models, small_cfg(fusion="multiband"), reference=room["distance"])
    assert res.info["fusion"] == "multiband" and res.info["fusion_base"] == "b"
    assert abs_rel(res.distance, room["distance"]) < 0.05


def test_preprocessing_reaches_the_models(room):
    seen = {}

    class Spy(OracleDepthModel):
        def __call__(self, tiles, *, K, R):
            seen.setdefault("tiles", []).append(tiles.clone())
            return super().__call__(tiles, K=K, R=R)

    cfg = small_cfg(preprocess={"gaussian": {"enabled": True, "sigma": 3.0}})
    estimate_distance(room["rgb"], [("spy", Spy(scene="box", input_size=64))], cfg)
    blurred = torch.cat(seen.pop("tiles"))
    estimate_distance(room["rgb"], [("spy", Spy(scene="box", input_size=64))], small_cfg())
    sharp = torch.cat(seen["tiles"])
    tv = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()
    assert tv(blurred) < 0.7 * tv(sharp)


class _Bad:
    input_size = 32

    def __init__(self, kind):
        self.kind = kind

    def __call__(self, tiles, *, K, R):
        b, _, h, w = tiles.shape
        out = torch.rand(b, h, w) + 0.5
        if self.kind == "nan":
            out[-1, 0, 0] = float("nan")
        elif self.kind == "negative":
            out[0, 3, 3] = -1.0
        elif self.kind == "shape":
            out = out[:, :-1]
        elif self.kind == "constant":
            out[:] = 1.0
        elif self.kind == "raise":
            raise RuntimeError("boom")
        return out


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nan", r"model 'bad' returned NaN/inf disparity for tile 3"),
        ("negative", r"model 'bad' returned negative disparity .* for tile 0"),
        ("shape", r"model 'bad' returned shape \(4, 31, 32\) for tiles 0\.\.3; expected \(4, 32, 32\)"),
        ("constant", r"model 'bad' returned a constant disparity .* for tile 0"),
        ("raise", r"model 'bad' failed on tiles 0\.\.3: boom"),
    ],
)
def test_bad_model_outputs_name_model_and_tile(room, kind, message):
    with pytest.raises(DepthModelError, match=message):
        estimate_distance(room["rgb"], [("bad", _Bad(kind))], small_cfg())


def test_bad_inputs(room):
    with pytest.raises(ValueError, match=r"ERP RGB image \(H, 2H, 3\)"):
        estimate_distance(room["rgb"][:, :100], [("o", oracle())], small_cfg())
    with pytest.raises(DepthModelError, match="at least one"):
        estimate_distance(room["rgb"], [], small_cfg())
    with pytest.raises(ValueError, match="reference distance has shape"):
        fit_global_scale(np.ones((4, 8)), reference=np.ones((4, 4)))
    with pytest.raises(ValueError, match="known_points must be"):
        fit_global_scale(np.ones((4, 8)), known_points=[(1.0, 2.0)])


# --------------------------------------------------------------------------- config + registry
def test_default_preset_composes_into_depthconfig():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        raw = compose(config_name="nerf").depth
    cfg = DepthConfig.from_mapping(raw)
    assert cfg == DepthConfig()  # the preset is the schema's defaults, written once
    assert cfg.models == ["dav2_vitl", "midas_beit_l512"]
    assert cfg.source == "auto" and cfg.fusion == "multiband" and cfg.checkpoint_dir is None
    assert cfg.tiles.size == 518 and cfg.align.grid == 4 and cfg.blend.space == "log"
    assert not cfg.preprocess.any_enabled
    assert DepthConfig.from_mapping(cfg) is cfg
    with pytest.raises(ValueError, match=r"unknown key depth.align.gridd; valid keys under depth.align: bending"):
        DepthConfig.from_mapping({"align": {"gridd": 3}})
    with pytest.raises(ValueError, match="not a fusion rule"):
        DepthConfig.from_mapping({"fusion": "max"})


def test_registry_presets_targets_and_errors():
    models = build_depth_models(["oracle_box", "oracle_box"])
    assert [n for n, _ in models] == ["oracle_box", "oracle_box_2"]
    entry = OmegaConf.create([{"_target_": "immersivedepth.depth.oracle.OracleDepthModel", "scene": "box",
                               "noise": 0.02, "name": "mine"}])
    (name, model), = build_depth_models(entry)
    assert name == "mine" and isinstance(model, OracleDepthModel) and model.noise == 0.02
    (name, _), = build_depth_models({"_target_": "immersivedepth.depth.oracle.OracleDepthModel", "scene": "box"})
    assert name == "OracleDepthModel"
    with pytest.raises(DepthModelError, match=r"available presets: .*oracle"):
        build_depth_models(["definitely_not_a_model"])
    with pytest.raises(DepthModelError, match="without _target_"):
        build_depth_models([{"scene": "box"}])
    with pytest.raises(DepthModelError, match="non-empty list"):
        build_depth_models([])
    with pytest.raises(DepthModelError, match="cannot instantiate"):
        build_depth_models([{"_target_": "immersivedepth.depth.oracle.OracleDepthModel", "noise": -1}])
    with pytest.raises(DepthModelError) as info:  # Hydra's own HYDRA_FULL_ERROR hint is not this project's advice
        build_depth_models([{"_target_": "nosuchpkg.Model"}])
    assert str(info.value).startswith("depth.models[0]: cannot instantiate 'nosuchpkg.Model' (Error locating target "
                                      "'nosuchpkg.Model'); give an importable _target_")
    assert "HYDRA_FULL_ERROR" not in str(info.value)


def test_oracle_is_exact_and_deterministic():
    scene = BoxRoomScene()
    cams = [c for c in __import__("immersivedepth.depth.tiles", fromlist=["x"]).make_tile_cameras(32)[:4]]
    K = torch.from_numpy(np.stack([c.K for c in cams]))
    R = torch.from_numpy(np.stack([c.R for c in cams]))
    # placeholder tiles (only their shape is used): the scene check is off
    m = OracleDepthModel(scene=scene, scale_range=(1, 1), shift_range=(0, 0), check_input=False)
    d = m(torch.zeros(4, 3, 32, 32), K=K, R=R).numpy()
    z = np.stack([scene.render_camera(c)["depth"] for c in cams])
    np.testing.assert_allclose(d * z, 1.0, rtol=1e-5)
    noisy = OracleDepthModel(scene=scene, noise=0.01, warp_amplitude=0.1, seed=5, check_input=False)
    a = noisy(torch.zeros(4, 3, 32, 32), K=K, R=R)
    b = torch.cat([noisy(torch.zeros(2, 3, 32, 32), K=K[2:], R=R[2:]),
                   noisy(torch.zeros(2, 3, 32, 32), K=K[:2], R=R[:2])])
    torch.testing.assert_close(a, torch.cat([b[2:], b[:2]]))  # per-tile seeds: batching/order do not matter


def test_oracle_presets_refuse_panoramas_that_are_not_their_scene():
    """An oracle returns its own scene's depth whatever it is shown: any other panorama must be refused in one line
    naming the preset and its scene and what to use instead, not answered with the synthetic room's distances."""
    from immersivedepth.errors import ConfigError

    rng = np.random.default_rng(0)
    living = __import__("immersivedepth.scenes.synthetic", fromlist=["x"]).make_scene("living_room")
    foreign = {"noise": rng.uniform(0, 1, (32, 64, 3)).astype(np.float32),
               "grey": np.full((32, 64, 3), 0.5, np.float32),
               "another scene": living.render_panorama(32, 64)["rgb"]}
    for label, pano in foreign.items():
        models = build_depth_models(["oracle_box"])
        with pytest.raises(ConfigError) as info:
            estimate_distance(pano, models, small_cfg(tiles={"size": 64}))
        msg = str(info.value)
        assert "\n" not in msg and "failed on tiles" not in msg, label
        assert msg.startswith("depth.models: preset 'oracle_box' only reproduces the built-in synthetic scene 'box' "
                              "(for tests and benchmarks)"), msg
        assert "depth.models=[dav2_vitl]" in msg and "$IMMERSIVEDEPTH_CHECKPOINTS" in msg, msg
    # a model built from a config (no preset name) is named by its scene
    with pytest.raises(ConfigError, match=r"^depth\.models: OracleDepthModel\(scene='box'\) only reproduces"):
        estimate_distance(foreign["noise"], [("o", oracle())], small_cfg())
    # its own scene, even from a tiny 8-bit panorama, is accepted; the check can be switched off explicitly
    own = np.round(BoxRoomScene().render_panorama(32, 64)["rgb"] * 255) / 255
    assert np.isfinite(estimate_distance(own, build_depth_models(["oracle_box"]), small_cfg()).distance).all()
    unchecked = estimate_distance(foreign["noise"], [("o", oracle(check_input=False))], small_cfg())
    assert unchecked.distance.shape == (32, 64)


# --------------------------------------------------------------------------- normals + outputs
def test_normals_of_the_box_room_are_exact(room):
    n = normals_from_distance(room["distance"])
    gt_n = room["normal"]
    dots = np.sum(n * gt_n, axis=-1)
    interior = np.ones((H, W), bool)  # pixels whose 4 neighbours lie on the same face
    for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
        interior &= np.sum(np.roll(gt_n, shift, axis=axis) * gt_n, axis=-1) > 0.999
    assert interior.mean() > 0.9
    assert np.all(dots[interior] > 0.999)
    # the floor (bottom rows, includes the nadir row) has normal +y, the ceiling -y, also at the poles
    np.testing.assert_allclose(n[-1], np.tile([0, 1, 0], (W, 1)), atol=1e-4)
    np.testing.assert_allclose(n[0], np.tile([0, -1, 0], (W, 1)), atol=1e-4)
    # the seam column is as good as any other
    assert np.mean(dots[:, 0] > 0.999) > 0.9


def test_normals_invalid_pixels_and_errors():
    d = np.full((16, 32), 2.0)
    d[5, 7] = 0.0
    d[6, 8] = np.nan
    n = normals_from_distance(d)
    np.testing.assert_array_equal(n[5, 7], 0.0)
    np.testing.assert_array_equal(n[6, 8], 0.0)
    # a sphere around the centre: normals point at the centre
    dirs = sphere.erp_directions(16, 32, np.float64)
    good = np.isfinite(d) & (d > 0)
    np.testing.assert_allclose(np.sum(n * -dirs, -1)[good], 1.0, atol=2e-2)
    with pytest.raises(ValueError, match=r"\(H, W\) map"):
        normals_from_distance(np.ones((4, 4, 3)))


def test_write_depth_outputs(tmp_path, room):
    dist = room["distance"].astype(np.float32)
    normals = normals_from_distance(dist)
    conf = np.full((H, W), 0.5, np.float32)
    paths = write_depth_outputs(tmp_path / "depth", room["rgb"], dist, normals, conf, point_stride=4)
    assert sorted(p.name for p in (tmp_path / "depth").iterdir()) == sorted(DEPTH_FILES)
    np.testing.assert_array_equal(np.load(paths["distance.npy"]), dist)
    np.testing.assert_allclose(io.read_distance(paths["distance.exr"]), dist, rtol=1e-6)
    np.testing.assert_array_equal(np.load(paths["normals.npy"]), normals)
    np.testing.assert_array_equal(np.load(paths["confidence.npy"]), conf)
    ply = io.read_ply(paths["points.ply"])
    pts = np.asarray(ply["points"])
    assert pts.shape == ((H // 4) * (W // 4), 3)
    # every point lies at its pixel's distance from the centre
    np.testing.assert_allclose(np.sort(np.linalg.norm(pts, axis=1)), np.sort(dist[::4, ::4].ravel()), rtol=1e-5)
    assert io.read_panorama(paths["normals.png"]).shape == (H, W, 3)
    with pytest.raises(ValueError, match=r"normals has shape"):
        write_depth_outputs(tmp_path / "x", room["rgb"], dist, normals[:, :-1], conf)


# --------------------------------------------------------------------------- real data
def test_normals_of_a_real_matterport_distance_map(shared_data):
    path = shared_data / "mp3d_living_distance.exr"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    dist = io.read_distance(path)
    n = normals_from_distance(dist)
    valid = np.linalg.norm(n, axis=-1) > 0
    assert valid.mean() > 0.95
    np.testing.assert_allclose(np.linalg.norm(n[valid], axis=-1), 1.0, atol=1e-5)
    # the floor around the nadir faces up (+y) and all normals face the camera
    h = dist.shape[0]
    floor = n[int(0.95 * h):][valid[int(0.95 * h):]]
    assert np.median(floor[:, 1]) > 0.95
    pts = dist[..., None] * sphere.erp_directions(*dist.shape)
    assert np.all(np.sum(n * pts, axis=-1)[valid] <= 1e-6)


def test_preprocessing_a_real_panorama(shared_data):
    path = shared_data / "da2_demo_a3.png"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    from immersivedepth.depth.preprocess import PreprocessConfig, preprocess_image

    img = io.read_panorama(path)[::4, ::4].copy()
    cfg = DepthConfig.from_mapping({"preprocess": {"clahe": {"enabled": True}, "dehaze": {"enabled": True},
                                                    "gaussian": {"enabled": True, "sigma": 0.8}}}).preprocess
    assert isinstance(cfg, PreprocessConfig)
    out = preprocess_image(img, cfg)
    assert out.shape == img.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    lum = lambda x: x @ np.array([0.299, 0.587, 0.114], np.float32)
    assert lum(out).std() > lum(img).std()  # dehazing + CLAHE raise contrast


def test_missing_checkpoints_are_all_named_and_the_environment_folder_is_searched(tmp_path, monkeypatch):
    from immersivedepth.errors import CheckpointNotFoundError

    monkeypatch.setenv("IMMERSIVEDEPTH_CHECKPOINTS", str(tmp_path / "ckpts"))
    cfg = DepthConfig.from_mapping(None)  # the command line's default: no folder set, so the variable counts
    assert cfg.checkpoint_dir is None
    with pytest.raises(CheckpointNotFoundError) as err:
        build_depth_models(["dav2_vitl", "midas_beit_l512"], checkpoint_dir=cfg.checkpoint_dir)
    msg = str(err.value)
    assert msg.startswith("2 depth-model checkpoints are missing")
    assert "depth_anything_v2_vitl.pth" in msg and "dpt_beit_large_512.pt" in msg
    assert f"searched: {tmp_path / 'ckpts'}" in msg and "\n" not in msg
