"""The web app's handlers (app.py) without a browser: real jobs through the runner, bad input, cancellation, cleanup."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from plyfile import PlyData

import app
from immersivedepth.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example_data" / "living_room"
IMAGE, REFERENCE = EXAMPLE / "image.png", EXAMPLE / "image_distance.npy"


def make_app(workdir: Path, *overrides: str) -> app.App:
    return app.App(app.load_app_config([f"workdir={workdir}", *overrides]))


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    return make_app(tmp_path_factory.mktemp("app_work"), "show_test_models=true")


def job_folders(a: app.App) -> list[Path]:
    return sorted(p for p in a.jobs.root.iterdir() if p.is_dir())


def depth(a: app.App, panorama, reference=None, *, source="auto", models=(), fmt="auto", resample=False,
          request=None):
    return a.on_depth(None if panorama is None else str(panorama), None if reference is None else str(reference),
                      source, list(models), fmt, resample, request=request)


def test_depth_job_on_the_bundled_example(web):
    out = depth(web, IMAGE, REFERENCE)
    job_id, dist_png, normals_png, conf_png, mesh, splat, downloads, status = out
    assert status.startswith("Done"), status
    job = web.jobs.path(job_id)
    assert sorted(p.name for p in (job / "inputs").iterdir()) == ["panorama.png", "reference.npy"]
    run = job / "runs" / app.SCENE / "default"
    # the reference distance went through the runner unchanged
    np.testing.assert_array_equal(np.load(run / "depth" / "distance.npy"), np.load(REFERENCE).astype(np.float32))
    for p in (dist_png, normals_png, conf_png, mesh, splat, *downloads):
        assert Path(p).is_file() and Path(p).resolve().is_relative_to(job)  # every output inside the job folder
    assert cv2.imread(dist_png).shape == (512, 1024, 3) and cv2.imread(conf_png).shape == (512, 1024, 3)
    assert Path(mesh).read_bytes()[:4] == b"glTF"
    assert len(PlyData.read(splat)["vertex"].data) > 0.9 * 256 * 512  # render=fast: splat stride 2
    assert {Path(p).name for p in downloads} >= {"distance.exr", "distance.npy", "depth_mesh.glb", "scene_splat.ply"}
    assert not list(job.rglob(".tmp-*"))


def test_upload_names_are_never_paths_and_types_come_from_content(web, tmp_path):
    odd = tmp_path / "..;rm -rf ~ $(x).png"  # a JPEG under a PNG name and a hostile file name
    cv2.imwrite(str(tmp_path / "p.jpg"), cv2.imread(str(IMAGE)))
    shutil.move(tmp_path / "p.jpg", odd)
    ref = tmp_path / "distance.exr"  # an .npy under an .exr name
    shutil.copyfile(REFERENCE, ref)
    *_, status = out = depth(web, odd, ref)
    assert status.startswith("Done"), status
    job = web.jobs.path(out[0])
    assert sorted(p.name for p in (job / "inputs").iterdir()) == ["panorama.jpeg", "reference.npy"]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.png").write_text("this is not an image\n")
    cv2.imwrite(str(d / "square.png"), np.zeros((200, 300, 3), np.uint8))
    (d / "truncated.png").write_bytes(IMAGE.read_bytes()[:4000])
    cv2.imwrite(str(d / "pano.bmp"), np.zeros((64, 128, 3), np.uint8))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(d / "small.npy", np.ones((64, 128), np.float32))
    return d


@pytest.mark.parametrize("pano, ref, kwargs, message", [
    (None, None, {}, r"^\*\*Error:\*\* panorama: no file uploaded; upload an equirectangular panorama"),
    ("notes.png", None, {}, r"panorama: the file is not an image \(not PNG/JPEG/TIFF/EXR by its content"),
    ("pano.bmp", None, {}, r"panorama: a BMP file is not accepted here; upload PNG/JPEG/TIFF/EXR"),
    ("square.png", None, {}, r"panorama: 300x200 is not 2:1 .*tick 'Resample to 2:1'"),
    ("truncated.png", None, {}, r"panorama: the file cannot be decoded \(corrupt or truncated PNG\)"),
    (IMAGE, "objects.npy", {}, r"reference distance: the \.npy file holds Python objects"),
    (IMAGE, "small.npy", {}, r"reference distance: 128x64 does not match the panorama's 1024x512"),
    (IMAGE, "notes.png", {}, r"reference distance: the file is not an image"),
    (IMAGE, None, {"source": "reference"}, r"depth source 'reference' needs a reference distance upload"),
    (IMAGE, None, {"source": "models"}, r"no depth model selected \(and no reference distance\)"),
    (IMAGE, None, {"models": ["dav9_huge"]}, r"unknown depth model\(s\) \['dav9_huge'\]; choose among the listed"),
])
def test_bad_input_is_one_line_in_the_page_and_creates_no_job(web, bad_files, pano, ref, kwargs, message):
    before = job_folders(web)
    *outputs, status = depth(web, None if pano is None else bad_files / pano, None if ref is None else bad_files / ref,
                             **kwargs)
    assert outputs == [None] * 7
    assert re.search(message, status) and "\n" not in status, status
    assert job_folders(web) == before


def test_caps_on_file_size_and_dimensions(tmp_path):
    small = make_app(tmp_path / "w1", "max_upload_mb=0.1")
    *_, status = depth(small, IMAGE, REFERENCE)
    assert re.search(r"panorama: the file is 0\.3 MB, over the app's limit of 0\.1 MB \(app key max_upload_mb\)",
                     status), status
    narrow = make_app(tmp_path / "w2", "max_width=512")
    *_, status = depth(narrow, IMAGE, REFERENCE)
    assert "panorama: 1024x512 pixels is over the app's limit (512 px wide" in status
    few = make_app(tmp_path / "w3", "max_pixels=100000")
    *_, status = depth(few, IMAGE, REFERENCE)
    assert "100000 pixels; app keys max_width, max_pixels); downscale it first" in status
    assert not any(job_folders(a) for a in (small, narrow, few))


def test_missing_checkpoint_fails_in_the_runner_with_its_message_and_leaves_no_job(web):
    before = job_folders(web)
    *outputs, status = depth(web, IMAGE, None, source="models", models=["dav2_vits"])
    assert outputs == [None] * 7
    assert "checkpoint 'depth_anything_v2_vits.pth' for depth model 'dav2_vits' not found" in status
    assert "\n" not in status
    assert job_folders(web) == before  # the failed job's folder is gone: nothing partial is left


def test_closing_the_page_cancels_the_running_job_and_the_app_keeps_serving(web):
    request = SimpleNamespace(session_hash="closing-page")
    result: dict = {}
    before = set(job_folders(web))
    worker = threading.Thread(target=lambda: result.setdefault(
        "out", depth(web, IMAGE, None, source="models", models=["oracle"], request=request)))
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "closing-page" not in web.jobs._running:  # noqa: SLF001 - test probe
        time.sleep(0.05)
    assert "closing-page" in web.jobs._running  # noqa: SLF001
    job = web.jobs._running["closing-page"][1]  # noqa: SLF001
    time.sleep(0.5)  # let the runner start writing into the job folder
    assert web.on_page_closed(request) is None
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert result["out"][-1] == "**Error:** the job was cancelled (its page was closed)"
    assert not job.exists() and set(job_folders(web)) == before
    # the next job runs normally
    assert depth(web, IMAGE, REFERENCE)[-1].startswith("Done")


def test_cleanup_by_age_then_size_keeps_running_jobs_and_foreign_folders(tmp_path):
    a = make_app(tmp_path / "w", "max_job_age_hours=1", "max_jobs_total_mb=1")
    root = a.jobs.root
    now = time.time()
    names = ["20260101-000000-0000000a", "20260101-000001-0000000b", "20260101-000002-0000000c",
             "20260101-000003-0000000d"]
    ages_h = [5.0, 0.5, 0.4, 0.1]
    for name, age in zip(names, ages_h):
        (root / name).mkdir()
        (root / name / "blob").write_bytes(b"\0" * 600_000)
        os.utime(root / name, (now - age * 3600, now - age * 3600))
    (root / "not-a-job").mkdir()
    a.jobs._running["someone"] = (0, root / names[1])  # noqa: SLF001 - a job that is running now
    deleted = a.jobs.cleanup(now)
    # age: a (5 h) goes; size: 3 x 0.57 MB > 1 MB, so the oldest idle one (c) goes; b is running, d fits
    assert [p.name for p in deleted] == [names[0], names[2]]
    assert sorted(p.name for p in root.iterdir()) == [names[1], names[3], "not-a-job"]


def test_radiance_field_tab_needs_a_depth_job_and_known_presets(web):
    *_, status = web.on_field(None, "fast", "fast", None)
    assert status == "**Error:** no depth result in this page yet (or it was cleaned up): run the Depth tab first"
    *_, status = web.on_field("../../etc", "fast", "fast", None)
    assert "run the Depth tab first" in status
    job_id = depth(web, IMAGE, REFERENCE)[0]
    *_, status = web.on_field(job_id, "turbo", "fast", None)
    assert status == "**Error:** field preset 'turbo' is not one of fast, default"


@pytest.mark.slow
def test_radiance_field_tab_trains_renders_and_zips_the_run(web):
    job_id = depth(web, IMAGE, REFERENCE)[0]
    video, mesh, files, status = web.on_field(job_id, "fast", "fast", None)
    assert status.startswith("Done"), status
    assert Path(video).name == "video.mp4" and Path(video).stat().st_size > 0
    assert Path(mesh).read_bytes()[:4] == b"glTF"
    zipped = next(Path(f) for f in files if f.endswith("run.zip"))
    with zipfile.ZipFile(zipped) as zf:
        names = zf.namelist()
    assert "default/depth/distance.npy" in names and "default/checkpoints/last.pt" in names


def test_zip_of_a_run_folder_skips_excluded_and_temporary_files(tmp_path):
    run = tmp_path / "default"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("checkpoints/last.pt", "checkpoints/step_000100.pt", "checkpoints/.tmp-ab.last.pt", "log.txt"):
        (run / name).write_bytes(name.encode() * 100)
    out = app.zip_folder(run, tmp_path / "app" / "run.zip", ["checkpoints/step_*.pt"], 1)
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["default/checkpoints/last.pt", "default/log.txt"]
        assert zf.read("default/log.txt") == b"log.txt" * 100
    assert not list((tmp_path / "app").glob(".tmp-*"))


def test_app_config_defaults_flags_and_errors(tmp_path):
    cfg = app.load_app_config([])
    assert cfg.host == "127.0.0.1" and cfg.concurrency == 1
    _, overrides = app.parse_args(["--host", "0.0.0.0", "--port", "7861", "max_upload_mb=5"])
    cfg = app.load_app_config(overrides)
    assert (cfg.host, cfg.port, cfg.max_upload_mb) == ("0.0.0.0", 7861, 5.0)
    with pytest.raises(ConfigError, match=r"app config .*app\.yaml: .*max_uplod_mb.*fix the file or the key=value"):
        app.load_app_config(["max_uplod_mb=5"])
    with pytest.raises(ConfigError, match=r"port"):
        app.load_app_config(["port=eighty"])


def test_models_with_missing_checkpoints_are_listed_with_the_file_to_download(tmp_path):
    cfg = app.load_app_config(["show_test_models=false"])
    (tmp_path / "depth_anything_v2_vits.pth").write_bytes(b"")
    available, missing = app.depth_model_choices(cfg, str(tmp_path))
    assert available == ["dav2_vits"]
    assert len(missing) == 11
    line = next(m for m in missing if m.startswith("`midas_beit_l512`"))
    assert "`dpt_beit_large_512.pt`" in line and "github.com/isl-org/MiDaS/releases" in line
