"""The 360-degree depth pipeline: preprocess -> tangent tiles -> depth models -> fuse -> align -> blend.

:func:`estimate_distance` turns one ERP panorama into one seamless distance map (plus confidence and
normals). Without a reference the result is in relative units (median distance ``relative_median``);
with a reference distance map or a few known distances its global scale is fitted so the output is metric.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from immersivedepth import sphere
from immersivedepth.config import from_mapping
from immersivedepth.depth.align import AlignConfig, align_tiles, apply_alignment
from immersivedepth.depth.blend import BlendConfig, blend_tiles
from immersivedepth.depth.fuse import FUSION_RULES, FuseConfig, fuse_disparities
from immersivedepth.depth.normals import normals_from_distance
from immersivedepth.depth.preprocess import PreprocessConfig, preprocess_image
from immersivedepth.depth.registry import DepthModelError
from immersivedepth.depth.tiles import extract_tiles, make_tile_cameras
from immersivedepth.errors import ConfigError, ImmersiveDepthError, InputError

LOG = logging.getLogger("immersivedepth")

__all__ = ["TileConfig", "DepthConfig", "DepthResult", "estimate_distance", "run_models", "validate_disparity",
           "fit_global_scale", "naive_distance", "far_regions"]


@dataclass
class TileConfig:
    """``depth.tiles``: which tangent tiles are cut and how."""

    level: int = 0  # icosahedron subdivision: 20 * 4**level faces
    padding: float = 0.3  # fov = face extent * (1 + padding), used when fov_deg is null
    fov_deg: Any = None  # explicit fov, or a list of fovs (one tile set per fov, PERF style)
    size: Any = 518  # tile size for models without an input_size attribute: S or [H, W]
    antialias: bool = True  # supersample the ERP when a tile pixel covers several ERP pixels
    max_supersample: int = 4  # upper bound of that supersampling factor
    batch_size: int = 4  # tiles per model call


@dataclass
class DepthConfig:
    """The ``depth:`` config group (configs/depth/default.yaml documents every key)."""

    source: str = "auto"
    models: list = field(default_factory=lambda: ["dav2_vitl", "midas_beit_l512"])
    fusion: str = "multiband"
    # folder of the network checkpoints; null: $IMMERSIVEDEPTH_CHECKPOINTS if set, else ./checkpoints and
    # <repo>/checkpoints
    checkpoint_dir: str | None = None
    output_size: list | None = None  # [H, W] of the distance map; null: the input panorama's size
    relative_median: float = 1.0  # without reference: the output is scaled to this median distance
    reference_fit: str = "median"  # median (of reference / estimate) | lsq_log (mean log ratio)
    # sky / far regions: no valid disparity (networks give the sky ~0), or farther than far_ratio x the median
    # distance -> +inf in distance.npy ("far": confidence 0, no mesh or points, colour-only training onto the
    # field's background); invalid reference pixels are 0 ("unknown") and treated the same way
    far_ratio: float = 50.0
    min_valid_fraction: float = 0.05  # fewer pixels with a finite distance is an error (a hemisphere of sky is fine)
    progress: bool = True
    tiles: TileConfig = field(default_factory=TileConfig)
    fuse: FuseConfig = field(default_factory=FuseConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        if self.source not in ("auto", "reference", "models"):
            raise ConfigError(f"depth.source must be auto, reference or models, got {self.source!r}")
        if self.fusion not in FUSION_RULES:
            raise ConfigError(f"depth.fusion={self.fusion!r} is not a fusion rule; use one of "
                              f"{', '.join(FUSION_RULES)}")
        if self.reference_fit not in ("median", "lsq_log"):
            raise ConfigError(f"depth.reference_fit must be median or lsq_log, got {self.reference_fit!r}")
        if self.relative_median <= 0:
            raise ConfigError(f"depth.relative_median must be > 0, got {self.relative_median}")
        if self.far_ratio <= 1:
            raise ConfigError(f"depth.far_ratio must be > 1 (a multiple of the median distance), got {self.far_ratio}")
        if not 0 < self.min_valid_fraction <= 1:
            raise ConfigError(f"depth.min_valid_fraction must be in (0, 1], got {self.min_valid_fraction}")

    @classmethod
    def from_mapping(cls, cfg: Any) -> DepthConfig:
        """Build from the ``depth:`` group (OmegaConf DictConfig, plain dict, or a DepthConfig); unknown keys and
        bad values are :class:`~immersivedepth.errors.ConfigError` s naming the dotted key."""
        return from_mapping(cls, cfg, "depth")


@dataclass
class DepthResult:
    """``distance`` ``(H, W)`` float32 (0 = invalid), ``confidence`` ``(H, W)`` float32 in [0, 1],
    ``normals`` ``(H, W, 3)`` float32, ``info`` timings and diagnostics."""

    distance: np.ndarray
    confidence: np.ndarray
    normals: np.ndarray
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- model calls
def _model_size(model, default) -> tuple[int, int]:
    size = getattr(model, "input_size", None)
    size = default if size is None else size
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"tile size must be S or (H, W), got {size}")
    return size


def _model_device(model) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device | str):
        return torch.device(dev)
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def validate_disparity(out, name: str, first_tile: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Check one model batch output: ``shape`` ``(B, H, W)``, finite, >= 0, not constant; float32 numpy."""
    if isinstance(out, torch.Tensor):
        out = out.detach().float().cpu().numpy()
    out = np.asarray(out)
    if out.ndim == 4 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != shape:
        raise DepthModelError(
            f"depth model {name!r} returned shape {out.shape} for tiles {first_tile}..{first_tile + shape[0] - 1}; "
            f"expected {shape} (B, H, W) disparity"
        )
    out = out.astype(np.float32)
    for b in range(shape[0]):
        t, k = out[b], first_tile + b
        if not np.all(np.isfinite(t)):
            raise DepthModelError(f"depth model {name!r} returned NaN/inf disparity for tile {k}")
        if np.any(t < 0):
            raise DepthModelError(
                f"depth model {name!r} returned negative disparity (min {float(t.min()):.4g}) for tile {k}; "
                "disparity must be >= 0 (0 marks invalid pixels)"
            )
        if float(t.max() - t.min()) <= 1e-7 * max(1.0, float(np.abs(t).max())):
            raise DepthModelError(f"depth model {name!r} returned a constant disparity ({float(t.flat[0]):.4g}) "
                                  f"for tile {k}; it carries no depth information")
    return out


def run_models(
    tiles_by_size: Mapping[tuple[int, int], np.ndarray],
    cams_by_size: Mapping[tuple[int, int], list],
    models: Sequence[tuple[str, Any]],
    sizes: Sequence[tuple[int, int]],
    batch_size: int,
    progress: bool = True,
) -> tuple[list[np.ndarray], dict]:
    """Run every model on its tiles ``(N, h, w, 3)`` in batches; returns validated disparities ``(N, h, w)``."""
    outs, times = [], {}
    for (name, model), size in zip(models, sizes):
        tiles, cams = tiles_by_size[size], cams_by_size[size]
        n = len(cams)
        K = torch.from_numpy(np.stack([c.K for c in cams]).astype(np.float32))
        R = torch.from_numpy(np.stack([c.R for c in cams]).astype(np.float32))
        dev = _model_device(model)
        disp = np.empty((n, size[0], size[1]), np.float32)
        t0 = time.perf_counter()
        bar = tqdm(range(0, n, batch_size), desc=f"depth {name}", unit="batch", disable=not progress or None,
                   leave=False)
        for s in bar:
            e = min(n, s + batch_size)
            x = torch.from_numpy(np.ascontiguousarray(tiles[s:e].transpose(0, 3, 1, 2))).to(dev)
            with torch.inference_mode():
                try:
                    out = model(x, K=K[s:e].to(dev), R=R[s:e].to(dev))
                except ImmersiveDepthError:  # already one line naming the model and what to do
                    raise
                except Exception as exc:
                    raise DepthModelError(f"depth model {name!r} failed on tiles {s}..{e - 1}: {exc}") from exc
            disp[s:e] = validate_disparity(out, name, s, (e - s, size[0], size[1]))
        times[f"network_time_{name}"] = time.perf_counter() - t0
        outs.append(disp)
    return outs, times


def _resize_stack(disp: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if disp.shape[1:] == tuple(size):
        return disp
    interp = cv2.INTER_AREA if disp.shape[1] > size[0] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(d, (size[1], size[0]), interpolation=interp) for d in disp])


# --------------------------------------------------------------------------- scale fitting
def fit_global_scale(distance: np.ndarray, *, reference: np.ndarray | None = None, known_points=None,
                     method: str = "median") -> float:
    """Scale ``s`` so that ``s * distance`` matches ``reference`` ``(H, W)`` (valid = finite, > 0) or
    ``known_points`` (sequence of ``(u, v, distance)`` in ERP pixel coordinates, bilinear in ``distance``).
    ``method``: ``median`` of ratios or ``lsq_log`` (exp of the mean log ratio)."""
    d = np.asarray(distance, np.float64)
    if reference is not None:
        ref = np.asarray(reference, np.float64)
        if ref.shape != d.shape:
            raise InputError(f"reference distance has shape {ref.shape}; expected {d.shape} (the output size)")
        ok = np.isfinite(ref) & (ref > 0) & (d > 0)
        if not ok.any():
            raise InputError("reference distance has no valid pixel where the estimate is valid")
        ratio = ref[ok] / d[ok]
    elif known_points is not None:
        pts = np.asarray(known_points, np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
            raise InputError(f"known_points must be a sequence of (u, v, distance), got shape {pts.shape}")
        if np.any(~np.isfinite(pts)) or np.any(pts[:, 2] <= 0):
            raise InputError("known_points distances must be finite and > 0")
        est = sphere.erp_sample(d, pts[:, 0], pts[:, 1])
        if np.any(est <= 0):
            raise InputError("a known point falls on a pixel without an estimated distance")
        ratio = pts[:, 2] / est
    else:
        raise InputError("fit_global_scale needs a reference or known_points")
    return float(np.median(ratio) if method == "median" else np.exp(np.mean(np.log(ratio))))


def far_regions(distance: np.ndarray, far_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Split a blended distance map ``(H, W)`` into finite distances and "far" pixels ``(H, W)`` bool.

    Monocular networks give the sky and anything very distant a disparity of about 0. After alignment that is
    either no valid value at all (distance 0 from the blend) or a distance orders of magnitude beyond the scene;
    both are "far": the distance map stores them as ``+inf`` (no number to trust, and never a wall at the scene
    boundary). A pixel is far when it is invalid or farther than ``far_ratio`` x the median valid distance.
    Returns ``(distance with far pixels set to 0, far)``.
    """
    d = np.asarray(distance, np.float64)
    ok = np.isfinite(d) & (d > 0)
    far = ~ok
    if ok.any():
        far |= ok & (d > far_ratio * float(np.median(d[ok])))
    return np.where(far, 0.0, d), far


def naive_distance(cameras, disparity: np.ndarray, height: int, width: int) -> np.ndarray:
    """The naive baseline: per-tile median normalisation, then a plain average of the tiles' ray distances."""
    d = np.asarray(disparity, np.float64)
    med = np.array([np.median(t[t > 0]) for t in d])
    return blend_tiles(cameras, d / med[:, None, None], height, width, BlendConfig(space="distance", power=0)).distance


# --------------------------------------------------------------------------- the pipeline
def estimate_distance(
    rgb: np.ndarray,
    models: Sequence[tuple[str, Any]],
    cfg: DepthConfig | Mapping | None = None,
    *,
    reference: np.ndarray | None = None,
    known_points=None,
    progress: bool = True,
) -> DepthResult:
    """One ERP panorama ``(H, W, 3)`` float [0, 1] -> :class:`DepthResult` (distance along the rays)."""
    cfg = DepthConfig.from_mapping(cfg)
    progress = progress and cfg.progress
    t_start = time.perf_counter()
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[1] != 2 * rgb.shape[0]:
        raise InputError(f"estimate_distance expects an ERP RGB image (H, 2H, 3), got shape {rgb.shape}")
    if not np.all(np.isfinite(rgb)):
        raise InputError("the panorama contains NaN/inf values")
    rgb = np.clip(rgb.astype(np.float32), 0.0, 1.0)
    if not models:
        raise DepthModelError("estimate_distance needs at least one (name, model) pair")
    h_out, w_out = (rgb.shape[0], rgb.shape[1]) if cfg.output_size is None else tuple(int(s) for s in cfg.output_size)
    info: dict[str, Any] = {"models": [n for n, _ in models]}

    t0 = time.perf_counter()
    pp = cfg.preprocess
    img = preprocess_image(rgb, pp) if pp.any_enabled and pp.apply_to == "erp" else rgb
    info["preprocess_time"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tc = cfg.tiles
    sizes = [_model_size(m, tc.size) for _, m in models]
    cams_by_size, tiles_by_size = {}, {}
    for size in dict.fromkeys(sizes):
        cams = make_tile_cameras(size, level=tc.level, padding=tc.padding, fov_deg=tc.fov_deg)
        tiles = extract_tiles(img, cams, antialias=tc.antialias, max_supersample=tc.max_supersample)
        if pp.any_enabled and pp.apply_to == "tiles":
            tiles = np.stack([preprocess_image(t, pp, wrap=False) for t in tiles])
        cams_by_size[size], tiles_by_size[size] = cams, tiles
    info["tiles_time"] = time.perf_counter() - t0
    info["n_tiles"] = len(cams_by_size[sizes[0]])

    disps, net_times = run_models(tiles_by_size, cams_by_size, models, sizes, tc.batch_size, progress)
    info.update(net_times)
    info["network_time"] = sum(net_times.values())

    t0 = time.perf_counter()
    work = sizes[0]
    cams = cams_by_size[work]
    disps = [_resize_stack(d, work) for d in disps]
    fused, finfo = fuse_disparities(disps, [n for n, _ in models], cfg.fusion, cfg.fuse)
    info.update(finfo)
    info["fuse_time"] = time.perf_counter() - t0

    res = align_tiles(cams, fused, cfg.align)
    info.update(res.info)
    if res.info["tiles_without_overlap"]:
        info["warning"] = (f"tiles {res.info['tiles_without_overlap']} share no valid pixel with any other tile; "
                           "they keep their median normalisation")
        LOG.warning("depth: %s", info["warning"])
    q = apply_alignment(fused, res)
    bl = blend_tiles(cams, q, h_out, w_out, cfg.blend)
    info.update(bl.info)
    dist, far = far_regions(bl.distance, cfg.far_ratio)
    valid = ~far
    info["far_fraction"] = float(far.mean())
    if valid.mean() < cfg.min_valid_fraction:
        raise DepthModelError(f"only {valid.mean():.1%} of the output has a finite distance (depth.min_valid_fraction="
                              f"{cfg.min_valid_fraction}); the models' disparities are almost all ~0 (sky) or "
                              "invalid, or the alignment made them negative")
    lv = np.log(dist[valid])
    if float(lv.max() - lv.min()) < 1e-6:
        raise DepthModelError("the estimated distance map is constant: the depth models carry no depth information")

    if reference is not None or known_points is not None:
        scale = fit_global_scale(dist, reference=reference, known_points=known_points, method=cfg.reference_fit)
        info["units"] = "metric (scale fitted to the reference)"
    else:
        scale = cfg.relative_median / float(np.median(dist[valid]))
        info["units"] = f"relative (median distance {cfg.relative_median})"
    dist = np.where(far, np.inf, dist * scale).astype(np.float32)
    info["global_scale"] = scale

    t0 = time.perf_counter()
    normals = normals_from_distance(dist)
    info["normals_time"] = time.perf_counter() - t0
    info["total_time"] = time.perf_counter() - t_start
    confidence = np.where(far, 0.0, bl.confidence).astype(np.float32)
    return DepthResult(distance=dist, confidence=confidence, normals=normals, info=_plain(info))


def _plain(obj):
    """Info dict -> JSON-friendly builtins."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, types.SimpleNamespace):
        return _plain(vars(obj))
    return obj
