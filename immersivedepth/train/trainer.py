"""Fit a radiance field to one panorama and its distance map (fast on CPU, resumable, deterministic).

Each step draws ``batch_rays`` pixels (a seeded ``torch.Generator``), samples each ray in a narrow band around its
supervised distance plus a few occupancy-grid samples in front of it, renders, and minimises::

    loss = w_color * color(rgb) + w_distance * smoothL1(relative distance error)
         + w_distortion * distortion + w_normal * (1 - cos(normal, distance-map normal))

with Adam, linear warm-up then cosine decay. The occupancy grid (seeded from the back-projected supervision
points) is refreshed from the density every ``grid.update_every`` steps. All state that influences later steps
(parameters, Adam moments, occupancy grid, the sampling RNG) is checkpointed, so ``resume=True`` continues to the
bit-identical result of an uninterrupted run on the CPU.

Outputs under ``run_dir``: ``checkpoints/last.pt`` + ``checkpoints/step_XXXXXX.pt`` (atomic), ``train/metrics.csv``
(rewritten atomically at every log step), ``train/previews/step_XXXXXX_{rgb,distance}.png`` and, when the
``tensorboard`` package is installed, ``train/tb/``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from immersivedepth import io, sphere
from immersivedepth.field.model import scene_bounds_from_points
from immersivedepth.field.renderer import render_rays, render_samples
from immersivedepth.field.sampler import band_samples, concat_samples, occupied_segments, segment_samples
from immersivedepth.train.checkpoint import (
    FORMAT,
    CheckpointError,
    check_model_config,
    link_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from immersivedepth.train.config import build_field, resolve_config
from immersivedepth.train.dataset import PanoramaRays, training_resolution
from immersivedepth.train.losses import (
    color_loss,
    distance_loss,
    distortion_loss,
    normal_loss,
    opacity_loss,
    psnr_from_mse,
)
from immersivedepth.train.schedule import lr_at

__all__ = ["train_field", "TrainingInterrupted", "evaluate_view", "METRIC_COLUMNS"]

LOG = logging.getLogger("immersivedepth.train")
METRIC_COLUMNS = ("step", "loss", "color", "distance", "distortion", "opacity", "normal", "psnr", "lr",
                  "samples_per_ray", "color_samples_per_ray", "occupied", "elapsed_s")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after saving a checkpoint; the message says where and how to resume."""


def _data_digest(rgb: np.ndarray, distance: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(rgb, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(np.nan_to_num(distance, nan=0.0, posinf=0.0), dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def _write_metrics(path: Path, rows: list[dict]) -> None:
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in METRIC_COLUMNS})


def _read_metrics(path: Path, upto_step: int) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [dict(r) for r in csv.DictReader(f)]
    return [r for r in rows if r.get("step") and int(float(r["step"])) <= upto_step]


@torch.no_grad()
def evaluate_view(field, rgb: np.ndarray, distance: np.ndarray, *, position=(0.0, 0.0, 0.0), stride: int = 1,
                  chunk: int = 16384, mask: np.ndarray | None = None) -> dict:
    """Render the panorama pixels (every ``stride``-th row/column) from ``position`` and score them.

    ``rgb (H,W,3)``, ``distance (H,W)`` reference (0 = invalid), optional ``mask (H,W)`` restricting both scores.
    Returns ``psnr`` (dB, over all scored pixels), ``abs_rel`` (valid distances only), ``n_pixels``, ``seconds``
    and the rendered ``rgb``/``distance`` at the strided resolution.
    """
    t0 = time.perf_counter()
    h, w = distance.shape
    vv, uu = np.meshgrid(np.arange(0, h, stride), np.arange(0, w, stride), indexing="ij")
    dirs = sphere.erp_directions(h, w)[vv, uu].reshape(-1, 3)
    dev = field.bmin.device
    d = torch.from_numpy(np.ascontiguousarray(dirs)).to(dev)
    o = torch.as_tensor(position, dtype=torch.float32, device=dev).reshape(1, 3).expand_as(d).contiguous()
    out = render_rays(field, o, d, chunk=chunk)
    pr = out["rgb"].clamp(0, 1).cpu().numpy().reshape(vv.shape + (3,))
    pd = out["distance"].cpu().numpy().reshape(vv.shape)
    gt_rgb = rgb[vv, uu]
    gt_d = distance[vv, uu]
    m = np.ones(vv.shape, bool) if mask is None else mask[vv, uu]
    mse = float(((pr - gt_rgb) ** 2)[m].mean()) if m.any() else float("nan")
    valid = m & np.isfinite(gt_d) & (gt_d > 0)
    abs_rel = float((np.abs(pd - gt_d)[valid] / gt_d[valid]).mean()) if valid.any() else float("nan")
    return {"psnr": psnr_from_mse(mse), "abs_rel": abs_rel, "n_pixels": int(m.sum()),
            "seconds": time.perf_counter() - t0, "rgb": pr, "distance": pd}


def _preview(field, path_prefix: Path, width: int, vmax: float, chunk: int) -> None:
    from immersivedepth.field.renderer import render_panorama

    width = max(2, int(width) // 2 * 2)
    pano = render_panorama(field, width // 2, width, chunk=chunk)
    io.write_image(path_prefix.with_name(path_prefix.name + "_rgb.png"), pano["rgb"])
    col = io.colorize(pano["distance"], vmin=0.0, vmax=vmax)
    io.write_image(path_prefix.with_name(path_prefix.name + "_distance.png"), col)


class _SigintFlag:
    """First Ctrl-C sets ``requested`` (training stops at the end of the current step and saves); a second
    Ctrl-C interrupts at once (the last periodic checkpoint survives)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.requested:
                    raise KeyboardInterrupt
                self.requested = True

            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def train_field(rgb, distance, run_dir, cfg: Mapping | None = None, *, resume: bool = False, device: str = "cpu",
                seed: int = 0, progress: bool = True, callbacks: Iterable[Callable[[int, dict], None]] = (),
                stop_at: int | None = None) -> dict:
    """Train (or resume) the radiance field of one panorama.

    Args:
        rgb: ``(H, W, 3)`` float32 in [0, 1].
        distance: ``(H, W)`` float32 world units along the ray from the panorama centre (0 / NaN = invalid, masked).
        run_dir: the run directory (``checkpoints/`` and ``train/`` are written inside).
        cfg: the ``field`` config group (dict or OmegaConf; missing keys take ``configs/field/default.yaml``'s).
        resume: continue from ``checkpoints/last.pt`` (error if it is missing, corrupt or from another model config).
        device: torch device string.
        seed: seeds the parameter initialisation and the ray sampling (bit-reproducible on the CPU).
        progress: show a tqdm bar with loss and PSNR.
        callbacks: ``cb(step, metrics)`` after every step (a callback may raise ``KeyboardInterrupt`` to stop).
        stop_at: stop (with a checkpoint) once this many steps are done, keeping the schedule of ``optim.steps``.

    Returns:
        summary dict: ``steps``, ``psnr`` / ``abs_rel`` (training view rendered with the occupancy sampler, stride
        ``log.eval_stride``), ``wall_time`` (training seconds, summed over resumes), ``eval_time``,
        ``n_rays`` (pixels of the training view: the panorama, shrunk to ``field.data.max_width`` columns if wider),
        ``checkpoint``.

    Raises:
        TrainingInterrupted: on Ctrl-C (or ``KeyboardInterrupt`` from a callback) after saving ``last.pt``.
    """
    cfg = resolve_config(cfg)
    rgb = np.asarray(rgb)
    distance = np.asarray(distance)
    given = (rgb, distance)  # the resume check fingerprints the input as given
    full_size = distance.shape if distance.ndim == 2 else None
    if full_size is not None and rgb.shape[:2] == full_size:  # else PanoramaRays names what is wrong
        rgb, distance = training_resolution(rgb, distance, int(cfg["data"]["max_width"]))
        if distance.shape != full_size:
            LOG.info("train: training on %dx%d (panorama %dx%d; field.data.max_width=%d)", distance.shape[1],
                     distance.shape[0], full_size[1], full_size[0], int(cfg["data"]["max_width"]))
    rays = PanoramaRays(rgb, distance, cfg["masks"], device)
    digest = _data_digest(*given)
    run_dir = Path(run_dir)
    ck_dir, train_dir = run_dir / "checkpoints", run_dir / "train"
    prev_dir = train_dir / "previews"
    metrics_path = train_dir / "metrics.csv"
    oc, sc, gc, lc, logc = cfg["optim"], cfg["sampling"], cfg["grid"], cfg["loss"], cfg["log"]
    total = int(oc["steps"])

    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        bmin, bmax = scene_bounds_from_points(rays.points.cpu(), float(cfg["model"]["scene_margin"]))
        field = build_field(cfg, bmin, bmax).to(device)
    field.occupancy.seed_from_points(rays.points, int(gc["dilation"]))
    optimizer = torch.optim.Adam(field.parameters(), lr=float(oc["lr"]), betas=tuple(oc["betas"]), eps=float(oc["eps"]),
                                 fused=bool(oc["fused"]))

    step, wall_before, rows = 0, 0.0, []
    if resume:
        path = ck_dir / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"resume requested (is_continue=true) but {path} does not exist; train from "
                                    "scratch with is_continue=false")
        payload = load_checkpoint(path, map_location=device)
        check_model_config(payload, cfg, path)
        if payload.get("data_digest") != digest:
            raise CheckpointError(f"checkpoint {path} was trained on a different panorama or distance map; use a new "
                                  "exp_name or is_continue=false")
        try:
            field.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            gen.set_state(payload["generator"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {path} does not fit this model: {str(exc)[:300]}") from exc
        step = int(payload["step"])
        wall_before = float(payload.get("wall_time", 0.0))
        rows = _read_metrics(metrics_path, step)
        LOG.info("train: resumed from %s at step %d", path, step)

    train_idx = torch.nonzero(rays.color_mask | rays.depth_mask, as_tuple=False)[:, 0]
    cell = float(field.occupancy.cell_size.min())
    band_min = float(sc["band_min_cells"]) * cell
    coarse_step = float(field.render_options["coarse_step"])
    fine_step = coarse_step / int(field.render_options["per_segment"])
    halfwidth_all = torch.clamp(rays.distance * float(sc["band_rel"]), min=band_min)
    band_start_all = (rays.distance - halfwidth_all).clamp_min(0.0)

    @torch.no_grad()
    def front_segments():
        """Occupied coarse segments in front of every training ray's band (fixed rays: recomputed only when the
        grid changes)."""
        los, oks = [], []
        chunk = int(logc["eval_chunk"])
        for s0 in range(0, len(rays), chunk):
            d = rays.dirs[s0:s0 + chunk]
            lo, ok = occupied_segments(field.occupancy, torch.zeros_like(d), d, torch.zeros(d.shape[0], device=device),
                                       band_start_all[s0:s0 + chunk], coarse_step=coarse_step,
                                       max_segments=int(sc["front_cache_segments"]))
            los.append(lo)
            oks.append(ok)
        return torch.cat(los), torch.cat(oks)

    front_lo, front_ok = front_segments()
    grid_threshold = -math.log(1.0 - float(gc["alpha_threshold"])) / fine_step
    batch = int(oc["batch_rays"])
    origins = torch.zeros(batch, 3, device=device)
    max_dist = float(rays.distance.max())
    tb = None
    if bool(logc["tensorboard"]):
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(train_dir / "tb"))
        except ImportError:
            tb = None

    def payload_at(cur_step: int, wall: float, metrics: dict) -> dict:
        return {"format": FORMAT, "step": int(cur_step), "config": json.dumps(cfg, sort_keys=True),
                "model": field.state_dict(), "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                "image_size": [rays.height, rays.width], "data_digest": digest, "seed": int(seed),
                "wall_time": float(wall), "metrics": {k: float(v) for k, v in metrics.items()}}

    def save(cur_step: int, wall: float, metrics: dict, periodic: bool) -> Path:
        data = payload_at(cur_step, wall, metrics)
        last = ck_dir / "last.pt"
        try:
            if periodic:
                link_checkpoint(save_checkpoint(ck_dir / f"step_{cur_step:06d}.pt", data), last)
            else:
                save_checkpoint(last, data)
        except OSError as exc:
            raise CheckpointError(f"could not write a checkpoint in {ck_dir} at step {cur_step} ({exc}); the previous "
                                  f"{last.name} is intact. Free disk space and resume with is_continue=true") from exc
        keep = int(logc["keep_checkpoints"])
        olds = sorted(ck_dir.glob("step_*.pt"))
        for p in olds[:-keep] if keep > 0 else []:
            p.unlink(missing_ok=True)
        return last

    metrics: dict = {}
    t_start = time.perf_counter()
    wall = lambda: wall_before + time.perf_counter() - t_start  # noqa: E731
    bar = tqdm(total=total, initial=step, disable=None if progress else True, desc="train field", unit="step",
               dynamic_ncols=True)
    in_step = False
    try:
        with _SigintFlag() as sig:
            while step < total and (stop_at is None or step < stop_at):
                in_step = True
                lr = lr_at(step, base_lr=float(oc["lr"]), total_steps=total, warmup_steps=int(oc["warmup_steps"]),
                           warmup_start_factor=float(oc["warmup_start_factor"]),
                           final_factor=float(oc["final_lr_factor"]))
                for g in optimizer.param_groups:
                    g["lr"] = lr
                idx = train_idx[torch.randint(train_idx.numel(), (batch,), generator=gen, device=device)]
                dirs = rays.dirs[idx]
                gd = rays.distance[idx]
                halfwidth = halfwidth_all[idx]
                f_lo, f_ok = front_lo[idx], front_ok[idx]
                want_normals = float(lc["normal"]) > 0
                # front_segments of the ray's occupied segments before its band, drawn at random (kept in ray order)
                keys = torch.rand(f_lo.shape, generator=gen, device=device) + (~f_ok).float() * 2.0
                pick = torch.sort(torch.topk(keys, min(int(sc["front_segments"]), keys.shape[1]), dim=1,
                                             largest=False).indices, dim=1).values
                front = segment_samples(f_lo.gather(1, pick), f_ok.gather(1, pick), torch.zeros_like(gd),
                                        band_start_all[idx], coarse_step=coarse_step, per_segment=1, perturb=True,
                                        generator=gen)
                band = band_samples(gd, halfwidth, int(sc["band_samples"]), perturb=True, generator=gen)
                out = render_samples(field, origins, dirs, concat_samples(front, band), gd + halfwidth,
                                     color_weight_threshold=float(sc["color_weight_threshold"]),
                                     max_color_samples=int(sc["train_color_samples"]) or None,
                                     renormalize_color=bool(int(sc["train_color_samples"])),
                                     compute_normals=want_normals)
                cm, dm = rays.color_mask[idx], rays.depth_mask[idx]
                rgb_pred, rgb_true = out["rgb"][cm], rays.rgb[idx][cm]
                l_col = color_loss(rgb_pred, rgb_true, kind=str(lc["color_kind"]), beta=float(lc["color_beta"]))
                l_dist = distance_loss(out["distance"], gd, dm, beta=float(lc["distance_beta"]),
                                       relative=bool(lc["distance_relative"]))
                l_dst = distortion_loss(out["weights"], out["t"], out["delta"], scale=field.unit)
                l_opa = opacity_loss(out["opacity"], cm)
                l_nrm = normal_loss(out["normal"], rays.normals[idx], dm) if want_normals else l_dist.new_zeros(())
                loss = (float(lc["color"]) * l_col + float(lc["distance"]) * l_dist
                        + float(lc["distortion"]) * l_dst + float(lc["opacity"]) * l_opa + float(lc["normal"]) * l_nrm)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if step >= int(gc["update_start"]) and step % int(gc["update_every"]) == 0:
                    field.occupancy.update(field.density, threshold=grid_threshold, decay=float(gc["decay"]),
                                           generator=gen)
                    front_lo, front_ok = front_segments()
                in_step = False
                with torch.no_grad():
                    mse = float(torch.mean((rgb_pred.clamp(0, 1) - rgb_true) ** 2))
                metrics = {"step": step, "loss": float(loss.detach()), "color": float(l_col.detach()),
                           "distance": float(l_dist.detach()), "distortion": float(l_dst.detach()),
                           "opacity": float(l_opa.detach()), "normal": float(l_nrm.detach()),
                           "psnr": psnr_from_mse(mse), "lr": lr, "samples_per_ray": out["n_density"] / batch,
                           "color_samples_per_ray": out["n_color"] / batch,
                           "occupied": field.occupancy.occupied_fraction(), "elapsed_s": wall()}
                bar.update(1)
                if step % int(logc["log_every"]) == 0 or step == total:
                    rows.append(metrics)
                    _write_metrics(metrics_path, rows)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", psnr=f"{metrics['psnr']:.2f}")
                    if tb is not None:
                        for k, v in metrics.items():
                            if k != "step":
                                tb.add_scalar(f"train/{k}", v, step)
                if int(logc["preview_every"]) > 0 and step % int(logc["preview_every"]) == 0:
                    _preview(field, prev_dir / f"step_{step:06d}", int(logc["preview_width"]), max_dist,
                             int(logc["eval_chunk"]))
                if step % int(logc["checkpoint_every"]) == 0 and step < total:
                    save(step, wall(), metrics, periodic=True)
                for cb in callbacks:
                    cb(step, metrics)
                if sig.requested:
                    raise KeyboardInterrupt
    except KeyboardInterrupt as exc:
        bar.close()
        if in_step:
            raise TrainingInterrupted(f"training interrupted inside step {step + 1}; the last periodic checkpoint in "
                                      f"{ck_dir} is intact; resume with is_continue=true") from exc
        last = save(step, wall(), metrics, periodic=True)
        if metrics:
            if not rows or rows[-1]["step"] != step:
                rows.append(metrics)
            _write_metrics(metrics_path, rows)
        raise TrainingInterrupted(f"training interrupted at step {step}/{total}; checkpoint saved to {last}; resume "
                                  "with is_continue=true (train_field(..., resume=True))") from exc
    finally:
        bar.close()
        if tb is not None:
            tb.close()
    train_wall = wall()
    last = save(step, train_wall, metrics, periodic=True)
    if int(logc["preview_every"]) > 0 and not (prev_dir / f"step_{step:06d}_rgb.png").is_file():
        _preview(field, prev_dir / f"step_{step:06d}", int(logc["preview_width"]), max_dist, int(logc["eval_chunk"]))
    field.eval()
    ev = evaluate_view(field, rgb.astype(np.float32), np.nan_to_num(distance, nan=0.0, posinf=0.0).astype(np.float32),
                       stride=int(logc["eval_stride"]), chunk=int(logc["eval_chunk"]))
    return {"steps": step, "psnr": ev["psnr"], "abs_rel": ev["abs_rel"], "wall_time": train_wall,
            "eval_time": ev["seconds"], "n_rays": len(rays), "checkpoint": str(last),
            "stopped_early": step < total}
