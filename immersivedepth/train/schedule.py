"""Learning-rate schedule: linear warm-up then cosine decay (a pure function of the step, so resuming needs no
scheduler state)."""

from __future__ import annotations

import math

__all__ = ["lr_at"]


def lr_at(step: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0, warmup_start_factor: float = 0.01,
          final_factor: float = 0.01) -> float:
    """Learning rate for optimisation step ``step`` (0-based).

    ``step < warmup_steps``: linear from ``warmup_start_factor * base_lr`` (step 0) towards ``base_lr`` (reached at
    ``step == warmup_steps``); afterwards cosine from ``base_lr`` down to ``final_factor * base_lr`` at
    ``step == total_steps`` (and constant beyond).
    """
    if base_lr <= 0 or total_steps <= 0:
        raise ValueError(f"lr_at: base_lr and total_steps must be > 0, got {base_lr}, {total_steps}")
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps)
    span = max(total_steps - warmup_steps, 1)
    p = min(max(step - warmup_steps, 0) / span, 1.0)
    return base_lr * (final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * p)))
