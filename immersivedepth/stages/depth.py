"""``mode=depth``: the 360 distance map, normals, confidence and point cloud -> ``<run>/depth/``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from immersivedepth import io
from immersivedepth.config import to_plain
from immersivedepth.depth.normals import normals_from_distance
from immersivedepth.depth.outputs import write_depth_outputs
from immersivedepth.depth.pipeline import DepthConfig, estimate_distance
from immersivedepth.depth.registry import build_depth_models
from immersivedepth.errors import InputError, InputNotFoundError
from immersivedepth.stages.base import RunContext, Stage, file_digest, fingerprint

__all__ = ["DepthStage", "STAGE", "reference_path", "read_reference"]

LOG = logging.getLogger("immersivedepth")


def reference_path(ctx: RunContext) -> Path | None:
    """The reference distance: ``dataset.distance_path``, else ``<stem>_distance.*`` beside the image, else None."""
    explicit = ctx.cfg.dataset.distance_path
    if explicit not in (None, ""):
        p = Path(str(explicit)).expanduser()
        if p.is_dir():
            raise InputError(f"dataset.distance_path: {p} is a directory; give the distance map file")
        if not p.is_file():
            raise InputNotFoundError(f"dataset.distance_path: reference distance {p} does not exist")
        return p
    return io.find_distance_beside(ctx.image_path)


def read_reference(ctx: RunContext, ref: Path, shape: tuple[int, int]) -> np.ndarray:
    """The reference distance map ``(H, W)`` fitted to the panorama as it is used (``shape``): a map of the
    panorama file's original size is resampled with it (``dataset.allow_resample``); any other size is refused."""
    dist = io.read_distance(ref, to_plain(ctx.cfg.dataset.distance_format), max_pixels=ctx.cfg.dataset.max_pixels)
    header = io.read_header(ctx.image_path, ctx.cfg.dataset.max_pixels)
    original = (header.display_size[1], header.display_size[0]) if header is not None else tuple(shape)
    dist = io.match_panorama(dist, ref, panorama=ctx.image_path, original_hw=original, target_hw=tuple(shape))
    if not np.any(dist > 0):
        raise InputError(f"reference distance {ref} has no valid pixel (all zero, negative or non-finite); check "
                         "dataset.distance_format")
    # the range shows a wrong dataset.distance_format at a glance (e.g. 4x off for the wrong uint16 scale)
    LOG.info("depth: reference %s: %s", ref, io.distance_stats(dist).describe())
    return dist


class DepthStage(Stage):
    name = "depth"
    order = 10
    config_group = "depth"
    config_schema = DepthConfig

    def _source(self, ctx: RunContext) -> tuple[str, Path | None]:
        source = str(ctx.cfg.depth.source)
        ref = reference_path(ctx)
        if source == "reference" and ref is None:
            raise InputNotFoundError(
                f"depth.source=reference but no reference distance was given or found beside {ctx.image_path} "
                f"(looked for {ctx.image_path.stem}_distance.exr/.npy/.png); set dataset.distance_path=... "
                "or use depth.source=models with checkpoints"
            )
        if source == "auto":
            source = "reference" if ref is not None else "models"
        return source, ref

    def fingerprint(self, ctx: RunContext, upstream: str | None) -> str:
        source, ref = self._source(ctx)
        # the model settings do not change a reference-distance run
        depth_cfg = {"source": "reference"} if source == "reference" else ctx.group("depth")
        return fingerprint("depth", file_digest(ctx.image_path), file_digest(ref) if ref is not None else None,
                           to_plain(ctx.cfg.dataset.distance_format), bool(ctx.cfg.dataset.allow_resample), source,
                           depth_cfg)

    def outputs(self, ctx: RunContext) -> list[Path]:
        return [ctx.depth_dir / "distance.npy"]

    def run(self, ctx: RunContext) -> dict:
        source, ref = self._source(ctx)
        t0 = time.perf_counter()
        rgb = io.read_panorama(ctx.image_path, allow_resample=bool(ctx.cfg.dataset.allow_resample),
                               max_pixels=ctx.cfg.dataset.max_pixels)
        info: dict[str, Any] = {"source": source, "reference": str(ref) if ref else None}
        if source == "reference":
            LOG.info("depth: using the reference distance %s", ref)
            distance = read_reference(ctx, ref, rgb.shape[:2])
            normals = normals_from_distance(distance)
            confidence = (distance > 0).astype(np.float32)
            info["units"] = "reference (metres for the dataset presets)"
        else:
            models = build_depth_models(ctx.cfg.depth.models, checkpoint_dir=ctx.cfg.depth.get("checkpoint_dir"),
                                        device=ctx.device)
            reference = read_reference(ctx, ref, rgb.shape[:2]) if ref is not None else None
            LOG.info("depth: estimating with %s", ", ".join(name for name, _ in models))
            result = estimate_distance(rgb, models, ctx.cfg.depth, reference=reference)
            distance, normals, confidence = result.distance, result.normals, result.confidence
            info["units"] = "metres (scale fitted to the reference)" if reference is not None else "relative"
            info["models"] = [name for name, _ in models]
            info["timings"] = {k: v for k, v in result.info.items() if "time" in k}
        write_depth_outputs(ctx.depth_dir, rgb, distance, normals, confidence)
        info["seconds"] = round(time.perf_counter() - t0, 2)
        LOG.info("depth: wrote %s in %.1f s", ctx.depth_dir, info["seconds"])
        return info


STAGE = DepthStage()
