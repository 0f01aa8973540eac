"""``mode=evaluate``: score a run directory against ground truth.

- **depth**: ``depth/distance.npy`` against the reference distance (FACTS.md conventions: valid =
  finite, > 0, <= ``max_distance``), without alignment and after a median scale fit (numbers under
  different alignments are not comparable, so both are reported and labelled).
- **training view**: the trained field rendered at the panorama centre against the input panorama
  and the reference distance.
- **novel views**: the field rendered at every pose of ``poses.json`` against the ground-truth
  panoramas ``gt/<name>.png`` + ``gt/<name>_distance.npy``, on all pixels and on the pixels
  *visible from the training position* (see :func:`visible_from_centre`), beside the *identity*
  baseline (the input panorama shown unchanged at the novel position).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np

from immersivedepth import io, sphere
from immersivedepth.eval.metrics import align_scale, depth_metrics, psnr

LOG = logging.getLogger("immersivedepth.eval")


def resize_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-resample an ``(H, W[, C])`` image to ``height x width`` (cubic when enlarging)."""
    if img.shape[:2] == (height, width):
        return img
    interp = cv2.INTER_AREA if img.shape[0] >= height else cv2.INTER_CUBIC
    return cv2.resize(img, (width, height), interpolation=interp)


def visible_from_centre(
    position, distance_at_pose: np.ndarray, centre_distance: np.ndarray, rel_tol: float = 0.02, abs_tol: float = 0.01
) -> np.ndarray:
    """Pixels of a panorama taken at ``position`` whose surface point the centre panorama also sees.

    The mask rule: the hit point ``x = position + d * dir`` of each pixel (``d`` its ground-truth
    distance) is visible from the centre when its distance ``|x|`` is at most the centre's distance
    along ``x / |x|`` (bilinear) times ``1 + rel_tol``, plus ``abs_tol``. Pixels without a valid
    distance are excluded. ``distance_at_pose`` ``(h, w)``, ``centre_distance`` ``(H, W)`` -> ``(h, w)`` bool.
    """
    h, w = distance_at_pose.shape
    dirs = sphere.erp_directions(h, w, np.float64)
    valid = np.isfinite(distance_at_pose) & (distance_at_pose > 0)
    x = np.asarray(position, np.float64)[None, None, :] + dirs * np.where(valid, distance_at_pose, 0)[..., None]
    r = np.linalg.norm(x, axis=-1)
    seen = sphere.erp_sample_dirs(np.asarray(centre_distance, np.float64), x)
    return valid & (seen > 0) & (r <= seen * (1 + rel_tol) + abs_tol)


def _depth_section(pred: np.ndarray, ref: np.ndarray, max_distance: float) -> dict:
    weights = sphere.pixel_solid_angle(*ref.shape)
    out = {"alignment_none": depth_metrics(pred, ref, max_depth=max_distance)}
    aligned, scale = align_scale(pred, ref, valid=(ref > 0) & (ref <= max_distance), method="median")
    out["alignment_median_scale"] = depth_metrics(aligned, ref, max_depth=max_distance)
    out["alignment_median_scale"]["scale"] = float(np.asarray(scale).reshape(-1)[0])
    out["alignment_none_solid_angle_weighted"] = depth_metrics(pred, ref, max_depth=max_distance, weights=weights)
    return out


def _load_poses(poses_file: Path):
    from immersivedepth.render.poses import load_poses_file

    poses, _fps = load_poses_file(poses_file)
    return poses


def evaluate_run(
    run_dir: Path,
    *,
    image_path: Path,
    reference_path: Path | None,
    distance_format="auto",
    gt_dir: Path | None = None,
    max_distance: float = 10.0,
    device: str = "cpu",
) -> dict:
    """Metrics of ``run_dir`` (see the module docstring); sections that lack ground truth are skipped
    with the reason recorded under ``"skipped"``."""
    run_dir = Path(run_dir)
    results: dict = {"conventions": {"max_distance_m": max_distance, "valid": "finite, > 0, <= max_distance"},
                     "skipped": {}}
    dist_path = run_dir / "depth" / "distance.npy"
    reference = io.read_distance(reference_path, distance_format) if reference_path is not None else None
    if not dist_path.is_file():
        raise FileNotFoundError(f"{dist_path} is missing: run mode=depth (or mode=all) on this run first")
    pred = np.load(dist_path)
    if reference is None:
        results["skipped"]["depth"] = "no reference distance given or found beside the image"
    elif reference.shape != pred.shape:
        raise ValueError(f"reference distance {reference_path} is {reference.shape} but {dist_path} is {pred.shape}")
    else:
        results["depth"] = _depth_section(pred, reference, max_distance)

    ckpt = run_dir / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        results["skipped"]["field"] = f"no trained field ({ckpt} missing): run mode=train first"
        return results
    from immersivedepth.render.frames import render_pose
    from immersivedepth.render.poses import CameraPose
    from immersivedepth.train.checkpoint import load_trained_field

    field, _ = load_trained_field(run_dir, device=device)
    rgb_in = io.read_panorama(image_path, allow_resample=True)
    centre_dist = reference if reference is not None else pred
    h, w = rgb_in.shape[:2]
    view = render_pose(field, CameraPose(position=np.zeros(3), width=w, height=h, name="centre"), device=device)
    tv = {"psnr": psnr(view["rgb"], rgb_in)}
    tv["distance"] = depth_metrics(view["distance"], centre_dist, max_depth=max_distance)
    results["training_view"] = tv

    gt_dir = Path(gt_dir) if gt_dir is not None else Path(image_path).parent
    poses_file = gt_dir / "poses.json"
    if not poses_file.is_file():
        results["skipped"]["novel_views"] = f"no {poses_file} with ground-truth poses"
        return results
    novel = {}
    for pose in _load_poses(poses_file):
        gt_rgb_path = gt_dir / "gt" / f"{pose.name}.png"
        gt_dist_path = gt_dir / "gt" / f"{pose.name}_distance.npy"
        if not gt_rgb_path.is_file() or not gt_dist_path.is_file():
            results["skipped"][f"novel_views/{pose.name}"] = f"missing {gt_rgb_path.name} or {gt_dist_path.name}"
            continue
        gt_rgb = io.read_panorama(gt_rgb_path)
        gt_dist = io.read_distance(gt_dist_path)
        ph, pw = gt_rgb.shape[:2]
        pose.width, pose.height = pw, ph
        out = render_pose(field, pose, device=device)
        vis = visible_from_centre(pose.position, gt_dist, centre_dist)
        identity = resize_image(rgb_in, ph, pw)
        novel[pose.name] = {
            "position": [float(v) for v in pose.position],
            "offset_m": float(np.linalg.norm(pose.position)),
            "visible_fraction": float(vis.mean()),
            "psnr_visible": psnr(out["rgb"], gt_rgb, mask=vis),
            "psnr_all": psnr(out["rgb"], gt_rgb),
            "identity_psnr_visible": psnr(identity, gt_rgb, mask=vis),
            "distance_visible": depth_metrics(out["distance"], gt_dist, valid=vis, max_depth=max_distance),
        }
    results["novel_views"] = novel
    results["novel_views_mask_rule"] = visible_from_centre.__doc__.split("\n\n")[1].strip()
    LOG.info("evaluate: %s", json.dumps({k: v.get("psnr_visible") for k, v in novel.items()}))
    return results
