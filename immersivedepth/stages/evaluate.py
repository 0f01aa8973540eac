"""``mode=evaluate``: metrics of a run against ground truth -> ``<run>/eval/metrics.json``."""

from __future__ import annotations

import logging
from pathlib import Path

from immersivedepth.config import to_plain
from immersivedepth.errors import InputNotFoundError
from immersivedepth.eval.evaluate import evaluate_run
from immersivedepth.stages.base import RunContext, Stage, fingerprint, write_json
from immersivedepth.stages.depth import reference_path

__all__ = ["EvaluateStage", "STAGE"]

LOG = logging.getLogger("immersivedepth")


class EvaluateStage(Stage):
    name = "evaluate"
    order = 90
    config_group = "evaluate"  # a section of the run's own keys (RunConfig.evaluate), not a Hydra group
    in_pipeline = False
    standalone = True
    rerun_when_requested = True

    def fingerprint(self, ctx: RunContext, upstream: str | None) -> str:
        return fingerprint("evaluate", upstream, ctx.group("evaluate"))

    def run(self, ctx: RunContext) -> dict:
        gt_dir = ctx.cfg.evaluate.get("gt_dir")
        gt_dir = Path(str(gt_dir)) if gt_dir else ctx.image_path.parent
        if not gt_dir.is_dir():
            raise InputNotFoundError(f"evaluate.gt_dir: {gt_dir} is not a folder; give the folder with poses.json and "
                                     "gt/<pose>.png (or leave it unset to use the panorama's folder)")
        results = evaluate_run(ctx.run_dir, image_path=ctx.image_path, reference_path=reference_path(ctx),
                               distance_format=to_plain(ctx.cfg.dataset.distance_format), gt_dir=gt_dir,
                               max_distance=float(ctx.cfg.evaluate.max_distance), device=ctx.device)
        out = ctx.run_dir / "eval" / "metrics.json"
        write_json(out, results)
        LOG.info("evaluate: wrote %s", out)
        return {"metrics": str(out)}


STAGE = EvaluateStage()
