"""ImmersiveDepth entry point.

    python perf_runner.py --config-name nerf \
        dataset.image_path=example_data/living_room/image.png device.base_exp_dir=exp

Many panoramas (README "Many panoramas"): ``-m dataset.image_path=a.jpg,b.jpg`` or ``dataset.image_dir=DIR
dataset.glob='*.jpg'`` (expanded into that sweep before Hydra parses the command line), with any Hydra launcher.
See README.md for the modes and outputs; the work happens in ``immersivedepth.stages`` (one panorama of a sweep:
``immersivedepth.stages.sweep``).
"""

import os
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from immersivedepth.runlog import silence_cuda_probe

# before the project imports torch's C++-extension helper: a CPU run does not print torch's "No CUDA runtime" line
silence_cuda_probe(torch.cuda.is_available())

from immersivedepth.errors import ImmersiveDepthError, one_line  # noqa: E402
from immersivedepth.stages.cli import preflight  # noqa: E402
from immersivedepth.stages.runner import main as run_main  # noqa: E402
from immersivedepth.stages.schema import register_configs  # noqa: E402
from immersivedepth.stages.summary import LAST_SWEEP  # noqa: E402
from immersivedepth.stages.sweep import check_not_expanded, expand_image_dir, run_sweep_job  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"
register_configs()  # the typed schemas the YAML presets in configs/ build on


@hydra.main(version_base="1.3", config_path="configs", config_name="nerf")
def main(cfg: DictConfig):
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:  # one job of a sweep: a failure is recorded in its status, never an exit
        job = {"num": hc.job.num, "override_dirname": hc.job.override_dirname}
        return run_sweep_job(cfg, Path(hc.runtime.output_dir), OmegaConf.to_container(hc.launcher), job)
    try:
        check_not_expanded(cfg)
    except ImmersiveDepthError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    code = run_main(cfg)
    if code:
        sys.exit(code)
    return None


if __name__ == "__main__":
    # Jobs of a sweep may start in fresh interpreters (submitit, on this machine or a SLURM node) that unpickle this
    # module's task: they must find the immersivedepth package beside this file, as this process does.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parent),
                                                           os.environ.get("PYTHONPATH")) if p)
    try:
        sys.argv[1:] = expand_image_dir(sys.argv[1:])  # a folder becomes a sweep (-m) before any check
    except ImmersiveDepthError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    problem = preflight(sys.argv[1:], CONFIGS)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
    if LAST_SWEEP.get("failed"):
        sys.exit(2)
