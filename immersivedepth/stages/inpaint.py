"""``mode=inpaint``: fill what the panorama never saw (PERF's second stage), between ``train`` and ``render_dense``.

Anchor after anchor, each chosen greedily with the field and supervision as they are by then
(:mod:`immersivedepth.inpaint.anchors`), until ``anchors.count`` are filled or none reveals ``anchors.min_gain``:

1. render the current field at the anchor (a world-aligned panorama, ``inpaint.width`` wide);
2. mask the pixels no supervision panorama saw (:func:`~immersivedepth.inpaint.visibility.unseen_mask`);
3. inpaint their colour (``inpaint.inpainter``, or the Stable-Diffusion tiles with ``inpaint.model_dir``) and complete
   their distance (``inpaint.completion``); both outputs are checked. A ring of ``visibility.dilate_px`` pixels
   around the holes is repainted too (the field blurs colours across depth edges), but only never-seen pixels
   supervise the field;
4. erase filled pixels that would sit in front of a surface an earlier panorama saw (PERF's conflict check), and
   leave out those along an occluder's silhouette (``train.fringe_px``: their rays graze the occluder);
5. add the anchor panorama to the supervision (inpainted pixels weighted by ``train.inpainted_weight``) and continue
   training the same field (warm start, ``train.steps_per_anchor`` steps, new cells seeded in the occupancy grid);
   after the last anchor, ``train.final_steps`` more steps on everything.

Outputs (each written atomically)::

    <run>/inpaint/anchors.json                     order, positions, what each anchor added, where the field is
    <run>/inpaint/anchors/<k>_<name>/rendered.png  rendered_distance.npy  opacity.npy  unseen.png/.npy
                                     repainted.png/.npy (unseen + ring)  fringe.png/.npy
                                     inpainted.png  completed_distance.npy/.png  erased.png/.npy
    <run>/inpaint/checkpoints/last.pt              the refined field (render_dense renders it)
    <run>/inpaint/train/<k>_<name>/metrics.csv

Resume: ``anchors.json`` is rewritten after every finished anchor, after its field checkpoint; with
``is_continue=true`` a run stopped anywhere continues after the last finished anchor from that anchor's checkpoint
and its saved panoramas, which gives the same field as an uninterrupted run (every step is seeded and every added
panorama is re-read from the files it was saved to).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import hydra.utils
import numpy as np
from scipy import ndimage

from immersivedepth import io, sphere
from immersivedepth.config import as_dict, from_mapping, instantiate_failure
from immersivedepth.errors import ConfigError, RunError
from immersivedepth.inpaint.anchors import (
    Candidate,
    best_candidate,
    keep_in_free_space,
    path_candidates,
    ring_candidates,
)
from immersivedepth.inpaint.config import DEFAULT_COMPLETION, DEFAULT_INPAINTER, InpaintConfig
from immersivedepth.inpaint.diffusion import TileDiffusionInpainter
from immersivedepth.inpaint.holes import occluder_fringe
from immersivedepth.inpaint.validate import check_distance_output, check_rgb_output
from immersivedepth.inpaint.visibility import View, conflict_mask, unseen_mask
from immersivedepth.render.config import RenderConfig
from immersivedepth.render.frames import render_pose
from immersivedepth.render.paths import FreeSpace
from immersivedepth.render.poses import CameraPose
from immersivedepth.stages.base import RunContext, Stage
from immersivedepth.stages.base import fingerprint as stage_fingerprint
from immersivedepth.stages.train import TrainStage, load_depth_outputs
from immersivedepth.train.checkpoint import field_from_checkpoint, link_checkpoint, load_checkpoint
from immersivedepth.train.config import resolve_config
from immersivedepth.train.supervision import PosedPanorama
from immersivedepth.train.trainer import Trainer

__all__ = ["InpaintStage", "STAGE", "run_inpaint", "anchor_candidates", "next_anchor", "anchor_radius", "fill_anchor",
           "continue_training", "build_inpainter", "build_completion", "sphere_dilate", "STATE_FILE"]

LOG = logging.getLogger("immersivedepth.inpaint")
STATE_FILE = "anchors.json"


# --------------------------------------------------------------------------- building the pluggable parts
def _instantiate(spec: dict, key: str) -> Callable:
    try:
        obj = hydra.utils.instantiate(spec)
    except Exception as exc:  # Hydra wraps import and constructor errors of user code alike
        raise ConfigError(f"inpaint.{key}: could not build {spec.get('_target_')!r} ({instantiate_failure(exc)}); give "
                          "an importable _target_ and its keyword arguments") from exc
    if not callable(obj):
        raise ConfigError(f"inpaint.{key}: {spec.get('_target_')!r} built a {type(obj).__name__}, which is not "
                          "callable as f(rgb, mask, distance)")
    return obj


def build_inpainter(cfg: InpaintConfig, device: str = "cpu") -> tuple[Callable, str]:
    """The colour inpainter and its name: the Stable-Diffusion tiles with ``model_dir``, else ``inpaint.inpainter``."""
    if cfg.model_dir:
        d = cfg.diffusion
        return (TileDiffusionInpainter(cfg.model_dir, prompt=d.prompt, negative_prompt=d.negative_prompt,
                                       steps=d.steps, guidance_scale=d.guidance_scale, tile_size=d.tile_size,
                                       seed=d.seed, device=device), "TileDiffusionInpainter")
    spec = dict(cfg.inpainter or DEFAULT_INPAINTER)
    return _instantiate(spec, "inpainter"), str(spec["_target_"])


def build_completion(cfg: InpaintConfig) -> tuple[Callable, str]:
    """The distance completer of ``inpaint.completion`` and its name."""
    spec = dict(cfg.completion or DEFAULT_COMPLETION)
    return _instantiate(spec, "completion"), str(spec["_target_"])


# --------------------------------------------------------------------------- small helpers
def sphere_dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` ``(H, W)`` grown by ``px`` pixels (4-neighbour steps) across the seam and the poles."""
    if px <= 0:
        return np.asarray(mask, bool)
    padded = sphere.erp_pad(np.asarray(mask, bool), px)
    grown = ndimage.binary_dilation(padded, iterations=px)
    return grown[px:-px, px:-px]


def _render_erp(field, position, width: int, opts: dict, name: str) -> dict:
    pose = CameraPose(position=np.asarray(position, np.float64), width=width, height=width // 2, name=name)
    return render_pose(field, pose, normals=False, **opts)


def _write_mask(path: Path, mask: np.ndarray) -> None:
    io.write_image(path.with_suffix(".png"), mask.astype(np.float32))
    with io.atomic_path(path.with_suffix(".npy")) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(mask, bool))


def _write_npy(path: Path, data: np.ndarray) -> None:
    with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, data)


def _write_state(path: Path, state: dict) -> None:
    with io.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(state, indent=2) + "\n")


def _anchor_dir(out: Path, k: int, name: str) -> Path:
    return out / "anchors" / f"{k:02d}_{name}"


def _load_anchor_panorama(out: Path, rec: dict, weight: float, seen_weight: float) -> PosedPanorama:
    """The supervision panorama an anchor added, read back from its files (identical in a resumed run)."""
    d = out / rec["dir"]
    rgb = io.read_panorama(d / "inpainted.png")
    distance = np.load(d / "completed_distance.npy")
    unseen, erased = np.load(d / "unseen.npy"), np.load(d / "erased.npy")
    fringe, repainted = np.load(d / "fringe.npy"), np.load(d / "repainted.npy")
    # trained: the never-seen pixels that survived the conflict check, away from occluder silhouettes; left out:
    # the erased ones, the fringe and the repainted ring of seen pixels (its colours are inpainted, not rendered)
    return PosedPanorama(rgb=rgb, distance=np.where(erased, 0.0, distance).astype(np.float32),
                         position=tuple(float(v) for v in rec["position"]), name=rec["name"],
                         filled=unseen & ~erased & ~fringe, filled_color_weight=weight, filled_distance_weight=weight,
                         observed_weight=seen_weight, exclude=erased | fringe | (repainted & ~unseen))


# --------------------------------------------------------------------------- anchors
def anchor_radius(distance: np.ndarray, a) -> float | None:
    """How far from the centre anchors may go: ``anchors.max_radius``, else ``anchors.median_fraction`` of the
    median valid distance of the input panorama (``None``: no limit beyond free space)."""
    if a.max_radius is not None:
        return float(a.max_radius)
    d = np.asarray(distance, np.float64)
    d = d[np.isfinite(d) & (d > 0)]
    if a.median_fraction <= 0 or d.size == 0:
        return None
    return float(a.median_fraction * np.median(d))


def anchor_candidates(field, distance: np.ndarray, cfg: InpaintConfig, render_cfg: RenderConfig) -> list[Candidate]:
    """Candidates along the render paths, on the rings and from ``anchors.positions``, in free space and within
    :func:`anchor_radius` of the centre (the others are logged by name)."""
    a = cfg.anchors
    lo, hi = (np.asarray(b.detach().cpu(), float) for b in field.bounds)
    free = FreeSpace(distance, erode_deg=a.free_space.erode_deg, margin=a.free_space.margin,
                     max_fraction=a.free_space.max_fraction, bounds=(lo, hi))
    cands = path_candidates([as_dict(p) for p in render_cfg.paths], free, a.per_path) if a.per_path else []
    cands += ring_candidates(free, a.ring_fractions, a.per_ring) if a.per_ring else []
    cands += [Candidate(f"position_{i:02d}", np.asarray(p, np.float64)) for i, p in enumerate(a.positions)]
    return keep_in_free_space(cands, free, anchor_radius(distance, a))


def next_anchor(field, candidates: list[Candidate], views: list[View], cfg: InpaintConfig, opts: dict
                ) -> tuple[Candidate, float] | None:
    """The candidate revealing most unseen area to the current field and supervision (``anchors.select_width``
    panoramas), or ``None`` below ``anchors.min_gain``."""
    a, v = cfg.anchors, cfg.visibility

    def render(pos):
        r = _render_erp(field, pos, a.select_width, opts, "candidate")
        return r["distance"], r["opacity"]

    return best_candidate(candidates, render, views, min_gain=a.min_gain, rel_tol=v.rel_tol, abs_tol=v.abs_tol,
                          min_opacity=v.min_opacity)


# --------------------------------------------------------------------------- one anchor
def fill_anchor(field, anchor: Candidate, views: list[View], cfg: InpaintConfig, inpainter, inpainter_name: str,
                completion, completion_name: str, opts: dict, out_dir: Path) -> dict:
    """Render, mask, inpaint, complete, erase at one anchor; writes its record files to ``out_dir``."""
    w = cfg.width
    r = _render_erp(field, anchor.position, w, opts, anchor.name)
    v = cfg.visibility
    unseen = unseen_mask(anchor.position, r["distance"], views, rel_tol=v.rel_tol, abs_tol=v.abs_tol,
                         opacity=r["opacity"], min_opacity=v.min_opacity)
    shape = unseen.shape
    area = sphere.pixel_solid_angle(*shape) / (4 * np.pi)
    if float(area[unseen].sum()) > cfg.anchors.max_unseen:
        LOG.warning("inpaint: anchor %s at %s sees %.0f%% unseen (more than inpaint.anchors.max_unseen=%g): it is "
                    "inside an object or outside the room as far as the field knows; skipped", anchor.name,
                    np.round(anchor.position, 3).tolist(), 100 * float(area[unseen].sum()), cfg.anchors.max_unseen)
        return {"skipped": True, "unseen_fraction": float(area[unseen].sum())}
    # The inpainter repaints a ring of `dilate_px` pixels around the holes too (the field blurs colours across depth
    # edges, so those pixels are poor sources), but only the never-seen pixels supervise the field: the ring's
    # pixels on the occluder side were seen, and training them as background would eat into the occluder.
    repaint = sphere_dilate(unseen, v.dilate_px)
    inpainted = check_rgb_output(inpainter(r["rgb"], repaint, r["distance"]), shape, name=inpainter_name,
                                 anchor=anchor.name)
    inpainted = np.where(repaint[..., None], inpainted, r["rgb"])
    completed = check_distance_output(completion(inpainted, repaint, r["distance"]), shape, repaint,
                                      name=completion_name, anchor=anchor.name)
    completed = np.where(repaint, completed, r["distance"]).astype(np.float32)
    c = cfg.conflict
    erased = conflict_mask(anchor.position, completed, unseen, views, rel_tol=c.rel_tol, abs_tol=c.abs_tol)
    fringe = occluder_fringe(unseen & ~erased, r["distance"], completed, px=cfg.train.fringe_px)
    io.write_image(out_dir / "rendered.png", r["rgb"])
    _write_npy(out_dir / "rendered_distance.npy", r["distance"].astype(np.float32))
    _write_npy(out_dir / "opacity.npy", r["opacity"].astype(np.float32))
    _write_mask(out_dir / "unseen", unseen)
    _write_mask(out_dir / "repainted", repaint)
    io.write_image(out_dir / "inpainted.png", inpainted)
    _write_npy(out_dir / "completed_distance.npy", completed)
    io.write_distance(out_dir / "completed_distance.png", completed)
    _write_mask(out_dir / "erased", erased)
    _write_mask(out_dir / "fringe", fringe)
    return {"skipped": False, "unseen_fraction": float(area[unseen].sum()),
            "erased_fraction": float(area[erased].sum()),
            "filled_fraction": float(area[unseen & ~erased & ~fringe].sum()),
            "hole_fraction_before": float(area[r["opacity"] < v.min_opacity].sum())}


def continue_training(field_cfg: dict, supervision: list[PosedPanorama], warm: Path, ck_dir: Path, train_dir: Path,
                       steps: int, cfg: InpaintConfig, *, device: str, seed: int, progress: bool) -> dict:
    """Warm-start the field from ``warm`` and train ``steps`` steps on ``supervision`` -> the trainer's summary."""
    c = copy.deepcopy(field_cfg)
    t = cfg.train
    c["optim"]["steps"] = int(steps)
    c["optim"]["lr"] = float(c["optim"]["lr"]) * t.lr_factor
    c["optim"]["warmup_steps"] = min(t.warmup_steps, int(steps))
    c["log"]["checkpoint_every"] = int(steps)  # one checkpoint, at the end (the anchor is the unit of resume)
    c["log"]["preview_every"] = 0
    c["log"]["tensorboard"] = False
    c["log"]["keep_checkpoints"] = 1
    trainer = Trainer(resolve_config(c), supervision, checkpoint_dir=ck_dir, train_dir=train_dir, device=device,
                      seed=seed)
    trainer.warm_start(warm)  # (seeds the added panoramas' surfaces into the occupancy grid)
    return trainer.fit(progress=progress)


# --------------------------------------------------------------------------- the stage's work
def _advance(run_dir: Path, state: dict, first: Path, previous: Path, new: Path) -> Path:
    """Make ``new`` the stage's current field in ``state`` (written by the caller) and drop the checkpoint before
    it, which resuming no longer needs (never the trained field the stage started from)."""
    state["checkpoint"] = str(new.relative_to(run_dir))
    if previous != first:
        shutil.rmtree(previous.parent, ignore_errors=True)
    return new


def run_inpaint(run_dir, cfg, *, field_cfg, render_cfg, rgb: np.ndarray, distance: np.ndarray, checkpoint,
                fingerprint: str, device: str = "cpu", seed: int = 0, resume: bool = False,
                progress: bool = True) -> dict:
    """Run the stage (module docstring) on a trained run -> summary (also recorded in ``anchors.json``).

    ``cfg``: the ``inpaint`` group; ``field_cfg``: the ``field`` group (training continues with it); ``render_cfg``:
    the ``render`` group (its paths give anchor candidates); ``rgb`` ``(H,W,3)`` / ``distance`` ``(H,W)``: the input
    panorama and its distance; ``checkpoint``: the trained field; ``fingerprint``: identifies inputs + config (a
    saved state with another fingerprint is never resumed); ``resume``: continue after the last finished anchor.
    """
    cfg = from_mapping(InpaintConfig, cfg, "inpaint")
    render_cfg = from_mapping(RenderConfig, render_cfg, "render")
    field_cfg = resolve_config(field_cfg)
    run_dir = Path(run_dir)
    out = run_dir / "inpaint"
    state_path = out / STATE_FILE
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise RunError(f"no trained field at {checkpoint}: run mode=train (or mode=all) first")
    t0 = time.perf_counter()
    opts = {"chunk": render_cfg.render.chunk, "device": device,
            "render_kwargs": {"options": dict(render_cfg.render.options)} if render_cfg.render.options else None}
    inpainter, inpainter_name = build_inpainter(cfg, device)
    completion, completion_name = build_completion(cfg)
    input_view = PosedPanorama(rgb=np.asarray(rgb, np.float32), distance=np.asarray(distance, np.float32))

    state = None
    if resume and state_path.is_file():
        saved = json.loads(state_path.read_text())
        if saved.get("fingerprint") == fingerprint:
            state = saved
            LOG.info("inpaint: resuming after %d finished anchors", len(state["done"]))
        else:
            LOG.warning("inpaint: %s was made with other inputs or config; starting the stage again", state_path)
    if state is None:
        state = {"fingerprint": fingerprint, "inpainter": inpainter_name, "completion": completion_name,
                 "order": [], "done": [], "selection_done": False, "selection_seconds": 0.0, "final": None,
                 "checkpoint": None, "finished": False}
        out.mkdir(parents=True, exist_ok=True)
        _write_state(state_path, state)

    weight, seen_weight = cfg.train.inpainted_weight, cfg.train.seen_weight
    supervision = [input_view] + [_load_anchor_panorama(out, rec, weight, seen_weight) for rec in state["done"]
                                  if not rec["skipped"]]
    views = [View(np.asarray(p.position, np.float64), p.distance) for p in supervision]
    current = Path(run_dir / state["checkpoint"]) if state["checkpoint"] else checkpoint
    candidates = None
    while not state["selection_done"] and len(supervision) - 1 < cfg.anchors.count:
        k = len(state["done"])
        field, _ = field_from_checkpoint(load_checkpoint(current, map_location=device), device, current)
        if k == len(state["order"]):  # choose the next anchor with the current field (a resumed run: already chosen)
            if candidates is None:
                candidates = anchor_candidates(field, np.asarray(distance, np.float32), cfg, render_cfg)
            t_sel = time.perf_counter()
            used = {o["name"] for o in state["order"]}
            pick = next_anchor(field, [c for c in candidates if c.name not in used], views, cfg, opts)
            state["selection_seconds"] = round(state["selection_seconds"] + time.perf_counter() - t_sel, 2)
            if pick is None:
                LOG.info("inpaint: no candidate left reveals inpaint.anchors.min_gain=%g of the sphere; %d anchors "
                         "filled", cfg.anchors.min_gain, len(supervision) - 1)
                state["selection_done"] = True
                _write_state(state_path, state)
                break
            state["order"].append({"name": pick[0].name, "position": [float(x) for x in pick[0].position],
                                   "gain": pick[1]})
            _write_state(state_path, state)
            LOG.info("inpaint: anchor %d: %s at %s reveals %.1f%% of the sphere", k + 1, pick[0].name,
                     np.round(pick[0].position, 3).tolist(), 100 * pick[1])
        t_anchor = time.perf_counter()
        spec = state["order"][k]
        anchor = Candidate(spec["name"], np.asarray(spec["position"], np.float64))
        adir = _anchor_dir(out, k, anchor.name)
        info = fill_anchor(field, anchor, views, cfg, inpainter, inpainter_name, completion, completion_name, opts,
                           adir)
        rec = {"index": k, "name": anchor.name, "position": spec["position"], "dir": str(adir.relative_to(out)),
               **info}
        if not rec["skipped"]:
            pano = _load_anchor_panorama(out, rec, weight, seen_weight)
            supervision.append(pano)
            views.append(View(np.asarray(pano.position, np.float64), pano.distance))
            ck_dir = out / "checkpoints" / f"anchor_{k:02d}"
            shutil.rmtree(ck_dir, ignore_errors=True)  # a partial training of this anchor from a stopped run
            summary = continue_training(field_cfg, supervision, current, ck_dir, out / "train" / adir.name,
                                        cfg.train.steps_per_anchor, cfg, device=device, seed=seed + k + 1,
                                        progress=progress)
            rec["train"] = {"steps": summary["steps"], "psnr_input": summary["psnr"],
                            "abs_rel_input": summary["abs_rel"]}
            current = _advance(run_dir, state, checkpoint, current, ck_dir / "last.pt")
        rec["seconds"] = round(time.perf_counter() - t_anchor, 2)
        state["done"].append(rec)
        _write_state(state_path, state)
        if not rec["skipped"]:
            LOG.info("inpaint: anchor %d %s at %s: %.1f%% unseen, %.2f%% erased, input view %.2f dB (%.1f s)", k + 1,
                     anchor.name, np.round(anchor.position, 3).tolist(), 100 * rec["unseen_fraction"],
                     100 * rec.get("erased_fraction", 0.0), rec["train"]["psnr_input"], rec["seconds"])
    if state["final"] is None and cfg.train.final_steps and len(supervision) > 1:
        t_final = time.perf_counter()
        ck_dir = out / "checkpoints" / "final"
        shutil.rmtree(ck_dir, ignore_errors=True)
        summary = continue_training(field_cfg, supervision, current, ck_dir, out / "train" / "final",
                                    cfg.train.final_steps, cfg, device=device, seed=seed + len(state["done"]) + 1,
                                    progress=progress)
        current = _advance(run_dir, state, checkpoint, current, ck_dir / "last.pt")
        state["final"] = {"steps": summary["steps"], "psnr_input": summary["psnr"],
                          "abs_rel_input": summary["abs_rel"], "seconds": round(time.perf_counter() - t_final, 2)}
        _write_state(state_path, state)
    final = out / "checkpoints" / "last.pt"
    link_checkpoint(current, final)
    state["finished"] = True
    state["seconds"] = round(time.perf_counter() - t0, 2)  # this session (a resumed run: since it resumed)
    _write_state(state_path, state)
    return {"anchors": sum(not r["skipped"] for r in state["done"]), "checkpoint": str(final),
            "unseen_fraction": [r["unseen_fraction"] for r in state["done"]],
            "seconds_per_anchor": [r["seconds"] for r in state["done"]], "seconds": state["seconds"]}


# --------------------------------------------------------------------------- the stage
class InpaintStage(Stage):
    """``mode=inpaint`` (module docstring); ``inpaint=none`` switches it off (the run behaves as without it)."""

    name = "inpaint"
    order = 30
    config_group = "inpaint"
    config_schema = InpaintConfig

    def settings(self, ctx: RunContext) -> InpaintConfig:
        return from_mapping(InpaintConfig, ctx.group("inpaint"), "inpaint")

    def enabled(self, ctx: RunContext) -> bool:
        return self.settings(ctx).enabled

    def fingerprint(self, ctx: RunContext, upstream: str | None) -> str:
        # the render paths decide the anchor candidates; the field config decides the continued training
        paths = (ctx.group("render") or {}).get("paths")
        return stage_fingerprint("inpaint", upstream, ctx.group("inpaint"), paths, ctx.group("field"),
                                 int(ctx.cfg.seed))

    def outputs(self, ctx: RunContext) -> list[Path]:
        return [self.field_checkpoint(ctx), ctx.run_dir / "inpaint" / STATE_FILE]

    def field_checkpoint(self, ctx: RunContext) -> Path:
        return ctx.run_dir / "inpaint" / "checkpoints" / "last.pt"

    def run(self, ctx: RunContext) -> dict:
        rgb, distance = load_depth_outputs(ctx)
        fp = ctx.stage_record(self.name).get("fingerprint") or "unrecorded"
        return run_inpaint(ctx.run_dir, ctx.group("inpaint"), field_cfg=ctx.group("field"),
                           render_cfg=ctx.group("render"), rgb=rgb, distance=distance,
                           checkpoint=TrainStage().field_checkpoint(ctx), fingerprint=fp, device=ctx.device,
                           seed=int(ctx.cfg.seed), resume=bool(ctx.cfg.is_continue))


STAGE = InpaintStage()
