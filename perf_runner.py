"""ImmersiveDepth entry point.

    python perf_runner.py --config-name nerf \
        dataset.image_path=example_data/living_room/image.png device.base_exp_dir=exp

See README.md for the modes and outputs; the work happens in ``immersivedepth.stages``.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from immersivedepth.stages.cli import preflight
from immersivedepth.stages.runner import main as run_main
from immersivedepth.stages.schema import register_configs

CONFIGS = Path(__file__).resolve().parent / "configs"
register_configs()  # the typed schemas the YAML presets in configs/ build on


@hydra.main(version_base="1.3", config_path="configs", config_name="nerf")
def main(cfg: DictConfig) -> None:
    code = run_main(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    problem = preflight(sys.argv[1:], CONFIGS)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
