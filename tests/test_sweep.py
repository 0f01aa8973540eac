"""Many panoramas: the folder form of a sweep, threads per job, and real sweeps through the joblib and submitit_local
launchers with a summary that names each bad file while the others finish; re-running retries only the failed ones."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from immersivedepth import io
from immersivedepth.errors import ConfigError, InputNotFoundError
from immersivedepth.stages.summary import NOT_FINISHED, write_summary
from immersivedepth.stages.sweep import expand_image_dir, list_panoramas, threads_per_job

REPO = Path(__file__).resolve().parents[1]
H, W = 128, 256  # small panoramas: the sweeps exercise launchers and summary, not the depth stage


def _panorama(folder: Path, name: str, distance: float | None = 2.0, seed: int = 0) -> Path:
    rgb = np.random.default_rng(seed).uniform(0, 1, (H, W, 3)).astype(np.float32)
    path = folder / f"{name}.png"
    io.write_image(path, rgb)
    if distance is not None:
        np.save(folder / f"{name}_distance.npy", np.full((H, W), distance, np.float32))
    return path


def _sweep_values(argv: list[str]) -> list[str]:
    """The panorama paths the jobs get: Hydra's sweeper splits the sweep into one override per job, as here."""
    parser = OverridesParser.create()
    (sweep,) = parser.parse_overrides([a for a in argv if a.startswith("dataset.image_path=")])
    jobs = [parser.parse_override(f"dataset.image_path={s}") for s in sweep.sweep_string_iterator()]
    return [job.value() for job in jobs]


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "IMMERSIVEDEPTH_DEBUG"}
    return subprocess.run([sys.executable, str(REPO / "perf_runner.py"), *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=timeout)


def _summary(base: Path) -> dict[str, dict]:
    with open(base / "summary.csv", newline="") as f:
        return {Path(r["panorama"]).name: r for r in csv.DictReader(f)}


# --------------------------------------------------------------------------- the folder form
def test_folder_expands_into_a_hydra_sweep(tmp_path):
    for name in ("b", "a", "with, comma and 'quote'"):
        _panorama(tmp_path, name)
    (tmp_path / "notes.txt").write_text("not a panorama")
    argv = expand_image_dir([f"dataset.image_dir={tmp_path}", "mode=depth"])
    assert argv[0] == "-m" and argv[1] == "mode=depth"  # -m added, other arguments unchanged
    # the *_distance.npy references are not panoramas; odd names survive Hydra's parser
    assert _sweep_values(argv) == [str(tmp_path / n) + ".png" for n in ("a", "b", "with, comma and 'quote'")]
    argv = expand_image_dir(["--multirun", f"dataset.image_dir={tmp_path}", "dataset.glob='[ab].png'"])
    assert argv.count("--multirun") == 1 and "-m" not in argv
    assert _sweep_values(argv) == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert expand_image_dir(["dataset.image_path=x.png"]) == ["dataset.image_path=x.png"]  # nothing to expand


def test_folder_form_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputNotFoundError, match=rf"dataset.image_dir={tmp_path}: no panorama matches any of .png"):
        expand_image_dir([f"dataset.image_dir={tmp_path}"])
    with pytest.raises(InputNotFoundError, match=r"no panorama matches dataset.glob='\*.jpg'; check the folder"):
        list_panoramas(tmp_path, "*.jpg")
    with pytest.raises(InputNotFoundError, match=r"dataset.image_dir=.*missing is not a folder"):
        expand_image_dir([f"dataset.image_dir={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="give either dataset.image_dir .* or dataset.image_path"):
        expand_image_dir([f"dataset.image_dir={tmp_path}", "dataset.image_path=a.png"])
    with pytest.raises(ConfigError, match="dataset.glob is set but dataset.image_dir is not"):
        expand_image_dir(["dataset.glob=*.png"])


def test_cli_empty_folder_is_one_line(tmp_path):
    proc = _run([f"dataset.image_dir={tmp_path}", f"device.base_exp_dir={tmp_path / 'exp'}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: dataset.image_dir={tmp_path}: no panorama matches any of .png, .jpg, "
                                   ".jpeg, .tif, .tiff, .exr; check the folder and the pattern")


def test_threads_per_job_keeps_jobs_times_threads_within_cores():
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert threads_per_job({"_target_": joblib, "n_jobs": 2}, 2) == 1
    assert threads_per_job({"_target_": joblib, "n_jobs": 3}, 8) == 2
    assert threads_per_job({"_target_": joblib, "n_jobs": -1}, 8) == 1  # joblib: -1 = one job per CPU
    assert threads_per_job({"_target_": joblib, "n_jobs": -5}, 8) == 2  # 4 jobs
    assert threads_per_job({"_target_": joblib, "n_jobs": 16}, 8) == 1
    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert threads_per_job({"_target_": slurm, "cpus_per_task": 6}, 64) == 6
    assert threads_per_job({"_target_": slurm, "cpus_per_task": None}, 64) is None
    assert threads_per_job({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8) is None


# --------------------------------------------------------------------------- real sweeps
def test_joblib_sweep_goes_on_past_bad_files(tmp_path):
    data, base = tmp_path / "data", tmp_path / "exp"
    a, b = _panorama(data, "a"), _panorama(data, "b", seed=1)
    (data / "notimage.png").write_bytes(b"this is not a PNG")
    _panorama(data, "wrongsize", distance=None)
    np.save(data / "wrongsize_distance.npy", np.full((H // 2, W // 2), 2.0, np.float32))
    proc = _run(["-m", f"dataset.image_path={a},{b},{data / 'notimage.png'},{data / 'wrongsize.png'}", "mode=depth",
                 f"device.base_exp_dir={base}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr  # some failed: the shell sees it, after every panorama ran
    assert "sweep: 2 of 4 panoramas done, 2 failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    rows = _summary(base)
    assert [rows[n]["status"] for n in ("a.png", "b.png", "notimage.png", "wrongsize.png")] == \
        ["done", "done", "failed", "failed"]
    assert rows["notimage.png"]["error"].startswith(f"cannot read image {data / 'notimage.png'}")
    assert rows["wrongsize.png"]["error"] == (f"reference distance {data / 'wrongsize_distance.npy'} is 128x64 but the "
                                              f"panorama {data / 'wrongsize.png'} is 256x128; give a distance map of "
                                              "the panorama's size (dataset.distance_path)")
    assert rows["a.png"]["stages_run"] == "depth" and float(rows["a.png"]["depth_s"]) > 0
    np.testing.assert_array_equal(np.load(base / "a" / "default" / "depth" / "distance.npy"), 2.0)
    # two jobs on two processes: one torch thread each (jobs x threads <= cores)
    status = json.loads((base / "sweep" / "0" / "status.json").read_text())
    assert status["threads"] == threads_per_job({"_target_": "JoblibLauncher", "n_jobs": 2}, os.cpu_count())
    md = (base / "summary.md").read_text()
    assert md.startswith("# Sweep summary: 2 of 4 panoramas done, 2 failed") and "| notimage.png" not in md
    assert f"| {data / 'notimage.png'} | failed | cannot read image" in md
    assert "add is_continue=true where a training was cut off" in md  # a bare re-run is refused over a cut training


def test_evaluate_sweep_resumes_and_retries_only_failures(tmp_path):
    """mode=evaluate over a folder (basic launcher): a missing GT fails with its path; after the fix, the same command
    reuses the finished panoramas' depth and scores the retried one."""
    data, base = tmp_path / "data", tmp_path / "exp"
    for i, name in enumerate(("a", "b", "c")):
        _panorama(data, name, seed=i)
    (data / "gt").mkdir()
    for name in ("a", "b"):  # the ground truth is 10 % farther than the reference the depth stage uses
        np.save(data / "gt" / f"{name}.npy", np.full((H, W), 2.2, np.float32))
    args = [f"dataset.image_dir={data}", "dataset.glob=?.png", "mode=evaluate", f"device.base_exp_dir={base}",
            "evaluate.gt_distance='{dir}/gt/{stem}.npy'", "evaluate.alignment=none", "evaluate.figures=false"]
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    rows = _summary(base)
    assert rows["c.png"]["error"] == (f"ground-truth distance {data / 'gt' / 'c.npy'} of {data / 'c.png'} does not "
                                      "exist (evaluate.gt_distance='{dir}/gt/{stem}.npy'); add it or fix the template")
    assert float(rows["a.png"]["eval_abs_rel"]) == pytest.approx(0.2 / 2.2, rel=1e-5)
    assert rows["a.png"]["eval_alignment"] == "none"
    report = json.loads((base / "evaluation.json").read_text())
    assert (report["alignment"], report["n_panoramas"], report["n_scored"]) == ("none", 3, 2)
    assert report["mean"]["depth_abs_rel"] == pytest.approx(0.2 / 2.2, rel=1e-5)

    np.save(data / "gt" / "c.npy", np.full((H, W), 2.2, np.float32))
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = _summary(base)
    assert [rows[n]["stages_reused"] for n in ("a.png", "b.png")] == ["depth", "depth"]
    assert rows["c.png"]["status"] == "done" and rows["c.png"]["stages_reused"] == "depth"  # its depth had run
    assert "3 of 3 panoramas scored" in (base / "evaluation.md").read_text()


def test_submitit_local_sweep(tmp_path):
    data, base = tmp_path / "data", tmp_path / "exp"
    _panorama(data, "a")
    _panorama(data, "b", seed=1)
    proc = _run([f"dataset.image_dir={data}", "mode=depth", f"device.base_exp_dir={base}",
                 "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"],
                cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = _summary(base)
    assert [rows[n]["status"] for n in ("a.png", "b.png")] == ["done", "done"]
    assert json.loads((base / "sweep" / "1" / "status.json").read_text())["threads"] == 1
    assert any((base / "sweep" / ".submitit").iterdir())  # submitit's own job logs stay in the sweep folder
    np.testing.assert_array_equal(np.load(base / "b" / "default" / "depth" / "distance.npy"), 2.0)


def test_documented_slurm_overrides_compose():
    """The README's SLURM overrides are fields of the shipped launcher config; cpus_per_task sets the torch threads."""
    overrides = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
                 "hydra.launcher.timeout_min=120", "hydra.launcher.mem_gb=32", "hydra.launcher.cpus_per_task=8",
                 "+hydra.launcher.additional_parameters.mail-user=me@lab.org"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="nerf", overrides=overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["partition"], launcher["gpus_per_node"], launcher["timeout_min"], launcher["mem_gb"]) == \
        ("gpu", 1, 120, 32)
    assert threads_per_job(launcher, 64) == 8
    assert cfg.hydra.callbacks.sweep_summary._target_ == "immersivedepth.stages.summary.SweepSummary"


def test_summary_rows_from_statuses_run_records_and_metrics(tmp_path):
    """summary.csv/md from job statuses: times and metrics come from each run's run.json and eval/metrics.json; a job
    killed from outside (status still 'running') is a failure that says so."""
    run_dir = tmp_path / "exp" / "a" / "default"
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"stages": {
        "depth": {"status": "done", "seconds": 1.5},
        "train": {"status": "done", "seconds": 40.0, "summary": {"wall_time": 38.0, "psnr": 31.2, "abs_rel": 0.02}}}}))
    (run_dir / "eval" / "metrics.json").write_text(json.dumps({
        "depth": {"alignment": "lsq_disparity", "abs_rel": 0.125, "d1": 0.875},
        "novel_views": {"p0": {"ws_psnr_visible": 20.0}, "p1": {"ws_psnr_visible": 24.0}}}))
    sweep = tmp_path / "exp" / "sweep"
    statuses = [
        {"panorama": "a.png", "mode": "evaluate", "job": {"num": 0}, "status": "done", "error": "", "seconds": 50.0,
         "run_dir": str(run_dir), "stages_run": ["evaluate"], "stages_reused": ["depth"]},
        {"panorama": "b.png", "mode": "evaluate", "job": {"num": 1}, "status": "running", "error": ""},
    ]
    for s in statuses:
        (sweep / str(s["job"]["num"])).mkdir(parents=True)
        (sweep / str(s["job"]["num"]) / "status.json").write_text(json.dumps(s))
    assert write_summary(sweep, tmp_path / "exp") == {"total": 2, "done": 1, "failed": 1}
    rows = _summary(tmp_path / "exp")
    a = rows["a.png"]
    assert (a["depth_s"], a["train_s"], a["train_psnr"], a["train_abs_rel"]) == ("1.5", "38.0", "31.2", "0.02")
    assert (a["eval_alignment"], a["eval_abs_rel"], a["eval_d1"], a["eval_ws_psnr_visible"]) == \
        ("lsq_disparity", "0.125", "0.875", "22.0")
    assert (a["stages_run"], a["stages_reused"]) == ("evaluate", "depth")
    assert rows["b.png"]["status"] == "failed" and rows["b.png"]["error"] == NOT_FINISHED
    report = json.loads((tmp_path / "exp" / "evaluation.json").read_text())
    assert report["mean"]["depth_abs_rel"] == 0.125 and report["mean"]["novel_ws_psnr_visible"] == 22.0
