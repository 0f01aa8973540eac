"""ImmersiveDepth web app: upload a panorama, see its distance map, walk around it in 3D, train a radiance field.

    pip install -r requirements-app.txt
    python app.py                         # http://127.0.0.1:7860 (loopback only)
    python app.py --host 0.0.0.0 --port 7861 max_upload_mb=50   # your choice: reachable from other machines

Settings: ``configs/app.yaml`` (schema :class:`AppConfig`), overridden by ``key=value`` arguments.

How a job runs: the page's inputs are checked here (content type, size, dimensions, 2:1), copied into the job's own
folder ``<workdir>/jobs/<job id>/inputs/`` under names the app chooses, the pipeline's Hydra config is composed from
``configs/`` (``compose("nerf", overrides)``) and :func:`immersivedepth.runner.run` runs it with
``device.base_exp_dir=<job folder>/runs``. Progress bars are the stages' own tqdm bars
(``gr.Progress(track_tqdm=True)``).
A failing job shows its one-line error in the page's status line; the app keeps serving. Closing the page cancels
that session's running job (:class:`JobCancelled` is raised inside the job's thread) and deletes its folder.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import OpenEXR
from hydra import compose, initialize_config_dir
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image, UnidentifiedImageError

from immersivedepth import io, runner
from immersivedepth.depth.models.checkpoints import find_checkpoint
from immersivedepth.depth.models.presets import PRESETS
from immersivedepth.depth.registry import ORACLE_PRESETS
from immersivedepth.errors import ConfigError, ImmersiveDepthError, InputError, one_line
from immersivedepth.render.config import options_of
from immersivedepth.render.depth_mesh import DepthMeshOptions
from immersivedepth.render.splat import SplatOptions
from immersivedepth.render.stage import export_depth_products
from immersivedepth.stages.base import RunContext
from immersivedepth.stages.schema import register_configs

REPO = Path(__file__).resolve().parent
CONFIG_DIR = REPO / "configs"
APP_CONFIG = CONFIG_DIR / "app.yaml"
LOG = logging.getLogger("immersivedepth.app")

#: Job folder names the app creates (``<yyyymmdd-hhmmss>-<8 hex>``); nothing else under ``jobs/`` is touched.
JOB_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")
#: Content types accepted for the panorama and the reference distance (decided by the bytes, see :func:`sniff`).
PANORAMA_KINDS = ("png", "jpeg", "tiff", "exr")
DISTANCE_KINDS = ("npy", "exr", "png", "tiff")
EXR_MAGIC = b"\x76\x2f\x31\x01"
NPY_MAGIC = b"\x93NUMPY"
SCENE = "scene"  # every job's run folder is <job>/runs/scene/default/: the uploaded file name is never used
CONFIDENCE_CMAP = "viridis"  # confidence 0..1 as a picture (distance.png uses turbo: the two never look alike)
DISTANCE_FORMATS = ("auto", "npy", "exr", "matterport3d", "stanford2d3d", "structured3d", "pano3d")


@dataclass
class AppConfig:
    """Schema of ``configs/app.yaml`` (the values live there; see its comments)."""

    host: str = MISSING
    port: int = MISSING
    workdir: str = MISSING
    max_upload_mb: float = MISSING
    max_width: int = MISSING
    max_pixels: int = MISSING
    max_job_age_hours: float = MISSING
    max_jobs_total_mb: float = MISSING
    concurrency: int = MISSING
    queue_size: int = MISSING
    field_presets: list[str] = MISSING
    render_presets: list[str] = MISSING
    depth_render_preset: str = MISSING
    show_test_models: bool = MISSING
    cache_sweep_seconds: int = MISSING
    viewer_camera: list[float] = MISSING
    zip_exclude: list[str] = MISSING
    zip_level: int = MISSING
    examples: list[list[Any]] = MISSING


def load_app_config(overrides: Sequence[str] = (), path: Path = APP_CONFIG) -> AppConfig:
    """``configs/app.yaml`` merged over :class:`AppConfig` (types checked), then ``key=value`` overrides."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(AppConfig), OmegaConf.load(path),
                              OmegaConf.from_dotlist(list(overrides)))
        OmegaConf.to_container(cfg, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"app config {path}: {one_line(exc)}; fix the file or the key=value argument") from exc
    return OmegaConf.to_object(cfg)


# ------------------------------------------------------------------------------------------------ upload checks
@dataclass(frozen=True)
class Upload:
    """A checked upload: its content ``kind`` (``png``/``jpeg``/``tiff``/``exr``/``npy``), ``width`` and
    ``height`` read from its header (no pixel is decoded to learn them)."""

    path: Path
    kind: str
    width: int
    height: int


def _raster_header(path: Path) -> tuple[str, int, int] | None:
    """(kind, width, height) of a PNG/JPEG/TIFF from its header (Pillow reads only the header here), else None."""
    try:
        with Image.open(path) as im:
            fmt, (w, h) = im.format, im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    kinds = {"PNG": "png", "JPEG": "jpeg", "TIFF": "tiff"}
    return (kinds[fmt], w, h) if fmt in kinds else ("other:" + str(fmt), w, h)


def _exr_header(path: Path) -> tuple[int, int]:
    try:
        (x0, y0), (x1, y1) = OpenEXR.File(str(path), header_only=True).header()["dataWindow"]
    except Exception as exc:  # OpenEXR raises several types for a corrupt header
        raise InputError(f"{path.name}: the EXR header is corrupt ({one_line(exc, 120)}); re-export the file") from exc
    return int(x1 - x0 + 1), int(y1 - y0 + 1)


def _npy_header(path: Path, what: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
        except (ValueError, SyntaxError, OSError) as exc:
            raise InputError(f"{what}: the .npy header is corrupt; save the map with numpy.save") from exc
    if dtype.hasobject:
        raise InputError(f"{what}: the .npy file holds Python objects ({dtype}); only numeric arrays are read "
                         "(nothing in an upload is ever unpickled); save a float32 array")
    if len(shape) != 2 and not (len(shape) == 3 and shape[2] == 1):
        raise InputError(f"{what}: the .npy array has shape {shape}; a distance map is (height, width)")
    return int(shape[1]), int(shape[0])


def sniff(path: Path, what: str, allowed: Sequence[str]) -> Upload:
    """Identify an upload by its bytes; :class:`InputError` (one line naming ``what``) if it is not ``allowed``."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(EXR_MAGIC):
        kind, (w, h) = "exr", _exr_header(path)
    elif head.startswith(NPY_MAGIC):
        kind, (w, h) = "npy", _npy_header(path, what)
    else:
        found = _raster_header(path)
        if found is None:
            raise InputError(f"{what}: the file is not an image (not {'/'.join(k.upper() for k in allowed)} by its "
                             f"content, whatever its name); upload one of those")
        kind, w, h = found
    if kind not in allowed:
        raise InputError(f"{what}: a {kind.removeprefix('other:').upper()} file is not accepted here; upload "
                         f"{'/'.join(k.upper() for k in allowed)}")
    return Upload(path, kind, w, h)


def check_upload(path: str | os.PathLike, what: str, allowed: Sequence[str], cfg: AppConfig) -> Upload:
    """Size cap, content type, dimension caps of one uploaded file (nothing is decoded before the caps pass)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what}: the upload did not arrive (no file); upload it again")
    size_mb = p.stat().st_size / 2**20
    if size_mb > cfg.max_upload_mb:
        raise InputError(f"{what}: the file is {size_mb:.1f} MB, over the app's limit of {cfg.max_upload_mb:g} MB "
                         "(app key max_upload_mb); upload a smaller file")
    if p.stat().st_size == 0:
        raise InputError(f"{what}: the file is empty; upload it again")
    up = sniff(p, what, allowed)
    if up.width * up.height > cfg.max_pixels or up.width > cfg.max_width:
        raise InputError(f"{what}: {up.width}x{up.height} pixels is over the app's limit ({cfg.max_width} px wide, "
                         f"{cfg.max_pixels} pixels; app keys max_width, max_pixels); downscale it first")
    return up


def check_panorama(up: Upload, allow_resample: bool) -> None:
    """2:1 check (with the fix in the message) and a full decode, so a corrupt file fails here with one line."""
    if up.width != 2 * up.height and not allow_resample:
        raise InputError(f"panorama: {up.width}x{up.height} is not 2:1 (an equirectangular panorama is twice as wide "
                         f"as high); tick 'Resample to 2:1' to resize it, or upload a 360° panorama")
    try:
        io.read_panorama(up.path, allow_resample=allow_resample)
    except (ImmersiveDepthError, ValueError, OSError) as exc:
        raise InputError(f"panorama: the file cannot be decoded (corrupt or truncated {up.kind.upper()}); "
                         "re-export it and upload it again") from exc


# ------------------------------------------------------------------------------------------------ jobs
class JobCancelled(BaseException):
    """Raised inside a job's thread when its page is closed (a BaseException: no ``except Exception`` keeps it)."""


class Jobs:
    """Job folders under ``<workdir>/jobs`` and the jobs running now (one per browser session at most)."""

    def __init__(self, cfg: AppConfig):
        self.cfg = cfg
        self.root = (Path(cfg.workdir).expanduser() / "jobs").resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._running: dict[str, tuple[int, Path]] = {}  # session -> (thread id, job folder)

    def path(self, job_id: str) -> Path:
        """The folder of an existing job; :class:`InputError` for anything that is not one of ours."""
        if not isinstance(job_id, str) or not JOB_ID.match(job_id) or not (self.root / job_id).is_dir():
            raise InputError("no depth result in this page yet (or it was cleaned up): run the Depth tab first")
        return self.root / job_id

    def create(self) -> Path:
        self.cleanup()
        job = self.root / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        (job / "inputs").mkdir(parents=True)
        return job

    def _busy(self) -> set[Path]:
        with self._lock:
            return {p for _, p in self._running.values()}

    def cleanup(self, now: float | None = None) -> list[Path]:
        """Delete job folders older than ``max_job_age_hours``, then the oldest until the rest fit in
        ``max_jobs_total_mb``; running jobs are kept. Returns the deleted folders."""
        now = time.time() if now is None else now
        busy = self._busy()
        jobs = sorted((p for p in self.root.iterdir() if p.is_dir() and JOB_ID.match(p.name) and p not in busy),
                      key=lambda p: p.stat().st_mtime)
        deleted = []
        max_age = self.cfg.max_job_age_hours * 3600.0
        for p in list(jobs):
            if now - p.stat().st_mtime > max_age:
                shutil.rmtree(p, ignore_errors=True)
                jobs.remove(p)
                deleted.append(p)
        sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in jobs}
        total, budget = sum(sizes.values()), self.cfg.max_jobs_total_mb * 2**20
        for p in jobs:
            if total <= budget:
                break
            shutil.rmtree(p, ignore_errors=True)
            total -= sizes[p]
            deleted.append(p)
        if deleted:
            LOG.info("cleaned up %d old job folder(s)", len(deleted))
        return deleted

    def run(self, session: str, job: Path, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` as ``session``'s job; :meth:`cancel` from another thread interrupts it."""
        with self._lock:
            self._running[session] = (threading.get_ident(), job)
        try:
            return fn()
        finally:
            with self._lock:
                self._running.pop(session, None)
            os.utime(job)  # age counts from the last use

    def cancel(self, session: str) -> bool:
        """Interrupt ``session``'s running job (if any) by raising :class:`JobCancelled` in its thread. The
        exception arrives at the thread's next Python instruction (a long native operation finishes first)."""
        with self._lock:
            entry = self._running.pop(session, None)
            if entry is None:
                return False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(entry[0]), ctypes.py_object(JobCancelled))
        LOG.info("job %s cancelled: its page was closed", entry[1].name)
        return True


def remove_partial_files(folder: Path) -> None:
    """Delete temporary files a failed or cancelled job may leave (every output is written atomically, so only
    ``.tmp-*`` files can be partial)."""
    for p in folder.rglob(".tmp-*"):
        p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ pipeline
_COMPOSE_LOCK = threading.Lock()  # Hydra's global state allows one initialised config dir at a time


def compose_run_config(overrides: Sequence[str], values: dict[str, Any]) -> DictConfig:
    """The pipeline config: ``compose("nerf", overrides)`` from ``configs/``, then ``values`` (paths the app chose)
    set by dotted key (not through Hydra's override grammar, so no path can be misparsed)."""
    register_configs()  # the typed schemas the YAML presets build on (idempotent)
    with _COMPOSE_LOCK, initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("nerf", overrides=list(overrides))
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def depth_model_choices(cfg: AppConfig, checkpoint_dir: str | None) -> tuple[list[str], list[str]]:
    """(names of presets whose checkpoint file is present, lines for the missing ones: the file to download)."""
    available, missing = [], []
    for name, preset in PRESETS.items():
        try:
            find_checkpoint(preset, checkpoint_dir)
            available.append(name)
        except ImmersiveDepthError:
            missing.append(f"`{name}`: put `{preset.filename}` into `{checkpoint_dir}/` (download: {preset.url})")
    if cfg.show_test_models:
        available += list(ORACLE_PRESETS)
    return available, missing


@dataclass
class JobSpec:
    """What the Depth tab ran, kept in ``<job>/job.yaml`` so the Radiance field tab composes the same depth config
    (the runner then reuses the depth stage by its fingerprint)."""

    overrides: list[str]
    values: dict[str, Any]


def run_pipeline(spec: JobSpec, extra_overrides: Sequence[str] = ()) -> RunContext:
    cfg = compose_run_config([*spec.overrides, *extra_overrides], spec.values)
    return runner.run(cfg)


def _save_spec(job: Path, spec: JobSpec) -> None:
    with io.atomic_path(job / "job.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create({"overrides": spec.overrides, "values": spec.values})))


def _load_spec(job: Path) -> JobSpec:
    raw = OmegaConf.to_container(OmegaConf.load(job / "job.yaml"))
    return JobSpec(overrides=list(raw["overrides"]), values=dict(raw["values"]))


def prepare_depth_job(cfg: AppConfig, jobs: Jobs, panorama: str | None, reference: str | None, source: str,
                      models: Sequence[str], distance_format: str, allow_resample: bool) -> tuple[Path, JobSpec]:
    """Check the uploads, create the job folder, copy them in under the app's names -> (job folder, spec)."""
    if not panorama:
        raise InputError("panorama: no file uploaded; upload an equirectangular panorama or pick an example")
    if source not in ("auto", "reference", "models"):
        raise InputError(f"depth source {source!r} is not one of auto, reference, models")
    if distance_format not in DISTANCE_FORMATS:
        raise InputError(f"distance format {distance_format!r} is not one of {', '.join(DISTANCE_FORMATS)}")
    pano = check_upload(panorama, "panorama", PANORAMA_KINDS, cfg)
    check_panorama(pano, allow_resample)
    ref = check_upload(reference, "reference distance", DISTANCE_KINDS, cfg) if reference else None
    if ref is not None and (ref.width, ref.height) != (pano.width, pano.height):
        raise InputError(f"reference distance: {ref.width}x{ref.height} does not match the panorama's "
                         f"{pano.width}x{pano.height}; upload the distance map of this panorama")
    if source == "reference" and ref is None:
        raise InputError("depth source 'reference' needs a reference distance upload; upload one or choose 'models'")
    if (source == "models" or (source == "auto" and ref is None)) and not models:
        raise InputError("no depth model selected (and no reference distance): tick an available model, or upload "
                         "a reference distance; models without their checkpoint file are listed as unavailable")
    unknown = [m for m in models if m not in PRESETS and m not in ORACLE_PRESETS]
    if unknown:
        raise InputError(f"unknown depth model(s) {unknown}; choose among the listed models")
    job = jobs.create()
    pano_path = job / "inputs" / f"panorama.{pano.kind}"
    shutil.copyfile(pano.path, pano_path)
    values: dict[str, Any] = {
        "dataset.image_path": str(pano_path),
        "dataset.scene_name": SCENE,
        "dataset.distance_path": None,
        "device.base_exp_dir": str(job / "runs"),
    }
    if ref is not None:
        ref_path = job / "inputs" / f"reference.{ref.kind}"
        shutil.copyfile(ref.path, ref_path)
        values["dataset.distance_path"] = str(ref_path)
    overrides = ["mode=depth", f"depth.source={source}", f"dataset.allow_resample={str(bool(allow_resample)).lower()}",
                 f"dataset.distance_format={distance_format}", f"render={cfg.depth_render_preset}"]
    if models:
        overrides.append(f"depth.models=[{','.join(models)}]")
    spec = JobSpec(overrides, values)
    _save_spec(job, spec)
    return job, spec


def depth_products(ctx: RunContext, job: Path) -> dict[str, Path]:
    """After ``mode=depth``: depth mesh (textured GLB for the viewer), PLY, splat and a confidence picture."""
    depth, export = ctx.run_dir / "depth", ctx.run_dir / "export"
    distance = np.load(depth / "distance.npy")
    normals = np.load(depth / "normals.npy")
    rgb = io.read_panorama(ctx.image_path, allow_resample=bool(ctx.cfg.dataset.allow_resample))
    ex = ctx.cfg.render.export
    export_depth_products(export, rgb, distance, normals,
                          depth_mesh_options=options_of(DepthMeshOptions, ex.depth_mesh),
                          formats=("glb", "ply"), points=False, textured=True, splat=True,
                          splat_options=options_of(SplatOptions, ex.splat))
    conf = job / "app" / "confidence.png"  # <job>/app/: files the app makes itself
    io.write_image(conf, io.colorize(np.load(depth / "confidence.npy"), cmap=CONFIDENCE_CMAP, vmin=0.0, vmax=1.0))
    return {
        "distance": depth / "distance.png", "normals": depth / "normals.png", "confidence": conf,
        "mesh": export / "depth_mesh_textured.glb", "splat": export / "scene_splat.ply",
        "downloads": [depth / "distance.exr", depth / "distance.npy", export / "depth_mesh.glb",
                      export / "depth_mesh.ply", export / "scene_splat.ply", depth / "points.ply"],
    }


def zip_folder(folder: Path, out: Path, exclude: Sequence[str] = (), level: int = zipfile.ZIP_DEFLATED) -> Path:
    """``folder`` (recursively) -> ``out`` (zip named ``<folder name>/...``, written atomically). Temporary files and
    paths matching an ``exclude`` glob (relative to ``folder``, e.g. ``checkpoints/step_*.pt``) are skipped;
    ``level`` is the deflate level (1: fast; meshes and checkpoints barely compress anyway)."""
    with io.atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED,
                                                     compresslevel=level) as zf:
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(folder)
            if f.is_file() and not f.name.startswith(".tmp-") and not any(rel.match(g) for g in exclude):
                zf.write(f, f.relative_to(folder.parent))
    return out


# ------------------------------------------------------------------------------------------------ handlers
def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or f"local-{threading.get_ident()}"


def _error(msg: str) -> str:
    return f"**Error:** {msg}"


#: Failures shown as their one line (what ``runner.main`` prints without a traceback); anything else is a bug.
USER_ERRORS = (ImmersiveDepthError,)


def guarded_job(jobs: Jobs, session: str, job: Path, fn: Callable[[], Any], *, drop_on_failure: bool) -> Any:
    """Run ``fn`` as a job: user errors and cancellation become :class:`InputError`-like one-liners (re-raised as
    :class:`JobFailed`), partial files are removed, and a first job that failed leaves no folder behind."""
    try:
        return jobs.run(session, job, fn)
    except JobCancelled:
        shutil.rmtree(job, ignore_errors=True)
        raise JobFailed("the job was cancelled (its page was closed)") from None
    except USER_ERRORS as exc:
        msg = one_line(exc)
    except Exception as exc:  # a bug: keep serving, log the traceback, say where it is
        LOG.exception("job %s failed", job.name)
        msg = f"internal error ({type(exc).__name__}) in job {job.name}; the server log has the traceback"
    remove_partial_files(job)
    if drop_on_failure:
        shutil.rmtree(job, ignore_errors=True)
    raise JobFailed(msg)


class JobFailed(Exception):
    """A job ended without results; ``str()`` is the line shown in the page."""


class App:
    """The page's handlers (plain methods: the tests call them without a browser)."""

    def __init__(self, cfg: AppConfig):
        self.cfg = cfg
        self.jobs = Jobs(cfg)
        base = compose_run_config([], {})
        self.checkpoint_dir = base.depth.get("checkpoint_dir")
        self.models, self.missing_models = depth_model_choices(cfg, self.checkpoint_dir)
        self.has_inpaint = (CONFIG_DIR / "inpaint").is_dir()

    def on_depth(self, panorama, reference, source, models, distance_format, allow_resample,
                 request: gr.Request | None = None, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        """Depth tab -> (job id, distance, normals, confidence, mesh, splat, downloads, status)."""
        empty = (None,) * 7
        session = _session(request)
        try:
            job, spec = prepare_depth_job(self.cfg, self.jobs, panorama, reference, source, list(models or []),
                                          distance_format, bool(allow_resample))
        except InputError as exc:
            return (*empty, _error(one_line(exc)))
        progress(0.0, desc="depth")
        try:
            out = guarded_job(self.jobs, session, job, lambda: depth_products(run_pipeline(spec), job),
                              drop_on_failure=True)
        except JobFailed as exc:
            return (*empty, _error(str(exc)))
        status = f"Done: job `{job.name}`. Distance in the units of the input (relative without a reference)."
        return (job.name, str(out["distance"]), str(out["normals"]), str(out["confidence"]), str(out["mesh"]),
                str(out["splat"]), [str(p) for p in out["downloads"] if p.is_file()], status)

    def on_field(self, job_id, field_preset, render_preset, inpaint_preset, request: gr.Request | None = None,
                 progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        """Radiance field tab -> (video, field mesh, downloads, status)."""
        empty = (None,) * 3
        try:
            job = self.jobs.path(job_id)
            for name, value, allowed in (("field preset", field_preset, self.cfg.field_presets),
                                         ("render preset", render_preset, self.cfg.render_presets)):
                if value not in allowed:
                    raise InputError(f"{name} {value!r} is not one of {', '.join(allowed)}")
        except InputError as exc:
            return (*empty, _error(one_line(exc)))
        extra = ["mode=all", f"field={field_preset}", f"render={render_preset}"]
        if self.has_inpaint and inpaint_preset:
            extra.append(f"inpaint={inpaint_preset}")
        progress(0.0, desc="radiance field")

        def work():
            ctx = run_pipeline(_load_spec(job), extra)
            return ctx.run_dir, zip_folder(ctx.run_dir, job / "app" / "run.zip", self.cfg.zip_exclude,
                                           self.cfg.zip_level)

        try:
            run_dir, zipped = guarded_job(self.jobs, _session(request), job, work, drop_on_failure=False)
        except JobFailed as exc:
            return (*empty, _error(str(exc)))
        export = run_dir / "export"
        videos = sorted((run_dir / "render").glob("*/video.mp4"))
        files = [export / f"mesh.{f}" for f in ("glb", "ply", "obj")] + [
            export / "depth_mesh.glb", export / "scene_splat.ply", zipped]
        mesh = export / "mesh.glb"
        return (str(videos[0]) if videos else None, str(mesh) if mesh.is_file() else None,
                [str(p) for p in files if p.is_file()], f"Done: job `{job.name}`.")

    def on_page_closed(self, request: gr.Request | None = None) -> None:
        self.jobs.cancel(_session(request))

    # -------------------------------------------------------------------------------------------- layout
    def build(self) -> gr.Blocks:
        with gr.Blocks(title="ImmersiveDepth", analytics_enabled=False,
                       delete_cache=(self.cfg.cache_sweep_seconds, int(self.cfg.max_job_age_hours * 3600))) as demo:
            gr.Markdown("# ImmersiveDepth\nOne 360° equirectangular panorama → distance map → 3D scene → novel views.")
            job_id = gr.State(None)
            with gr.Tab("Depth"):
                with gr.Row():
                    with gr.Column():
                        pano = gr.File(label="Panorama (PNG, JPEG, TIFF or EXR; 2:1)", elem_id="panorama",
                                       file_types=[".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr"])
                        ref = gr.File(label="Reference distance (optional: NPY, EXR, 16-bit PNG, TIFF)",
                                      elem_id="reference", file_types=[".npy", ".exr", ".png", ".tif", ".tiff"])
                        source = gr.Radio(["auto", "reference", "models"], value="auto", label="Depth source")
                        models = gr.CheckboxGroup(self.models, value=self.models[:2], label="Depth models")
                        if not self.models:
                            gr.Markdown("No depth network is installed: upload a reference distance, or add a "
                                        "checkpoint file (below) and restart the app.")
                        if self.missing_models:
                            with gr.Accordion(f"Unavailable depth models ({len(self.missing_models)}): checkpoint "
                                              "file missing", open=False, elem_id="unavailable"):
                                gr.Markdown("\n".join(f"- {m}" for m in self.missing_models))
                        fmt = gr.Dropdown(list(DISTANCE_FORMATS), value="auto", label="Reference distance encoding")
                        resample = gr.Checkbox(False, label="Resample to 2:1 (if the image is not 2:1)")
                        go = gr.Button("Estimate depth", variant="primary", elem_id="run-depth")
                        examples = [[str(REPO / p) if p else None for p in ex] for ex in self.cfg.examples]
                        gr.Examples(examples, inputs=[pano, ref], label="Bundled examples")
                    with gr.Column():
                        status = gr.Markdown(elem_id="depth-status")
                        dist = gr.Image(label="Distance", type="filepath", interactive=False, elem_id="distance")
                        with gr.Row():
                            nrm = gr.Image(label="Normals", type="filepath", interactive=False)
                            conf = gr.Image(label="Confidence", type="filepath", interactive=False)
                        mesh = gr.Model3D(label="Depth mesh (drag to look around)", elem_id="depth-mesh",
                                          camera_position=tuple(self.cfg.viewer_camera))
                        splat = gr.Model3D(label="Gaussian splat", elem_id="splat")
                        files = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                        elem_id="depth-downloads")
                go.click(self.on_depth, [pano, ref, source, models, fmt, resample],
                         [job_id, dist, nrm, conf, mesh, splat, files, status], concurrency_limit=self.cfg.concurrency)
            with gr.Tab("Radiance field"):
                gr.Markdown("Trains a radiance field on the panorama of the Depth tab, then renders camera paths "
                            "and meshes (minutes on a CPU).")
                fp = gr.Radio(self.cfg.field_presets, value=self.cfg.field_presets[0], label="Training preset")
                rp = gr.Radio(self.cfg.render_presets, value=self.cfg.render_presets[0], label="Render preset")
                if self.has_inpaint:
                    ip = gr.Radio(["none", "fast", "default"], value="none", label="Fill unseen regions")
                else:
                    ip = gr.State(None)
                    gr.Markdown("Filling unseen regions is not part of this version.")
                go2 = gr.Button("Train and render", variant="primary", elem_id="run-field")
                status2 = gr.Markdown(elem_id="field-status")
                video = gr.Video(label="Camera path", interactive=False)
                fmesh = gr.Model3D(label="Radiance-field mesh")
                files2 = gr.File(label="Downloads (meshes, splat, run folder as zip)", file_count="multiple",
                                 interactive=False)
                go2.click(self.on_field, [job_id, fp, rp, ip], [video, fmesh, files2, status2],
                          concurrency_limit=self.cfg.concurrency)
            demo.unload(self.on_page_closed)
        demo.queue(default_concurrency_limit=self.cfg.concurrency, max_size=self.cfg.queue_size)
        return demo


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(description="ImmersiveDepth web app (settings: configs/app.yaml; key=value "
                                             "arguments override them)")
    ap.add_argument("--host", help="address to bind (default from configs/app.yaml: 127.0.0.1, loopback only)")
    ap.add_argument("--port", type=int, help="port (default 7860)")
    ap.add_argument("--workdir", help="folder for the job folders (default app_work)")
    ap.add_argument("overrides", nargs="*", help="app settings as key=value, e.g. max_upload_mb=50")
    args = ap.parse_args(argv)
    overrides = list(args.overrides)
    for key in ("host", "port", "workdir"):
        if getattr(args, key) is not None:
            overrides.append(f"{key}={getattr(args, key)}")
    return args, overrides


def main(argv: Sequence[str] | None = None) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[app] %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False  # the runner's own console handler on "immersivedepth" prints the stages' lines once
    _, overrides = parse_args(argv)
    try:
        cfg = load_app_config(overrides)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    workdir = Path(cfg.workdir).expanduser().resolve()
    # Gradio's own upload/output cache lives inside the working directory too
    os.environ.setdefault("GRADIO_TEMP_DIR", str(workdir / "gradio_cache"))
    app = App(cfg)
    app.build().launch(server_name=cfg.host, server_port=cfg.port, max_file_size=int(cfg.max_upload_mb * 2**20),
                       allowed_paths=[str(app.jobs.root)], show_error=False, footer_links=[])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
