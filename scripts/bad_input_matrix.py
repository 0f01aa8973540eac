"""The wide bad-input matrix of issue 12: well over 100 bad inputs and faults against ``python perf_runner.py``.

    python scripts/bad_input_matrix.py [--jobs 2] [--only ID,ID] [--list] [--verbose] [--json out.json]

Every case is one command-line run on tiny inputs (a 64x32 panorama, a field trained for two steps). Each outcome
is classified as: ``clear error`` (exit 2, one line naming the key or file and what to do), ``handled`` (exit 0, the
input used correctly), ``traceback``, ``silent wrong`` (exit 0 or a wrong result where an error or a different
result was due), ``lost data`` (outputs deleted/replaced, temp files left, nothing saved on SIGTERM), ``vague``
(an error line that does not name the key/file or what to do, or printed twice), ``refused`` (a valid input
rejected); ``harness error``: the case's own setup or check raised (a bug of the matrix, not of the product; the
other cases still run). The totals go to BENCHMARKS.md; ``--verbose`` prints each case's problems and error line.

The matrix = the suite's cases (``tests/bad_input_cases.py``) + families generated here (every count and interval
of the field config at 0 / -1 / a word, image and distance file defects, config values, checkpoints, poses files,
nerfstudio paths, faults). Runs take a few minutes on an idle 2-core machine (``--jobs`` subprocesses at once).
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import struct
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bad_input_cases import (  # noqa: E402
    CASES,
    PANO_HW,
    TINY_FIELD,
    TINY_RENDER,
    Case,
    Env,
    Result,
    error_lines,
    exr_claiming,
    float_tiff_claiming,
    jpeg_with_orientation,
    mark_train_interrupted,
    png_claiming,
    problems,
    run_case,
    tiny_inputs,
    train_template,
    two_tone,
    upright_points,
)

from immersivedepth import io  # noqa: E402

PANO = "dataset.image_path={pano}"
CATEGORIES = ("clear error", "handled", "traceback", "silent wrong", "lost data", "vague", "refused", "harness error")
CHECK_CATEGORY = {"lost": "lost data", "traceback": "lost data", "silent": "silent wrong", "warning": "silent wrong",
                  "vague": "vague", "failed-status": "vague"}


def classify(case: Case, found: list[str]) -> str:
    """The one category of an outcome from its problems (see the module doc); worst first."""
    if not found:
        return "clear error" if case.expect == "error" else "handled"
    if any(p == "traceback" for p in found):
        return "traceback"
    if any(p.startswith("lost:") for p in found):
        return "lost data"
    if any(p.startswith("silent:") for p in found):
        return "lost data" if case.issue_class == "lost" else "silent wrong"
    if any(p.startswith("check:") for p in found):
        return CHECK_CATEGORY.get(case.issue_class, "silent wrong")
    if any(p.startswith("failed:") for p in found):
        return "refused"
    return "vague"


# ----------------------------------------------------------------------------------------------------------------------
# generated families


def _write(name: str, data: bytes):
    def setup(env: Env):
        (env.work / name).write_bytes(data)
    return setup


def _image(name: str, array: np.ndarray):
    def setup(env: Env):
        io.write_image(env.work / name, array)
    return setup


def _npy(name: str, make):
    def setup(env: Env):
        np.save(env.work / name, make(np.load(env.inputs["dist"])), allow_pickle=True)
    return setup


def _copy_pano_as(name: str, transform=None):
    def setup(env: Env):
        rgb = io.read_panorama(env.inputs["pano"])
        io.write_image(env.work / name, transform(rgb) if transform else rgb)
    return setup


def _truncated_png(env: Env):
    data = env.inputs["pano"].read_bytes()
    (env.work / "trunc.png").write_bytes(data[: len(data) // 2])


def _ckpt(kind: str):
    """An interrupted run (so resuming loads last.pt) whose last.pt is damaged / foreign."""
    def setup(env: Env):
        mark_train_interrupted(env)
        last = env.run / "checkpoints" / "last.pt"
        data = last.read_bytes()
        if kind == "truncated":
            last.write_bytes(data[: len(data) // 2])
        elif kind == "empty":
            last.write_bytes(b"")
        elif kind == "malicious":
            class Boom:
                def __reduce__(self):
                    return (print, ("this code ran while loading a checkpoint",))
            last.write_bytes(pickle.dumps({"payload": Boom()}))
        elif kind == "directory":
            last.unlink()
            last.mkdir()
    return setup


def _ckpt_kept(env: Env, result: Result) -> None:
    assert (env.run / "checkpoints" / "last.pt").exists(), "last.pt was deleted"
    assert "this code ran" not in result.stdout + result.stderr, "a checkpoint executed code while loading"


def _poses(name: str, data):
    def setup(env: Env):
        text = data if isinstance(data, str) else json.dumps(data)
        (env.work / name).write_text(text)
    return setup


def _run_json_garbage(env: Env):
    (env.run / "run.json").write_text("{not json")


# stored pixels that a viewer shows as the upright picture under each EXIF orientation
EXIF_STORED = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
               5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, 1),
               7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1], 8: lambda a: np.rot90(a, -1)}


def _exif(orientation: int):
    def setup(env: Env):
        stored = np.ascontiguousarray(EXIF_STORED[orientation](two_tone()))
        jpeg_with_orientation(env.work / f"e{orientation}.jpg", stored, orientation)
    return setup


def _tiff_orientation(orientation: int):
    """A TIFF whose own Orientation tag turns the stored pixels into the upright two-tone picture."""
    def setup(env: Env):
        stored = np.ascontiguousarray(EXIF_STORED[orientation](two_tone()))
        Image.fromarray(stored).save(env.work / f"t{orientation}.tif", tiffinfo={0x0112: orientation})
    return setup


def _pano_16bit(env: Env):
    io.write_image(env.work / "p16.png", (io.read_panorama(env.inputs["pano"]) * 65535).astype(np.uint16))


def _huge_jpeg(env: Env):
    """A valid 16x8 JPEG whose frame header claims 60000x30000."""
    path = env.work / "huge.jpg"
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", 30000, 60000)
    path.write_bytes(bytes(data))


def _remove_checkpoints(env: Env):
    shutil.rmtree(env.run / "checkpoints")


FIELD_COUNTS = [
    "field.optim.steps", "field.optim.batch_rays", "field.log.log_every", "field.log.checkpoint_every",
    "field.log.eval_stride", "field.log.eval_chunk", "field.grid.update_every",
    "field.grid.resolution", "field.sampling.band_samples", "field.model.density_grid.n_levels",
    "field.model.color_mlp.width",
]
FIELD_POSITIVE_REALS = ["field.optim.lr", "field.sampling.band_rel", "field.grid.decay"]


def generated_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    train = [PANO, "mode=train", *TINY_FIELD]
    # counts and intervals: 0, -1 and a word must each be refused naming the key
    for key in FIELD_COUNTS:
        for value in ("0", "-1", "abc"):
            add(Case(f"{key}={value}", "traceback" if value == "0" else "vague", [*train, f"{key}={value}"],
                     patterns=[key.replace(".", r"\.")]))
    for key in FIELD_POSITIVE_REALS:
        for value in ("-1", "abc"):
            add(Case(f"{key}={value}", "vague", [*train, f"{key}={value}"], patterns=[key.replace(".", r"\.")]))
    # device and top-level config
    for override, pattern in [("device.num_threads=0", r"device\.num_threads"),
                              ("device.type=tpu", r"device\.type"), ("device.type=cuda", r"device\.type|CUDA"),
                              ("mode=bogus", r"mode"), ("depth.source=bogus", r"depth\.source"),
                              ("seed=abc", r"seed"), ("is_continue=maybe", r"is_continue"),
                              ("exp_name=", r"exp_name"), ("exp_name=a/b", r"exp_name"),
                              ("exp_name=/tmp/x", r"exp_name"), ("exp_name=.", r"exp_name"),
                              ("dataset.scene_name=x/y", r"dataset\.scene_name"),
                              ("depth.fusion=bogus", r"depth\.fusion"),
                              ("dataset.allow_resample=perhaps", r"allow_resample"),
                              ("field=nonexistent", r"field"), ("field.optim.stepz=3", r"stepz")]:
        add(Case(override, "vague", [PANO, "mode=depth", override], patterns=[pattern]))
    # panorama files
    rng = np.random.default_rng(0)
    h, w = PANO_HW
    for cid, setup, patterns in [
        ("image_empty_file", _write("empty.png", b""), [r"empty\.png", r"empty"]),
        ("image_text_file", _write("text.png", b"hello, this is not an image"), [r"text\.png"]),
        ("image_truncated", _truncated_png, [r"trunc\.png"]),
        ("image_huge_jpeg_header", _huge_jpeg, [r"huge\.jpg", r"dataset\.max_pixels"]),
        ("image_huge_float_tiff_header", lambda env: float_tiff_claiming(env.work / "huge.tif", 30000, 20000),
         [r"huge\.tif", r"30000x20000", r"dataset\.max_pixels"]),
        ("image_huge_exr_header", lambda env: exr_claiming(env.work / "huge.exr", 30000, 20000),
         [r"huge\.exr", r"30000x20000", r"dataset\.max_pixels"]),
        ("image_not_2to1", _image("wide.png", np.zeros((h, w + 6, 3), np.float32)), [r"wide\.png", r"allow_resample"]),
        ("image_1x1", _image("dot.png", np.zeros((1, 1, 3), np.float32)), [r"dot\.png"]),
        ("image_unknown_suffix", _write("pano.xyz", b"\0" * 100), [r"pano\.xyz"]),
    ]:
        name = {"image_empty_file": "empty.png", "image_text_file": "text.png", "image_truncated": "trunc.png",
                "image_huge_jpeg_header": "huge.jpg", "image_huge_float_tiff_header": "huge.tif",
                "image_huge_exr_header": "huge.exr", "image_not_2to1": "wide.png", "image_1x1": "dot.png",
                "image_unknown_suffix": "pano.xyz"}[cid]
        add(Case(cid, "traceback", [f"dataset.image_path={{work}}/{name}", "dataset.distance_path={dist}",
                                    "mode=depth"], setup=setup, patterns=patterns))
    # panoramas that must be handled (exit 0)
    for cid, setup, name in [
        ("image_gray", _copy_pano_as("g.png", lambda a: a.mean(axis=2)), "g.png"),
        ("image_16bit", _pano_16bit, "p16.png"),
        ("image_jpeg", _copy_pano_as("p.jpg"), "p.jpg"),
        ("image_tiff", _copy_pano_as("p.tif"), "p.tif"),
        ("image_exr_hdr_nan", lambda env: io.write_exr(env.work / "p.exr", np.where(
            rng.uniform(size=(h, w, 1)) < 0.01, np.nan, 2 * io.read_panorama(env.inputs["pano"])).astype(np.float32)),
         "p.exr"),
    ] + [(f"image_exif_{o}", _exif(o), f"e{o}.jpg") for o in range(1, 9)] + [
        (f"image_tiff_orientation_{o}", _tiff_orientation(o), f"t{o}.tif") for o in (3, 4, 6, 8)]:
        # the turned two-tone pictures must come out upright (red above the horizon), not only be accepted
        check = upright_points if cid.startswith(("image_exif_", "image_tiff_orientation_")) else None
        add(Case(cid, "silent", [f"dataset.image_path={{work}}/{name}", "dataset.distance_path={dist}", "mode=depth",
                                 "dataset.scene_name=pano"], expect="ok", setup=setup, check=check))
    # reference distance files
    for cid, setup, args, patterns in [
        ("distance_missing", None, ["dataset.distance_path={work}/nope.npy"],
         [r"dataset\.distance_path", r"nope\.npy"]),
        ("distance_is_dir", lambda env: (env.work / "d.npy").mkdir(), ["dataset.distance_path={work}/d.npy"],
         [r"d\.npy is a directory"]),
        ("distance_wrong_size", _npy("small.npy", lambda d: d[::2, ::2]), ["dataset.distance_path={work}/small.npy"],
         [r"small\.npy", r"32x16|size"]),
        ("distance_all_zero", _npy("z.npy", np.zeros_like), ["dataset.distance_path={work}/z.npy"],
         [r"z\.npy", r"valid"]),
        ("distance_all_nan", _npy("n.npy", lambda d: np.full_like(d, np.nan)), ["dataset.distance_path={work}/n.npy"],
         [r"n\.npy", r"valid"]),
        ("distance_negative", _npy("neg.npy", lambda d: -d), ["dataset.distance_path={work}/neg.npy"], [r"neg\.npy"]),
        ("distance_int_npy", _npy("i.npy", lambda d: (d * 1000).astype(np.int32)),
         ["dataset.distance_path={work}/i.npy"], [r"i\.npy", r"distance_format"]),
        ("distance_uint16_png_auto", lambda env: shutil.copy(env.inputs["dist_mp3d"], env.work / "u.png"),
         ["dataset.distance_path={work}/u.png"], [r"u\.png", r"distance_format"]),
        ("distance_pickled_npy", _npy("obj.npy", lambda d: np.array([{"d": 1}], dtype=object)),
         ["dataset.distance_path={work}/obj.npy"], [r"obj\.npy"]),
        ("distance_corrupt_npy", _write("bad.npy", b"\x93NUMPY garbage"), ["dataset.distance_path={work}/bad.npy"],
         [r"bad\.npy"]),
        ("distance_4d", _npy("d4.npy", lambda d: d[None, None]), ["dataset.distance_path={work}/d4.npy"],
         [r"d4\.npy", r"shape"]),
        ("distance_format_unknown", None, ["dataset.distance_path={dist}", "dataset.distance_format=mp3d"],
         [r"dataset\.distance_format", r"matterport3d"]),
        ("distance_format_bad_keys", None, ["dataset.distance_path={dist}", "dataset.distance_format={{scale: 1}}"],
         [r"dataset\.distance_format", r"invalid"]),
        ("distance_format_scale_zero", None, ["dataset.distance_path={dist}",
                                              "dataset.distance_format={{scale: 0, invalid: 0}}"],
         [r"dataset\.distance_format\.scale"]),
        ("distance_format_invalid_abc", None, ["dataset.distance_path={dist}",
                                               "dataset.distance_format={{scale: 1, invalid: abc}}"],
         [r"dataset\.distance_format\.invalid"]),
        ("distance_wrong_preset_for_float", None, ["dataset.distance_path={dist}",
                                                   "dataset.distance_format=matterport3d"],
         [r"pano_distance\.npy", r"distance_format"]),
        ("distance_huge_png_header", lambda env: png_claiming(env.work / "hd.png", 100000, 50000),
         ["dataset.distance_path={work}/hd.png", "dataset.distance_format=matterport3d"], [r"hd\.png", r"max_pixels"]),
        ("distance_huge_exr_header", lambda env: exr_claiming(env.work / "hd.exr", 100000, 50000),
         ["dataset.distance_path={work}/hd.exr"], [r"hd\.exr", r"max_pixels"]),
        ("reference_source_without_reference", lambda env: _copy_pano_as("lonely.png")(env),
         ["dataset.image_path={work}/lonely.png", "depth.source=reference"], [r"distance_path"]),
    ]:
        base = [PANO] if not any(a.startswith("dataset.image_path") for a in args) else []
        add(Case(cid, "vague", [*base, *args, "mode=depth"], setup=setup, patterns=patterns))
    add(Case("distance_channel_first_equal", "vague", [PANO, "dataset.distance_path={work}/c3.npy", "mode=depth"],
             expect="ok", setup=_npy("c3.npy", lambda d: np.stack([d, d, d]))))
    # depth models
    for cid, models, patterns in [
        ("models_empty", "[]", [r"depth\.models"]), ("models_unknown", "[nonexistent]", [r"nonexistent"]),
        ("models_mapping_without_target", "[{{foo: 1}}]", [r"_target_"]),
        ("models_target_missing_module", "[{{_target_: nosuchpkg.Model}}]", [r"nosuchpkg"]),
        ("models_two_missing_checkpoints", "[dav2_vits,midas_swin2_t256]",
         [r"depth_anything_v2_vits\.pth", r"dpt_swin2_tiny_256\.pt"]),
    ]:
        add(Case(cid, "vague", [PANO, "mode=depth", "depth.source=models", f"depth.models={models}",
                                "depth.checkpoint_dir={work}"], patterns=patterns))
    # checkpoints of the field
    for kind in ("truncated", "empty", "malicious", "directory"):
        add(Case(f"field_checkpoint_{kind}", "traceback", [PANO, "mode=train", "is_continue=true", *TINY_FIELD],
                 setup=_ckpt(kind), needs_trained=True, check=_ckpt_kept, patterns=[r"last\.pt"]))
    add(Case("field_checkpoint_other_config", "traceback",
             [PANO, "mode=train", "is_continue=true", *TINY_FIELD, "field.model.color_mlp.width=32"],
             setup=mark_train_interrupted, needs_trained=True, check=_ckpt_kept,
             patterns=[r"last\.pt", r"config|exp_name"]))
    add(Case("render_without_checkpoint", "vague", [PANO, "mode=render_dense", "is_continue=true", *TINY_FIELD,
                                                    *TINY_RENDER, "render.poses_file={poses}"],
             setup=_remove_checkpoints, needs_trained=True, patterns=[r"mode=train|checkpoint"]))
    add(Case("run_json_garbage", "lost", [PANO, "mode=depth"], expect="ok", setup=_run_json_garbage,
             needs_trained=True))
    # poses files and nerfstudio camera paths
    render = [PANO, "mode=render_dense", "is_continue=true", *TINY_FIELD, *TINY_RENDER,
              "render.poses_file={work}/p.json"]
    for cid, data, patterns in [
        ("poses_not_json", "{oops", [r"p\.json", r"JSON"]),
        ("poses_empty_list", {"poses": []}, [r"p\.json", r"non-empty"]),
        ("poses_two_numbers", {"poses": [{"position": [0, 0]}]}, [r"p\.json", r"position"]),
        ("poses_rotation_bad", {"poses": [{"position": [0, 0, 0], "rotation": [[2, 0, 0], [0, 1, 0], [0, 0, 1]]}]},
         [r"p\.json", r"rotation"]),
        ("poses_width_zero", {"poses": [{"position": [0, 0, 0], "width": 0}]}, [r"p\.json", r"width"]),
        ("poses_type_bogus", {"poses": [{"position": [0, 0, 0], "type": "fisheye"}]}, [r"p\.json", r"type|fisheye"]),
        ("poses_duplicate_names",
         {"poses": [{"name": "a", "position": [0, 0, 0]}, {"name": "a", "position": [0, 0, 0]}]},
         [r"p\.json", r"duplicate"]),
        ("poses_name_with_slash", {"poses": [{"name": "../x", "position": [0, 0, 0]}]}, [r"p\.json", r"name"]),
        ("nerfstudio_entry_not_object", {"camera_path": [5], "render_width": 32, "render_height": 16},
         [r"p\.json", r"camera_path\[0\]"]),
        ("nerfstudio_matrix_text", {"camera_path": [{"camera_to_world": "x"}], "render_width": 32, "render_height": 16},
         [r"p\.json", r"camera_to_world"]),
        ("nerfstudio_no_size", {"camera_path": [{"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]}]},
         [r"p\.json", r"render_width"]),
    ]:
        add(Case(cid, "traceback", render, setup=_poses("p.json", data), needs_trained=True, patterns=patterns))
    add(Case("poses_file_missing", "vague", [*render[:-1], "render.poses_file={work}/none.json"], needs_trained=True,
             patterns=[r"none\.json", r"render\.poses_file"]))
    add(Case("render_on_violation_bogus", "vague", [*render[:-1], "render.poses_file={poses}",
                                                    "render.on_violation=bogus"], needs_trained=True,
             patterns=[r"render\.on_violation"]))
    # evaluation
    add(Case("evaluate_gt_dir_is_file", "silent", [PANO, "mode=evaluate", *TINY_FIELD, "evaluate.gt_dir={pano}"],
             needs_trained=True, patterns=[r"evaluate\.gt_dir"]))
    add(Case("evaluate_max_distance_negative", "vague", [PANO, "mode=evaluate", *TINY_FIELD,
                                                         "evaluate.max_distance=-1"],
             needs_trained=True, patterns=[r"evaluate\.max_distance"]))
    return cases


def all_cases() -> list[Case]:
    cases = [*CASES, *generated_cases()]
    ids = [c.id for c in cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SystemExit(f"duplicate case ids: {sorted(dupes)}")
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="subprocesses at once (default 2)")
    ap.add_argument("--only", default="", help="comma-separated case ids (default: all)")
    ap.add_argument("--list", action="store_true", help="list the case ids and exit")
    ap.add_argument("--verbose", action="store_true", help="print every case's problems and error line")
    ap.add_argument("--json", type=Path, default=None, help="write every outcome to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (printed at the end)")
    args = ap.parse_args(argv)
    cases = all_cases()
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {c.id for c in cases}
        if unknown:
            raise SystemExit(f"--only: unknown case ids {sorted(unknown)} (see --list)")
        cases = [c for c in cases if c.id in wanted]
    if args.list:
        for c in cases:
            print(f"{c.id:45s} {c.issue_class:14s} expect {c.expect}")
        print(f"{len(cases)} cases")
        return 0
    tmp = tempfile.TemporaryDirectory(prefix="bad_input_matrix_")
    root = Path(tmp.name)
    t0 = time.monotonic()
    inputs = tiny_inputs(root / "inputs")
    trained = train_template(root / "template", inputs) if any(c.needs_trained for c in cases) else None
    envs = {c.id: Env(work=root / f"case{i:03d}", inputs=inputs, trained=trained) for i, c in enumerate(cases)}
    done = []

    def evaluate(c: Case) -> dict:
        """Run and classify one case; a failure of the harness itself (a setup or check that raises) becomes a
        ``harness error`` row instead of ending the whole matrix."""
        env = envs[c.id]
        try:
            res = run_case(c, env)
            found = problems(c, env, res)
            category = classify(c, found)
            row = {"id": c.id, "class": c.issue_class, "category": category, "exit": res.returncode,
                   "problems": found, "error": (error_lines(res) or [""])[-1], "seconds": round(res.seconds, 1)}
        except Exception as exc:  # noqa: BLE001 - reported per case, the other cases still run
            row = {"id": c.id, "class": c.issue_class, "category": "harness error", "exit": None,
                   "problems": [f"{type(exc).__name__}: {exc}"], "error": "", "seconds": None}
        done.append(c.id)
        print(f"[{len(done)}/{len(cases)}] {row['category']:12s} {c.id}", flush=True)
        return row

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(evaluate, cases))
    if args.verbose:
        for row in rows:
            print(f"[{row['category']:12s}] {row['id']} (exit {row['exit']}) {'; '.join(row['problems'])}\n"
                  f"    {row['error'][:300]}")
    totals = Counter(r["category"] for r in rows)
    print(f"\n{len(rows)} cases in {time.monotonic() - t0:.0f} s (jobs={args.jobs}):")
    for cat in CATEGORIES:
        print(f"  {cat:13s} {totals.get(cat, 0)}")
    vague = [r["id"] for r in rows if r["category"] == "vague"]
    if vague:
        print("vague: " + ", ".join(vague))
    if args.json:
        args.json.write_text(json.dumps({"totals": dict(totals), "cases": rows}, indent=1))
    if args.keep:
        print(f"kept {root}")
        tmp._finalizer.detach()  # leave the folder for inspection
    else:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
