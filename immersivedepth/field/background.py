"""What a ray sees after it leaves the known scene: a learned environment map on the sphere.

Pixels without a distance (open doors, windows, sky, sensor holes) look at content far beyond the scene box. The
field models it as an equirectangular texture of *directions only*: ``env(d)`` is the same for every ray origin,
so that content stays put at infinity when the camera moves (what a sky or a far landscape does). The volume
renderer composites it behind the field::

    rgb = sum_i w_i c_i + (1 - opacity) * env(d)

The texture stores logits ``(3, H, W)`` (``sigmoid`` keeps colours in (0, 1) without clamping gradients away) and
is looked up bilinearly at the ray direction's ERP pixel coordinates (conventions of ``sphere.py``; longitude wraps,
rows past a pole continue on the opposite meridian), so a training ray through a pixel centre reads exactly one
texel. At the panorama's resolution that gives every pixel without a distance its own colour.

Initialisation: the texture starts as the (resized) training panorama, i.e. what the scene looks like from its
centre. Where the field is transparent this is already the right answer for the training view; behind opaque
surfaces the texture is never seen from the centre and is only a plausible guess for rays that escape from
other viewpoints. Training then refines it through the colour loss of every ray that reaches it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from immersivedepth import sphere

__all__ = ["EnvironmentMap"]


class EnvironmentMap(nn.Module):
    """Learned ERP colour texture indexed by direction.

    Args:
        height, width: texture size (``width == 2 * height``, like the panorama).
        init_color: ``(3,)`` colour in (0, 1) of the initial texture (before :meth:`init_from_panorama`).
        eps: colours are clipped to ``[eps, 1 - eps]`` before ``logit`` (pure black/white would be infinite).

    Parameter ``logits`` ``(3, H, W)``.
    """

    def __init__(self, height: int, width: int, *, init_color=(0.5, 0.5, 0.5), eps: float = 1e-3):
        super().__init__()
        height, width = int(height), int(width)
        if height < 1 or width != 2 * height:
            raise ValueError(f"EnvironmentMap: the texture must be W = 2H >= 2 pixels, got H={height}, W={width}")
        self.eps = float(eps)
        col = torch.as_tensor(init_color, dtype=torch.float32).reshape(3, 1, 1)
        self.logits = nn.Parameter(torch.logit(col.clamp(self.eps, 1.0 - self.eps)).expand(3, height, width).clone())

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the texture."""
        return int(self.logits.shape[1]), int(self.logits.shape[2])

    @torch.no_grad()
    def init_from_panorama(self, rgb) -> None:
        """Set the texture to an ERP panorama ``(h, w, 3)`` (numpy or torch, floats in [0, 1]), resized to the
        texture's size (area average when shrinking, bilinear when growing)."""
        img = torch.as_tensor(np.ascontiguousarray(rgb), dtype=torch.float32)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"EnvironmentMap.init_from_panorama: need (H, W, 3) colours, got {tuple(img.shape)}")
        img = img.permute(2, 0, 1)[None]
        h, w = self.shape
        if tuple(img.shape[-2:]) != (h, w):
            shrink = img.shape[-1] > w
            img = F.interpolate(img, size=(h, w), mode="area" if shrink else "bilinear",
                                align_corners=None if shrink else False)
        col = img[0].to(self.logits).clamp(self.eps, 1.0 - self.eps)
        self.logits.copy_(torch.logit(col))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        """Colours ``(N, 3)`` in (0, 1) seen along directions ``(N, 3)`` (need not be unit)."""
        if dirs.shape[0] == 0:
            return dirs.new_zeros(0, 3)
        h, w = self.shape
        u, v = sphere.dir_to_pixel(dirs.to(self.logits.dtype), w, h)
        return torch.sigmoid(sphere.erp_sample(self.logits, u, v)).transpose(0, 1)
