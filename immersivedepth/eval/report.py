"""Dataset evaluation report: per-image CSV, a Markdown table and one JSON from the runs' ``eval/metrics.json``.

One row per panorama with the headline numbers of :mod:`immersivedepth.eval.evaluate` (depth under the declared
alignment; novel views averaged over the poses); the mean row averages the panoramas that were scored.
"""

from __future__ import annotations

import csv
import io as _stdio
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from immersivedepth import io
from immersivedepth.eval.metrics import METRIC_NAMES
from immersivedepth.eval.novel_view import IMAGE_METRICS

NOVEL_MASKS = ("all", "visible", "disoccluded")
DEPTH_COLUMNS = tuple(f"depth_{m}" for m in METRIC_NAMES)
NOVEL_COLUMNS = tuple(f"novel_{m}_{k}" for k in NOVEL_MASKS for m in IMAGE_METRICS)


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Flat headline numbers of one run's ``eval/metrics.json`` (missing sections give no keys)."""
    row: dict[str, Any] = {}
    depth = metrics.get("depth")
    if depth:
        row["alignment"] = depth.get("alignment")
        row.update({f"depth_{m}": depth.get(m) for m in METRIC_NAMES})
    tv = metrics.get("training_view")
    if tv:
        row.update({f"train_view_{m}": tv.get(f"{m}_all") for m in IMAGE_METRICS})
    novel = metrics.get("novel_views") or {}
    for col in NOVEL_COLUMNS:
        key = col.removeprefix("novel_")
        vals = [v[key] for v in novel.values() if v.get(key) is not None and math.isfinite(v[key])]
        if vals:
            row[col] = sum(vals) / len(vals)
    if novel:
        row["novel_poses"] = len(novel)
    return row


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v).replace("|", "\\|")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """``rows`` as a CSV with ``columns`` (missing values empty), written atomically."""
    buf = _stdio.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") if r.get(c) is not None else "" for c in columns})
    with io.atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def mean_row(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in columns:
        vals = [r[c] for r in rows if isinstance(r.get(c), (int, float)) and math.isfinite(r[c])]
        if vals:
            out[c] = sum(vals) / len(vals)
    return out


def write_dataset_report(out_dir: Path, entries: Sequence[Mapping[str, Any]]) -> dict:
    """Write ``evaluation.csv``, ``evaluation.md`` and ``evaluation.json`` in ``out_dir``.

    ``entries``: one per panorama, ``{"panorama", "status", "error", "metrics" (the run's metrics.json or None)}``.
    Returns the JSON document.
    """
    rows = []
    for e in entries:
        row = {"panorama": e["panorama"], "status": e["status"], "error": e.get("error", "")}
        if e.get("metrics"):
            row.update(headline(e["metrics"]))
        rows.append(row)
    alignments = sorted({r["alignment"] for r in rows if r.get("alignment")})
    present = [c for c in (*DEPTH_COLUMNS, *NOVEL_COLUMNS) if any(r.get(c) is not None for r in rows)]
    columns = ["panorama", "status", "alignment", *present, "error"]
    scored = [r for r in rows if r["status"] == "done"]
    mean = mean_row(scored, present)
    doc = {
        "alignment": alignments[0] if len(alignments) == 1 else alignments,
        "n_panoramas": len(rows),
        "n_scored": len(scored),
        "mean": mean,
        "per_image": [dict(e) for e in entries],
    }
    write_csv(out_dir / "evaluation.csv", rows, columns)
    md = [f"# Evaluation: {len(scored)} of {len(rows)} panoramas scored",
          "",
          f"Depth alignment: {', '.join(alignments) or 'n/a'} (numbers under different alignments are not comparable).",
          "",
          markdown_table([{"panorama": "**mean**", "status": f"{len(scored)} scored", **mean}] + rows, columns)]
    with io.atomic_path(out_dir / "evaluation.md") as tmp:
        tmp.write_text("\n".join(md))
    with io.atomic_path(out_dir / "evaluation.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return doc
