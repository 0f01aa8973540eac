"""Which compute backends are available for the field's encodings and MLPs (one answer for both)."""

from __future__ import annotations

import torch

__all__ = ["tcnn_available"]


def tcnn_available() -> bool:
    """True when ``tinycudann`` imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401  - optional third-party GPU package
    except Exception:  # a broken CUDA build raises more than ImportError; either way it is not usable
        return False
    return True
