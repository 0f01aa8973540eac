"""Bad inputs and faults against the command line, as data: each :class:`Case` is one ``python perf_runner.py`` run.

Shared by ``tests/test_bad_input.py`` (one case per class of issue 12 at least, asserted strictly) and
``scripts/bad_input_matrix.py`` (the wide matrix, classified into totals). A case says how to prepare its folder,
which overrides to pass and what a correct outcome is: ``error`` (exit 2, one line naming ``patterns``) or ``ok``
(exit 0, the input handled), plus an optional ``check`` of the files afterwards (nothing lost, nothing half-written).

Inputs are tiny: a 64x32 render of the bundled synthetic room with its exact distance (``tiny_inputs``), a field
of a few thousand parameters trained for two steps (``TINY_FIELD``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from immersivedepth import io
from immersivedepth.scenes.synthetic import make_scene

REPO = Path(__file__).resolve().parents[1]
PANO_HW = (32, 64)

# A field small enough that two training steps take well under a second: what matters here is the run's
# control flow (configs, checkpoints, run.json), not the picture.
TINY_FIELD = [
    "inpaint=none",  # the inpainting stage refits the field: not what these cases are about
    "field=fast", "field.optim.steps=2", "field.optim.batch_rays=256", "field.optim.warmup_steps=1",
    "field.log.checkpoint_every=1", "field.log.log_every=1", "field.log.preview_every=0", "field.log.tensorboard=false",
    "field.model.density_grid.log2_hashmap_size=12", "field.model.color_grid.log2_hashmap_size=12",
    "field.model.density_grid.n_levels=4", "field.model.color_grid.n_levels=4",
    "field.model.density_grid.finest_resolution=64", "field.model.color_grid.finest_resolution=64",
    "field.grid.resolution=32", "field.grid.update_every=1", "field.grid.update_start=1",
]
# Rendering limited to one tiny pose and no exports (the poses file is written by the fixture).
TINY_RENDER = [
    "render=fast", "render.paths=[]", "render.export.field_mesh.enabled=false",
    "render.export.depth_mesh.enabled=false", "render.export.points.enabled=false",
]
RUN_SUBDIR = Path("exp") / "pano" / "default"  # <work>/exp/<scene = image stem "pano">/<exp_name>
TIMEOUT_S = 900


# ----------------------------------------------------------------------------------------------------------------------
# inputs


def tiny_inputs(folder: Path) -> dict[str, Path]:
    """A 64x32 panorama of the synthetic room + its exact distance, two encodings of it and a poses file."""
    folder.mkdir(parents=True, exist_ok=True)
    out = make_scene("living_room").render_panorama(*PANO_HW, supersample=2)
    paths = {"pano": folder / "pano.png", "dist": folder / "pano_distance.npy",
             "dist_mp3d": folder / "dist_mp3d.png", "poses": folder / "poses.json"}
    io.write_image(paths["pano"], out["rgb"])
    np.save(paths["dist"], out["distance"].astype(np.float32))
    # Matterport3D encoding (uint16, 1/4000 m): read with the wrong preset it is off by a constant factor
    Image.fromarray(np.round(out["distance"] * 4000).astype(np.uint16)).save(paths["dist_mp3d"])
    paths["poses"].write_text(json.dumps({"poses": [{"name": "p0", "position": [0.05, 0.0, 0.0], "width": 32,
                                                      "height": 16}]}))
    return paths


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 4x2 PNG whose header is rewritten to claim ``width`` x ``height`` (CRC recomputed)."""
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr: ihdr + 17])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def exr_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 4x2 RGB EXR whose data and display windows are rewritten to claim ``width`` x ``height``."""
    io.write_exr(path, np.ones((2, 4, 3), np.float32))
    data = bytearray(path.read_bytes())
    for name in (b"dataWindow\0box2i\0", b"displayWindow\0box2i\0"):
        at = data.index(name) + len(name) + 4  # after the attribute's name, type and 4-byte size
        data[at: at + 16] = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    path.write_bytes(bytes(data))
    return path


def tiff_entries(data: bytes) -> tuple[str, list[int]]:
    """A classic TIFF's byte order (struct prefix) and the offsets of its first directory's 12-byte entries."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (n,) = struct.unpack(order + "H", data[ifd: ifd + 2])
    return order, [ifd + 2 + 12 * k for k in range(n)]


def float_tiff_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 8x4 float32 RGB TIFF (Pillow cannot parse it; OpenCV decodes it) claiming ``width`` x ``height``."""
    import cv2

    cv2.imwrite(str(path), np.ones((4, 8, 3), np.float32))
    data = bytearray(path.read_bytes())
    order, entries = tiff_entries(data)
    for at in entries:
        tag, kind = struct.unpack(order + "HH", data[at: at + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            packed = struct.pack(order + "HH", value, 0) if kind == 3 else struct.pack(order + "I", value)
            data[at + 8: at + 12] = packed
    path.write_bytes(bytes(data))
    return path


def jpeg_with_orientation(path: Path, rgb_u8: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(rgb_u8)).save(path, quality=95, exif=exif.tobytes())
    return path


def two_tone(h: int = PANO_HW[0], w: int = PANO_HW[1]) -> np.ndarray:
    """(h,w,3) uint8: red upper half (sky side), blue lower half: shows at a glance whether a picture is upside down."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, :, 0] = 220
    img[h // 2:, :, 2] = 220
    return img


# ----------------------------------------------------------------------------------------------------------------------
# cases


@dataclass
class Env:
    """What a case's setup and check see: its own folder, the shared inputs, the run directory inside its folder."""

    work: Path
    inputs: dict[str, Path]
    trained: Path | None = None  # a template run directory trained with TINY_FIELD (copied in by ``needs_trained``)

    @property
    def run(self) -> Path:
        return self.work / RUN_SUBDIR


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Case:
    """One command-line run and what a correct outcome is.

    ``args``: overrides after ``--config-name nerf`` (``{work}``, ``{pano}``, ``{dist}`` ... are replaced);
    ``expect``: ``error`` (exit 2 + one message line matching every regex in ``patterns``) or ``ok`` (exit 0);
    ``setup(env)``: prepares files and may return context managers held open during the run;
    ``check(env, result)``: extra assertions on the files afterwards (raise AssertionError);
    ``signal_after``: a callable ``(env) -> bool`` polled while running; when true, SIGTERM is sent once.
    ``issue_class``: the class of issue 12 the case belongs to.
    """

    id: str
    issue_class: str
    args: Sequence[str]
    expect: str = "error"
    patterns: Sequence[str] = ()
    setup: Callable[[Env], Sequence | None] | None = None
    check: Callable[[Env, Result], None] | None = None
    needs_trained: bool = False
    expect_code: int | None = None
    signal_after: Callable[[Env], bool] | None = None
    env: dict[str, str] = field(default_factory=dict)
    slow: bool = False
    wiring: str | None = None  # what runner wiring the case still needs (xfail until the lead lands it)
    todo: str | None = None  # a defect outside the runner that is not fixed yet (xfail too)


def _fmt(text: str, env: Env) -> str:
    values = {"work": env.work, **env.inputs}
    return text.format(**{k: str(v) for k, v in values.items()})


def command(case: Case, env: Env) -> list[str]:
    base = [f"device.base_exp_dir={env.work / 'exp'}"]
    return [sys.executable, "perf_runner.py", "--config-name", "nerf", *base, *(_fmt(a, env) for a in case.args)]


def run_case(case: Case, env: Env) -> Result:
    """Prepare ``env.work``, run the command line, return what it printed and how it ended."""
    env.work.mkdir(parents=True, exist_ok=True)
    if case.needs_trained:
        assert env.trained is not None, f"{case.id} needs the trained template run"
        shutil.copytree(env.trained, env.run, symlinks=True)
    prepared = case.setup(env) if case.setup else None
    # a setup may return context managers to hold open during the run (one or several); other values are ignored
    many = prepared if isinstance(prepared, list | tuple) else [prepared]
    held = [c for c in many if c is not None and not isinstance(c, Path) and hasattr(c, "__enter__")]
    for ctx in held:
        ctx.__enter__()
    environ = {k: v for k, v in os.environ.items() if k != "IMMERSIVEDEPTH_DEBUG"}
    environ.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **{k: _fmt(v, env) for k, v in case.env.items()}})
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(command(case, env), cwd=REPO, env=environ, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if case.signal_after is not None:
            while proc.poll() is None and not case.signal_after(env) and time.monotonic() - t0 < TIMEOUT_S:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    finally:
        for ctx in reversed(held):
            ctx.__exit__(None, None, None)
    return Result(proc.returncode, out, err, time.monotonic() - t0)


def train_template(folder: Path, inputs: dict[str, Path]) -> Path:
    """A run directory trained with TINY_FIELD on the tiny panorama (depth + train stages done)."""
    env = Env(work=folder, inputs=inputs)
    case = Case("template", "-", ["dataset.image_path={pano}", "mode=train", *TINY_FIELD], expect="ok")
    result = run_case(case, env)
    if result.returncode != 0 or not (env.run / "checkpoints" / "last.pt").is_file():
        raise RuntimeError(f"training the template run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return env.run


# ----------------------------------------------------------------------------------------------------------------------
# outcome rules


def error_lines(result: Result) -> list[str]:
    """Lines the runner printed as its error (``error: ...``)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def temp_leftovers(env: Env) -> list[Path]:
    return [Path(d) / n for d, _, files in os.walk(env.work) for n in files if io.is_temp_name(n)]


def problems(case: Case, env: Env, result: Result) -> list[str]:
    """Everything wrong with the outcome (empty: the case passes). The matrix classifies by these words."""
    found = []
    text = result.stdout + result.stderr
    if "Traceback (most recent call last)" in text:
        found.append("traceback")
    if case.expect == "error":
        want = case.expect_code if case.expect_code is not None else 2
        if result.returncode != want:
            found.append(f"silent: exit {result.returncode}, expected {want}")
        lines = error_lines(result)
        if want == 2:
            if len(lines) != 1:
                found.append(f"vague: {len(lines)} error lines")
            else:
                msg = lines[0][len("error:"):].strip()
                missing = [p for p in case.patterns if not re.search(p, msg)]
                if missing:
                    found.append(f"vague: message {msg!r} lacks {missing}")
                if result.stderr.count(msg) != 1:
                    found.append("vague: the message is printed more than once")
    elif result.returncode != 0:
        found.append(f"failed: exit {result.returncode} ({(error_lines(result) or ['no error line'])[-1][:200]})")
    leftovers = temp_leftovers(env)
    if leftovers:
        found.append(f"lost: temp files left: {[p.name for p in leftovers]}")
    if case.check is not None:
        try:
            case.check(env, result)
        except AssertionError as exc:
            found.append(f"check: {exc}")
        except Exception as exc:  # noqa: BLE001 - e.g. an output the check reads is missing: the case fails, no crash
            found.append(f"check: {type(exc).__name__}: {exc}")
    return found


# ----------------------------------------------------------------------------------------------------------------------
# checks on files after a run


def _run_json(env: Env) -> dict:
    return json.loads((env.run / "run.json").read_text())


def _log(env: Env) -> str:
    path = env.run / "log.txt"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _interrupted_garbage(env: Env):
    """An interrupted run (train stage 'running') whose last.pt is garbage: resuming must load it and refuse."""
    mark_train_interrupted(env)
    (env.run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint at all")


def _checkpoint_kept(data: bytes):
    def check(env: Env, result: Result) -> None:
        assert (env.run / "checkpoints" / "last.pt").read_bytes()[: len(data)] == data, "last.pt was replaced"
    return check


def mark_train_interrupted(env: Env):
    """Mark the template's train stage as a run killed mid-training would leave it."""
    rec = _run_json(env)
    rec["stages"]["train"]["status"] = "running"
    (env.run / "run.json").write_text(json.dumps(rec))


def _interrupted_copy(env: Env):
    """An interrupted run whose checkpoint must survive a re-run: remember its bytes."""
    mark_train_interrupted(env)
    shutil.copyfile(env.run / "checkpoints" / "last.pt", env.work / "last.pt.before")


def _checkpoint_unchanged(env: Env, result: Result) -> None:
    now = env.run / "checkpoints" / "last.pt"
    assert now.is_file(), "last.pt was deleted"
    assert now.read_bytes() == (env.work / "last.pt.before").read_bytes(), "last.pt was replaced"


def _no_checkpoint(env: Env, result: Result) -> None:
    assert not (env.run / "checkpoints" / "last.pt").exists(), "an untrained checkpoint was written"


def _in_log(*needles: str):
    def check(env: Env, result: Result) -> None:
        log = _log(env)
        for needle in needles:
            assert needle in log, f"log.txt lacks {needle!r}"
            assert needle in result.stderr, f"the console lacks {needle!r}"
    return check


def _not_in_stderr(needle: str):
    def check(env: Env, result: Result) -> None:
        assert needle not in result.stderr, f"stderr shows {needle!r}"
    return check


def upright_points(env: Env, result: Result) -> None:
    """points.ply of a red-top / blue-bottom panorama: points above the centre must be red."""
    ply = io.read_ply(env.run / "depth" / "points.ply")
    up = ply["points"][:, 1] > 0.5
    red, blue = ply["colors"][up, 0].astype(float).mean(), ply["colors"][up, 2].astype(float).mean()
    assert red > blue, f"upper points are blue ({red:.0f} red vs {blue:.0f} blue): the panorama is upside down"


def _failed_status(env: Env, result: Result) -> None:
    stage = _run_json(env).get("stages", {}).get("depth", {})
    assert stage.get("status") == "failed", f"run.json says depth is {stage.get('status')!r}, not 'failed'"
    line = error_lines(result)[0][len("error:"):].strip() if error_lines(result) else "?"
    assert line in json.dumps(stage), "run.json lacks the error line"
    assert line in _log(env), "log.txt lacks the error line"


def _no_depth_outputs(env: Env, result: Result) -> None:
    written = sorted(p.name for p in (env.run / "depth").glob("*")) if (env.run / "depth").is_dir() else []
    assert not written, f"a refused depth stage left outputs: {written}"


def _nothing_outside(env: Env, result: Result) -> None:
    assert not (env.work / "escaped").exists(), "exp_name=../../escaped wrote outside device.base_exp_dir"


def _log_has_distance_stats(env: Env, result: Result) -> None:
    expected = io.distance_stats(io.read_distance(env.inputs["dist_mp3d"], "structured3d")).describe()
    assert expected in _log(env), f"log.txt lacks the distance statistics {expected!r}"


def _stale_temp(env: Env):
    (env.run / "checkpoints" / ".tmp-0123456789ab.last.pt").write_bytes(b"\0" * 100_000)


def _lock_run(env: Env):
    from immersivedepth.runlock import RunLock

    return [RunLock(env.run, command="perf_runner.py (the test holds this lock)")]


def _sigterm_saved(env: Env, result: Result) -> None:
    assert (env.run / "checkpoints" / "last.pt").is_file(), "SIGTERM saved no checkpoint"
    assert "is_continue=true" in result.stderr, "the console does not say how to resume"


def _training_started(env: Env) -> bool:
    return (env.run / "train" / "metrics.csv").is_file()


def _rgba_wide(env: Env):
    rgba = np.concatenate([np.full((32, 70, 3), 0.5, np.float32), np.full((32, 70, 1), 0.5, np.float32)], axis=2)
    io.write_image(env.work / "rgba wide.png", rgba)


def _exif3(env: Env):
    jpeg_with_orientation(env.work / "pano.jpg", two_tone()[::-1, ::-1], 3)
    np.save(env.work / "pano_distance.npy", np.full(PANO_HW, 2.0, np.float32))


def _exif6(env: Env):
    jpeg_with_orientation(env.work / "pano.jpg", np.rot90(two_tone(), k=1), 6)  # stored 32 wide, 64 high
    np.save(env.work / "pano_distance.npy", np.full(PANO_HW, 2.0, np.float32))


def _huge(env: Env):
    png_claiming(env.work / "huge.png", 100000, 50000)
    np.save(env.work / "huge_distance.npy", np.full(PANO_HW, 2.0, np.float32))


def _huge_exr(env: Env):
    exr_claiming(env.work / "huge.exr", 100000, 50000)
    np.save(env.work / "huge_distance.npy", np.full(PANO_HW, 2.0, np.float32))


def _dist_1hw(env: Env):
    np.save(env.work / "d1hw.npy", np.load(env.inputs["dist"])[None])


def _dist_3ch(env: Env):
    d = np.load(env.inputs["dist"])
    np.save(env.work / "d3.npy", np.stack([d, 2 * d, d], axis=-1))


def _file_as_exp_dir(env: Env):
    (env.work / "exp_file").write_text("a file where the output folder should go")


def _dir_as_image(env: Env):
    (env.work / "folder.png").mkdir()


def _wide_pair(env: Env):
    rgb = io.read_panorama(env.inputs["pano"])
    d = np.load(env.inputs["dist"])
    cols = np.minimum((np.arange(70) * 64) // 70, 63)
    io.write_image(env.work / "pano.png", rgb[:, cols])
    np.save(env.work / "pano_distance.npy", d[:, cols])


def _odd_path(env: Env):
    folder = env.work / "my pano é=1"
    folder.mkdir()
    shutil.copy(env.inputs["pano"], folder / "pano ü=2.png")
    shutil.copy(env.inputs["dist"], folder / "pano ü=2_distance.npy")


def _bad_pose(env: Env):
    (env.work / "poses.json").write_text(json.dumps({"poses": [{"name": "p0", "position": "abc"}]}))


def _foreign_photo(env: Env):
    rng = np.random.default_rng(0)
    io.write_image(env.work / "photo.png", rng.uniform(0, 1, (*PANO_HW, 3)).astype(np.float32))


def _empty_ckpt_dir(env: Env):
    (env.work / "ckpts").mkdir()


PANO = "dataset.image_path={pano}"
CASES: list[Case] = [
    # 1. tracebacks instead of the promised one-line error
    Case("corrupt_checkpoint", "traceback", [PANO, "mode=train", "is_continue=true", *TINY_FIELD],
         patterns=[r"last\.pt", r"exp_name|delete|remove|is_continue"], setup=_interrupted_garbage,
         check=_checkpoint_kept(b"not a checkpoint"), needs_trained=True),
    Case("num_threads_negative", "traceback", [PANO, "mode=depth", "device.num_threads=-1"],
         patterns=[r"device\.num_threads"]),
    Case("huge_png_header", "traceback", ["dataset.image_path={work}/huge.png", "mode=depth"], setup=_huge,
         patterns=[r"huge\.png", r"dataset\.max_pixels"]),
    Case("huge_exr_header", "traceback", ["dataset.image_path={work}/huge.exr", "mode=depth"], setup=_huge_exr,
         patterns=[r"huge\.exr", r"100000x50000", r"dataset\.max_pixels"]),
    Case("exp_dir_is_a_file", "traceback", [PANO, "mode=depth", "device.base_exp_dir={work}/exp_file"],
         setup=_file_as_exp_dir, patterns=[r"exp_file", r"device\.base_exp_dir"]),
    Case("log_every_zero", "traceback", [PANO, "mode=train", *TINY_FIELD, "field.log.log_every=0"],
         patterns=[r"field\.log\.log_every", r"> ?0|positive|at least 1"], check=_no_checkpoint),
    # 2. warnings that never reach the user
    Case("rgba_resampled_warnings", "warning",
         ["dataset.image_path='{work}/rgba wide.png'", "dataset.distance_path={dist}", "dataset.allow_resample=true",
          "dataset.scene_name=pano", "mode=depth"], expect="ok", setup=_rgba_wide,
         check=_in_log("has an alpha channel", "resampled to 64x32")),
    # 3. silent wrong results
    Case("exif_orientation_3", "silent", ["dataset.image_path={work}/pano.jpg", "mode=depth"], expect="ok",
         setup=_exif3, check=upright_points),
    Case("exif_orientation_6", "silent", ["dataset.image_path={work}/pano.jpg", "mode=depth"], expect="ok",
         setup=_exif6, check=upright_points),
    Case("steps_zero", "silent", [PANO, "mode=train", *TINY_FIELD, "field.optim.steps=0"],
         patterns=[r"field\.optim\.steps"], check=_no_checkpoint),
    Case("render_unfinished_training", "silent",
         [PANO, "mode=render_dense", "is_continue=true", *TINY_FIELD, *TINY_RENDER, "render.poses_file={poses}"],
         patterns=[r"train", r"is_continue=true|finish"], setup=mark_train_interrupted, needs_trained=True),
    Case("evaluate_missing_gt_dir", "silent",
         [PANO, "mode=evaluate", *TINY_FIELD, "evaluate.gt_dir={work}/no_such_dir"],
         patterns=[r"evaluate\.gt_dir", r"no_such_dir"], needs_trained=True),
    Case("distance_stats_logged", "silent",
         [PANO, "dataset.distance_path={dist_mp3d}", "dataset.distance_format=structured3d", "mode=depth"],
         expect="ok", check=_log_has_distance_stats),
    Case("checkpoints_env_var", "silent",
         ["dataset.image_path={work}/photo.png", "mode=depth", "depth.source=models", "depth.models=[dav2_vits]"],
         setup=lambda env: (_foreign_photo(env), _empty_ckpt_dir(env))[1],
         env={"IMMERSIVEDEPTH_CHECKPOINTS": "{work}/ckpts"}, patterns=[r"ckpts", r"depth_anything_v2_vits\.pth"]),
    # 4. lost work
    Case("rerun_without_continue", "lost", [PANO, "mode=train", *TINY_FIELD, "field.optim.steps=3"],
         patterns=[r"is_continue=true", r"exp_name"], setup=_interrupted_copy, needs_trained=True,
         check=_checkpoint_unchanged),
    Case("stale_temp_removed", "lost", [PANO, "mode=depth"], expect="ok", setup=_stale_temp, needs_trained=True),
    Case("concurrent_run_refused", "lost", [PANO, "mode=depth"], setup=_lock_run, needs_trained=True,
         patterns=[r"in use by pid \d+", r"exp_name|wait"]),
    Case("sigterm_saves_checkpoint", "lost",
         [PANO, "mode=train", *TINY_FIELD, "field.optim.steps=100000", "field.log.checkpoint_every=100000"],
         expect="error", expect_code=143, signal_after=_training_started, check=_sigterm_saved, slow=True),
    # 5. vague messages
    Case("num_threads_abc", "vague", [PANO, "mode=depth", "device.num_threads=abc"],
         patterns=[r"device\.num_threads", r"abc"]),
    Case("distance_scale_abc", "vague",
         [PANO, "dataset.distance_path={dist}", "dataset.distance_format={{scale: abc, invalid: 0}}", "mode=depth"],
         patterns=[r"dataset\.distance_format\.scale", r"abc"]),
    Case("distance_1hw", "vague", [PANO, "dataset.distance_path={work}/d1hw.npy", "mode=depth"], expect="ok",
         setup=_dist_1hw),
    Case("image_is_directory", "vague", ["dataset.image_path={work}/folder.png", "mode=depth"], setup=_dir_as_image,
         patterns=[r"folder\.png is a directory"]),
    Case("resample_keeps_distance", "vague", ["dataset.image_path={work}/pano.png", "dataset.allow_resample=true",
                                              "mode=depth"], expect="ok", setup=_wide_pair),
    Case("quoted_odd_path", "vague", ["dataset.image_path='{work}/my pano é=1/pano ü=2.png'", "mode=depth"],
         expect="ok", setup=_odd_path),
    Case("exp_name_escapes", "vague", [PANO, "mode=depth", "exp_name=../../escaped"], patterns=[r"exp_name"],
         check=_nothing_outside),
    Case("missing_image_once", "vague", ["dataset.image_path={work}/nope.png", "mode=depth"],
         patterns=[r"dataset\.image_path", r"nope\.png"]),
    Case("cuda_probe_silent", "vague",
         [PANO, "mode=render_dense", "is_continue=true", *TINY_FIELD, *TINY_RENDER, "render.poses_file={poses}"],
         expect="ok", needs_trained=True, check=_not_in_stderr("No CUDA runtime is found")),
    Case("pose_position_abc", "vague",
         [PANO, "mode=render_dense", "is_continue=true", *TINY_FIELD, *TINY_RENDER,
          "render.poses_file={work}/poses.json"],
         setup=_bad_pose, needs_trained=True, patterns=[r"poses\.json", r"position"]),
    Case("lr_negative", "vague", [PANO, "mode=train", *TINY_FIELD, "field.optim.lr=-1"],
         patterns=[r"field\.optim\.lr"], check=_no_checkpoint),
    # the failed stage status
    Case("failed_status_recorded", "failed-status", [PANO, "dataset.distance_path={work}/d3.npy", "mode=depth"],
         setup=_dist_3ch, patterns=[r"d3\.npy", r"different channels"], check=_failed_status),
    Case("oracle_foreign_photo", "silent",
         ["dataset.image_path={work}/photo.png", "mode=depth", "depth.source=models", "depth.models=[oracle]"],
         setup=_foreign_photo, patterns=[r"depth\.models", r"preset 'oracle'", r"living_room", r"checkpoint"],
         check=_no_depth_outputs),
]
