"""warnings_to_log puts warnings on the run's logger (console + log.txt); silence_cuda_probe drops torch's line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from immersivedepth import io
from immersivedepth.runlog import silence_cuda_probe, warnings_to_log

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_logger(tmp_path):
    logger = logging.getLogger("immersivedepth.test_runlog")
    handler = logging.FileHandler(tmp_path / "log.txt", encoding="utf-8")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, tmp_path / "log.txt"
    logger.removeHandler(handler)
    handler.close()


def test_io_warnings_reach_the_log_every_run(tmp_path, run_logger):
    logger, log = run_logger
    io.write_image(tmp_path / "rgba.png", np.zeros((4, 8, 4), np.float32))
    for _ in range(2):  # a second run in the same process must see the warning again
        with warnings_to_log(logger):
            io.read_panorama(tmp_path / "rgba.png")
    lines = log.read_text().splitlines()
    assert lines == [f"InputWarning: {tmp_path / 'rgba.png'} has an alpha channel; it was dropped (the colour "
                     "channels are used as they are)"] * 2


def test_captured_warnings_still_reach_the_log_once(tmp_path, run_logger):
    """A runner that calls logging.captureWarnings(True) inside the block (as it sets up its handlers)."""
    logger, log = run_logger
    io.write_image(tmp_path / "rgba.png", np.zeros((4, 8, 4), np.float32))
    with warnings_to_log(logger):
        logging.captureWarnings(True)
        try:
            io.read_panorama(tmp_path / "rgba.png")
        finally:
            logging.captureWarnings(False)  # inside the block, so the block's exit restores the original hooks
    assert log.read_text().splitlines() == [f"InputWarning: {tmp_path / 'rgba.png'} has an alpha channel; it was "
                                            "dropped (the colour channels are used as they are)"]
    assert warnings.formatwarning.__module__ == "warnings" and warnings.showwarning.__module__ == "warnings"


def test_other_warnings_logged_and_filters_restored(run_logger):
    logger, log = run_logger
    before = list(warnings.filters)
    with warnings_to_log(logger):
        warnings.warn("C++ op unavailable, using the slow path", RuntimeWarning, stacklevel=1)
    assert log.read_text().strip() == "RuntimeWarning: C++ op unavailable, using the slow path"
    assert warnings.filters == before
    assert warnings.showwarning is not None and warnings.showwarning.__module__ == "warnings"


def _import_cpp_extension(silence: bool, cuda_home: Path) -> str:
    code = ("from immersivedepth.runlog import silence_cuda_probe\n"
            f"{'silence_cuda_probe(False)' if silence else 'pass'}\n"
            "import torch.utils.cpp_extension\n")
    env = {**os.environ, "CUDA_HOME": str(cuda_home)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_cuda_probe_line_silenced_on_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the probe line only appears without CUDA")
    assert "No CUDA runtime is found" in _import_cpp_extension(False, tmp_path)  # the line exists ...
    assert "No CUDA runtime is found" not in _import_cpp_extension(True, tmp_path)  # ... and is dropped


def test_cuda_probe_kept_when_cuda_available():
    logger = logging.getLogger("torch.utils.cpp_extension")
    n = len(logger.filters)
    silence_cuda_probe(True)
    assert len(logger.filters) == n
    silence_cuda_probe(False)
    silence_cuda_probe(False)
    assert len(logger.filters) == n + 1  # idempotent
