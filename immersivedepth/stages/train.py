"""``mode=train``: the radiance field of the panorama -> ``<run>/checkpoints/``, ``<run>/train/``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from immersivedepth import io
from immersivedepth.errors import CheckpointError, RunError
from immersivedepth.stages.base import RunContext, Stage, fingerprint
from immersivedepth.train.config import FieldConfig
from immersivedepth.train.trainer import train_field

__all__ = ["TrainStage", "STAGE", "load_depth_outputs"]

LOG = logging.getLogger("immersivedepth")


def load_depth_outputs(ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    """The input panorama ``(H, W, 3)`` and the depth stage's distance ``(H, W)``."""
    dist_path = ctx.depth_dir / "distance.npy"
    if not dist_path.is_file():
        raise RunError(f"{dist_path} is missing: run mode=depth (or mode=all) first")
    distance = np.load(dist_path)
    rgb = io.read_panorama(ctx.image_path, allow_resample=bool(ctx.cfg.dataset.allow_resample))
    return rgb, distance


class TrainStage(Stage):
    name = "train"
    order = 20
    config_group = "field"
    config_schema = FieldConfig

    def fingerprint(self, ctx: RunContext, upstream: str | None) -> str:
        return fingerprint("train", upstream, ctx.group("field"), int(ctx.cfg.seed))

    def outputs(self, ctx: RunContext) -> list[Path]:
        return [self.field_checkpoint(ctx)]

    def field_checkpoint(self, ctx: RunContext) -> Path:
        return ctx.run_dir / "checkpoints" / "last.pt"

    def run(self, ctx: RunContext) -> dict:
        last = self.field_checkpoint(ctx)
        if last.exists() and not last.is_file():
            # else resuming would silently start from scratch and fail only at the first checkpoint write
            raise CheckpointError(f"{last} is not a checkpoint file (a folder or special file); move it out of "
                                  "checkpoints/, then resume from an older checkpoints/step_*.pt renamed to last.pt "
                                  "(is_continue=true) or train a new run with a new exp_name")
        resume = bool(ctx.cfg.is_continue) and last.is_file()
        if last.is_file() and not resume:
            if not bool(ctx.cfg.get("overwrite", False)):
                status = ctx.stage_record("train").get("previous_status") or "unknown"
                raise RunError(f"{last} exists (training status: {status}) and is_continue=false: pass "
                               "is_continue=true to resume it, a new exp_name to keep it and start another, or "
                               "overwrite=true to replace it")
            LOG.warning("train: overwrite=true: training from scratch and replacing %s", last)
        rgb, distance = load_depth_outputs(ctx)
        summary = train_field(rgb, distance, ctx.run_dir, ctx.cfg.field, resume=resume, device=ctx.device,
                              seed=int(ctx.cfg.seed))
        LOG.info("train: done %s", json.dumps(summary, default=str))
        return summary


STAGE = TrainStage()
