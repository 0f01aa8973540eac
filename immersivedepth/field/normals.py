"""Surface normals of a density field: the unit negative density gradient ``-grad sigma``.

Central differences (step ``eps``, world units) work with any encoding backend (none needs a double backward);
they point from dense into free space. This is the one implementation: the volume renderer composites it at the
colour samples, render/frames.py evaluates it at a ray's expected hit point.
"""

from __future__ import annotations

import torch

__all__ = ["density_normals"]

#: Floor of the gradient norm before normalising (a flat density gives a zero normal, not NaN).
_MIN_GRAD_NORM = 1e-12


def density_normals(field, points: torch.Tensor, eps: float) -> torch.Tensor:
    """Unit ``-grad sigma`` ``(M, 3)`` at world points ``(M, 3)`` by central differences of step ``eps``.

    ``field.density(x (P, 3)) -> (P,)``; differentiable when the density is (the training normal loss uses it).
    """
    offs = torch.eye(3, dtype=points.dtype, device=points.device) * eps
    pts = torch.cat([points[:, None, :] + offs[None], points[:, None, :] - offs[None]], 1).reshape(-1, 3)
    s = field.density(pts).reshape(-1, 2, 3)
    g = (s[:, 0] - s[:, 1]) / (2.0 * eps)
    return -g / g.norm(dim=-1, keepdim=True).clamp_min(_MIN_GRAD_NORM)
