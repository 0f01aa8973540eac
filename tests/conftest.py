"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from immersivedepth.stages.schema import register_configs

# the typed schemas the YAML presets build on, for every test that composes configs/ with Hydra's compose API
register_configs()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real panoramas); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test panoramas not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)
