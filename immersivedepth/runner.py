"""Stage orchestration behind ``perf_runner.py``: run directory, caching, logging, dispatch.

Stages (ARCHITECTURE.md): ``depth`` -> ``train`` -> ``render_dense``; ``all`` runs them in order,
``evaluate`` scores a run against ground truth. Each stage records a fingerprint of its inputs
and config in ``run.json``; a later run with the same fingerprint reuses the stage's outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from immersivedepth import io
from immersivedepth.errors import ImmersiveDepthError, RunError, one_line

LOG = logging.getLogger("immersivedepth")
MODES = ("depth", "train", "render_dense", "all", "evaluate")
STAGE_ORDER = ("depth", "train", "render_dense")


# --------------------------------------------------------------------------- small pure helpers
def resolve_device(spec: str | None) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; explicit devices are checked."""
    spec = "auto" if spec in (None, "", "auto") else str(spec)
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device.type={spec} was requested but CUDA is not available here; use device.type=cpu or auto")
    if spec != "cpu" and not spec.startswith("cuda"):
        raise RunError(f"device.type={spec!r} is not a device; use auto, cpu, cuda or cuda:N")
    return spec


def scene_name_for(image_path: Path, explicit: str | None = None) -> str:
    """The run's scene name: ``explicit``, else the image's stem (its folder's name for a generic stem)."""
    if explicit:
        return str(explicit)
    stem = image_path.stem
    if stem.lower() in {"image", "rgb", "input"} and image_path.parent.name:
        return image_path.parent.name
    return stem


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (memoised on path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (configs, digests, earlier fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def to_container(cfg: Any) -> Any:
    """OmegaConf node -> plain Python containers (resolved); other values pass through."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_list(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def write_json(path: Path, data: Mapping) -> None:
    with io.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


# --------------------------------------------------------------------------- run state
@dataclass
class RunContext:
    """Everything a stage needs: the resolved config, where to write, and the run record."""

    cfg: DictConfig
    run_dir: Path
    image_path: Path
    device: str
    record: dict = field(default_factory=dict)

    @property
    def depth_dir(self) -> Path:
        return self.run_dir / "depth"

    def stage_record(self, stage: str) -> dict:
        return self.record.setdefault("stages", {}).get(stage, {})

    def save_record(self) -> None:
        write_json(self.run_dir / "run.json", self.record)

    def mark(self, stage: str, fp: str, status: str, **info: Any) -> None:
        self.record.setdefault("stages", {})[stage] = {
            "fingerprint": fp,
            "status": status,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **info,
        }
        self.save_record()


def _setup_logging(run_dir: Path) -> logging.Handler:
    LOG.setLevel(logging.INFO)
    for h in list(LOG.handlers):
        if getattr(h, "_immersivedepth", False):
            LOG.removeHandler(h)
            h.close()
    fh = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh._immersivedepth = True  # type: ignore[attr-defined]
    LOG.addHandler(fh)
    if not any(getattr(h, "_immersivedepth_console", False) for h in LOG.handlers):
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter("[immersivedepth] %(message)s"))
        sh.addFilter(lambda record: getattr(record, "console", True))
        sh._immersivedepth_console = True  # type: ignore[attr-defined]
        LOG.addHandler(sh)
    logging.captureWarnings(True)
    return fh


def prepare_run(cfg: DictConfig) -> RunContext:
    """Validate the top-level config, create the run directory, save config and start the record."""
    mode = str(cfg.mode)
    if mode not in MODES:
        raise RunError(f"mode={mode!r} is not a mode; use one of {', '.join(MODES)}")
    if cfg.dataset.image_path in (None, ""):
        raise RunError(
            "dataset.image_path is not set: pass the panorama, e.g. "
            "python perf_runner.py --config-name nerf dataset.image_path=example_data/living_room/image.png "
            "device.base_exp_dir=exp"
        )
    image_path = Path(str(cfg.dataset.image_path)).expanduser()
    if not image_path.is_file():
        raise FileNotFoundError(f"dataset.image_path: panorama {image_path} does not exist (cwd {Path.cwd()})")
    scene = scene_name_for(image_path, cfg.dataset.scene_name)
    run_dir = Path(str(cfg.device.base_exp_dir)).expanduser() / scene / str(cfg.exp_name)
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir)
    device = resolve_device(cfg.device.type)
    if cfg.device.get("num_threads"):
        torch.set_num_threads(int(cfg.device.num_threads))
    torch.manual_seed(int(cfg.seed))
    np.random.seed(int(cfg.seed) % (2**32))
    with io.atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    record: dict = {}
    rj = run_dir / "run.json"
    if rj.is_file():
        try:
            record = json.loads(rj.read_text())
        except json.JSONDecodeError:
            LOG.warning("run.json in %s is unreadable; starting a new record (outputs will be recomputed)", run_dir)
            record = {}
    record.setdefault("history", []).append(
        {
            "mode": mode,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv[1:],
            "image": str(image_path.resolve()),
            "device": device,
            "torch": torch.__version__,
        }
    )
    ctx = RunContext(cfg=cfg, run_dir=run_dir, image_path=image_path, device=device, record=record)
    ctx.save_record()
    LOG.info("run directory %s (mode=%s, device=%s)", run_dir, mode, device)
    return ctx


# --------------------------------------------------------------------------- stage: depth
def _reference_path(ctx: RunContext) -> Path | None:
    explicit = ctx.cfg.dataset.distance_path
    if explicit not in (None, ""):
        p = Path(str(explicit)).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"dataset.distance_path: reference distance {p} does not exist")
        return p
    return io.find_distance_beside(ctx.image_path)


def _depth_inputs(ctx: RunContext) -> tuple[str, Path | None, str]:
    """(resolved source, reference path, fingerprint) of the depth stage."""
    source = str(ctx.cfg.depth.source)
    if source not in ("auto", "reference", "models"):
        raise RunError(f"depth.source={source!r} is not a source; use auto, reference or models")
    ref = _reference_path(ctx)
    if source == "reference" and ref is None:
        raise RunError(
            f"depth.source=reference but no reference distance was given or found beside {ctx.image_path} "
            f"(looked for {ctx.image_path.stem}_distance.exr/.npy/.png); set dataset.distance_path=... "
            "or use depth.source=models with checkpoints"
        )
    if source == "auto":
        source = "reference" if ref is not None else "models"
    depth_cfg = to_container(ctx.cfg.depth)
    if source == "reference":  # the model settings do not change a reference-distance run
        depth_cfg = {"source": "reference"}
    fp = fingerprint(
        "depth",
        file_digest(ctx.image_path),
        file_digest(ref) if ref is not None else None,
        to_container(ctx.cfg.dataset.distance_format),
        bool(ctx.cfg.dataset.allow_resample),
        source,
        depth_cfg,
    )
    return source, ref, fp


def _read_reference(ctx: RunContext, ref: Path, shape: tuple[int, int]) -> np.ndarray:
    dist = io.read_distance(ref, to_container(ctx.cfg.dataset.distance_format))
    if dist.shape != shape:
        raise RunError(
            f"reference distance {ref} is {dist.shape[1]}x{dist.shape[0]} but the panorama {ctx.image_path} is "
            f"{shape[1]}x{shape[0]}; give a distance map of the panorama's size"
        )
    if not np.any(dist > 0):
        raise RunError(f"reference distance {ref} has no valid pixel (all zero, negative or non-finite)")
    return dist


def stage_depth(ctx: RunContext, *, force: bool = False) -> Path:
    """Write ``depth/`` (distance, normals, confidence, points) and return the folder."""
    from immersivedepth.depth.normals import normals_from_distance
    from immersivedepth.depth.outputs import write_depth_outputs

    source, ref, fp = _depth_inputs(ctx)
    rec = ctx.stage_record("depth")
    out = ctx.depth_dir
    if not force and rec.get("fingerprint") == fp and rec.get("status") == "done" and (out / "distance.npy").is_file():
        LOG.info("depth: reusing %s (inputs and config unchanged)", out)
        return out
    t0 = time.perf_counter()
    rgb = io.read_panorama(ctx.image_path, allow_resample=bool(ctx.cfg.dataset.allow_resample))
    info: dict[str, Any] = {"source": source, "reference": str(ref) if ref else None}
    if source == "reference":
        LOG.info("depth: using the reference distance %s", ref)
        distance = _read_reference(ctx, ref, rgb.shape[:2])
        normals = normals_from_distance(distance)
        confidence = (distance > 0).astype(np.float32)
        info["units"] = "reference (metres for the dataset presets)"
    else:
        from immersivedepth.depth.pipeline import estimate_distance
        from immersivedepth.depth.registry import build_depth_models

        models = build_depth_models(
            ctx.cfg.depth.models, checkpoint_dir=ctx.cfg.depth.get("checkpoint_dir"), device=ctx.device
        )
        reference = _read_reference(ctx, ref, rgb.shape[:2]) if ref is not None else None
        LOG.info("depth: estimating with %s", ", ".join(name for name, _ in models))
        result = estimate_distance(rgb, models, ctx.cfg.depth, reference=reference)
        distance, normals, confidence = result.distance, result.normals, result.confidence
        info["units"] = "metres (scale fitted to the reference)" if reference is not None else "relative"
        info["models"] = [name for name, _ in models]
        info["timings"] = {k: v for k, v in result.info.items() if "time" in k}
    write_depth_outputs(out, rgb, distance, normals, confidence)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    ctx.mark("depth", fp, "done", **info)
    LOG.info("depth: wrote %s in %.1f s", out, info["seconds"])
    return out


# --------------------------------------------------------------------------- stage: train
def _load_depth_stage(ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    dist_path = ctx.depth_dir / "distance.npy"
    if not dist_path.is_file():
        raise RunError(f"{dist_path} is missing: run mode=depth (or mode=all) first")
    distance = np.load(dist_path)
    rgb = io.read_panorama(ctx.image_path, allow_resample=bool(ctx.cfg.dataset.allow_resample))
    return rgb, distance


def stage_train(ctx: RunContext) -> dict:
    from immersivedepth.train.trainer import train_field

    depth_fp = ctx.stage_record("depth").get("fingerprint")
    fp = fingerprint("train", depth_fp, to_container(ctx.cfg.field), int(ctx.cfg.seed))
    rec = ctx.stage_record("train")
    last = ctx.run_dir / "checkpoints" / "last.pt"
    if rec.get("fingerprint") == fp and rec.get("status") == "done" and last.is_file():
        LOG.info("train: reusing %s (depth, field config and seed unchanged)", last)
        return rec.get("summary", {})
    resume = bool(ctx.cfg.is_continue) and last.is_file()
    if last.is_file() and not resume:
        LOG.warning(
            "train: %s exists but is_continue=false: training from scratch and replacing it "
            "(pass is_continue=true to resume, or a new exp_name to keep it)",
            last,
        )
    rgb, distance = _load_depth_stage(ctx)
    ctx.mark("train", fp, "running")
    summary = train_field(
        rgb, distance, ctx.run_dir, ctx.cfg.field, resume=resume, device=ctx.device, seed=int(ctx.cfg.seed)
    )
    ctx.mark("train", fp, "done", summary=summary)
    LOG.info("train: done %s", json.dumps(summary, default=str))
    return summary


# --------------------------------------------------------------------------- stage: render
def stage_render(ctx: RunContext, *, force: bool = True) -> dict:
    from immersivedepth.render.stage import run_render_dense

    fp = fingerprint("render", ctx.stage_record("train").get("fingerprint"), to_container(ctx.cfg.render))
    rec = ctx.stage_record("render_dense")
    if not force and rec.get("fingerprint") == fp and rec.get("status") == "done":
        LOG.info("render_dense: reusing %s", ctx.run_dir / "render")
        return rec.get("summary", {})
    summary = run_render_dense(ctx.run_dir, ctx.cfg.render, device=ctx.device)
    ctx.mark("render_dense", fp, "done", summary=summary)
    return summary


# --------------------------------------------------------------------------- stage: evaluate
def stage_evaluate(ctx: RunContext) -> dict:
    from immersivedepth.eval.evaluate import evaluate_run

    gt_dir = ctx.cfg.evaluate.get("gt_dir")
    gt_dir = Path(str(gt_dir)) if gt_dir else ctx.image_path.parent
    ref = _reference_path(ctx)
    results = evaluate_run(
        ctx.run_dir,
        image_path=ctx.image_path,
        reference_path=ref,
        distance_format=to_container(ctx.cfg.dataset.distance_format),
        gt_dir=gt_dir,
        max_distance=float(ctx.cfg.evaluate.max_distance),
        device=ctx.device,
    )
    write_json(ctx.run_dir / "eval" / "metrics.json", results)
    LOG.info("evaluate: wrote %s", ctx.run_dir / "eval" / "metrics.json")
    return results


# --------------------------------------------------------------------------- dispatch
def run(cfg: DictConfig) -> RunContext:
    """Run the configured mode; returns the context (run directory, record)."""
    ctx = prepare_run(cfg)
    mode = str(cfg.mode)
    steps: dict[str, Callable[[], Any]] = {
        "depth": lambda: stage_depth(ctx, force=False),
        "train": lambda: (stage_depth(ctx), stage_train(ctx)),
        "render_dense": lambda: stage_render(ctx, force=True),
        "evaluate": lambda: stage_evaluate(ctx),
        "all": lambda: (stage_depth(ctx), stage_train(ctx), stage_render(ctx, force=False)),
    }
    t0 = time.perf_counter()
    steps[mode]()
    ctx.record["history"][-1]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    ctx.record["history"][-1]["seconds"] = round(time.perf_counter() - t0, 2)
    ctx.save_record()
    LOG.info("mode=%s finished in %.1f s: %s", mode, time.perf_counter() - t0, ctx.run_dir)
    return ctx


def main(cfg: DictConfig) -> int:
    """Entry used by ``perf_runner.py``: clear one-line errors for bad input, exit codes for shells."""
    debug = os.environ.get("IMMERSIVEDEPTH_DEBUG") not in (None, "", "0")
    try:
        run(cfg)
    except KeyboardInterrupt:
        LOG.warning("interrupted; completed outputs and the last checkpoint are kept (resume with is_continue=true)")
        return 130
    except (ImmersiveDepthError, FileNotFoundError, ValueError, NotImplementedError) as exc:
        if debug:
            raise
        LOG.error("%s", one_line(exc), extra={"console": False})  # the console gets the message once, below
        print(f"error: {one_line(exc)}\n(set IMMERSIVEDEPTH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    return 0
