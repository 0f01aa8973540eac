"""The runner behind ``perf_runner.py``: run directory, logging, validation, stage order, caching, status, errors.

``mode=<stage>`` runs the pipeline up to that stage (``depth``, ``train``, ``inpaint``), reusing every stage whose
fingerprint in ``run.json`` matches and whose outputs exist; a *standalone* stage (``render_dense``, ``evaluate``)
runs alone on an existing run; ``mode=all`` runs the whole pipeline. Each stage's status (``running``, ``done``,
``failed`` with the error line, ``interrupted``) is recorded in ``run.json`` as it changes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from immersivedepth import io
from immersivedepth.config import from_mapping, to_plain
from immersivedepth.errors import (
    ConfigError,
    ImmersiveDepthError,
    InputError,
    InputNotFoundError,
    OutputError,
    one_line,
)
from immersivedepth.runlock import RunLock
from immersivedepth.stages.base import RunContext, Stage
from immersivedepth.stages.config import RunConfig
from immersivedepth.stages.registry import all_stages, modes, pipeline

__all__ = ["run", "main", "prepare_run", "validate_config", "resolve_device", "scene_name_for", "stages_for_mode"]

LOG = logging.getLogger("immersivedepth")


def resolve_device(spec: str | None) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; explicit devices are checked."""
    spec = "auto" if spec in (None, "", "auto") else str(spec)
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device.type={spec} was requested but CUDA is not available here; use device.type=cpu "
                          "or auto")
    if spec != "cpu" and not spec.startswith("cuda"):
        raise ConfigError(f"device.type={spec!r} is not a device; use auto, cpu, cuda or cuda:N")
    return spec


def scene_name_for(image_path: Path, explicit: str | None = None) -> str:
    """The run's scene name: ``explicit``, else the image's stem (its folder's name for a generic stem)."""
    if explicit:
        return str(explicit)
    stem = image_path.stem
    if stem.lower() in {"image", "rgb", "input"} and image_path.parent.name:
        return image_path.parent.name
    return stem


def validate_config(cfg: DictConfig) -> RunConfig:
    """Check the whole config up front: the run's own keys and every stage's group (unknown keys, types, ranges),
    so a bad value in the last stage fails in a second, not after an hour of training."""
    plain = to_plain(cfg)
    own = {k: plain[k] for k in ("mode", "is_continue", "overwrite", "exp_name", "seed", "dataset", "device",
                                 "evaluate") if k in plain}
    run_cfg = from_mapping(RunConfig, own, "config")
    if run_cfg.mode not in modes():
        raise ConfigError(f"mode={run_cfg.mode!r} is not a mode; use one of {', '.join(modes())}")
    for stage in all_stages():
        if stage.config_schema is not None and stage.config_group:
            if stage.config_group not in plain:
                raise ConfigError(f"config group {stage.config_group} is missing; select a preset, e.g. "
                                  f"{stage.config_group}=default")
            from_mapping(stage.config_schema, plain[stage.config_group], stage.config_group)
    _check_folder_name(run_cfg.exp_name, "exp_name")
    if run_cfg.dataset.scene_name not in (None, ""):
        _check_folder_name(run_cfg.dataset.scene_name, "dataset.scene_name")
    return run_cfg


def _check_folder_name(value, key: str) -> None:
    """``exp_name`` and ``dataset.scene_name`` are ONE folder each of ``<device.base_exp_dir>/<scene>/<exp_name>/``.

    A path there would leave ``device.base_exp_dir`` (``..``, absolute), be the scene folder itself (``.``) or nest
    one run directory inside another (``a`` and ``a/b``), whose lock does not cover the inner run while its
    clean-up of stale temporary files walks into it.
    """
    name = str(value)
    if (not name.strip() or name in (".", "..") or any(sep in name for sep in ("/", "\\", "\0"))
            or Path(name).is_absolute()):
        raise ConfigError(f"{key}={name!r} must be a plain folder name (no '/' or '\\', not '.' or '..', not empty): "
                          f"runs go to <device.base_exp_dir>/<dataset.scene_name>/<exp_name>/; e.g. "
                          f"{key}={_suggest_folder_name(name)}")


def _suggest_folder_name(name: str) -> str:
    safe = "_".join(part for part in name.replace("\\", "/").split("/") if part not in ("", ".", ".."))
    return safe.replace("\0", "") or "run1"


def stages_for_mode(mode: str) -> list[Stage]:
    """The stages ``mode`` runs, in order."""
    if mode == "all":
        return pipeline()
    target = next(s for s in all_stages() if s.name == mode)
    if target.standalone:
        return [s for s in pipeline() if s.name in target.requires] + [target]
    return [s for s in pipeline() if s.order <= target.order]


def _setup_logging(run_dir: Path) -> None:
    """The run's ``log.txt`` plus the console for the project's logger and for Python warnings."""
    LOG.setLevel(logging.INFO)
    warn_log = logging.getLogger("py.warnings")
    for logger in (LOG, warn_log):
        for h in list(logger.handlers):
            if getattr(h, "_immersivedepth", False):
                logger.removeHandler(h)
                h.close()
    fh = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh._immersivedepth = True  # type: ignore[attr-defined]
    LOG.addHandler(fh)
    warn_log.addHandler(fh)
    if not any(getattr(h, "_immersivedepth_console", False) for h in LOG.handlers):
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter("[immersivedepth] %(message)s"))
        sh.addFilter(lambda record: getattr(record, "console", True))
        sh._immersivedepth_console = True  # type: ignore[attr-defined]
        LOG.addHandler(sh)
        warn_log.addHandler(sh)
    warn_log.propagate = False
    logging.captureWarnings(True)


def prepare_run(cfg: DictConfig) -> RunContext:
    """Validate the config, create the run directory, save config and start the record."""
    run_cfg = validate_config(cfg)
    if run_cfg.dataset.image_path in (None, ""):
        raise ConfigError(
            "dataset.image_path is not set: pass the panorama, e.g. "
            "python perf_runner.py --config-name nerf dataset.image_path=example_data/living_room/image.png "
            "device.base_exp_dir=exp"
        )
    image_path = Path(run_cfg.dataset.image_path).expanduser()
    if image_path.is_dir():
        raise InputError(f"dataset.image_path: {image_path} is a directory; give the panorama's file")
    if not image_path.is_file():
        raise InputNotFoundError(f"dataset.image_path: panorama {image_path} does not exist (cwd {Path.cwd()})")
    device = resolve_device(run_cfg.device.type)
    scene = scene_name_for(image_path, run_cfg.dataset.scene_name)
    run_dir = Path(run_cfg.device.base_exp_dir).expanduser() / scene / run_cfg.exp_name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a path that is a file, a read-only or full disk
        raise OutputError(f"device.base_exp_dir: cannot create the run directory {run_dir} ({exc.strerror or exc}); "
                          "choose a writable folder with device.base_exp_dir=...") from exc
    lock = RunLock(run_dir, wait=run_cfg.wait_for_lock, command=" ".join(sys.argv))
    lock.acquire()  # a second run on the same directory refuses (or waits), naming the running one
    try:
        _setup_logging(run_dir)
        for stale in io.remove_stale_temps(run_dir):  # left by a process killed in the middle of a write
            LOG.info("removed the stale temporary file %s", stale)
        return _start_record(cfg, run_cfg, run_dir, image_path, device, lock)
    except BaseException:
        lock.release()
        raise


def _start_record(cfg: DictConfig, run_cfg: RunConfig, run_dir: Path, image_path: Path, device: str,
                  lock: RunLock) -> RunContext:
    if run_cfg.device.num_threads:
        torch.set_num_threads(run_cfg.device.num_threads)
    torch.manual_seed(run_cfg.seed)
    np.random.seed(run_cfg.seed % (2**32))
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
            "mode": run_cfg.mode,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv[1:],
            "image": str(image_path.resolve()),
            "device": device,
            "torch": torch.__version__,
        }
    )
    ctx = RunContext(cfg=cfg, run_dir=run_dir, image_path=image_path, device=device, record=record,
                     stages=all_stages(), lock=lock)
    ctx.save_record()
    LOG.info("run directory %s (mode=%s, device=%s)", run_dir, run_cfg.mode, device)
    return ctx


def _run_stage(ctx: RunContext, stage: Stage, fp: str, *, forced: bool) -> None:
    rec = ctx.stage_record(stage.name)
    if (not forced and rec.get("fingerprint") == fp and rec.get("status") == "done"
            and all(p.is_file() for p in stage.outputs(ctx))):
        LOG.info("%s: reusing the outputs in %s (inputs and config unchanged)", stage.name, ctx.run_dir)
        return
    ctx.mark(stage.name, fp, "running", previous_status=rec.get("status"))
    t0 = time.perf_counter()
    try:
        summary = stage.run(ctx)
    except ImmersiveDepthError as exc:
        ctx.mark(stage.name, fp, "failed", error=one_line(exc))
        LOG.error("%s failed: %s", stage.name, one_line(exc), extra={"console": False})  # main() prints it once
        exc.logged = True  # type: ignore[attr-defined]
        raise
    except KeyboardInterrupt:
        ctx.mark(stage.name, fp, "interrupted")
        raise
    ctx.mark(stage.name, fp, "done", seconds=round(time.perf_counter() - t0, 2), summary=summary)


def run(cfg: DictConfig) -> RunContext:
    """Run the configured mode; returns the context (run directory, record)."""
    ctx = prepare_run(cfg)
    try:
        return _run_stages(ctx)
    finally:
        ctx.lock.release()


def _run_stages(ctx: RunContext) -> RunContext:
    cfg = ctx.cfg
    mode = str(cfg.mode)
    selected = {s.name for s in stages_for_mode(mode)}
    t0 = time.perf_counter()
    upstream: str | None = None
    for stage in all_stages():
        if stage.name not in selected:
            if stage.in_pipeline and stage.enabled(ctx):  # keep the fingerprint chain of an existing run
                upstream = ctx.stage_record(stage.name).get("fingerprint", upstream)
            continue
        if not stage.enabled(ctx):
            LOG.info("%s: off (%s=none)", stage.name, stage.config_group)
            continue
        fp = stage.fingerprint(ctx, upstream)
        _run_stage(ctx, stage, fp, forced=stage.rerun_when_requested and mode == stage.name)
        upstream = fp
    ctx.record["history"][-1]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    ctx.record["history"][-1]["seconds"] = round(time.perf_counter() - t0, 2)
    ctx.save_record()
    LOG.info("mode=%s finished in %.1f s: %s", mode, time.perf_counter() - t0, ctx.run_dir)
    return ctx


def main(cfg: DictConfig) -> int:
    """Entry used by ``perf_runner.py``: one-line errors for every user-facing failure (exit code 2), 130 on Ctrl-C."""
    debug = os.environ.get("IMMERSIVEDEPTH_DEBUG") not in (None, "", "0")
    try:
        run(cfg)
    except KeyboardInterrupt as exc:
        LOG.warning("interrupted; completed outputs and the last checkpoint are kept (resume with is_continue=true)")
        return int(getattr(exc, "exit_code", 130))  # 130 for Ctrl-C, 143 for SIGTERM
    except ImmersiveDepthError as exc:
        if debug:
            raise
        if LOG.handlers and not getattr(exc, "logged", False):
            LOG.error("%s", one_line(exc), extra={"console": False})  # the console gets the message once, below
        print(f"error: {one_line(exc)}\n(set IMMERSIVEDEPTH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    return 0
