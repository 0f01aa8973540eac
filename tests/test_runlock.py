"""RunLock: one run per run directory; the second refuses naming the first or waits; dead runs' locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from immersivedepth.errors import RunError
from immersivedepth.runlock import LOCK_NAME, RunLock, read_holder

REPO = Path(__file__).resolve().parents[1]
HOLD = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from immersivedepth.runlock import RunLock\n"
    "with RunLock(sys.argv[1], command='perf_runner.py exp_name=first'):\n"
    "    Path(sys.argv[2]).touch()\n"
    "    time.sleep(float(sys.argv[3]))\n"
    "    Path(sys.argv[2] + '.leaving').touch()\n"
)


def _holder(run_dir: Path, ready: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(ready), str(seconds)], cwd=REPO)
    for _ in range(3000):
        if ready.exists() or proc.poll() is not None:
            break
        time.sleep(0.01)
    assert ready.exists(), "the holder never took the lock"
    return proc


def test_records_holder_and_releases(tmp_path):
    run = tmp_path / "scene" / "default"
    with RunLock(run, command="perf_runner.py mode=all") as lock:
        assert lock.held and lock.previous is None
        rec = read_holder(run / LOCK_NAME)
        assert rec["pid"] == os.getpid() and rec["host"] == socket.gethostname()
        assert rec["command"] == "perf_runner.py mode=all" and rec["started"]
    assert not lock.held and read_holder(run / LOCK_NAME) is None  # released: empty record
    with RunLock(run):  # and can be taken again
        pass


def test_second_run_refuses_naming_the_first(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run, tmp_path / "ready", 30)
    try:
        with pytest.raises(RunError) as info:
            RunLock(run, wait_hint="wait_for_lock=true").acquire()
        msg = str(info.value)
        assert "\n" not in msg
        assert f"run directory {run} is in use by pid {proc.pid} on {socket.gethostname()}" in msg
        assert "(command: perf_runner.py exp_name=first)" in msg
        assert "pass wait_for_lock=true to wait for it, or choose another exp_name" in msg
        # the refused run did not touch the holder's record
        assert read_holder(run / LOCK_NAME)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_wait_blocks_until_the_first_ends(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run, tmp_path / "ready", 1.5)
    try:
        with RunLock(run, wait=True) as lock:
            assert (tmp_path / "ready.leaving").exists()  # we only got the lock when the holder's block ended
            assert lock.previous is None  # it released cleanly
            assert read_holder(run / LOCK_NAME)["pid"] == os.getpid()
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run, tmp_path / "ready", 60)
    proc.kill()  # SIGKILL: no release, the record stays behind
    proc.wait()
    assert read_holder(run / LOCK_NAME)["pid"] == proc.pid
    with RunLock(run) as lock:
        assert lock.previous is not None and lock.previous["pid"] == proc.pid
        assert read_holder(run / LOCK_NAME)["pid"] == os.getpid()


def test_garbage_lock_file_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("not json")
    with RunLock(run) as lock:
        assert lock.previous is None
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_unwritable_run_dir_is_output_error(tmp_path):
    (tmp_path / "file").write_text("x")
    from immersivedepth.errors import OutputError

    with pytest.raises(OutputError, match=r"cannot create the run lock .*file/run/\.lock"):
        RunLock(tmp_path / "file" / "run").acquire()
