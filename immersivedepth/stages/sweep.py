"""Many panoramas: the folder/glob form of a sweep, threads per job, and one job that never stops the sweep.

``perf_runner.py -m dataset.image_path=a.jpg,b.jpg`` is Hydra's own sweep. The folder form
``dataset.image_dir=DIR [dataset.glob='*.jpg']`` is expanded here into that same override *before* Hydra parses the
command line (:func:`expand_image_dir`), so every launcher (basic, joblib, submitit) sees an ordinary sweep.

In a multirun each job runs :func:`run_sweep_job`: a failing panorama becomes a recorded ``failed`` status with its
one-line error instead of an exit, and every job writes ``<hydra.sweep.dir>/<job>/status.json`` (first ``running``,
then ``done`` / ``failed``) for :mod:`immersivedepth.stages.summary`. A job killed from outside (out of memory,
SLURM time limit) leaves ``running`` behind, which the summary reports as not finished.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from immersivedepth import io
from immersivedepth.errors import ConfigError, ImmersiveDepthError, InputNotFoundError, one_line
from immersivedepth.stages.runner import run, scene_name_for

LOG = logging.getLogger("immersivedepth.sweep")

IMAGE_DIR_KEY = "dataset.image_dir"
GLOB_KEY = "dataset.glob"
IMAGE_PATH_KEY = "dataset.image_path"
MULTIRUN_FLAGS = ("-m", "--multirun")
# Panorama files a folder sweep picks up when dataset.glob is not given (io.read_panorama reads all of them).
PANORAMA_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")
DISTANCE_STEM_SUFFIX = "_distance"  # <stem>_distance.* beside an image is its reference distance, not a panorama
STATUS_FILE = "status.json"
# Errors a user can fix (bad file, bad key): recorded as the job's one-line error. The builtin types are here because
# some readers in io.py still raise them for bad files (e.g. a distance preset that does not match the encoding).
USER_ERRORS = (ImmersiveDepthError, FileNotFoundError, ValueError)


# --------------------------------------------------------------------------- folder form -> sweep override
def _strip_quotes(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _hydra_quote(path: Path) -> str:
    """One element of a Hydra sweep list: a single-quoted string (commas, spaces, '=' in names stay literal)."""
    text = str(path)
    if "\\" in text:
        raise InputNotFoundError(f"{IMAGE_DIR_KEY}: the file name {text!r} contains a backslash, which a Hydra "
                                 f"sweep cannot carry; rename it or pass it as {IMAGE_PATH_KEY}=...")
    return "'" + text.replace("'", "\\'") + "'"


def list_panoramas(image_dir: Path, pattern: str | None) -> list[Path]:
    """Sorted panoramas of ``image_dir`` matching ``pattern`` (default: the :data:`PANORAMA_SUFFIXES`), without the
    ``<stem>_distance.*`` reference distances of images in the same list."""
    if not image_dir.is_dir():
        raise InputNotFoundError(f"{IMAGE_DIR_KEY}={image_dir} is not a folder; give the folder of the panoramas")
    if pattern:
        files = [p for p in image_dir.glob(pattern) if p.is_file()]
    else:
        files = [p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in PANORAMA_SUFFIXES]
    stems = {p.stem for p in files}
    files = [p for p in files
             if not (p.stem.endswith(DISTANCE_STEM_SUFFIX) and p.stem[: -len(DISTANCE_STEM_SUFFIX)] in stems)]
    if not files:
        what = f"{GLOB_KEY}={pattern!r}" if pattern else f"any of {', '.join(PANORAMA_SUFFIXES)}"
        raise InputNotFoundError(f"{IMAGE_DIR_KEY}={image_dir}: no panorama matches {what}; "
                                 "check the folder and the pattern")
    return sorted(p.absolute() for p in files)  # absolute: jobs may start elsewhere (submitit, SLURM nodes)


def expand_image_dir(argv: Sequence[str]) -> list[str]:
    """Command-line arguments with ``dataset.image_dir=DIR [dataset.glob=PATTERN]`` replaced by the sweep
    ``dataset.image_path='DIR/a.png','DIR/b.png'`` (and ``-m`` added); other arguments pass through unchanged."""
    args = list(argv)
    found: dict[str, tuple[int, str]] = {}
    for i, arg in enumerate(args):
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in (IMAGE_DIR_KEY, GLOB_KEY):
            found[key.lstrip("+")] = (i, _strip_quotes(value))
    if IMAGE_DIR_KEY not in found:
        if GLOB_KEY in found:
            raise ConfigError(f"{GLOB_KEY} is set but {IMAGE_DIR_KEY} is not; give the folder too")
        return args
    if any(a.partition("=")[0].lstrip("+") == IMAGE_PATH_KEY for a in args):
        raise ConfigError(f"give either {IMAGE_DIR_KEY} (a folder) or {IMAGE_PATH_KEY} (files), not both")
    image_dir = Path(found[IMAGE_DIR_KEY][1]).expanduser()
    pattern = found[GLOB_KEY][1] if GLOB_KEY in found else None
    files = list_panoramas(image_dir, pattern or None)
    drop = {i for i, _ in found.values()}
    out = [a for i, a in enumerate(args) if i not in drop]
    out.append(f"{IMAGE_PATH_KEY}=" + ",".join(_hydra_quote(p) for p in files))
    if not any(a in MULTIRUN_FLAGS for a in out):
        out.insert(0, MULTIRUN_FLAGS[0])
    return out


# --------------------------------------------------------------------------- threads per job
def threads_per_job(launcher: Mapping[str, Any], cpu_count: int) -> int | None:
    """Torch threads for one job of ``launcher`` (``hydra.launcher``) so that jobs x threads <= ``cpu_count``.

    joblib: ``cpu_count // n_jobs`` (joblib's ``n_jobs=-1`` means all CPUs, ``-2`` all but one, ...); submitit:
    ``cpus_per_task`` when set; otherwise ``None`` (one job at a time: torch's default).
    """
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n = int(launcher.get("n_jobs") or 1)
        if n < 0:
            n = max(1, cpu_count + 1 + n)
        return max(1, cpu_count // n)
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher["cpus_per_task"])
    return None


# --------------------------------------------------------------------------- one job of a sweep
def _expected_run_dir(cfg: DictConfig) -> Path | None:
    if cfg.dataset.image_path in (None, ""):
        return None
    scene = scene_name_for(Path(str(cfg.dataset.image_path)).expanduser(), cfg.dataset.scene_name)
    return Path(str(cfg.device.base_exp_dir)).expanduser() / scene / str(cfg.exp_name)


def _stage_records(run_dir: Path | None) -> dict:
    rj = run_dir / "run.json" if run_dir is not None else None
    if rj is None or not rj.is_file():
        return {}
    try:
        return json.loads(rj.read_text()).get("stages", {})
    except (json.JSONDecodeError, OSError):
        return {}


def write_status(path: Path, status: Mapping[str, Any]) -> None:
    with io.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(status, indent=2, default=str) + "\n")


def run_sweep_job(cfg: DictConfig, status_dir: Path, launcher: Mapping[str, Any], job: Mapping[str, Any]) -> dict:
    """Run one panorama of a sweep; never raises for a user error or a bug (the next panorama must run).

    ``status_dir``: this job's folder (``hydra.runtime.output_dir``); ``launcher``: ``hydra.launcher``;
    ``job``: ``{"num": .., "override_dirname": ..}``. Returns (and writes to ``status_dir/status.json``) the status.
    """
    status_path = status_dir / STATUS_FILE
    run_dir = _expected_run_dir(cfg)
    status: dict[str, Any] = {
        "panorama": None if cfg.dataset.image_path is None else str(cfg.dataset.image_path),
        "mode": str(cfg.mode),
        "job": dict(job),
        "run_dir": None if run_dir is None else str(run_dir),
        "status": "running",
        "error": "",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pid": os.getpid(),
    }
    write_status(status_path, status)
    threads = threads_per_job(launcher, os.cpu_count() or 1)
    if threads is not None and cfg.device.get("num_threads") in (None, 0):
        with open_dict(cfg):
            cfg.device.num_threads = threads
    status["threads"] = cfg.device.get("num_threads")
    before = _stage_records(run_dir)
    t0 = time.perf_counter()
    try:
        ctx = run(cfg)
    except KeyboardInterrupt:
        status.update(status="failed", error="interrupted")
        write_status(status_path, status)
        raise
    except USER_ERRORS as exc:
        status.update(status="failed", error=one_line(exc))
        LOG.error("%s: %s", status["panorama"], status["error"])
    except Exception as exc:  # a bug, not bad input: keep the sweep going, the traceback goes to the log
        LOG.exception("%s: unexpected error", status["panorama"])
        status.update(status="failed", error=f"internal error {type(exc).__name__}: {one_line(exc)} "
                                               "(a bug; the traceback is in the log)")
    else:
        after = ctx.record.get("stages", {})
        status.update(status="done", run_dir=str(ctx.run_dir),
                      stages_run=[s for s in after if after[s] != before.get(s)],
                      stages_reused=[s for s in after if after[s] == before.get(s)])
    status["seconds"] = round(time.perf_counter() - t0, 2)
    status["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_status(status_path, status)
    return status


def check_not_expanded(cfg: DictConfig) -> None:
    """``dataset.image_dir`` reaches a job only when it was not given on perf_runner.py's command line."""
    if OmegaConf.select(cfg, IMAGE_DIR_KEY) is not None:
        raise ConfigError(f"{IMAGE_DIR_KEY} is expanded on perf_runner.py's command line only; pass it there "
                          f"(python perf_runner.py {IMAGE_DIR_KEY}=DIR {GLOB_KEY}='*.jpg'), not in a config file")
