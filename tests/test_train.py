"""Training: masks, schedule, losses, resume equality, checkpoints (errors, disk full, Ctrl-C), learning."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest
import torch

from immersivedepth import sphere
from immersivedepth.errors import OutputError
from immersivedepth.train import checkpoint as ckpt
from immersivedepth.train.checkpoint import CheckpointError, load_trained_field
from immersivedepth.train.config import resolve_config
from immersivedepth.train.dataset import PanoramaRays, supervision_masks
from immersivedepth.train.losses import distance_loss, normal_loss, opacity_loss
from immersivedepth.train.schedule import lr_at
from immersivedepth.train.trainer import TrainingInterrupted, train_field

TINY = {
    "model": {"density_grid": {"n_levels": 4, "log2_hashmap_size": 12, "finest_resolution": 64},
              "color_grid": {"n_levels": 6, "log2_hashmap_size": 13, "finest_resolution": 128},
              "density_mlp": {"width": 16, "depth": 1}, "color_mlp": {"width": 16, "depth": 1}},
    "grid": {"resolution": 24, "update_every": 3, "update_start": 3},
    "sampling": {"band_samples": 8, "front_segments": 2, "max_segments": 12, "per_segment": 3},
    "optim": {"steps": 8, "batch_rays": 128, "warmup_steps": 2},
    "log": {"log_every": 2, "checkpoint_every": 4, "preview_every": 4, "preview_width": 32, "eval_stride": 2,
            "keep_checkpoints": 2},
}


def _cfg(**over):
    import copy

    cfg = copy.deepcopy(TINY)
    for sec, vals in over.items():
        cfg.setdefault(sec, {}).update(vals)
    return cfg


@pytest.fixture(scope="module")
def scene_small():
    from immersivedepth.scenes.synthetic import make_scene

    p = make_scene("living_room").render_panorama(32, 64)
    return p["rgb"].astype(np.float32), p["distance"].astype(np.float32)


# ------------------------------------------------------------------------------------------------ masks
def test_masks_drop_depth_edges_and_invalid():
    d = np.full((32, 64), 2.0, np.float32)  # a sphere of radius 2: no edges, no grazing
    d[:, 10:20] = 4.0
    d[5, 40] = np.nan
    d[6, 40] = 0.0
    m = supervision_masks(d, edge_threshold=0.1, edge_dilation=0, grazing_max_deg=80)
    assert not m["valid"][5, 40] and not m["valid"][6, 40] and m["valid"].sum() == 32 * 64 - 2
    cols = np.nonzero(m["edge"][16])[0].tolist()
    assert cols == [9, 10, 19, 20]
    assert m["edge"][5, 39] and m["edge"][5, 41] and m["edge"][4, 40] and m["edge"][7, 40]  # next to invalid
    assert not (m["grazing"] & ~m["edge"]).any()  # normals are only undefined across the edges themselves
    m1 = supervision_masks(d, edge_threshold=0.1, edge_dilation=1, grazing_max_deg=80)
    assert np.nonzero(m1["edge"][16])[0].tolist() == [8, 9, 10, 11, 18, 19, 20, 21]
    assert not m1["supervise"][16, 10] and m1["supervise"][16, 14]


def test_masks_flag_grazing_floor():
    h, w = 64, 128
    _, lat = sphere.erp_lonlat_grid(h, w)
    d = np.where(lat < 0, 1.0 / np.maximum(-np.sin(lat), 1e-9), 0.0).astype(np.float32)  # floor y = -1
    m = supervision_masks(d, edge_threshold=10.0, edge_dilation=0, grazing_max_deg=75)
    rows = np.arange(h)
    lat_row = lat[:, 0]
    expect = (lat_row < 0) & (np.abs(np.sin(lat_row)) < np.cos(np.deg2rad(75)))
    ok = rows >= h // 2 + 1  # skip the first valid row (its upper neighbour is invalid)
    assert np.array_equal(m["grazing"][ok, 0], expect[ok])
    assert expect[ok].sum() >= 3 and (~expect[ok]).sum() >= 20
    n = m["normals"][h // 2 + 10, 5]
    assert np.allclose(n, [0, 1, 0], atol=1e-3)  # floor normal faces the centre (up)


def test_rays_validate_inputs(scene_small):
    rgb, dist = scene_small
    with pytest.raises(ValueError, match=r"distance map shape \(16, 32\) does not match the panorama's \(32, 64\)"):
        PanoramaRays(rgb, dist[::2, ::2])
    bad = dist.copy()
    bad[:, :] = 0.0
    with pytest.raises(ValueError, match="only 0.0% of the distance map is valid"):
        PanoramaRays(rgb, bad)
    holes = dist.copy()
    holes[3:6, :] = np.nan
    holes[10, 10] = 0.0
    r = PanoramaRays(rgb, holes)
    assert len(r) == 32 * 64 - 3 * 64 - 1 and bool(torch.isfinite(r.distance).all())


# ------------------------------------------------------------------------------------------------ schedule & losses
def test_lr_schedule_values():
    kw = {"base_lr": 0.01, "total_steps": 110, "warmup_steps": 10, "warmup_start_factor": 0.1, "final_factor": 0.01}
    assert math.isclose(lr_at(0, **kw), 0.001)
    assert math.isclose(lr_at(5, **kw), 0.01 * (0.1 + 0.9 * 0.5))
    assert math.isclose(lr_at(10, **kw), 0.01)
    assert math.isclose(lr_at(60, **kw), 0.01 * (0.01 + 0.99 * 0.5))
    assert math.isclose(lr_at(110, **kw), 1e-4) and math.isclose(lr_at(500, **kw), 1e-4)
    with pytest.raises(ValueError, match="total_steps must be > 0"):
        lr_at(0, base_lr=0.01, total_steps=0)


def test_losses_values():
    p, t = torch.tensor([1.0, 2.2, 5.0]), torch.tensor([1.0, 2.0, 4.0])
    m = torch.tensor([True, True, False])
    # relative errors 0, 0.1 -> smooth-L1 with beta 0.01: 0.1 - 0.005 = 0.095, mean over 2
    assert math.isclose(float(distance_loss(p, t, m, beta=0.01)), 0.0475, rel_tol=1e-5)
    assert math.isclose(float(opacity_loss(torch.tensor([1.0, 0.5, 0.0]))), 0.5)
    n = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert math.isclose(float(normal_loss(n, torch.tensor([[0.0, 2.0, 0.0], [0.0, 1.0, 0.0]]))), 0.5, abs_tol=1e-6)


@pytest.mark.parametrize("preset", ["default", "fast"])
def test_presets_are_overlays_of_the_schema(repo_root, preset):
    from hydra import compose, initialize_config_dir

    from immersivedepth.stages.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(repo_root / "configs"), version_base="1.3"):
        composed = compose(config_name="nerf", overrides=[f"field={preset}"])
    cfg = resolve_config(composed.field)
    if preset == "default":
        assert cfg == resolve_config(None)  # the default preset is the schema's defaults, written once
    else:  # fast lists only what differs from default
        flat = lambda d, p="": {k2: v2 for k, v in d.items() for k2, v2 in (  # noqa: E731
            flat(v, f"{p}{k}.").items() if isinstance(v, dict) else [(f"{p}{k}", v)])}
        a, b = flat(resolve_config(None)), flat(cfg)
        assert {k for k in a if a[k] != b[k]} == {
            "model.color_grid.log2_hashmap_size", "grid.update_every", "grid.update_start", "optim.steps",
            "optim.lr", "optim.warmup_steps", "log.checkpoint_every", "log.preview_every", "log.eval_stride"}


def test_unknown_config_key_is_an_error():
    with pytest.raises(ValueError, match=r"unknown key field.optim.stepz; valid keys under field.optim: batch_rays"):
        resolve_config({"optim": {"stepz": 3}})
    with pytest.raises(ValueError, match=r"field.optim.steps must be > 0, got 0"):
        resolve_config({"optim": {"steps": 0}})
    with pytest.raises(ValueError, match=r"field.log.log_every must be a whole number, got 'abc'"):
        resolve_config({"log": {"log_every": "abc"}})


# ------------------------------------------------------------------------------------------------ trainer
def _state(run_dir):
    payload = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    return payload


def test_resume_is_bit_identical_and_ctrl_c_saves(tmp_path, scene_small):
    rgb, dist = scene_small
    cfg = _cfg()
    a = tmp_path / "a"
    sa = train_field(rgb, dist, a, cfg, seed=3, progress=False)
    assert sa["steps"] == 8 and not sa["stopped_early"]

    b = tmp_path / "b"

    def stop_at_5(step, metrics):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 5/8; checkpoint saved to .*last.pt"):
        train_field(rgb, dist, b, cfg, seed=3, progress=False, callbacks=[stop_at_5])
    assert int(_state(b)["step"]) == 5
    sb = train_field(rgb, dist, b, cfg, seed=3, progress=False, resume=True)
    assert sb["steps"] == 8
    pa, pb = _state(a), _state(b)
    for k, v in pa["model"].items():
        assert torch.equal(v, pb["model"][k]), k
    for k, v in pa["optimizer"]["state"].items():
        for kk, vv in v.items():
            assert torch.equal(vv, pb["optimizer"]["state"][k][kk]), (k, kk)
    assert torch.equal(pa["generator"], pb["generator"])
    # outputs: periodic checkpoints (keep 2), metrics rows for every log step exactly once, previews
    assert sorted(p.name for p in (b / "checkpoints").glob("step_*.pt")) == ["step_000005.pt", "step_000008.pt"]
    rows = list(csv.DictReader(open(b / "train" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 5, 6, 8]
    assert (b / "train" / "previews" / "step_000004_rgb.png").is_file()
    assert (b / "train" / "previews" / "step_000008_distance.png").is_file()
    # stop_at keeps the schedule of optim.steps: stopping at 4 then resuming also matches
    c = tmp_path / "c"
    sc = train_field(rgb, dist, c, cfg, seed=3, progress=False, stop_at=4)
    assert sc["steps"] == 4 and sc["stopped_early"]
    train_field(rgb, dist, c, cfg, seed=3, progress=False, resume=True)
    pc = _state(c)
    assert all(torch.equal(v, pc["model"][k]) for k, v in pa["model"].items())
    # a different seed gives a different result (the test above can fail)
    d = tmp_path / "d"
    train_field(rgb, dist, d, cfg, seed=4, progress=False)
    assert not torch.equal(_state(d)["model"]["color_encoding.params"], pa["model"]["color_encoding.params"])


def test_checkpoint_config_mismatch_and_corruption(tmp_path, scene_small):
    rgb, dist = scene_small
    run = tmp_path / "run"
    train_field(rgb, dist, run, _cfg(optim={"steps": 2}), progress=False)
    other = _cfg(optim={"steps": 4})
    other["model"]["density_mlp"] = {"width": 32, "depth": 1}
    with pytest.raises(CheckpointError, match=r"different model config \(field.model.density_mlp.width: checkpoint 16 "
                                              r"vs config 32\)"):
        train_field(rgb, dist, run, other, progress=False, resume=True)
    # a training-only change (more steps) resumes fine
    s = train_field(rgb, dist, run, _cfg(optim={"steps": 4}), progress=False, resume=True)
    assert s["steps"] == 4
    # other data -> error
    with pytest.raises(CheckpointError, match="different panorama or distance map"):
        train_field(rgb[:, ::-1].copy(), dist, run, _cfg(optim={"steps": 6}), progress=False, resume=True)
    # corrupt file
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint .*last.pt is corrupt"):
        train_field(rgb, dist, run, _cfg(optim={"steps": 6}), progress=False, resume=True)
    with pytest.raises(CheckpointError, match=r"last.pt is corrupt"):
        load_trained_field(run)
    torch.save({"format": "something else"}, last)
    with pytest.raises(CheckpointError, match="has format 'something else'"):
        load_trained_field(run)


def test_missing_checkpoint_errors(tmp_path, scene_small):
    rgb, dist = scene_small
    with pytest.raises(FileNotFoundError, match=r"no trained field in .*empty.*perf_runner.py --config-name nerf "
                                                r"dataset.image_path=<image> device.base_exp_dir=<base> mode=train"):
        load_trained_field(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"resume requested .* does not exist"):
        train_field(rgb, dist, tmp_path / "empty", _cfg(), progress=False, resume=True)


@pytest.mark.parametrize("broken", ["save", "replace"])
def test_disk_full_keeps_previous_checkpoint(tmp_path, scene_small, monkeypatch, broken):
    rgb, dist = scene_small
    run = tmp_path / "run"
    cfg = _cfg(optim={"steps": 8}, log={"checkpoint_every": 3, "preview_every": 0})
    real_save, real_replace = torch.save, os.replace
    calls = {"n": 0}

    def full(*args, **kw):
        if broken == "replace" and not str(args[1]).endswith(".pt"):
            return real_replace(*args, **kw)  # metrics.csv etc. still write
        calls["n"] += 1
        # the step-3 checkpoint succeeds (one torch.save: last.pt is a hard link of step_000003.pt; two renames),
        # later ones hit a full disk
        if calls["n"] > (1 if broken == "save" else 2):
            raise OSError(28, "No space left on device")
        return (real_save if broken == "save" else real_replace)(*args, **kw)

    if broken == "save":
        monkeypatch.setattr(ckpt.torch, "save", full)
    else:
        monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match=r"checkpoint of step 6 not saved: cannot write .*: No space left on device; "
                                              r"the disk is full.*earlier outputs are intact"):
        train_field(rgb, dist, run, cfg, progress=False)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    monkeypatch.setattr(os, "replace", real_replace)
    field, info = load_trained_field(run)
    assert info["step"] == 3
    assert not (run / "checkpoints" / "step_000006.pt").exists() or broken == "replace"
    assert not list((run / "checkpoints").glob(".tmp-*"))  # no temp files left behind


def test_end_to_end_training_learns(tmp_path, scene_small):
    rgb, dist = scene_small
    # the untrained field, with one background colour: an environment map starts as the panorama itself (seen
    # through the still half-transparent field), which would make "untrained" score ~25 dB
    base = _cfg(optim={"steps": 150}, log={"preview_every": 0, "eval_stride": 1}, model={"background": "learned"})
    s0 = train_field(rgb, dist, tmp_path / "init", base, progress=False, stop_at=0)
    # 32x64 pixels are 5.6 deg apart: relax the masks (most pixels would be "edges") and refine the density grid
    cfg = _cfg(optim={"steps": 150, "batch_rays": 512, "warmup_steps": 10},
               log={"preview_every": 0, "eval_stride": 1, "checkpoint_every": 1000, "log_every": 50},
               grid={"update_every": 50, "update_start": 50, "resolution": 32},
               masks={"edge_threshold": 0.5, "grazing_max_deg": 88})
    cfg["model"]["density_grid"] = {"n_levels": 6, "log2_hashmap_size": 14, "finest_resolution": 256}
    s1 = train_field(rgb, dist, tmp_path / "trained", cfg, progress=False)
    assert s1["psnr"] > s0["psnr"] + 10.0 and s1["psnr"] > 27.0, (s0, s1)
    assert s1["abs_rel"] < 0.3 * s0["abs_rel"] and s1["abs_rel"] < 0.05, (s0, s1)
    field, info = load_trained_field(tmp_path / "trained")
    assert info["step"] == 150 and info["image_size"] == (32, 64)
    # the loaded field renders the same numbers
    from immersivedepth.train.trainer import evaluate_view

    ev = evaluate_view(field, rgb, dist)
    assert abs(ev["psnr"] - s1["psnr"]) < 1e-3


def test_real_sigint_stops_at_step_boundary_and_saves(tmp_path, scene_small):
    import signal

    rgb, dist = scene_small

    def sigint_at_2(step, metrics):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the trainer's handler only sets a flag

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 2/8"):
        train_field(rgb, dist, tmp_path / "r", _cfg(log={"preview_every": 0}), progress=False, callbacks=[sigint_at_2])
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    assert int(_state(tmp_path / "r")["step"]) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (this project's CI has none)")
def test_training_on_cuda_resumes_on_cpu(tmp_path, scene_small):
    """The GPU path (tcnn encodings/MLPs when installed, torch otherwise): training runs, the loss falls, and the
    checkpoint loads on a CPU-only machine."""
    rgb, dist = scene_small
    s = train_field(rgb, dist, tmp_path / "gpu", _cfg(optim={"steps": 30}), device="cuda", progress=False)
    assert s["steps"] == 30 and math.isfinite(s["psnr"]) and s["psnr"] > 15.0
    field, info = load_trained_field(tmp_path / "gpu", device="cpu")
    assert next(field.parameters()).device.type == "cpu"


def test_training_resolution_caps_wide_panoramas():
    from immersivedepth.train.dataset import training_resolution

    rng = np.random.default_rng(0)
    rgb = rng.random((64, 128, 3)).astype(np.float32)
    dist = rng.uniform(1.0, 5.0, (64, 128)).astype(np.float32)
    dist[11, 21] = np.nan  # invalid, and under the centre of new pixel (5, 10) at factor 2 (odd rows/columns)
    same_rgb, same_dist = training_resolution(rgb, dist, 128)
    assert same_rgb is rgb and same_dist is dist  # not wider than the cap: untouched
    assert training_resolution(rgb, dist, 0)[1] is dist  # 0 = no cap
    small_rgb, small_dist = training_resolution(rgb, dist, 64)
    assert small_rgb.shape == (32, 64, 3) and small_dist.shape == (32, 64)
    # factor 2: colour is the 2x2 block mean, distance the pixel under the new pixel's centre (odd row/column)
    np.testing.assert_allclose(small_rgb, rgb.reshape(32, 2, 64, 2, 3).mean((1, 3)), atol=1e-6)
    np.testing.assert_array_equal(small_dist[~np.isnan(small_dist)], dist[1::2, 1::2][~np.isnan(small_dist)])
    assert np.isnan(small_dist[5, 10])  # the NaN at (11, 21) stays invalid
    for bad in (15, 8):  # refused whether or not this panorama is wider than the value
        with pytest.raises(ValueError, match=r"field.data.max_width must be an even number >= 16 \(or 0 for no cap\)"):
            training_resolution(rgb, dist, bad)
    with pytest.raises(ValueError, match=r"max_width must be an even number >= 16 \(or 0 for no cap\), got 129"):
        training_resolution(rgb, dist, 129)


def test_wide_panorama_trains_at_the_capped_resolution(tmp_path, scene_small):
    rgb, dist = scene_small  # 32 x 64
    s = train_field(rgb, dist, tmp_path / "cap", _cfg(data={"max_width": 32}, optim={"steps": 2}), progress=False)
    assert s["n_rays"] == 16 * 32
    s = train_field(rgb, dist, tmp_path / "cap", _cfg(data={"max_width": 32}, optim={"steps": 4}), progress=False,
                    resume=True)  # the input fingerprint is taken before the resize: resuming works
    assert s["steps"] == 4
