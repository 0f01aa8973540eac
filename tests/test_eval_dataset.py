"""Dataset evaluation: declared alignments and masks (hand-computed), the one visibility rule, the ``evaluate.``
config, and ``mode=evaluate`` through the pipeline on the real Matterport3D panorama in ../shared/data."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from immersivedepth import io, runner, sphere
from immersivedepth.errors import ConfigError, InputError, InputNotFoundError
from immersivedepth.eval.config import EvaluateConfig, eval_config
from immersivedepth.eval.depth_eval import evaluate_depth, pole_cap_mask
from immersivedepth.eval.metrics import psnr, ssim, ws_psnr
from immersivedepth.eval.report import headline, write_dataset_report
from immersivedepth.eval.visibility import centre_map_sampler, visible_mask
from immersivedepth.render.frames import render_pose
from immersivedepth.render.poses import CameraPose
from immersivedepth.scenes.synthetic import make_scene
from immersivedepth.train.checkpoint import load_trained_field
from immersivedepth.train.trainer import train_field

REPO = Path(__file__).resolve().parents[1]


def _cfg(overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="nerf", overrides=overrides)


# --------------------------------------------------------------------------- alignments and masks
def test_alignments_hand_computed():
    gt = np.array([[1.0, 2.0, 4.0, 20.0]])  # 20 m is beyond max_distance 10: not scored, not fitted
    kw = {"max_distance": 10.0, "pole_cap_deg": 0.0}
    pred = 2.0 * gt
    r, _, mask = evaluate_depth(pred, gt, alignment="none", **kw)
    assert mask.tolist() == [[True, True, True, False]]
    assert (r["abs_rel"], r["mae"], r["d1"], r["d2"]) == (pytest.approx(1.0), pytest.approx(7 / 3), 0.0, 0.0)
    assert r["rmse"] == pytest.approx(math.sqrt((1 + 4 + 16) / 3))
    r, aligned, _ = evaluate_depth(pred, gt, alignment="median_scale", **kw)
    assert r["fit"] == {"scale": pytest.approx(0.5)} and r["abs_rel"] == pytest.approx(0.0, abs=1e-15)
    assert aligned[0, 3] == pytest.approx(20.0)  # the alignment applies everywhere
    r, _, _ = evaluate_depth(3.0 * gt - 1.0, gt, alignment="lsq_depth", **kw)
    assert r["fit"]["scale"] == pytest.approx(1 / 3) and r["fit"]["shift"] == pytest.approx(1 / 3)
    assert r["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    # disparity: 1/pred = (1/gt - 0.1) / 2  ->  s = 2, t = 0.1 recover 1/gt exactly
    r, _, _ = evaluate_depth(1.0 / ((1.0 / gt - 0.1) / 2.0), gt, alignment="lsq_disparity", **kw)
    assert r["fit"]["scale"] == pytest.approx(2.0) and r["fit"]["shift"] == pytest.approx(0.1)
    assert r["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    # a scale-only error is not removed by "none" and the result says which alignment it used
    assert evaluate_depth(pred, gt, alignment="none", **kw)[0]["alignment"] == "none"
    with pytest.raises(ValueError, match="no ground-truth pixel is valid .*evaluate.max_distance=0.5"):
        evaluate_depth(pred, gt, alignment="none", max_distance=0.5, pole_cap_deg=0.0)


def test_pole_cap_mask_counts_rows():
    # 18 rows of 10 degrees: latitudes 85, 75, ..., -85. A 20-degree cap drops |lat| > 70: rows 0, 1, 16, 17.
    m = pole_cap_mask(18, 36, 20.0)
    assert m[:, 0].tolist() == [False, False] + [True] * 14 + [False, False]
    assert pole_cap_mask(18, 36, 0.0).all()
    gt = np.full((18, 36), 2.0)
    pred = gt.copy()
    pred[:2] = 100.0  # wrong only near the zenith
    r, _, _ = evaluate_depth(pred, gt, alignment="none", max_distance=10.0, pole_cap_deg=20.0)
    assert r["abs_rel"] == 0.0 and r["mask"]["fraction"] == pytest.approx(14 / 18)


def test_visibility_rule():
    h, w = 32, 64
    centre = np.full((h, w), 2.0)  # the centre sees a sphere of radius 2 around itself
    # from p = (0.5, 0, 0), the distance to that sphere along each direction d solves |p + t d| = 2
    p = np.array([0.5, 0.0, 0.0])
    d = sphere.erp_directions(h, w, np.float64)
    b = d @ p
    t = -b + np.sqrt(b * b - (p @ p - 4.0))
    tol = 0.01
    assert visible_mask(p, t, centre_map_sampler(centre), tol).all()
    # an occluder at 1 m seen from the centre hides the whole sphere
    assert not visible_mask(p, t, centre_map_sampler(np.full((h, w), 1.0)), tol).any()
    # symmetric: a surface 2 % behind or 2 % in front of what the centre sees is not it; 0.5 % is
    assert not visible_mask(p, t, centre_map_sampler(centre / 1.02), tol).any()
    assert not visible_mask(p, t, centre_map_sampler(centre * 1.02), tol).any()
    assert visible_mask(p, t, centre_map_sampler(centre * 1.005), tol).all()
    # an exact distance function works the same way (the benchmark passes the scene's ray cast)
    assert visible_mask(p, t, lambda u: np.full(u.shape[:2], 2.0), tol).all()
    t[0, 0] = 0.0  # invalid ground truth is never counted
    assert not visible_mask(p, t, centre_map_sampler(centre), tol)[0, 0]
    with pytest.raises(ValueError, match="rel_tol must be >= 0"):
        visible_mask(p, t, centre_map_sampler(centre), -1.0)


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize(("values", "message"), [
    ({"alignment": "mean"}, "evaluate.alignment must be one of none, median_scale, lsq_depth, lsq_disparity, "
                            "got 'mean'"),
    ({"max_distance": 0}, "evaluate.max_distance must be > 0, got 0.0"),
    ({"max_distance": "far"}, "evaluate.max_distance must be a number, got 'far'"),
    ({"pole_cap_deg": 90}, "evaluate.pole_cap_deg must be below 90 (caps of 90.0 degrees at both poles leave no "
                           "pixel), got 90.0"),
    ({"visibility": {"rel_tol": -0.1}}, "evaluate.visibility.rel_tol must be >= 0, got -0.1"),
    ({"lpips": {"net": "resnet"}}, "evaluate.lpips.net must be one of alex, vgg, squeeze, got 'resnet'"),
    ({"gt_distance": "{dir}/{name}.exr"}, "evaluate.gt_distance '{dir}/{name}.exr' is not a valid template "
                                          "(unknown field 'name'); use the fields {dir} and {stem}"),
])
def test_eval_config_errors_name_the_key(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        eval_config(values)


def test_bad_evaluate_key_stops_the_run_before_any_work(tmp_path):
    cfg = _cfg([f"dataset.image_path={tmp_path / 'none.png'}", f"device.base_exp_dir={tmp_path}", "mode=evaluate",
                "evaluate.alignment=mean"])
    with pytest.raises(ConfigError, match=re.escape("evaluate.alignment must be one of none, median_scale")):
        runner.run(cfg)
    assert not any(tmp_path.iterdir())


def test_eval_config_unknown_key():
    with pytest.raises(ConfigError, match="unknown key evaluate.alignmnet; valid keys under evaluate: alignment"):
        eval_config({"alignmnet": "none"})


def test_eval_config_defaults_live_in_the_schema():
    c = eval_config(_cfg([]).evaluate)
    assert (c.alignment, c.max_distance, c.pole_cap_deg, c.visibility.rel_tol) == ("median_scale", 10.0, 0.0, 0.01)
    assert c.gt_distance is None and not c.lpips.enabled
    # Hydra composes the same defaults from the registered run schema (one place: eval/config.py)
    assert OmegaConf.to_container(_cfg([]).evaluate) == dataclasses.asdict(EvaluateConfig())


# --------------------------------------------------------------------------- the real Matterport3D panorama
@pytest.fixture
def mp3d(shared_data, tmp_path):
    """The real mp3d_living panorama in a dataset folder of its own (symlinks: nothing copied)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "living_rgb.png").symlink_to(shared_data / "mp3d_living_rgb.png")
    (data / "living_distance.exr").symlink_to(shared_data / "mp3d_living_distance.exr")
    gt = io.read_distance(shared_data / "mp3d_living_distance.exr")
    return data, gt


def _eval(data: Path, tmp_path: Path, *extra: str) -> dict:
    base = [f"dataset.image_path={data / 'living_rgb.png'}", f"device.base_exp_dir={tmp_path / 'exp'}",
            "mode=evaluate", "evaluate.gt_distance='{dir}/{stem}_distance.exr'", "evaluate.image_suffix=_rgb"]
    ctx = runner.run(_cfg(base + list(extra)))
    return json.loads((ctx.run_dir / "eval" / "metrics.json").read_text())


def test_mp3d_reference_through_the_pipeline_scores_perfectly(mp3d, tmp_path):
    data, gt = mp3d
    res = _eval(data, tmp_path, f"dataset.distance_path={data / 'living_distance.exr'}", "depth.source=reference",
                "evaluate.alignment=none")
    d = res["depth"]
    valid = (gt > 0) & (gt <= 10.0)
    assert d["n_valid"] == int(valid.sum()) == 523_824  # 463 pixels lie beyond 10 m, 1 is 0
    assert (d["abs_rel"], d["rmse"], d["d1"]) == (0.0, 0.0, 1.0)
    assert d["alignment"] == "none" and Path(d["figure"]).is_file()
    assert "run mode=train first" in res["skipped"]["field"]


def test_mp3d_known_errors_under_each_alignment(mp3d, tmp_path):
    """The 'prediction' is the real GT times 1.5 (saved as .npy): AbsRel 0.5 unaligned, exactly 0 once aligned."""
    data, gt = mp3d
    np.save(tmp_path / "pred.npy", (1.5 * gt).astype(np.float32))
    base = [f"dataset.distance_path={tmp_path / 'pred.npy'}", "depth.source=reference"]
    res = _eval(data, tmp_path, *base, "evaluate.alignment=none")["depth"]
    valid = (gt > 0) & (gt <= 10.0)
    g = gt[valid].astype(np.float64)
    assert res["abs_rel"] == pytest.approx(0.5, rel=1e-6)
    assert res["rmse"] == pytest.approx(0.5 * math.sqrt(np.mean(g**2)), rel=1e-6)
    assert res["sq_rel"] == pytest.approx(0.25 * np.mean(g), rel=1e-6)
    assert (res["d1"], res["d2"], res["d3"]) == (0.0, 1.0, 1.0)  # ratio 1.5: above 1.25, below 1.5625
    for alignment in ("median_scale", "lsq_depth", "lsq_disparity"):
        r = _eval(data, tmp_path, *base, f"evaluate.alignment={alignment}")["depth"]
        assert r["alignment"] == alignment and r["abs_rel"] == pytest.approx(0.0, abs=1e-6)
        assert r["fit"]["scale"] == pytest.approx(1 / 1.5 if alignment != "lsq_disparity" else 1.5, rel=1e-5)
    # pole caps remove rows: 30 degrees of 180 at each pole leave 2/3 of the rows
    r = _eval(data, tmp_path, *base, "evaluate.alignment=none", "evaluate.pole_cap_deg=30")["depth"]
    assert r["mask"]["fraction"] == pytest.approx(valid[pole_cap_mask(512, 1024, 30.0)].sum() / valid.size)
    assert r["n_valid"] == int((valid & pole_cap_mask(512, 1024, 30.0)).sum())


def test_mp3d_scale_invalid_ground_truth_format(mp3d, tmp_path):
    """GT re-encoded as uint16 millimetres, read with the {scale, invalid} form: errors are the rounding only."""
    data, gt = mp3d
    mm = np.clip(np.round(gt * 1000.0), 0, 65535).astype(np.uint16)
    io.write_image(data / "living_gtmm.png", mm)
    res = _eval(data, tmp_path, f"dataset.distance_path={data / 'living_distance.exr'}", "depth.source=reference",
                "evaluate.alignment=none", "evaluate.gt_distance='{dir}/{stem}_gtmm.png'",
                "evaluate.gt_format={scale: 0.001, invalid: 0}")["depth"]
    valid = (mm > 0) & (mm <= 10000)
    expect = np.mean(np.abs(gt[valid] - mm[valid] / 1000.0) / (mm[valid] / 1000.0))
    assert res["abs_rel"] == pytest.approx(expect, rel=1e-4) and 0 < res["abs_rel"] < 5e-4 / 0.3


def test_bad_ground_truth_is_one_clear_line(mp3d, tmp_path):
    data, gt = mp3d
    ref = [f"dataset.distance_path={data / 'living_distance.exr'}", "depth.source=reference"]
    with pytest.raises(InputNotFoundError, match=r"ground-truth distance .*living_depth.exr of .*living_rgb.png "
                                                 r"does not exist \(evaluate.gt_distance="):
        _eval(data, tmp_path, *ref, "evaluate.gt_distance='{dir}/{stem}_depth.exr'")
    np.save(data / "small.npy", gt[::2, ::2])
    with pytest.raises(InputError, match=r"small.npy is 512x256 but the panorama .*living_rgb.png is 1024x512"):
        _eval(data, tmp_path, *ref, "evaluate.gt_distance='{dir}/small.npy'")
    with pytest.raises(InputError, match=r"distance format 'matterport3d' expects a 16-bit integer image but "
                                         r".*living_distance.exr holds float32.*\(ground truth: evaluate.gt_format"):
        _eval(data, tmp_path, *ref, "evaluate.gt_format=matterport3d")


def test_oracle_model_through_the_pipeline_under_every_alignment(tmp_path):
    """The exact-disparity oracle on the synthetic room (depth.source=models, metric scale from the reference):
    the fused distance is within 0.2 % AbsRel of the truth, and no alignment needs to change its scale by > 0.5 %."""
    truth = make_scene("living_room").render_panorama(64, 128)
    io.write_image(tmp_path / "room.png", truth["rgb"])
    np.save(tmp_path / "room_distance.npy", truth["distance"])
    base = [f"dataset.image_path={tmp_path / 'room.png'}", f"device.base_exp_dir={tmp_path / 'exp'}", "mode=evaluate",
            "depth.source=models", "depth.models=[oracle]", "depth.tiles.size=64", "depth.progress=false",
            "evaluate.figures=false"]
    for alignment in ("none", "median_scale", "lsq_depth", "lsq_disparity"):
        ctx = runner.run(_cfg(base + [f"evaluate.alignment={alignment}"]))  # the depth stage runs once, then is reused
        d = json.loads((ctx.run_dir / "eval" / "metrics.json").read_text())["depth"]
        assert d["alignment"] == alignment and d["abs_rel"] < 2e-3 and d["d1"] > 0.999
        assert abs(d["fit"].get("scale", 1.0) - 1.0) < 5e-3


# --------------------------------------------------------------------------- dataset report
def test_dataset_report_files(tmp_path):
    m = {"depth": {"alignment": "median_scale", "abs_rel": 0.1, "d1": 0.9},
         "novel_views": {"p0": {"ws_psnr_visible": 20.0}, "p1": {"ws_psnr_visible": 30.0}}}
    entries = [{"panorama": "a.png", "status": "done", "error": "", "metrics": m},
               {"panorama": "b.png", "status": "done", "error": "",
                "metrics": {"depth": {"alignment": "median_scale", "abs_rel": 0.3, "d1": 0.7}}},
               {"panorama": "bad.png", "status": "failed", "error": "cannot read image bad.png", "metrics": None}]
    assert headline(m)["novel_ws_psnr_visible"] == 25.0
    doc = write_dataset_report(tmp_path, entries)
    assert doc["alignment"] == "median_scale" and (doc["n_panoramas"], doc["n_scored"]) == (3, 2)
    assert doc["mean"]["depth_abs_rel"] == pytest.approx(0.2)
    csv_lines = (tmp_path / "evaluation.csv").read_text().splitlines()
    assert csv_lines[0].startswith("panorama,status,alignment,depth_abs_rel,depth_d1,novel_ws_psnr_visible")
    assert csv_lines[3].startswith("bad.png,failed,") and csv_lines[3].endswith("cannot read image bad.png")
    md = (tmp_path / "evaluation.md").read_text()
    assert "Depth alignment: median_scale" in md and "| **mean** | 2 scored |  | 0.2000 | 0.8000 | 25.0000 |  |" in md
    doc = json.loads((tmp_path / "evaluation.json").read_text())
    assert doc["per_image"][2]["error"] == "cannot read image bad.png"


# --------------------------------------------------------------------------- novel views with a (tiny) trained field
TINY_FIELD = {
    "model": {"density_grid": {"n_levels": 4, "log2_hashmap_size": 12, "finest_resolution": 64},
              "color_grid": {"n_levels": 6, "log2_hashmap_size": 13, "finest_resolution": 128},
              "density_mlp": {"width": 16, "depth": 1}, "color_mlp": {"width": 16, "depth": 1}},
    "grid": {"resolution": 24, "update_every": 3, "update_start": 3},
    "sampling": {"band_samples": 8, "front_segments": 2, "max_segments": 12, "per_segment": 3},
    "optim": {"steps": 8, "batch_rays": 128, "warmup_steps": 2},
    "log": {"log_every": 2, "checkpoint_every": 4, "preview_every": 0, "preview_width": 32, "eval_stride": 2,
            "keep_checkpoints": 1},
}


def test_novel_views_scored_on_visible_and_disoccluded_pixels(tmp_path):
    """A tiny field trained on the synthetic room; two ground-truth poses. The numbers in metrics.json are the
    shared functions applied to the same render, masks follow the one visibility rule, LPIPS says why it is off."""
    h, w = 32, 64
    scene = make_scene("living_room")
    data = tmp_path / "room"
    centre = scene.render_panorama(h, w)
    io.write_image(data / "image.png", centre["rgb"])
    np.save(data / "image_distance.npy", centre["distance"].astype(np.float32))
    positions = {"x+0.30": [0.3, 0.0, 0.0], "z-0.30": [0.0, 0.0, -0.3]}
    for name, pos in positions.items():
        view = scene.render_panorama(h, w, position=pos)
        io.write_image(data / "gt" / f"{name}.png", view["rgb"])
        np.save(data / "gt" / f"{name}_distance.npy", view["distance"].astype(np.float32))
    (data / "poses.json").write_text(json.dumps({"poses": [{"name": n, "position": p} for n, p in positions.items()]}))
    base = [f"dataset.image_path={data / 'image.png'}", f"device.base_exp_dir={tmp_path / 'exp'}"]
    ctx = runner.run(_cfg(base + ["mode=depth"]))
    rgb = io.read_panorama(data / "image.png")
    train_field(rgb, np.load(ctx.run_dir / "depth" / "distance.npy"), ctx.run_dir, TINY_FIELD, progress=False)
    ctx = runner.run(_cfg(base + ["mode=evaluate", "evaluate.lpips.enabled=true"]))
    res = json.loads((ctx.run_dir / "eval" / "metrics.json").read_text())
    # lpips is an optional extra; without it (or without the backbone file) the reason is recorded, no download
    assert res["skipped"]["lpips"].startswith(("LPIPS needs the lpips package: pip install -r requirements-lpips.txt",
                                               "LPIPS (alex) needs the torchvision backbone weights at"))
    field, _ = load_trained_field(ctx.run_dir)
    for name, pos in positions.items():
        entry = res["novel_views"][name]
        gt_rgb = io.read_panorama(data / "gt" / f"{name}.png")
        gt_dist = np.load(data / "gt" / f"{name}_distance.npy")
        vis = visible_mask(pos, gt_dist, centre_map_sampler(centre["distance"]), 0.01)
        assert entry["visible_fraction"] == pytest.approx(vis.mean())
        assert 0.5 < vis.mean() < 1.0  # some pixels are disoccluded
        out = np.clip(render_pose(field, CameraPose(position=np.array(pos, float), width=w, height=h))["rgb"], 0, 1)
        assert entry["psnr_all"] == pytest.approx(psnr(out, gt_rgb), abs=1e-4)
        assert entry["ws_psnr_visible"] == pytest.approx(ws_psnr(out, gt_rgb, mask=vis), abs=1e-4)
        assert entry["ssim_disoccluded"] == pytest.approx(ssim(out, gt_rgb, mask=~vis), abs=1e-4)
        assert entry["identity_psnr_visible"] == pytest.approx(psnr(rgb, gt_rgb, mask=vis), abs=1e-9)
        assert Path(entry["figure"]).is_file()
    assert res["training_view"]["psnr_all"] > 10.0 and Path(res["depth"]["figure"]).is_file()
