"""The inpainting stage end to end on a tiny field: outputs, records, resume equals an uninterrupted run, and the
one-line errors for a bad inpainter or completer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from immersivedepth.inpaint.validate import InpainterOutputError
from immersivedepth.scenes.synthetic import make_scene
from immersivedepth.stages import inpaint as stage
from immersivedepth.stages.base import RunContext
from immersivedepth.stages.inpaint import run_inpaint, sphere_dilate
from immersivedepth.stages.registry import stage_named
from immersivedepth.stages.runner import stages_for_mode
from immersivedepth.stages.schema import register_configs
from immersivedepth.train.checkpoint import load_checkpoint
from immersivedepth.train.trainer import train_field

FIELD = {
    "model": {"density_grid": {"n_levels": 4, "log2_hashmap_size": 12, "finest_resolution": 64},
              "color_grid": {"n_levels": 6, "log2_hashmap_size": 13, "finest_resolution": 128},
              "density_mlp": {"width": 16, "depth": 1}, "color_mlp": {"width": 16, "depth": 1}},
    "grid": {"resolution": 24, "update_every": 5, "update_start": 5},
    "sampling": {"band_samples": 8, "front_segments": 2, "max_segments": 12, "per_segment": 3},
    "optim": {"steps": 20, "batch_rays": 256, "warmup_steps": 2},
    "log": {"log_every": 5, "checkpoint_every": 10, "preview_every": 0, "eval_stride": 4, "tensorboard": False},
}
# a 20-step field is blurry (opacity ~0.4): loose tolerances keep the test about the stage's mechanics
INPAINT = {"width": 32, "anchors": {"count": 2, "per_path": 3, "per_ring": 4, "select_width": 16, "max_unseen": 1.0,
                                   "median_fraction": 0.0},
           "visibility": {"rel_tol": 0.3, "abs_tol": 0.1, "min_opacity": 0.1},
           "train": {"steps_per_anchor": 6, "final_steps": 4, "warmup_steps": 2}}
RENDER = {"paths": [{"name": "circle", "kind": "circle", "n_frames": 8, "radius_fraction": 0.6}],
          "render": {"chunk": 4096}}


class NaNInpainter:
    """A broken user inpainter (test double): NaN everywhere."""

    def __call__(self, rgb, mask, distance):
        return np.full(rgb.shape, np.nan)


class ShrinkingCompletion:
    """A broken user completer (test double): the wrong shape."""

    def __call__(self, rgb, mask, distance):
        return distance[:-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    p = make_scene("cluttered_room").render_panorama(32, 64)
    rgb, dist = p["rgb"].astype(np.float32), p["distance"].astype(np.float32)
    base = tmp_path_factory.mktemp("base")
    train_field(rgb, dist, base, FIELD, progress=False)
    return rgb, dist, base / "checkpoints" / "last.pt"


def _run(run_dir, trained, cfg=INPAINT, **kw):
    rgb, dist, ck = trained
    return run_inpaint(run_dir, cfg, field_cfg=FIELD, render_cfg=RENDER, rgb=rgb, distance=dist, checkpoint=ck,
                       fingerprint="fp", progress=False, **kw)


def _strip(state):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in state["done"]]


@pytest.mark.slow  # four stage runs and a kill: ~1 min on a busy 2-core machine
def test_stage_outputs_and_resume_equal_an_uninterrupted_run(tmp_path, trained, monkeypatch):
    a = tmp_path / "a"
    summary = _run(a, trained)
    state = json.loads((a / "inpaint" / "anchors.json").read_text())
    assert summary["anchors"] == len(state["done"]) == len(state["order"]) == 2 and state["finished"]
    gains = [o["gain"] for o in state["order"]]
    assert gains == sorted(gains, reverse=True) and gains[0] > 0
    for rec in state["done"]:
        d = a / "inpaint" / rec["dir"]
        for f in ("rendered.png", "rendered_distance.npy", "opacity.npy", "unseen.png", "unseen.npy",
                  "inpainted.png", "completed_distance.npy", "completed_distance.png", "erased.png", "erased.npy",
                  "repainted.png", "repainted.npy", "fringe.png", "fringe.npy"):
            assert (d / f).is_file(), f
        unseen, erased = np.load(d / "unseen.npy"), np.load(d / "erased.npy")
        repainted, fringe = np.load(d / "repainted.npy"), np.load(d / "fringe.npy")
        assert unseen.shape == (16, 32) and not (erased & ~unseen).any()
        assert not (unseen & ~repainted).any() and not (fringe & ~(unseen & ~erased)).any()
        # what the field is trained on: the never-seen pixels left after the conflict check and the fringe
        pano = stage._load_anchor_panorama(a / "inpaint", rec, 0.5, 0.0)
        assert np.array_equal(pano.filled, unseen & ~erased & ~fringe)
        assert np.array_equal(pano.exclude, erased | fringe | (repainted & ~unseen)) and pano.observed_weight == 0
    assert rec["train"]["steps"] == 6 and state["final"]["steps"] == 4  # final steps after the last anchor
    final = load_checkpoint(a / "inpaint" / "checkpoints" / "last.pt")
    assert not (a / "inpaint" / "checkpoints" / "anchor_00").exists()  # superseded checkpoints are removed

    # a run killed while training the second anchor, then continued with is_continue=true
    b = tmp_path / "b"
    real = stage.continue_training
    calls = []

    def killed_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "continue_training", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        _run(b, trained)
    monkeypatch.setattr(stage, "continue_training", real)
    half = json.loads((b / "inpaint" / "anchors.json").read_text())
    assert len(half["done"]) == 1 and not half["finished"]
    _run(b, trained, resume=True)
    resumed = json.loads((b / "inpaint" / "anchors.json").read_text())
    assert _strip(resumed) == _strip(state) and resumed["order"] == state["order"]
    other = load_checkpoint(b / "inpaint" / "checkpoints" / "last.pt")
    for k, v in final["model"].items():
        assert torch.equal(v, other["model"][k]), k
    # without is_continue the stage starts again (and a different fingerprint is never resumed)
    _run(b, trained, resume=False)
    assert _strip(json.loads((b / "inpaint" / "anchors.json").read_text())) == _strip(state)


def test_added_panoramas_fill_the_field(tmp_path, trained):
    """After the stage, the first anchor's unseen pixels are far less often holes (opacity < 0.5) than before."""
    a = tmp_path / "a"
    _run(a, trained)
    state = json.loads((a / "inpaint" / "anchors.json").read_text())
    rec = state["done"][0]
    assert rec["unseen_fraction"] > 0 and rec["filled_fraction"] <= rec["unseen_fraction"]


def test_bad_inpainter_and_completer_name_themselves_and_the_anchor(tmp_path, trained):
    cfg = {**INPAINT, "inpainter": {"_target_": "test_inpaint_stage.NaNInpainter"}}
    with pytest.raises(InpainterOutputError, match=r"inpainter test_inpaint_stage.NaNInpainter at anchor \S+ returned "
                                                   r"\d+ NaN/inf values"):
        _run(tmp_path / "nan", trained, cfg)
    cfg = {**INPAINT, "completion": {"_target_": "test_inpaint_stage.ShrinkingCompletion"}}
    with pytest.raises(InpainterOutputError, match=r"distance completer test_inpaint_stage.ShrinkingCompletion at "
                                                   r"anchor \S+ returned shape \(15, 32\), expected \(16, 32\)"):
        _run(tmp_path / "shape", trained, cfg)
    cfg = {**INPAINT, "inpainter": {"_target_": "no_such_module.Fill"}}
    with pytest.raises(Exception, match=r"inpaint.inpainter: could not build 'no_such_module.Fill'"):
        _run(tmp_path / "import", trained, cfg)


def test_sphere_dilate_crosses_the_seam():
    m = np.zeros((8, 16), bool)
    m[4, 0] = True
    g = sphere_dilate(m, 1)
    assert g[4, 15] and g[4, 1] and g[3, 0] and g[5, 0] and g.sum() == 5


def _composed(overrides):
    register_configs()
    conf = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        return compose(config_name="nerf", overrides=overrides)


def test_presets_switch_the_stage_and_only_it(tmp_path):
    """inpaint=none: the stage is off and the runner's pipeline is depth -> train -> render_dense as before; a changed
    inpaint config changes only this stage's fingerprint (train's stays)."""
    assert [s.name for s in stages_for_mode("all")] == ["depth", "train", "inpaint", "render_dense"]

    def ctx(overrides):
        return RunContext(cfg=_composed(overrides), run_dir=tmp_path, image_path=tmp_path / "x.png", device="cpu")

    off = ctx(["inpaint=none"])
    assert not stage.STAGE.enabled(off) and stage.STAGE.enabled(ctx(["inpaint=fast"]))
    assert off.field_checkpoint() == tmp_path / "checkpoints" / "last.pt"  # render_dense renders the trained field
    a, b = ctx(["inpaint=fast"]), ctx(["inpaint=fast", "inpaint.anchors.count=2"])
    train = stage_named("train")
    assert train.fingerprint(a, "up") == train.fingerprint(b, "up")
    assert stage.STAGE.fingerprint(a, "t") != stage.STAGE.fingerprint(b, "t")
    assert stage.STAGE.field_checkpoint(a) == tmp_path / "inpaint" / "checkpoints" / "last.pt"
