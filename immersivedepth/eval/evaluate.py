"""``mode=evaluate``: score one run directory against ground truth (a dataset = a sweep of these, see README).

- **depth**: ``depth/distance.npy`` against the ground-truth distance (``evaluate.gt_distance`` template, else the
  run's reference distance) under the declared ``evaluate.alignment`` and mask (:mod:`.depth_eval`), with an
  error-map figure ``eval/depth_error.png``.
- **training view**: the trained field rendered at the panorama centre against the input panorama.
- **novel views**: the field rendered at every pose of ``<gt_dir>/poses.json`` against ``gt/<name>.png`` +
  ``gt/<name>_distance.npy``: PSNR / WS-PSNR / SSIM on all, visible and disoccluded pixels (the one rule of
  :mod:`.visibility`), the identity baseline (the input panorama shown unchanged), optional LPIPS, and a figure.

Sections without ground truth (or without a trained field) are skipped with the reason under ``"skipped"``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np

from immersivedepth import io
from immersivedepth.errors import InputError, InputNotFoundError, RunError, one_line
from immersivedepth.eval.config import EvaluateConfig
from immersivedepth.eval.depth_eval import evaluate_depth
from immersivedepth.eval.figures import depth_error_figure, novel_view_figure
from immersivedepth.eval.lpips_metric import lpips_scorer
from immersivedepth.eval.metrics import depth_metrics
from immersivedepth.eval.novel_view import image_metrics
from immersivedepth.eval.visibility import centre_map_sampler, visible_mask
from immersivedepth.render.frames import render_pose
from immersivedepth.render.poses import CameraPose, load_poses_file
from immersivedepth.train.checkpoint import load_trained_field

LOG = logging.getLogger("immersivedepth.eval")


def resize_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-resample an ``(H, W[, C])`` image to ``height x width`` (cubic when enlarging)."""
    if img.shape[:2] == (height, width):
        return img
    interp = cv2.INTER_AREA if img.shape[0] >= height else cv2.INTER_CUBIC
    return cv2.resize(img, (width, height), interpolation=interp)


def gt_distance_path(image_path: Path, cfg: EvaluateConfig, reference: Path | None) -> Path | None:
    """The ground-truth distance of ``image_path``: ``cfg.gt_distance`` filled with ``{dir}`` (the image's folder)
    and ``{stem}`` (its stem without ``cfg.image_suffix``), else the run's ``reference``; ``None`` if neither."""
    if cfg.gt_distance is None:
        return reference
    stem = image_path.stem
    if cfg.image_suffix and stem.endswith(cfg.image_suffix):
        stem = stem[: -len(cfg.image_suffix)]
    path = Path(cfg.gt_distance.format(dir=image_path.parent, stem=stem)).expanduser()
    if not path.is_file():
        raise InputNotFoundError(f"ground-truth distance {path} of {image_path} does not exist "
                                 f"(evaluate.gt_distance={cfg.gt_distance!r}); add it or fix the template")
    return path


def _read_gt(path: Path, gt_format) -> np.ndarray:
    try:
        return io.read_distance(path, gt_format)
    except ValueError as exc:  # io's InputError included: say which key sets the ground truth's format
        raise InputError(f"{one_line(exc)} (ground truth: evaluate.gt_format, else dataset.distance_format)") from exc


def _depth_section(run_dir: Path, pred: np.ndarray, gt: np.ndarray, gt_path: Path, cfg: EvaluateConfig) -> dict:
    try:
        result, aligned, mask = evaluate_depth(pred, gt, alignment=cfg.alignment, max_distance=cfg.max_distance,
                                               pole_cap_deg=cfg.pole_cap_deg)
    except ValueError as exc:
        raise InputError(f"ground-truth distance {gt_path}: {exc}") from None
    result["gt"] = str(gt_path)
    if cfg.figures:
        fig = run_dir / "eval" / "depth_error.png"
        depth_error_figure(fig, gt, aligned, mask,
                           f"{run_dir.parent.name}: AbsRel {result['abs_rel']:.4f} (alignment {cfg.alignment})")
        result["figure"] = str(fig)
    return result


def _novel_views(run_dir: Path, field, rgb_in: np.ndarray, centre_dist: np.ndarray, gt_dir: Path, cfg: EvaluateConfig,
                 skipped: dict, device: str) -> dict:
    poses, _fps = load_poses_file(gt_dir / "poses.json")
    lpips_fn, why = lpips_scorer(cfg.lpips.net, device) if cfg.lpips.enabled else (None, None)
    if why:
        skipped["lpips"] = why
        LOG.warning("evaluate: %s", why)
    centre = centre_map_sampler(centre_dist)
    novel = {}
    for pose in poses:
        gt_rgb_path, gt_dist_path = gt_dir / "gt" / f"{pose.name}.png", gt_dir / "gt" / f"{pose.name}_distance.npy"
        if not gt_rgb_path.is_file() or not gt_dist_path.is_file():
            skipped[f"novel_views/{pose.name}"] = f"missing {gt_rgb_path} or {gt_dist_path}"
            continue
        gt_rgb, gt_dist = io.read_panorama(gt_rgb_path), io.read_distance(gt_dist_path)
        ph, pw = gt_rgb.shape[:2]
        if gt_dist.shape != (ph, pw):
            raise InputError(f"ground-truth distance {gt_dist_path} is {gt_dist.shape[1]}x{gt_dist.shape[0]} but "
                             f"{gt_rgb_path} is {pw}x{ph}; give both at the same size")
        pose.width, pose.height = pw, ph
        out = render_pose(field, pose, device=device)
        vis = visible_mask(pose.position, gt_dist, centre, cfg.visibility.rel_tol)
        valid = np.isfinite(gt_dist) & (gt_dist > 0)
        masks = {"all": None, "visible": vis, "disoccluded": valid & ~vis}
        entry = {
            "position": [float(v) for v in pose.position],
            "offset_m": float(np.linalg.norm(pose.position)),
            "visible_fraction": float(vis.mean()),
            **image_metrics(out["rgb"], gt_rgb, masks),
            **{f"identity_{k}": v for k, v in image_metrics(resize_image(rgb_in, ph, pw), gt_rgb, masks).items()},
            "distance_visible": depth_metrics(out["distance"], gt_dist, valid=vis) if vis.any() else None,
        }
        if lpips_fn is not None:
            entry["lpips_all"] = lpips_fn(out["rgb"], gt_rgb)
        if cfg.figures:
            fig = run_dir / "eval" / f"novel_{pose.name}.png"
            novel_view_figure(fig, gt_rgb, out["rgb"], vis, f"{pose.name}: WS-PSNR {entry['ws_psnr_all']:.2f} dB")
            entry["figure"] = str(fig)
        novel[pose.name] = entry
    return novel


def evaluate_run(run_dir: Path, *, image_path: Path, gt_path: Path | None, gt_format, cfg: EvaluateConfig,
                 device: str = "cpu", checkpoint: Path | None = None) -> dict:
    """Metrics of ``run_dir`` (see the module docstring) as one JSON-able dict. ``checkpoint``: the field to score
    (default ``<run_dir>/checkpoints/last.pt``; the runner passes the newest field, e.g. the inpainting stage's)."""
    run_dir = Path(run_dir)
    gt_dir = Path(cfg.gt_dir) if cfg.gt_dir is not None else Path(image_path).parent
    if not gt_dir.is_dir():  # checked before any work: a typo here must not cost a render
        raise InputNotFoundError(f"evaluate.gt_dir: {gt_dir} is not a folder; give the folder with poses.json and "
                                 "gt/<pose>.png (or leave it unset to use the panorama's folder)")
    results: dict = {
        "image": str(image_path),
        "conventions": {"alignment": cfg.alignment, "max_distance_m": cfg.max_distance,
                        "pole_cap_deg": cfg.pole_cap_deg, "valid": "GT finite, > 0, <= max_distance",
                        "visibility_rel_tol": cfg.visibility.rel_tol},
        "skipped": {},
    }
    dist_path = run_dir / "depth" / "distance.npy"
    if not dist_path.is_file():
        raise RunError(f"{dist_path} is missing: run mode=depth (or mode=all) on this run first")
    pred = np.load(dist_path)
    gt = _read_gt(gt_path, gt_format) if gt_path is not None else None
    if gt is None:
        results["skipped"]["depth"] = "no ground-truth distance (evaluate.gt_distance, dataset.distance_path or " \
                                      "<stem>_distance.* beside the image)"
    elif gt.shape != pred.shape:
        raise InputError(f"ground-truth distance {gt_path} is {gt.shape[1]}x{gt.shape[0]} but the panorama "
                         f"{image_path} is {pred.shape[1]}x{pred.shape[0]}; give the GT at the panorama's size")
    else:
        results["depth"] = _depth_section(run_dir, pred, gt, gt_path, cfg)

    ckpt = Path(checkpoint) if checkpoint is not None else run_dir / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        results["skipped"]["field"] = f"no trained field ({ckpt} missing): run mode=train first"
        return results
    field, _ = load_trained_field(run_dir, device=device, path=ckpt)
    rgb_in = io.read_panorama(image_path, allow_resample=True)
    centre_dist = gt if gt is not None else pred
    h, w = rgb_in.shape[:2]
    view = render_pose(field, CameraPose(position=np.zeros(3), width=w, height=h, name="centre"), device=device)
    results["training_view"] = {**image_metrics(view["rgb"], rgb_in, {"all": None}),
                                "distance": depth_metrics(view["distance"], centre_dist, max_depth=cfg.max_distance)}
    if not (gt_dir / "poses.json").is_file():
        results["skipped"]["novel_views"] = f"no {gt_dir / 'poses.json'} with ground-truth poses"
        return results
    results["novel_views"] = _novel_views(run_dir, field, rgb_in, centre_dist, gt_dir, cfg, results["skipped"], device)
    LOG.info("evaluate: %s", json.dumps({k: v.get("ws_psnr_visible") for k, v in results["novel_views"].items()}))
    return results
