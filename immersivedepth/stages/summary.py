"""The summary of a sweep: ``<device.base_exp_dir>/summary.csv`` and ``summary.md`` (one row per panorama).

Written by :class:`SweepSummary`, a Hydra callback registered in ``configs/nerf.yaml``, when the multirun ends (in
the process that launched it, whatever the launcher), from the jobs' ``status.json`` files in ``hydra.sweep.dir``.
A sweep of ``mode=evaluate`` also gets the dataset report of :mod:`immersivedepth.eval.report`.

``python -m immersivedepth.stages.summary <sweep_dir> <base_exp_dir>`` rewrites the summary by hand (e.g. after a
cluster sweep whose launcher gave up before the end).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from immersivedepth import io
from immersivedepth.eval.report import markdown_table, write_csv, write_dataset_report
from immersivedepth.stages.sweep import STATUS_FILE

COLUMNS = ("panorama", "status", "error", "seconds", "stages_run", "stages_reused", "depth_s", "train_s",
           "train_psnr", "train_abs_rel", "eval_alignment", "eval_abs_rel", "eval_d1", "eval_ws_psnr_visible",
           "run_dir")
NOT_FINISHED = "did not finish (killed, out of memory or out of time?); see the job's log in the sweep folder"
# The outcome of the last sweep summarised in this process (perf_runner.py turns failures into exit code 2).
LAST_SWEEP: dict[str, int] = {}


def read_statuses(sweep_dir: Path) -> list[dict]:
    """The jobs' statuses of ``sweep_dir`` in job order (``<sweep_dir>/<job>/status.json``)."""
    out = []
    for p in sweep_dir.glob(f"*/{STATUS_FILE}"):
        try:
            out.append(json.loads(p.read_text()))
        except (json.JSONDecodeError, OSError) as exc:
            out.append({"panorama": str(p.parent), "status": "failed", "error": f"unreadable {p}: {exc}"})
    return sorted(out, key=lambda s: int((s.get("job") or {}).get("num", 0)))


def _run_json(run_dir: str | None) -> dict:
    p = Path(run_dir) / "run.json" if run_dir else None
    if p is None or not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, OSError):
        return {}


def _eval_metrics(run_dir: str | None) -> dict | None:
    p = Path(run_dir) / "eval" / "metrics.json" if run_dir else None
    if p is None or not p.is_file():
        return None
    return json.loads(p.read_text())


def summary_row(status: Mapping[str, Any]) -> dict[str, Any]:
    """One summary row: the job's status, its stage times and key metrics from ``run.json`` / ``eval/metrics.json``."""
    row: dict[str, Any] = {k: status.get(k) for k in ("panorama", "status", "error", "seconds", "run_dir")}
    if row["status"] == "running":
        row.update(status="failed", error=NOT_FINISHED)
    for k in ("stages_run", "stages_reused"):
        row[k] = " ".join(status.get(k) or [])
    if row["status"] != "done":
        return row
    stages = _run_json(status.get("run_dir")).get("stages", {})
    row["depth_s"] = (stages.get("depth") or {}).get("seconds")
    train = (stages.get("train") or {}).get("summary") or {}
    row.update(train_s=train.get("wall_time"), train_psnr=train.get("psnr"), train_abs_rel=train.get("abs_rel"))
    if status.get("mode") == "evaluate":
        metrics = _eval_metrics(status.get("run_dir")) or {}
        depth = metrics.get("depth") or {}
        row.update(eval_alignment=depth.get("alignment"), eval_abs_rel=depth.get("abs_rel"), eval_d1=depth.get("d1"))
        ws = [v.get("ws_psnr_visible") for v in (metrics.get("novel_views") or {}).values()]
        ws = [v for v in ws if v is not None]
        row["eval_ws_psnr_visible"] = sum(ws) / len(ws) if ws else None
    return row


def write_summary(sweep_dir: Path, base_exp_dir: Path) -> dict[str, int]:
    """Write ``summary.csv`` / ``summary.md`` (and the evaluation report for ``mode=evaluate``) into
    ``base_exp_dir``; returns ``{"total", "done", "failed"}``."""
    statuses = read_statuses(sweep_dir)
    rows = [summary_row(s) for s in statuses]
    counts = {"total": len(rows), "done": sum(r["status"] == "done" for r in rows)}
    counts["failed"] = counts["total"] - counts["done"]
    write_csv(base_exp_dir / "summary.csv", rows, COLUMNS)
    md = [f"# Sweep summary: {counts['done']} of {counts['total']} panoramas done, {counts['failed']} failed", "",
          f"Job folders and logs: {sweep_dir}. Re-run the same command to retry the failed ones "
          "(finished stages are reused; add is_continue=true where a training was cut off, or it is refused).", "",
          markdown_table(rows, [c for c in COLUMNS if c != "run_dir"])]
    with io.atomic_path(base_exp_dir / "summary.md") as tmp:
        tmp.write_text("\n".join(md))
    evals = [s for s in statuses if s.get("mode") == "evaluate"]
    if evals:
        entries = [{"panorama": r["panorama"], "status": r["status"], "error": r["error"] or "",
                    "metrics": _eval_metrics(s.get("run_dir")) if r["status"] == "done" else None}
                   for s, r in zip(statuses, rows) if s.get("mode") == "evaluate"]
        write_dataset_report(base_exp_dir, entries)
    return counts


class SweepSummary(Callback):
    """Hydra callback: clears the previous sweep's job statuses at the start, writes the summary at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        for p in Path(str(config.hydra.sweep.dir)).glob(f"*/{STATUS_FILE}"):
            p.unlink()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        base = Path(str(config.device.base_exp_dir)).expanduser()
        counts = write_summary(Path(str(config.hydra.sweep.dir)), base)
        LAST_SWEEP.clear()
        LAST_SWEEP.update(counts)
        # the launching shell's last line (the jobs' own logs may run in other processes or on other machines)
        print(f"sweep: {counts['done']} of {counts['total']} panoramas done, {counts['failed']} failed; see "
              f"{base / 'summary.md'}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m immersivedepth.stages.summary <sweep_dir> <base_exp_dir>", file=sys.stderr)
        return 2
    counts = write_summary(Path(args[0]), Path(args[1]))
    print(f"{counts['done']} of {counts['total']} done, {counts['failed']} failed: {Path(args[1]) / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
