"""The Hydra entry, run directory, caching and bad-input messages of ``perf_runner.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from immersivedepth import io, runner
from immersivedepth.errors import ImmersiveDepthError
from immersivedepth.stages.base import fingerprint
from immersivedepth.stages.schema import register_configs

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example_data" / "living_room" / "image.png"


def _cfg(overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="nerf", overrides=overrides)


@pytest.fixture
def small_scene(tmp_path):
    """A 64x32 panorama with its reference distance beside it (the ``<stem>_distance.npy`` rule)."""
    rng = np.random.default_rng(3)
    rgb = rng.uniform(0, 1, (32, 64, 3)).astype(np.float32)
    dist = np.full((32, 64), 2.0, dtype=np.float32)
    dist[:, 10:20] = 3.0
    img = tmp_path / "data" / "room.png"
    io.write_image(img, rgb)
    np.save(tmp_path / "data" / "room_distance.npy", dist)
    return img, dist


def test_depth_mode_with_reference_writes_the_depth_folder(tmp_path, small_scene):
    img, dist = small_scene
    cfg = _cfg([f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path / 'exp'}", "mode=depth"])
    ctx = runner.run(cfg)
    run_dir = tmp_path / "exp" / "room" / "default"
    assert ctx.run_dir == run_dir
    for name in ("distance.npy", "distance.exr", "distance.png", "normals.npy", "normals.png",
                 "confidence.npy", "points.ply"):
        assert (run_dir / "depth" / name).is_file(), name
    np.testing.assert_array_equal(np.load(run_dir / "depth" / "distance.npy"), dist)
    assert (run_dir / "config.yaml").is_file() and (run_dir / "log.txt").is_file()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["stages"]["depth"]["status"] == "done"
    assert record["stages"]["depth"]["summary"]["source"] == "reference"
    assert record["history"][-1]["mode"] == "depth"


def test_depth_stage_is_cached_and_recomputed_when_inputs_change(tmp_path, small_scene):
    img, dist = small_scene
    over = [f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path / 'exp'}", "mode=depth"]
    ctx = runner.run(_cfg(over))
    out = ctx.run_dir / "depth" / "distance.npy"
    first = out.stat().st_mtime_ns
    runner.run(_cfg(over))
    assert out.stat().st_mtime_ns == first, "unchanged inputs must reuse the cached depth stage"
    np.save(img.parent / "room_distance.npy", dist * 2)
    runner.run(_cfg(over))
    assert out.stat().st_mtime_ns != first
    np.testing.assert_array_equal(np.load(out), dist * 2)


def test_scene_name_and_run_dir():
    assert runner.scene_name_for(Path("a/b/living_room/image.png")) == "living_room"
    assert runner.scene_name_for(Path("a/pano_01.jpg")) == "pano_01"
    assert runner.scene_name_for(Path("a/pano_01.jpg"), "mine") == "mine"


def test_fingerprint_is_order_independent_for_dicts():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["mode=depth"], "dataset.image_path is not set"),
        (["mode=depth", "dataset.image_path=/nonexistent/pano.png"], "/nonexistent/pano.png does not exist"),
        (["mode=paint", "dataset.image_path=X"], "mode='paint' is not a mode"),
        (["mode=depth", "device.type=tpu", "dataset.image_path=X"], "is not a device"),
        (["mode=depth", "depth.source=magic", "dataset.image_path=X"],
         "depth.source must be auto, reference or models, got 'magic'"),
        (["mode=depth", "depth.source=reference", "dataset.image_path=X", "dataset.distance_path=/no/dist.npy"],
         "/no/dist.npy does not exist"),
    ],
)
def test_bad_configuration_messages(tmp_path, small_scene, overrides, message):
    img, _ = small_scene
    overrides = [o.replace("=X", f"={img}") for o in overrides] + [f"device.base_exp_dir={tmp_path / 'exp'}"]
    with pytest.raises(ImmersiveDepthError, match=message):
        runner.run(_cfg(overrides))


def test_reference_of_the_wrong_size_is_refused(tmp_path, small_scene):
    img, _ = small_scene
    np.save(img.parent / "room_distance.npy", np.ones((16, 32), np.float32))
    cfg = _cfg([f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path}", "mode=depth"])
    with pytest.raises(ImmersiveDepthError, match=r"is 32x16 but the panorama .* is 64x32"):
        runner.run(cfg)


def test_reference_source_without_reference_is_refused(tmp_path, small_scene):
    img, _ = small_scene
    (img.parent / "room_distance.npy").unlink()
    cfg = _cfg([f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path}", "mode=depth", "depth.source=reference"])
    with pytest.raises(ImmersiveDepthError, match="no reference distance was given or found beside"):
        runner.run(cfg)


def test_cli_reports_errors_without_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "IMMERSIVEDEPTH_DEBUG"}
    proc = subprocess.run(
        [sys.executable, "perf_runner.py", "--config-name", "nerf", "mode=depth",
         f"dataset.image_path={tmp_path / 'missing.png'}", f"device.base_exp_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert "missing.png does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_depth_on_the_bundled_example(tmp_path):
    if not EXAMPLE.is_file():
        pytest.skip("bundled example not generated")
    proc = subprocess.run(
        [sys.executable, str(REPO / "perf_runner.py"), "--config-name", "nerf", "mode=depth",
         f"dataset.image_path={EXAMPLE}", f"device.base_exp_dir={tmp_path / 'exp'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    d = np.load(tmp_path / "exp" / "living_room" / "default" / "depth" / "distance.npy")
    ref = np.load(EXAMPLE.parent / "image_distance.npy")
    np.testing.assert_array_equal(d, ref)
    # Hydra wrote nothing beside the run directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_depth_mode_with_models_uses_the_reference_only_for_scale(tmp_path):
    """depth.source=models with the oracle: the fused map is metric (scale from the reference beside
    the image) and close to the true distance of the bundled scene."""
    from immersivedepth.eval.metrics import depth_metrics
    from immersivedepth.scenes.synthetic import make_scene

    truth = make_scene("living_room").render_panorama(64, 128)
    img = tmp_path / "room.png"
    io.write_image(img, truth["rgb"])
    np.save(tmp_path / "room_distance.npy", truth["distance"])
    cfg = _cfg([f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path / 'exp'}", "mode=depth",
                "depth.source=models", "depth.models=[oracle_noisy]", "depth.tiles.size=64", "depth.progress=false"])
    ctx = runner.run(cfg)
    dist = np.load(ctx.run_dir / "depth" / "distance.npy")
    assert not np.array_equal(dist, truth["distance"])  # really estimated, not copied
    assert depth_metrics(dist, truth["distance"])["abs_rel"] < 0.03
    record = json.loads((ctx.run_dir / "run.json").read_text())
    assert record["stages"]["depth"]["summary"]["source"] == "models"
    assert record["stages"]["depth"]["summary"]["models"] == ["oracle_noisy"]


def test_evaluate_mode_scores_depth_and_says_what_it_skipped(tmp_path, small_scene):
    img, dist = small_scene
    base = [f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path / 'exp'}", "mode=evaluate",
            "evaluate.gt_distance='{dir}/{stem}_gt.npy'"]
    np.save(img.parent / "room_gt.npy", dist * 1.1)  # the ground truth differs from the reference by 10 %
    ctx = runner.run(_cfg(base + ["evaluate.alignment=none"]))  # runs the depth stage first
    res = json.loads((ctx.run_dir / "eval" / "metrics.json").read_text())
    assert res["depth"]["alignment"] == "none"
    assert res["depth"]["abs_rel"] == pytest.approx(1 - 1 / 1.1, rel=1e-5)
    ctx = runner.run(_cfg(base))  # default: median scale; the depth stage is reused
    assert ctx.record["stages"]["depth"] == json.loads((ctx.run_dir / "run.json").read_text())["stages"]["depth"]
    res = json.loads((ctx.run_dir / "eval" / "metrics.json").read_text())
    assert res["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert res["depth"]["fit"]["scale"] == pytest.approx(1.1, rel=1e-5)
    assert "run mode=train first" in res["skipped"]["field"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("field.optim.stepz=3", "unknown key field.optim.stepz; valid keys under field.optim: batch_rays, betas"),
        ("render.paths.0.fractionz=1", "unknown key render.paths[0].fractionz; valid keys under render.paths[0]: "
                                       "anchors_per_ring"),
        ("depth.tiles.levl=1", "unknown key depth.tiles.levl; valid keys under depth.tiles: antialias"),
        ("field.optim.steps=abc", "field.optim.steps: Value 'abc' of type 'str' could not be converted to Integer"),
        ("field=fastt", "Could not find 'field/fastt': no such preset; field= takes one of default, fast"),
        ("inpaint=nope", "Could not find 'inpaint/nope': no such preset; inpaint= takes one of default, fast, none"),
    ],
)
def test_command_line_preflight_names_the_key_and_the_valid_ones(override, message):
    from immersivedepth.stages.cli import preflight

    problem = preflight(["--config-name", "nerf", override, "mode=depth"], REPO / "configs")
    assert problem is not None and problem.startswith(message) and "\n" not in problem
    assert preflight(["--config-name", "nerf", "field=fast", "mode=depth"], REPO / "configs") is None


def test_cli_bad_override_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "perf_runner.py", "--config-name", "nerf", "field.optim.stepz=3",
                           f"dataset.image_path={EXAMPLE}", f"device.base_exp_dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown key field.optim.stepz; valid keys under field.optim: batch_rays, betas, eps, "
        "final_lr_factor, fused, lr, steps, warmup_start_factor, warmup_steps"]
    assert not (tmp_path / "living_room").exists()


TINY_FIELD = ["field=fast", "field.optim.steps=3", "field.optim.batch_rays=64", "field.optim.warmup_steps=1",
              "field.log.preview_every=0", "field.log.tensorboard=false", "field.log.checkpoint_every=2",
              "field.model.density_grid.log2_hashmap_size=10", "field.model.color_grid.log2_hashmap_size=10",
              "field.grid.resolution=16"]


def test_existing_run_is_never_replaced_silently_and_unfinished_training_is_not_rendered(tmp_path, small_scene):
    img, _ = small_scene
    base = [f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path / 'exp'}", *TINY_FIELD]
    ctx = runner.run(_cfg(base + ["mode=train"]))
    last = ctx.run_dir / "checkpoints" / "last.pt"
    before = last.read_bytes()
    # a different training config over the same run: refused, the checkpoint untouched, the stage marked failed
    with pytest.raises(ImmersiveDepthError, match=r"last.pt exists \(training status: done\) and is_continue=false: "
                                                  r"pass is_continue=true .* overwrite=true to replace it"):
        runner.run(_cfg(base + ["mode=train", "field.optim.steps=4"]))
    assert last.read_bytes() == before
    record = json.loads((ctx.run_dir / "run.json").read_text())
    assert record["stages"]["train"]["status"] == "failed" and "is_continue=false" in record["stages"]["train"]["error"]
    assert "is_continue=false" in (ctx.run_dir / "log.txt").read_text()
    # with overwrite=true it retrains
    runner.run(_cfg(base + ["mode=train", "field.optim.steps=4", "overwrite=true"]))
    assert last.read_bytes() != before
    # a run whose training did not finish is not rendered unless asked for
    record = json.loads((ctx.run_dir / "run.json").read_text())
    record["stages"]["train"]["status"] = "interrupted"
    (ctx.run_dir / "run.json").write_text(json.dumps(record))
    with pytest.raises(ImmersiveDepthError, match=r"did not finish \(status: interrupted\); resume it with mode=train "
                                                  r"is_continue=true, or pass render.allow_unfinished=true"):
        runner.run(_cfg(base + ["mode=render_dense", "field.optim.steps=4"]))


def test_evaluate_with_a_missing_gt_folder_is_an_error(tmp_path, small_scene):
    img, _ = small_scene
    base = [f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path / 'exp'}"]
    runner.run(_cfg(base + ["mode=depth"]))
    with pytest.raises(ImmersiveDepthError, match=r"evaluate.gt_dir: .*nowhere is not a folder"):
        runner.run(_cfg(base + ["mode=evaluate", f"evaluate.gt_dir={tmp_path / 'nowhere'}"]))


def test_python_warnings_reach_the_console_and_the_run_log(tmp_path, small_scene):
    img, dist = small_scene
    rgba = np.concatenate([np.full((32, 64, 3), 0.5, np.float32), np.ones((32, 64, 1), np.float32)], -1)
    io.write_image(img.parent / "alpha.png", rgba)
    np.save(img.parent / "alpha_distance.npy", dist)
    proc = subprocess.run([sys.executable, str(REPO / "perf_runner.py"), "--config-name", "nerf", "mode=depth",
                           f"dataset.image_path={img.parent / 'alpha.png'}", f"device.base_exp_dir={tmp_path}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "alpha channel" in proc.stderr
    log = (tmp_path / "alpha" / "default" / "log.txt").read_text()
    assert "WARNING py.warnings" in log and "alpha channel" in log


def test_preflight_defaults_to_the_entry_points_config():
    from immersivedepth.stages.cli import preflight

    assert preflight(["mode=depth", "field=fast"], REPO / "configs") is None
    assert preflight(["field.optim.stepz=1"], REPO / "configs").startswith("unknown key field.optim.stepz")


@pytest.mark.parametrize("key,value", [("exp_name", "a/b"), ("exp_name", "."), ("exp_name", ".."),
                                       ("exp_name", "../../x"), ("exp_name", "/tmp/x"), ("exp_name", "a\\b"),
                                       ("exp_name", " "), ("dataset.scene_name", "x/y"), ("dataset.scene_name", "..")])
def test_run_folder_names_are_one_plain_folder(tmp_path, small_scene, key, value):
    """exp_name / dataset.scene_name are one folder each: 'a/b' would nest a run inside run 'a' (whose lock does not
    cover it while its stale-temp clean-up walks into it), '.' would be the scene folder holding every run."""
    img, _ = small_scene
    cfg = _cfg([f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path / 'exp'}", "mode=depth",
                f"{key}='{value}'"])
    with pytest.raises(ImmersiveDepthError) as info:
        runner.run(cfg)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{key}={value!r} must be a plain folder name"), msg
    assert not (tmp_path / "exp").exists()  # refused before anything is written
    ok = _cfg([f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path / 'exp'}", "mode=depth",
               "exp_name=a_b", "dataset.scene_name=x_y"])
    assert runner.run(ok).run_dir == tmp_path / "exp" / "x_y" / "a_b"


def test_a_folder_where_last_pt_should_be_is_refused_before_training(tmp_path, small_scene):
    """is_continue=true over a last.pt that is a folder used to train from scratch and fail at the first save."""
    img, _ = small_scene
    base = [f"dataset.image_path={img}", f"device.base_exp_dir={tmp_path / 'exp'}", *TINY_FIELD, "mode=train"]
    ctx = runner.run(_cfg(base))
    last = ctx.run_dir / "checkpoints" / "last.pt"
    last.unlink()
    last.mkdir()
    steps_before = sorted(p.name for p in last.parent.iterdir())
    with pytest.raises(ImmersiveDepthError) as info:
        runner.run(_cfg(base + ["is_continue=true", "field.optim.steps=5"]))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{last} is not a checkpoint file") and "new exp_name" in msg, msg
    assert sorted(p.name for p in last.parent.iterdir()) == steps_before  # nothing trained, nothing written
