"""Frame rendering, videos, poses-file panoramas and the render_dense stage (render/frames, dense, stage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_render_support import AnalyticSceneField, project_renderer

from immersivedepth import sphere
from immersivedepth.errors import RunError
from immersivedepth.io import read_panorama, read_ply, read_video_info
from immersivedepth.render.dense import render_path, render_poses_to_dir
from immersivedepth.render.frames import render_pose
from immersivedepth.render.paths import FreeSpace, PathViolationError, make_path
from immersivedepth.render.poses import CameraPose, load_poses_file
from immersivedepth.stages import render_dense as render_dense_stage
from immersivedepth.stages.render_dense import run_render_dense
from immersivedepth.train.checkpoint import load_trained_field


@pytest.fixture(scope="module")
def field():
    return AnalyticSceneField(beta=0.02)


@pytest.fixture(scope="module")
def renderer():
    return project_renderer()


@pytest.fixture(scope="module")
def pano(field):
    return field.scene.render_panorama(32, 64)


def test_render_path_video_and_frames(tmp_path, field, renderer, pano):
    free = FreeSpace(pano["distance"], bounds=field.scene.bounds)
    poses, fps = make_path({"kind": "circle", "n_frames": 4, "type": "erp", "width": 32, "height": 16,
                            "radius_fraction": 0.3}, free)
    res = render_path(field, poses, tmp_path / "circle", fps=fps, videos=("rgb", "distance"),
                      frames=("rgb", "distance"), frame_formats=("png", "exr"), renderer=renderer, chunk=200,
                      progress=False)
    assert res["frames"] == 4
    for name in ("video.mp4", "video_distance.mp4"):
        assert read_video_info(tmp_path / "circle" / name) == (4, 16, 32, 30.0)
    frames = sorted(p.name for p in (tmp_path / "circle" / "frames").iterdir())
    assert frames == [f"{k}_{i:05d}.{e}" for k in ("distance", "rgb") for i in range(4) for e in ("exr", "png")]
    # the frame files hold what the renderer computes for that pose
    direct = render_pose(field, poses[2], renderer=renderer, normals=False)
    png = read_panorama(tmp_path / "circle" / "frames" / "rgb_00002.png")
    np.testing.assert_allclose(png, direct["rgb"], atol=1 / 255 + 1e-6)
    from immersivedepth.io import read_distance

    np.testing.assert_allclose(read_distance(tmp_path / "circle" / "frames" / "distance_00002.exr"),
                               direct["distance"], rtol=1e-6)
    # decoded video frame close to the rendered frame (H.264 is lossy)
    import imageio.v2 as imageio

    with imageio.get_reader(str(tmp_path / "circle" / "video.mp4")) as rd:
        f2 = np.asarray(rd.get_data(2), np.float64) / 255
    assert np.abs(f2 - direct["rgb"]).mean() < 0.06


def test_odd_perspective_size_padded_to_even(tmp_path, field, renderer):
    pose = CameraPose(position=[0, 0, 0], rotation=sphere.yaw_pitch_roll(0.3), type="perspective", width=15,
                      height=11, fov_deg=80)
    render_path(field, [pose, pose], tmp_path, videos=("rgb",), renderer=renderer, progress=False)
    n, h, w, fps = read_video_info(tmp_path / "video.mp4")
    assert (n, h, w) == (2, 12, 16)


def test_interrupted_render_leaves_no_video(tmp_path, field, renderer):
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("renderer crashed")
        return renderer(*args, **kwargs)

    poses = [CameraPose(position=[0.1 * i, 0, 0], width=16, height=8) for i in range(4)]
    with pytest.raises(RuntimeError, match="renderer crashed"):
        render_path(field, poses, tmp_path, videos=("rgb", "distance"), renderer=failing, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_normals_and_opacity_outputs(field, renderer):
    down = CameraPose(position=[0, 0, 0], rotation=sphere.yaw_pitch_roll(0.0, -np.pi / 2 + 0.05),
                      type="perspective", width=8, height=8, fov_deg=20)
    fr = render_pose(field, down, renderer=renderer, normals=True)
    assert fr["normal"].shape == (8, 8, 3)
    assert fr["normal"][..., 1].min() > 0.95  # the floor's normal points up
    assert fr["opacity"].min() > 0.99
    np.testing.assert_allclose(fr["distance"], 1.4 / np.abs(
        down.camera().rays() @ np.array([0, 1.0, 0])), rtol=0.05)


def test_poses_file_matches_direct_evaluation(tmp_path, field, renderer):
    rot = sphere.rotation_about_axis((0, 1, 0), 0.7)
    spec = {"poses": [
        {"name": "erp_a", "position": [0.4, 0.1, -0.3], "rotation": rot.tolist(), "width": 24, "height": 12},
        {"name": "persp_b", "position": [-0.2, 0.0, 0.3], "rotation": sphere.yaw_pitch_roll(1.0, 0.2).tolist(),
         "type": "perspective", "fov_deg": 70, "width": 10, "height": 8},
    ]}
    pf = tmp_path / "poses.json"
    pf.write_text(json.dumps(spec))
    poses, _ = load_poses_file(pf)
    out = render_poses_to_dir(field, poses, tmp_path / "poses", renderer=renderer, chunk=50, progress=False)
    assert set(out) == {"erp_a", "persp_b"}
    # direct evaluation with independently built rays
    d_erp = sphere.erp_directions(12, 24, np.float64) @ rot.T
    cam = poses[1].camera()
    d_persp = cam.rays()
    for name, dirs, pos in (("erp_a", d_erp, [0.4, 0.1, -0.3]), ("persp_b", d_persp, [-0.2, 0.0, 0.3])):
        h, w = dirs.shape[:2]
        dd = torch.as_tensor(dirs.reshape(-1, 3), dtype=torch.float32)
        oo = torch.as_tensor(pos, dtype=torch.float32).expand_as(dd).contiguous()
        with torch.no_grad():
            ref = renderer(field, oo, dd, near=0.0, far=None)
        dist = np.load(tmp_path / "poses" / f"{name}_distance.npy")
        assert dist.shape == (h, w) and dist.dtype == np.float32
        np.testing.assert_allclose(dist, ref["distance"].numpy().reshape(h, w), rtol=1e-5, atol=1e-5)
        opa = np.load(tmp_path / "poses" / f"{name}_opacity.npy")
        assert opa.dtype == np.float32 and out[name]["opacity"].endswith(f"{name}_opacity.npy")
        np.testing.assert_allclose(opa, ref["opacity"].numpy().reshape(h, w), rtol=1e-5, atol=1e-5)
        rgb = read_panorama(tmp_path / "poses" / f"{name}.png") if w == 2 * h else None
        if rgb is not None:
            np.testing.assert_allclose(rgb, ref["rgb"].clamp(0, 1).numpy().reshape(h, w, 3), atol=1 / 255 + 1e-6)
        # and the analytic truth (the stand-in field's surface is within a few cm of the scene's)
        gt = field.scene.cast(np.asarray(pos, float), dirs.reshape(-1, 3))["distance"].reshape(h, w)
        assert np.median(np.abs(dist - gt)) < 0.1


# ----------------------------------------------------------------------------------------------- the stage
@pytest.fixture()
def run_dir(tmp_path, pano, field, monkeypatch):
    run = tmp_path / "exp" / "living_room" / "default"
    (run / "depth").mkdir(parents=True)
    np.save(run / "depth" / "distance.npy", pano["distance"].astype(np.float32))
    # an analytic field (exact geometry) stands in for the trained one
    monkeypatch.setattr(render_dense_stage, "load_trained_field",
                        lambda run_dir, device="cpu", path=None: (field, {"step": 7, "path": "analytic"}))
    return run


def _stage_cfg(**over):
    cfg = {
        "paths": [{"name": "tour", "kind": "tour", "type": "erp", "width": 32, "height": 16, "n_frames": 3}],
        "poses_file": None,
        "render": {"chunk": 4096},
        "video": {"outputs": ["rgb", "distance"]},
        "export": {"formats": ["glb", "ply", "obj"],
                   "field_mesh": {"resolution": 24, "auto_n_rays": 256, "auto_n_samples": 64},
                   "depth_mesh": {"stride": 2}, "points": {"stride": 1}},
    }
    cfg.update(over)
    return cfg


def test_run_render_dense_writes_every_product(run_dir, tmp_path, monkeypatch):
    import immersivedepth.render.frames as frames_mod

    monkeypatch.setattr(frames_mod, "default_renderer", project_renderer)
    pf = tmp_path / "eval_poses.json"
    pf.write_text(json.dumps({"poses": [{"name": "p0", "position": [0.2, 0, 0], "width": 16, "height": 8}]}))
    summary = run_render_dense(run_dir, _stage_cfg(poses_file=str(pf)), progress=False)
    assert read_video_info(run_dir / "render" / "tour" / "video.mp4")[:3] == (3, 16, 32)
    assert read_video_info(run_dir / "render" / "tour" / "video_distance.mp4")[:3] == (3, 16, 32)
    poses, fps = load_poses_file(run_dir / "render" / "tour" / "poses.json")
    assert len(poses) == 3 and fps == 30
    assert np.load(run_dir / "render" / "poses" / "p0_distance.npy").shape == (8, 16)
    assert (run_dir / "render" / "poses" / "p0.png").is_file()
    for stem in ("mesh", "depth_mesh"):
        for ext in ("glb", "ply", "obj"):
            assert (run_dir / "export" / f"{stem}.{ext}").stat().st_size > 1000
    pts = read_ply(run_dir / "export" / "points.ply")
    assert len(pts["points"]) == 32 * 64 and pts["normals"] is not None and pts["colors"] is not None
    assert summary["exports"]["mesh"]["faces"] > 100
    assert json.loads((run_dir / "render" / "summary.json").read_text())["paths"]["tour"]["frames"] == 3
    # nothing half-written is left behind
    leftovers = [p for p in run_dir.rglob("*") if "partial" in p.name or p.name.startswith(".")]
    assert leftovers == []


def test_run_render_dense_rejects_poses_in_geometry(run_dir, tmp_path):
    pf = tmp_path / "bad_poses.json"
    pf.write_text(json.dumps({"poses": [{"name": "inside_wall", "position": [0, 0, -4.5]}]}))
    cfg = _stage_cfg(paths=[], poses_file=str(pf), on_violation="error",
                     export={"field_mesh": {"enabled": False}, "depth_mesh": {"enabled": False},
                             "points": {"enabled": False}})
    with pytest.raises(PathViolationError, match=r"pose inside_wall at \[0.0, 0.0, -4.5\]"):
        run_render_dense(run_dir, cfg, progress=False)


def test_missing_run_dir_and_depth(tmp_path):
    with pytest.raises(RunError, match=r"run directory .*nowhere does not exist; train a run first: "
                                       r"python perf_runner.py --config-name nerf .*mode=train"):
        run_render_dense(tmp_path / "nowhere", {}, progress=False)
    (tmp_path / "run").mkdir()
    with pytest.raises(RunError, match=r"depth/distance.npy is missing.*mode=depth"):
        run_render_dense(tmp_path / "run", {}, progress=False)


def test_missing_checkpoint_error_reaches_the_user_unchanged(tmp_path, pano):
    run = tmp_path / "run"
    (run / "depth").mkdir(parents=True)
    np.save(run / "depth" / "distance.npy", pano["distance"])
    with pytest.raises(FileNotFoundError) as direct:
        load_trained_field(run)
    with pytest.raises(FileNotFoundError) as via_stage:
        run_render_dense(run, _stage_cfg(), progress=False)
    assert str(via_stage.value) == str(direct.value)
    assert "train" in str(via_stage.value).lower()


@pytest.mark.slow
def test_render_dense_on_a_really_trained_field(tmp_path):
    """End to end with the real field/trainer/checkpoint: train briefly, render, export; poses-file renders
    equal the trained field's direct evaluation."""
    from immersivedepth.field.renderer import render_rays
    from immersivedepth.scenes.synthetic import make_scene
    from immersivedepth.train.checkpoint import load_trained_field
    from immersivedepth.train.trainer import train_field

    sc = make_scene("living_room")
    p = sc.render_panorama(32, 64)
    run = tmp_path / "run"
    (run / "depth").mkdir(parents=True)
    np.save(run / "depth" / "distance.npy", p["distance"].astype(np.float32))
    train_field(p["rgb"], p["distance"], run, {"optim": {"steps": 40, "batch_rays": 512},
                                               "log": {"tensorboard": False, "preview_every": 10**9}},
                progress=False)
    pf = tmp_path / "poses.json"
    pf.write_text(json.dumps({"poses": [{"name": "p0", "position": [0.3, 0.0, -0.2], "width": 32, "height": 16}]}))
    cfg = _stage_cfg(poses_file=str(pf))
    summary = run_render_dense(run, cfg, progress=False)
    assert read_video_info(run / "render" / "tour" / "video.mp4")[:3] == (3, 16, 32)
    for name in ("mesh.glb", "depth_mesh.glb", "points.ply"):
        assert (run / "export" / name).is_file()
    assert summary["exports"]["mesh"]["faces"] > 0
    field, _ = load_trained_field(run)
    d = torch.from_numpy(sphere.erp_directions(16, 32).reshape(-1, 3))
    o = torch.tensor([[0.3, 0.0, -0.2]], dtype=torch.float32).expand_as(d).contiguous()
    with torch.no_grad():
        ref = render_rays(field, o, d)
    np.testing.assert_allclose(np.load(run / "render" / "poses" / "p0_distance.npy"),
                               ref["distance"].numpy().reshape(16, 32), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", ["default", "fast"])
def test_shipped_render_configs_are_accepted(run_dir, preset, monkeypatch):
    """Every key of configs/render/<preset>.yaml is understood by the stage (only sizes shrunk)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import immersivedepth.render.frames as frames_mod

    monkeypatch.setattr(frames_mod, "default_renderer", project_renderer)
    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="nerf", overrides=[f"render={preset}"]).render
    cfg = OmegaConf.to_container(cfg, resolve=True)
    for p in cfg["paths"]:
        p.update(width=32, height=16 if p["type"] == "erp" else 32, n_frames=2)
    cfg["export"]["field_mesh"].update(resolution=24, auto_n_rays=256, auto_n_samples=64)
    cfg["export"]["depth_mesh"]["stride"] = 2
    summary = run_render_dense(run_dir, cfg, progress=False)
    assert set(summary["paths"]) == {p["name"] for p in cfg["paths"]}
    assert (run_dir / "export" / "depth_mesh_textured.obj").is_file()
