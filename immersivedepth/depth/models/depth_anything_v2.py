"""Depth Anything V2 (Yang et al. 2024) on timm's DINOv2 ViTs with the shared DPT head.

Reproduces ``depth_anything_v2.dpt.DepthAnythingV2`` of the official repository
(DepthAnything/Depth-Anything-V2) for the checkpoints ``depth_anything_v2_vit{s,b,l,g}.pth``:

* backbone: timm ``vit_{small,base,large,giant}_patch14_dinov2`` (patch 14, LayerScale, LayerNorm eps 1e-6);
  the giant's SwiGLU ``mlp.w12/w3`` are timm's ``mlp.fc1/fc2``;
* position embeddings resampled like DINOv2: bicubic, no antialiasing, ``scale_factor = (h + 0.1) / 37``
  (timm's own dynamic-size path differs at every size but 518x518);
* taps: four block outputs, each through the final LayerNorm, class token dropped;
* head: :class:`~immersivedepth.depth.models.dpt_head.DPTHead`, final upsampling to 14 x the patch grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .dpt_head import DPTHead
from .keymap import Rule, level_rule, rename_key, rules
from .preprocess import ResizeRule

__all__ = ["DAV2Config", "DAV2_CONFIGS", "DAV2_RESIZE", "DepthAnythingV2"]


@dataclass(frozen=True)
class DAV2Config:
    """Architecture of one Depth Anything V2 variant (values of the official ``model_configs``)."""

    name: str
    timm_name: str
    embed_dim: int
    depth: int
    num_heads: int
    taps: tuple[int, int, int, int]
    features: int
    out_channels: tuple[int, int, int, int]
    swiglu: bool = False
    patch_size: int = 14
    pos_grid: int = 37  # the checkpoints' position-embedding grid (518 / 14)
    interpolate_offset: float = 0.1  # DINOv2's "avoid floating point error" offset of the resampling


DAV2_CONFIGS: dict[str, DAV2Config] = {
    "vits": DAV2Config("vits", "vit_small_patch14_dinov2", 384, 12, 6, (2, 5, 8, 11), 64, (48, 96, 192, 384)),
    "vitb": DAV2Config("vitb", "vit_base_patch14_dinov2", 768, 12, 12, (2, 5, 8, 11), 128, (96, 192, 384, 768)),
    "vitl": DAV2Config("vitl", "vit_large_patch14_dinov2", 1024, 24, 16, (4, 11, 17, 23), 256,
                       (256, 512, 1024, 1024)),
    "vitg": DAV2Config("vitg", "vit_giant_patch14_dinov2", 1536, 40, 24, (9, 19, 29, 39), 384,
                       (1536, 1536, 1536, 1536), swiglu=True),
}

#: ``infer_image(raw, input_size=518)``: keep aspect, lower bound, multiple of 14, INTER_CUBIC, ImageNet stats;
#: output bilinear (align_corners=True) back to the input size.
DAV2_RESIZE = ResizeRule(
    height=518, width=518, keep_aspect_ratio=True, method="lower_bound", multiple_of=14,
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), output_mode="bilinear_ac",
)

_HEAD_FROM_OFFICIAL: list[Rule] = [
    level_rule(r"depth_head\.projects\.(\d+)\.", "head.reassemble.{n}.project.", 0),
    level_rule(r"depth_head\.resize_layers\.(\d+)\.", "head.reassemble.{n}.resize.", 0),
    level_rule(r"depth_head\.scratch\.layer(\d)_rn\.", "head.layer_rn.{n}.", -1),
    level_rule(r"depth_head\.scratch\.refinenet(\d)\.resConfUnit(\d)\.", "head.fusion.{n}.res{g2}.", -1),
    level_rule(r"depth_head\.scratch\.refinenet(\d)\.out_conv\.", "head.fusion.{n}.out_conv.", -1),
    *rules([
        (r"depth_head\.scratch\.output_conv1\.", "head.out_conv1."),
        (r"depth_head\.scratch\.output_conv2\.0\.", "head.out_conv2."),
        (r"depth_head\.scratch\.output_conv2\.2\.", "head.out_conv3."),
        (r"pretrained\.(blocks\.\d+\.mlp\.)w12\.", r"backbone.\1fc1."),
        (r"pretrained\.(blocks\.\d+\.mlp\.)w3\.", r"backbone.\1fc2."),
        (r"pretrained\.", "backbone."),
    ]),
]

_HEAD_TO_OFFICIAL: list[Rule] = [
    level_rule(r"head\.reassemble\.(\d+)\.project\.", "depth_head.projects.{n}.", 0),
    level_rule(r"head\.reassemble\.(\d+)\.resize\.", "depth_head.resize_layers.{n}.", 0),
    level_rule(r"head\.layer_rn\.(\d+)\.", "depth_head.scratch.layer{n}_rn.", 1),
    level_rule(r"head\.fusion\.(\d+)\.res(\d)\.", "depth_head.scratch.refinenet{n}.resConfUnit{g2}.", 1),
    level_rule(r"head\.fusion\.(\d+)\.out_conv\.", "depth_head.scratch.refinenet{n}.out_conv.", 1),
    *rules([
        (r"head\.out_conv1\.", "depth_head.scratch.output_conv1."),
        (r"head\.out_conv2\.", "depth_head.scratch.output_conv2.0."),
        (r"head\.out_conv3\.", "depth_head.scratch.output_conv2.2."),
        (r"backbone\.", "pretrained."),
    ]),
]
_SWIGLU_TO_OFFICIAL: list[Rule] = rules([
    (r"backbone\.(blocks\.\d+\.mlp\.)fc1\.", r"pretrained.\1w12."),
    (r"backbone\.(blocks\.\d+\.mlp\.)fc2\.", r"pretrained.\1w3."),
])


class DepthAnythingV2(nn.Module):
    """Depth Anything V2 network: normalised images (B,3,H,W), H and W multiples of 14 -> disparity (B,H,W).

    ``backbone`` is the timm DINOv2 ViT (plus the checkpoint's unused ``mask_token``), ``head`` the DPT head.
    Build under ``torch.device("meta")`` and load a state dict with ``assign=True`` to avoid initialising
    weights that are overwritten anyway (see :mod:`~immersivedepth.depth.models.loader`).
    """

    family = "dav2"

    def __init__(self, cfg: DAV2Config):
        super().__init__()
        self.cfg = cfg
        self.backbone = timm.create_model(cfg.timm_name, pretrained=False, num_classes=0, img_size=518)
        if self.backbone.embed_dim != cfg.embed_dim or len(self.backbone.blocks) != cfg.depth:
            raise ValueError(f"timm {cfg.timm_name} does not have the {cfg.name} shape")
        # DINOv2's mask token: stored in the checkpoints, unused at inference
        self.backbone.mask_token = nn.Parameter(torch.zeros(1, cfg.embed_dim))
        self.head = DPTHead(
            in_channels=[cfg.embed_dim] * 4,
            reassemble_channels=cfg.out_channels,
            resizes=("up4", "up2", "none", "down2"),
            features=cfg.features,
            readout="ignore",
        )

    # -- key layout -------------------------------------------------------------------------------------
    @staticmethod
    def from_official_key(key: str) -> str:
        """Official checkpoint key -> our state-dict key."""
        return rename_key(key, _HEAD_FROM_OFFICIAL)

    def to_official_key(self, key: str) -> str:
        """Our state-dict key -> the official checkpoint key."""
        if self.cfg.swiglu:
            new = rename_key(key, _SWIGLU_TO_OFFICIAL)
            if new != key:
                return new
        return rename_key(key, _HEAD_TO_OFFICIAL)

    def official_extra_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers the official files store that our modules keep non-persistent (none for DA V2)."""
        return {}

    # -- forward ----------------------------------------------------------------------------------------
    def interpolate_pos_embed(self, grid_h: int, grid_w: int, square_input: bool) -> torch.Tensor:
        """Position embeddings (1, 1 + grid_h*grid_w, D) resampled exactly as DINOv2 does.

        DINOv2 returns the stored table unchanged when the token count matches and the input is square;
        otherwise it resamples the 37x37 grid bicubically (no antialiasing) with
        ``scale_factor = ((grid + offset) / 37)`` per axis, in float32.
        """
        pos = self.backbone.pos_embed
        n = pos.shape[1] - 1
        if grid_h * grid_w == n and square_input:
            return pos
        g = int(math.sqrt(n))
        patch = pos.float()[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        off = self.cfg.interpolate_offset
        sy, sx = (grid_h + off) / math.sqrt(n), (grid_w + off) / math.sqrt(n)
        patch = F.interpolate(patch, scale_factor=(sy, sx), mode="bicubic", antialias=False)
        if patch.shape[-2:] != (grid_h, grid_w):
            raise RuntimeError(f"pos-embed resampling gave {tuple(patch.shape[-2:])}, expected {(grid_h, grid_w)}")
        patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat((pos.float()[:, :1], patch), dim=1).to(pos.dtype)

    def forward_taps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """(B,3,H,W) -> four normed patch-token maps (B, h*w, D) and the patch grid (h, w)."""
        p = self.cfg.patch_size
        b, _, h, w = x.shape
        if h % p or w % p:
            raise ValueError(f"Depth Anything V2 input must be a multiple of {p} pixels, got {h}x{w}")
        gh, gw = h // p, w // p
        vit = self.backbone
        t = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat((vit.cls_token.expand(b, -1, -1).to(t.dtype), t), dim=1)
        t = t + self.interpolate_pos_embed(gh, gw, h == w).to(t.dtype)
        taps = []
        last = max(self.cfg.taps)
        for i, blk in enumerate(vit.blocks[: last + 1]):
            t = blk(t)
            if i in self.cfg.taps:
                taps.append(vit.norm(t)[:, 1:])
        return taps, (gh, gw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (B,3,H,W) -> relative disparity (B,H,W), ReLU'd."""
        taps, (gh, gw) = self.forward_taps(x)
        p = self.cfg.patch_size
        out = self.head(taps, None, (gh, gw), out_size=(gh * p, gw * p))
        return out[:, 0]
