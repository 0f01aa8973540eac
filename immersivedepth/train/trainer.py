"""Fit a radiance field to posed panoramas -- the input panorama, later also views added by other stages (fast on CPU,
resumable, deterministic).

The parts: :mod:`~immersivedepth.train.supervision` (the posed panoramas and their rays),
:mod:`~immersivedepth.train.sampler` (which rays and samples a step uses), :mod:`~immersivedepth.train.losses` (the
pure loss terms), :mod:`~immersivedepth.train.checkpoint` (checkpoint files); this module is the loop.

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
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from immersivedepth import io, sphere
from immersivedepth.errors import CheckpointError, one_line
from immersivedepth.field.model import scene_bounds_from_points
from immersivedepth.field.renderer import render_panorama, render_rays, render_samples
from immersivedepth.interrupts import graceful_stop
from immersivedepth.train.checkpoint import FORMAT, CheckpointManager, check_model_config, load_checkpoint
from immersivedepth.train.config import build_field, resolve_config
from immersivedepth.train.dataset import training_resolution
from immersivedepth.train.losses import LossWeights, losses, psnr_from_mse
from immersivedepth.train.sampler import TrainingRaySampler
from immersivedepth.train.schedule import lr_at
from immersivedepth.train.supervision import PosedPanorama, SupervisionRays, supervision_digest

__all__ = ["Trainer", "train_field", "TrainingInterrupted", "evaluate_view", "METRIC_COLUMNS", "PosedPanorama"]

LOG = logging.getLogger("immersivedepth.train")
METRIC_COLUMNS = ("step", "loss", "color", "distance", "distortion", "opacity", "normal", "psnr", "lr",
                  "samples_per_ray", "color_samples_per_ray", "occupied", "elapsed_s")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint; the message says where and how to resume.
    ``exit_code``: what the shell expects for that signal (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, *, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


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
    Returns ``psnr`` (dB, over all scored pixels), ``psnr_valid`` / ``psnr_far`` (pixels with / without a valid
    reference distance; NaN when there are none), ``abs_rel`` (valid distances only), ``n_pixels``, ``seconds``
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
    sq = ((pr - gt_rgb) ** 2).mean(-1)
    valid = m & np.isfinite(gt_d) & (gt_d > 0)

    def psnr_on(sel):
        return psnr_from_mse(float(sq[sel].mean())) if sel.any() else float("nan")

    abs_rel = float((np.abs(pd - gt_d)[valid] / gt_d[valid]).mean()) if valid.any() else float("nan")
    return {"psnr": psnr_on(m), "psnr_valid": psnr_on(valid), "psnr_far": psnr_on(m & ~valid), "abs_rel": abs_rel,
            "n_pixels": int(m.sum()),
            "seconds": time.perf_counter() - t0, "rgb": pr, "distance": pd}


def _preview(field, path_prefix: Path, width: int, vmax: float, chunk: int) -> None:
    width = max(2, int(width) // 2 * 2)
    pano = render_panorama(field, width // 2, width, chunk=chunk)
    io.write_image(path_prefix.with_name(path_prefix.name + "_rgb.png"), pano["rgb"])
    col = io.colorize(pano["distance"], vmin=0.0, vmax=vmax)
    io.write_image(path_prefix.with_name(path_prefix.name + "_distance.png"), col)


class MetricsLog:
    """``train/metrics.csv`` (rewritten atomically at every log step; on resume, rows up to the resumed step are
    kept) and, when the ``tensorboard`` package is installed and enabled, ``train/tb/``."""

    def __init__(self, train_dir: Path, *, tensorboard: bool):
        self.path = train_dir / "metrics.csv"
        self.rows: list[dict] = []
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional third-party dependency
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(train_dir / "tb"))

    def resume_at(self, step: int) -> None:
        self.rows = _read_metrics(self.path, step)

    def append(self, metrics: dict) -> None:
        if not self.rows or self.rows[-1]["step"] != metrics["step"]:
            self.rows.append(metrics)
        _write_metrics(self.path, self.rows)
        if self.tb is not None:
            for k, v in metrics.items():
                if k != "step":
                    self.tb.add_scalar(f"train/{k}", v, metrics["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _prepare_supervision(panoramas: Sequence[PosedPanorama], max_width: int) -> list[PosedPanorama]:
    """Each panorama at the training resolution (``field.data.max_width``); the fill masks follow the distance."""
    out = []
    for p in panoramas:
        rgb, distance = np.asarray(p.rgb), np.asarray(p.distance)
        if distance.ndim != 2 or rgb.shape[:2] != distance.shape:  # SupervisionRays names what is wrong
            out.append(p)
            continue
        small_rgb, small_d = training_resolution(rgb, distance, max_width)
        filled = p.filled
        if small_d.shape != distance.shape:
            LOG.info("train: %s trains on %dx%d (panorama %dx%d; field.data.max_width=%d)", p.name, small_d.shape[1],
                     small_d.shape[0], distance.shape[1], distance.shape[0], max_width)
            if filled is not None:
                _, filled = training_resolution(rgb, np.asarray(filled, np.float32), max_width)
                filled = filled > 0.5
        out.append(dataclasses.replace(p, rgb=small_rgb, distance=small_d, filled=filled))
    return out


class Trainer:
    """Fits a radiance field to posed panoramas (see the module docstring for the loss and the schedule).

    Args:
        cfg: the resolved ``field`` config (:func:`~immersivedepth.train.config.resolve_config`).
        panoramas: the supervision, the input panorama (at the origin) first; it alone fixes the scene box.
        checkpoint_dir, train_dir: where checkpoints and metrics/previews go.
        device, seed: the torch device; the seed of the initialisation and of every random draw.
    """

    def __init__(self, cfg: dict, panoramas: Sequence[PosedPanorama], *, checkpoint_dir: Path, train_dir: Path,
                 device: str = "cpu", seed: int = 0):
        self.cfg = cfg
        self.device = device
        self.seed = int(seed)
        self.digest = supervision_digest(panoramas)  # of the supervision as given, before any resizing
        prepared = _prepare_supervision(panoramas, int(cfg["data"]["max_width"]))
        self.input = prepared[0]
        self.rays = SupervisionRays(prepared, cfg["masks"], device)
        self.train_dir = Path(train_dir)
        self.checkpoints = CheckpointManager(checkpoint_dir, int(cfg["log"]["keep_checkpoints"]))
        self.metrics_log = MetricsLog(self.train_dir, tensorboard=bool(cfg["log"]["tensorboard"]))
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            bmin, bmax = scene_bounds_from_points(self.rays.input_points.cpu(), float(cfg["model"]["scene_margin"]))
            self.field = build_field(cfg, bmin, bmax, image_size=(self.rays.height, self.rays.width)).to(device)
        if self.field.environment is not None:
            # what lies beyond the scene, as seen from its centre (a checkpoint's texture replaces it on resume)
            self.field.environment.init_from_panorama(np.asarray(self.input.rgb, np.float32))
        self.field.occupancy.seed_from_points(self.rays.input_points, int(cfg["grid"]["dilation"]))
        oc = cfg["optim"]
        self.optimizer = torch.optim.Adam(self.field.parameters(), lr=float(oc["lr"]), betas=tuple(oc["betas"]),
                                          eps=float(oc["eps"]), fused=bool(oc["fused"]))
        self.loss_weights = LossWeights.from_config(cfg["loss"])
        self.step = 0
        self.wall_before = 0.0
        self.sampler: TrainingRaySampler | None = None  # built once the field's state is final (fresh or loaded)

    # ------------------------------------------------------------------ state
    def _load_state(self, payload: dict, path: Path, *, generator: bool) -> None:
        try:
            self.field.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            if generator:
                self.generator.set_state(payload["generator"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {path} does not fit this model: {one_line(exc, 300)}") from exc

    def resume(self) -> None:
        """Continue from ``last.pt`` exactly where it stopped (same supervision, same config)."""
        payload = self.checkpoints.load_for_resume(self.cfg, self.digest, self.device)
        self._load_state(payload, self.checkpoints.last, generator=True)
        self.step = int(payload["step"])
        self.wall_before = float(payload.get("wall_time", 0.0))
        self.metrics_log.resume_at(self.step)
        LOG.info("train: resumed from %s at step %d", self.checkpoints.last, self.step)

    def warm_start(self, path) -> None:
        """Start from another run's field (parameters, Adam moments, occupancy grid, RNG state) with a fresh schedule:
        how training continues after supervision was added. The model config must match.

        The surfaces of the panoramas after the first are seeded into the occupancy grid: the loaded grid only
        allows cells near what the input saw, and a surface only an added panorama sees must be allowed in."""
        path = Path(path)
        payload = load_checkpoint(path, map_location=self.device)
        check_model_config(payload, self.cfg, path)
        self._load_state(payload, path, generator=True)
        added = self.rays.panorama > 0
        if bool(added.any()):
            self.field.occupancy.add_seed_points(self.rays.points[added], int(self.cfg["grid"]["dilation"]))
        LOG.info("train: warm start from %s", path)

    def payload(self, metrics: dict, wall: float) -> dict:
        return {"format": FORMAT, "step": int(self.step), "config": json.dumps(self.cfg, sort_keys=True),
                "model": self.field.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "image_size": [self.rays.height, self.rays.width],
                "data_digest": self.digest, "seed": self.seed, "wall_time": float(wall),
                "metrics": {k: float(v) for k, v in metrics.items()}}

    # ------------------------------------------------------------------ one step
    def train_step(self, total: int) -> dict:
        """One optimisation step (lr schedule, batch, render, losses, Adam, occupancy refresh); returns metrics."""
        cfg, field = self.cfg, self.field
        oc, gc, sc = cfg["optim"], cfg["grid"], cfg["sampling"]
        lr = lr_at(self.step, base_lr=float(oc["lr"]), total_steps=total, warmup_steps=int(oc["warmup_steps"]),
                   warmup_start_factor=float(oc["warmup_start_factor"]), final_factor=float(oc["final_lr_factor"]))
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        batch_size = int(oc["batch_rays"])
        batch = self.sampler.draw(batch_size, self.generator)
        out = render_samples(field, batch.origins, batch.dirs, batch.samples, batch.far,
                             color_weight_threshold=float(sc["color_weight_threshold"]),
                             max_color_samples=int(sc["train_color_samples"]) or None,
                             renormalize_color=bool(int(sc["train_color_samples"])),
                             compute_normals=self.loss_weights.normal > 0)
        far_rgb = None
        if batch.far_dirs.shape[0]:
            # pixels without a distance: through the occupancy grid to the box exit, onto the background
            far_rgb = render_rays(field, batch.far_origins, batch.far_dirs, perturb=True,
                                  generator=self.generator)["rgb"]
        terms = losses(out, batch, self.loss_weights, far_rgb)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        self.step += 1
        if self.step >= int(gc["update_start"]) and self.step % int(gc["update_every"]) == 0:
            field.occupancy.update(field.density, threshold=self.grid_threshold, decay=float(gc["decay"]),
                                   generator=self.generator)
            self.sampler.refresh()
        with torch.no_grad():
            cm = batch.color_mask
            pred, target = out["rgb"][cm], batch.rgb[cm]
            if far_rgb is not None:
                pred, target = torch.cat([pred, far_rgb]), torch.cat([target, batch.far_rgb])
            mse = float(torch.mean((pred.clamp(0, 1) - target) ** 2))
        return {"step": self.step, "loss": float(terms["total"].detach()), "color": float(terms["color"].detach()),
                "distance": float(terms["distance"].detach()), "distortion": float(terms["distortion"].detach()),
                "opacity": float(terms["opacity"].detach()), "normal": float(terms["normal"].detach()),
                "psnr": psnr_from_mse(mse), "lr": lr, "samples_per_ray": out["n_density"] / batch_size,
                "color_samples_per_ray": out["n_color"] / batch_size,
                "occupied": field.occupancy.occupied_fraction()}

    # ------------------------------------------------------------------ the loop
    def fit(self, *, total: int | None = None, stop_at: int | None = None, progress: bool = True,
            callbacks: Iterable[Callable[[int, dict], None]] = ()) -> dict:
        """Train until ``total`` steps (default ``optim.steps``) or ``stop_at``; checkpoints, metrics, previews, and
        the final training-view evaluation. Returns the summary (see :func:`train_field`)."""
        cfg = self.cfg
        logc = cfg["log"]
        total = int(cfg["optim"]["steps"]) if total is None else int(total)
        fine_step = float(self.field.render_options["coarse_step"]) / int(self.field.render_options["per_segment"])
        self.grid_threshold = -math.log(1.0 - float(cfg["grid"]["alpha_threshold"])) / fine_step
        self.sampler = TrainingRaySampler(self.rays, self.field, cfg["sampling"], chunk=int(logc["eval_chunk"]))
        prev_dir = self.train_dir / "previews"
        max_dist = float(self.rays.distance.max())
        metrics: dict = {}
        t_start = time.perf_counter()
        wall = lambda: self.wall_before + time.perf_counter() - t_start  # noqa: E731
        bar = tqdm(total=total, initial=self.step, disable=None if progress else True, desc="train field",
                   unit="step", dynamic_ncols=True)
        in_step = False
        try:
            with graceful_stop() as sig:  # Ctrl-C and SIGTERM (cluster pre-emption) save and stop
                while self.step < total and (stop_at is None or self.step < stop_at):
                    in_step = True
                    metrics = self.train_step(total)
                    in_step = False
                    metrics["elapsed_s"] = wall()
                    bar.update(1)
                    step = self.step
                    if step % int(logc["log_every"]) == 0 or step == total:
                        self.metrics_log.append(metrics)
                        bar.set_postfix(loss=f"{metrics['loss']:.4f}", psnr=f"{metrics['psnr']:.2f}")
                    if int(logc["preview_every"]) > 0 and step % int(logc["preview_every"]) == 0:
                        _preview(self.field, prev_dir / f"step_{step:06d}", int(logc["preview_width"]), max_dist,
                                 int(logc["eval_chunk"]))
                    if step % int(logc["checkpoint_every"]) == 0 and step < total:
                        self.checkpoints.save(self.payload(metrics, wall()), step)
                    for cb in callbacks:
                        cb(step, metrics)
                    if sig.requested:
                        raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            bar.close()
            ck_dir = self.checkpoints.folder
            code = sig.exit_code if sig.requested else 130
            if in_step:
                raise TrainingInterrupted(f"training interrupted inside step {self.step + 1}; the last periodic "
                                          f"checkpoint in {ck_dir} is intact; resume with is_continue=true",
                                          exit_code=code) from exc
            last = self.checkpoints.save(self.payload(metrics, wall()), self.step)
            if metrics:
                self.metrics_log.append(metrics)
            raise TrainingInterrupted(f"training interrupted at step {self.step}/{total}; checkpoint saved to {last}; "
                                      "resume with is_continue=true (train_field(..., resume=True))",
                                      exit_code=code) from exc
        finally:
            bar.close()
            self.metrics_log.close()
        train_wall = wall()
        last = self.checkpoints.save(self.payload(metrics, train_wall), self.step)
        step = self.step
        if int(logc["preview_every"]) > 0 and not (prev_dir / f"step_{step:06d}_rgb.png").is_file():
            _preview(self.field, prev_dir / f"step_{step:06d}", int(logc["preview_width"]), max_dist,
                     int(logc["eval_chunk"]))
        self.field.eval()
        ev = self.evaluate_input(stride=int(logc["eval_stride"]), chunk=int(logc["eval_chunk"]))
        return {"steps": step, "psnr": ev["psnr"], "psnr_valid": ev["psnr_valid"], "psnr_far": ev["psnr_far"],
                "abs_rel": ev["abs_rel"], "wall_time": train_wall,
                "eval_time": ev["seconds"], "n_rays": int((self.rays.panorama == 0).sum()), "checkpoint": str(last),
                "stopped_early": step < total}

    def evaluate_input(self, *, stride: int, chunk: int) -> dict:
        """:func:`evaluate_view` of the input panorama (the first supervision panorama) at its training size."""
        p = self.input
        return evaluate_view(self.field, np.asarray(p.rgb, np.float32),
                             np.nan_to_num(p.distance, nan=0.0, posinf=0.0).astype(np.float32),
                             position=p.position, stride=stride, chunk=chunk)


def train_field(rgb=None, distance=None, run_dir=None, cfg: Mapping | None = None, *, resume: bool = False,
                device: str = "cpu", seed: int = 0, progress: bool = True,
                callbacks: Iterable[Callable[[int, dict], None]] = (), stop_at: int | None = None,
                supervision: Sequence[PosedPanorama] | None = None, warm_start=None,
                checkpoint_dir=None, train_dir=None) -> dict:
    """Train (or resume) the radiance field of one panorama, or of a list of posed panoramas.

    Args:
        rgb: ``(H, W, 3)`` float32 in [0, 1] (the input panorama, at the origin).
        distance: ``(H, W)`` float32 world units along the ray from the panorama centre (0 / NaN = invalid, masked).
        run_dir: the run directory (``checkpoints/`` and ``train/`` are written inside unless ``checkpoint_dir`` /
            ``train_dir`` say otherwise).
        cfg: the ``field`` config group (dict or OmegaConf; missing keys take the defaults).
        resume: continue from ``<checkpoint_dir>/last.pt`` (error if it is missing, corrupt, from another model
            config or from other supervision).
        device: torch device string.
        seed: seeds the parameter initialisation and the ray sampling (bit-reproducible on the CPU).
        progress: show a tqdm bar with loss and PSNR.
        callbacks: ``cb(step, metrics)`` after every step (a callback may raise ``KeyboardInterrupt`` to stop).
        stop_at: stop (with a checkpoint) once this many steps are done, keeping the schedule of ``optim.steps``.
        supervision: instead of ``rgb``/``distance``: the posed panoramas, the input (at the origin) first.
        warm_start: a field checkpoint to start from (parameters, optimiser and occupancy state) with a fresh
            ``optim.steps`` schedule -- how training continues after panoramas were added. Ignored when resuming.

    Returns:
        summary dict: ``steps``, ``psnr`` / ``abs_rel`` (training view rendered with the occupancy sampler, stride
        ``log.eval_stride``), ``wall_time`` (training seconds, summed over resumes), ``eval_time``,
        ``n_rays`` (pixels of the training view: the panorama, shrunk to ``field.data.max_width`` columns if wider),
        ``checkpoint``.

    Raises:
        TrainingInterrupted: on Ctrl-C (or ``KeyboardInterrupt`` from a callback) after saving ``last.pt``.
    """
    cfg = resolve_config(cfg)
    if supervision is None:
        supervision = [PosedPanorama(np.asarray(rgb), np.asarray(distance))]
    elif rgb is not None or distance is not None:
        raise ValueError("train_field: give either rgb/distance or supervision, not both")
    run_dir = Path(run_dir)
    trainer = Trainer(cfg, supervision, checkpoint_dir=Path(checkpoint_dir or run_dir / "checkpoints"),
                      train_dir=Path(train_dir or run_dir / "train"), device=device, seed=seed)
    if resume:
        trainer.resume()
    elif warm_start is not None:
        trainer.warm_start(warm_start)
    return trainer.fit(stop_at=stop_at, progress=progress, callbacks=callbacks)
