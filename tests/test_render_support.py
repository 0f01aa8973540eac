"""Shared helpers for the render tests and benchmark (no tests here).

``AnalyticSceneField``: a stand-in radiance field whose density is a sharp sigmoid of the exact signed
distance to the free space of a bundled synthetic scene (room box minus its boxes, spheres and
cylinders), colour by position. ``scene_sdf(scene, p)``: that signed distance (positive in free space),
exact near every surface, so ``|scene_sdf|`` is a mesh vertex's distance to the true surface.
"""

from __future__ import annotations

import numpy as np
import torch

from immersivedepth.scenes.synthetic import make_scene


def _box_outside_sdf(p, lo, hi):
    c = (lo + hi) / 2
    h = (hi - lo) / 2
    q = (p - c).abs() - h
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def _cyl_outside_sdf(p, cx, cz, r, y0, y1):
    dxz = torch.sqrt((p[:, 0] - cx) ** 2 + (p[:, 2] - cz) ** 2) - r
    yc, yh = (y0 + y1) / 2, (y1 - y0) / 2
    dy = (p[:, 1] - yc).abs() - yh
    q = torch.stack([dxz, dy], -1)
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def scene_sdf_torch(scene, p: torch.Tensor) -> torch.Tensor:
    """Signed distance ``(N,)`` to the scene's surfaces, positive in free space, ``p`` ``(N, 3)`` float64/32."""
    lo = torch.as_tensor(scene.room.lo, dtype=p.dtype)
    hi = torch.as_tensor(scene.room.hi, dtype=p.dtype)
    s = torch.minimum(p - lo, hi - p).min(dim=-1).values
    for ob in scene.objects:
        if ob.kind == "box":
            d = _box_outside_sdf(p, torch.as_tensor(ob.lo, dtype=p.dtype), torch.as_tensor(ob.hi, dtype=p.dtype))
        elif ob.kind == "sphere":
            d = (p - torch.as_tensor(ob.center, dtype=p.dtype)).norm(dim=-1) - ob.radius
        elif ob.kind == "cylinder":
            d = _cyl_outside_sdf(p, ob.center_xz[0], ob.center_xz[1], ob.radius, ob.y0, ob.y1)
        else:  # pragma: no cover
            raise ValueError(ob.kind)
        s = torch.minimum(s, d)
    return s


def scene_sdf(scene, p: np.ndarray) -> np.ndarray:
    return scene_sdf_torch(scene, torch.as_tensor(np.asarray(p, np.float64))).numpy()


class AnalyticSceneField(torch.nn.Module):
    """``density(x) = sigma_max * sigmoid(-sdf(x) / beta)``; ``color(x, d)`` smooth function of position."""

    def __init__(self, scene=None, sigma_max: float = 400.0, beta: float = 0.02, margin: float = 0.3):
        super().__init__()
        self.scene = scene or make_scene("living_room")
        self.sigma_max, self.beta = sigma_max, beta
        lo, hi = self.scene.bounds
        self.bounds = (torch.as_tensor(lo - margin, dtype=torch.float32),
                       torch.as_tensor(hi + margin, dtype=torch.float32))
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def sdf(self, x):
        return scene_sdf_torch(self.scene, x.float())

    def density(self, x):
        return self.sigma_max * torch.sigmoid(-self.sdf(x) / self.beta)

    def color(self, x, d=None):
        return true_color(x)

    def forward(self, x, d=None):
        return self.density(x), self.color(x, d)


def true_color(x):
    """Colour ``(N, 3)`` in [0, 1] as a function of position (torch or numpy)."""
    if isinstance(x, np.ndarray):
        return 0.5 + 0.4 * np.stack([np.sin(x[:, 0] * 1.3), np.cos(x[:, 1] * 1.7), np.sin(x[:, 2] * 0.9 + 1)], -1)
    return 0.5 + 0.4 * torch.stack([torch.sin(x[:, 0] * 1.3), torch.cos(x[:, 1] * 1.7),
                                    torch.sin(x[:, 2] * 0.9 + 1)], -1)


def simple_renderer(field, origins, dirs, *, near=0.0, far=None, n_samples=256, **_):
    """Reference quadrature volume renderer (uniform samples) used when the field package is absent."""
    if far is None:
        lo, hi = (torch.as_tensor(b, dtype=origins.dtype) for b in field.bounds)
        safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
        t1 = torch.maximum((lo - origins) / safe, (hi - origins) / safe).min(dim=-1).values
        far = t1.clamp_min(near + 1e-3)
    far = torch.as_tensor(far, dtype=origins.dtype).expand(origins.shape[0])
    u = (torch.arange(n_samples, dtype=origins.dtype) + 0.5) / n_samples
    t = near + (far[:, None] - near) * u[None]
    delta = (far - near)[:, None] / n_samples * torch.ones_like(t)
    x = origins[:, None] + t[..., None] * dirs[:, None]
    sig = field.density(x.reshape(-1, 3)).reshape(t.shape)
    rgb = field.color(x.reshape(-1, 3), None).reshape(*t.shape, 3)
    tau = sig * delta
    w = torch.exp(-(torch.cumsum(tau, 1) - tau)) * (1 - torch.exp(-tau))
    op = w.sum(1)
    return {"rgb": (w[..., None] * rgb).sum(1), "distance": (w * t).sum(1) + (1 - op) * far, "opacity": op}


def project_renderer():
    """The project's ``render_rays`` if the field package provides it, else :func:`simple_renderer`."""
    try:
        from immersivedepth.field.renderer import render_rays
    except ImportError:
        return simple_renderer
    return render_rays
