"""``mode=evaluate``: metrics of a run against ground truth -> ``<run>/eval/metrics.json`` (+ error-map figures).

Runs (or reuses) the depth stage first; the metrics, masks and alignments are :mod:`immersivedepth.eval`'s.
"""

from __future__ import annotations

import logging

from immersivedepth.config import to_plain
from immersivedepth.eval.config import eval_config
from immersivedepth.eval.evaluate import evaluate_run, gt_distance_path
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
    requires = ("depth",)  # scoring needs depth/distance.npy; reused when the depth inputs are unchanged
    rerun_when_requested = True

    def fingerprint(self, ctx: RunContext, upstream: str | None) -> str:
        return fingerprint("evaluate", upstream, ctx.group("evaluate"))

    def run(self, ctx: RunContext) -> dict:
        cfg = eval_config(ctx.cfg.evaluate)
        gt_format = cfg.gt_format if cfg.gt_format is not None else to_plain(ctx.cfg.dataset.distance_format)
        results = evaluate_run(ctx.run_dir, image_path=ctx.image_path,
                               gt_path=gt_distance_path(ctx.image_path, cfg, reference_path(ctx)),
                               gt_format=gt_format, cfg=cfg, device=ctx.device,
                               checkpoint=ctx.field_checkpoint())
        out = ctx.run_dir / "eval" / "metrics.json"
        write_json(out, results)
        LOG.info("evaluate: wrote %s", out)
        return {"metrics": str(out)}


STAGE = EvaluateStage()
