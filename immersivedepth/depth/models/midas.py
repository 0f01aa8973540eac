"""MiDaS v3.1 DPT models (Birkl et al. 2023) on timm >= 1.0 backbones with the shared DPT head.

Reproduces ``midas.dpt_depth.DPTDepthModel`` of isl-org/MiDaS (run with timm 0.6.13) for the checkpoints
``dpt_beit_large_512``, ``dpt_beit_large_384``, ``dpt_beit_base_384``, ``dpt_swin2_large_384``,
``dpt_swin2_base_384``, ``dpt_swin2_tiny_256``, ``dpt_large_384`` and ``dpt_hybrid_384``.
``dpt_swin_large_384``, ``dpt_next_vit_large_384`` and ``dpt_levit_224`` are not supported (LeViT has no
timm >= 0.9 key remap; the loader says so).

What MiDaS changes in the timm models, done here without monkey-patching:

* BEiT: any input size; the relative-position-bias table is bilinearly resized to the token grid
  (``_get_rel_pos_bias`` of ``midas/backbones/beit.py``) and a fresh ``gen_relative_position_index`` is used.
  Taps are raw block outputs (class token kept for the readout projection).
* ViT / ViT-hybrid: the position embeddings are bilinearly resized (``align_corners=False``) to the grid
  (``forward_flex``); the hybrid's first two taps are the ResNet stages 1 and 2.
* Swin V2: taps are the last block outputs of each stage (timm >= 1.0 blocks are NHWC); timm 0.6 stores each
  stage's patch-merging at the end of the stage, timm 1.0 at the start of the next one (key remap below).

CPU inference speed (same result up to float rounding): Swin V2 window attention through
``F.scaled_dot_product_attention`` with the weight-only terms (continuous position bias + shift mask, qkv
bias, logit scale) cached while autograd is off (:class:`_SdpaWindowAttention`), cyclic shift + window
partition as one precomputed row gather (:meth:`Swin2Backbone.block_forward`); the head's fast paths are in
:mod:`~immersivedepth.depth.models.dpt_head`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from timm.models.swin_transformer_v2 import PatchMerging as PatchMergingV2
from timm.models.swin_transformer_v2 import WindowAttention as WindowAttentionV2
from torch import nn

from .dpt_head import DPTHead
from .keymap import Rule, level_rule, rename_key, rules
from .preprocess import ResizeRule
from .tensor_cache import TensorSnapshot

__all__ = ["MidasConfig", "MIDAS_CONFIGS", "MIDAS_UNSUPPORTED", "MidasDPT", "midas_resize_rule",
           "gen_relative_position_index", "resized_relative_position_bias"]


@dataclass(frozen=True)
class MidasConfig:
    """One MiDaS v3.1 DPT model type (``model_type`` of ``midas/model_loader.py``)."""

    name: str
    kind: str  # "beit" | "swin2" | "vit" | "vit_hybrid"
    timm_name: str  # the timm >= 1.0 model we build on
    hooks: tuple[int, int, int, int]
    in_channels: tuple[int, int, int, int]  # width of each tap
    reassemble_channels: tuple[int | None, int | None, int | None, int | None]
    net_size: int
    keep_aspect_ratio: bool
    features: int = 256
    patch_size: int = 16


def _vit_like(name, kind, timm_name, hooks, width, channels, net_size):
    return MidasConfig(name, kind, timm_name, hooks, (width,) * 4, channels, net_size, True)


MIDAS_CONFIGS: dict[str, MidasConfig] = {
    "dpt_beit_large_512": _vit_like("dpt_beit_large_512", "beit", "beit_large_patch16_512", (5, 11, 17, 23), 1024,
                                    (256, 512, 1024, 1024), 512),
    "dpt_beit_large_384": _vit_like("dpt_beit_large_384", "beit", "beit_large_patch16_384", (5, 11, 17, 23), 1024,
                                    (256, 512, 1024, 1024), 384),
    "dpt_beit_base_384": _vit_like("dpt_beit_base_384", "beit", "beit_base_patch16_384", (2, 5, 8, 11), 768,
                                   (96, 192, 384, 768), 384),
    "dpt_swin2_large_384": MidasConfig("dpt_swin2_large_384", "swin2", "swinv2_large_window12to24_192to384",
                                       (1, 1, 17, 1), (192, 384, 768, 1536), (None,) * 4, 384, False,
                                       patch_size=4),
    "dpt_swin2_base_384": MidasConfig("dpt_swin2_base_384", "swin2", "swinv2_base_window12to24_192to384",
                                      (1, 1, 17, 1), (128, 256, 512, 1024), (None,) * 4, 384, False, patch_size=4),
    "dpt_swin2_tiny_256": MidasConfig("dpt_swin2_tiny_256", "swin2", "swinv2_tiny_window16_256",
                                      (1, 1, 5, 1), (96, 192, 384, 768), (None,) * 4, 256, False, patch_size=4),
    "dpt_large_384": _vit_like("dpt_large_384", "vit", "vit_large_patch16_384", (5, 11, 17, 23), 1024,
                               (256, 512, 1024, 1024), 384),
    "dpt_hybrid_384": MidasConfig("dpt_hybrid_384", "vit_hybrid", "vit_base_r50_s16_384", (0, 1, 8, 11),
                                  (256, 512, 768, 768), (None, None, 768, 768), 384, True),
}

#: Official model types we deliberately do not build, with the reason given to the user.
MIDAS_UNSUPPORTED: dict[str, str] = {
    "dpt_levit_224": "LeViT has no timm >= 0.9 key remap; use another MiDaS v3.1 model",
    "dpt_swin_large_384": "Swin V1 is not part of this project's model list; use dpt_swin2_large_384",
    "dpt_next_vit_large_384": "Next-ViT needs an external package; use another MiDaS v3.1 model",
}


def midas_resize_rule(cfg: MidasConfig) -> ResizeRule:
    """``run.py`` preprocessing: mean = std = 0.5, multiple of 32, "minimal", INTER_CUBIC; output bicubic."""
    return ResizeRule(
        height=cfg.net_size, width=cfg.net_size, keep_aspect_ratio=cfg.keep_aspect_ratio, method="minimal",
        multiple_of=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), output_mode="bicubic",
    )


# ---------------------------------------------------------------------------------------------------------
# BEiT relative position bias for arbitrary token grids
# ---------------------------------------------------------------------------------------------------------
def gen_relative_position_index(window: tuple[int, int], device=None) -> torch.Tensor:
    """BEiT's relative position index (N+1, N+1), N = window[0]*window[1], with the three class-token slots."""
    wh, ww = int(window[0]), int(window[1])
    num_rel = (2 * wh - 1) * (2 * ww - 1) + 3
    coords = torch.stack(torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device),
                                        indexing="ij")).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()  # N, N, 2
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    n = wh * ww
    index = torch.zeros((n + 1, n + 1), dtype=rel.dtype, device=device)
    index[1:, 1:] = rel.sum(-1)
    index[0, 0:] = num_rel - 3
    index[0:, 0] = num_rel - 2
    index[0, 0] = num_rel - 1
    return index


def resized_relative_position_bias(table: torch.Tensor, native_window: tuple[int, int], window: tuple[int, int],
                                   index: torch.Tensor | None = None) -> torch.Tensor:
    """MiDaS's BEiT bias for a ``window`` token grid: (1, heads, N+1, N+1).

    The (2h-1)(2w-1) part of ``table`` (num_relative_distance, heads) is resized bilinearly
    (``align_corners=False``) from the native window's extent, the three class-token entries are kept.
    """
    old_h, old_w = 2 * native_window[0] - 1, 2 * native_window[1] - 1
    new_h, new_w = 2 * window[0] - 1, 2 * window[1] - 1
    n_old = table.shape[0] - 3
    sub = table[:n_old].reshape(1, old_w, old_h, -1).permute(0, 3, 1, 2)
    sub = F.interpolate(sub, size=(new_h, new_w), mode="bilinear", align_corners=False)
    sub = sub.permute(0, 2, 3, 1).reshape(new_h * new_w, -1)
    new_table = torch.cat([sub, table[n_old:]])
    if index is None:
        index = gen_relative_position_index(window, device=table.device)
    n = window[0] * window[1] + 1
    bias = new_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
    return bias.unsqueeze(0)


# ---------------------------------------------------------------------------------------------------------
# Backbones: forward(x (B,3,H,W)) -> (taps: 4 x ((B,N,D) tokens | (B,C,h,w) maps), cls: 4 x (B,D) | None, grid)
# ---------------------------------------------------------------------------------------------------------
class BeitBackbone(nn.Module):
    """timm BEiT with MiDaS's any-size relative position bias; taps are raw block outputs."""

    persistent_in_timm06 = ("relative_position_index",)

    def __init__(self, cfg: MidasConfig):
        super().__init__()
        self.cfg = cfg
        self.model = timm.create_model(cfg.timm_name, pretrained=False)
        self._index_cache: dict[tuple, torch.Tensor] = {}

    def _index(self, window: tuple[int, int], device) -> torch.Tensor:
        key = (window, str(device))
        if key not in self._index_cache:
            self._index_cache[key] = gen_relative_position_index(window, device=device)
        return self._index_cache[key]

    @staticmethod
    def _attention(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv_bias = torch.cat((attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias))
        qkv = F.linear(x, attn.qkv.weight, qkv_bias).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return attn.proj(o.transpose(1, 2).reshape(b, n, -1))

    def forward(self, x: torch.Tensor):
        m = self.model
        p = self.cfg.patch_size
        b, _, h, w = x.shape
        grid = (h // p, w // p)
        t = m.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat((m.cls_token.expand(b, -1, -1).to(t.dtype), t), dim=1)
        if m.pos_embed is not None:
            t = t + m.pos_embed
        index = self._index(grid, x.device)
        taps, cls = [], []
        for i, blk in enumerate(m.blocks[: max(self.cfg.hooks) + 1]):
            attn = blk.attn
            bias = resized_relative_position_bias(attn.relative_position_bias_table, attn.window_size, grid, index)
            y = self._attention(attn, blk.norm1(t), bias)
            t = t + (blk.gamma_1 * y if blk.gamma_1 is not None else y)
            y = blk.mlp(blk.norm2(t))
            t = t + (blk.gamma_2 * y if blk.gamma_2 is not None else y)
            if i in self.cfg.hooks:
                taps.append(t[:, 1:])
                cls.append(t[:, 0])
        return taps, cls, grid


class VitBackbone(nn.Module):
    """timm ViT (or ViT-hybrid) with MiDaS's ``forward_flex`` bilinear position-embedding resize."""

    persistent_in_timm06: tuple[str, ...] = ()

    def __init__(self, cfg: MidasConfig):
        super().__init__()
        self.cfg = cfg
        self.model = timm.create_model(cfg.timm_name, pretrained=False)

    def resized_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1, 1 + gh*gw, D): grid part resized bilinearly (align_corners=False), class token kept."""
        pos = self.model.pos_embed
        tok, g = pos[:, :1], pos[0, 1:]
        old = int(math.sqrt(len(g)))
        g = g.reshape(1, old, old, -1).permute(0, 3, 1, 2)
        g = F.interpolate(g, size=grid, mode="bilinear", align_corners=False)
        g = g.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
        return torch.cat([tok, g], dim=1)

    def forward(self, x: torch.Tensor):
        m = self.model
        p = self.cfg.patch_size
        b, _, h, w = x.shape
        grid = (h // p, w // p)
        taps: list[torch.Tensor] = []
        cls: list[torch.Tensor | None] = []
        if self.cfg.kind == "vit_hybrid":
            cnn = m.patch_embed.backbone
            f = cnn.stem(x)
            for s, stage in enumerate(cnn.stages):
                f = stage(f)
                if s < 2:
                    taps.append(f)
                    cls.append(None)
            f = cnn.norm(f)
            vit_hooks = self.cfg.hooks[2:]
        else:
            f = x
            vit_hooks = self.cfg.hooks
        t = m.patch_embed.proj(f).flatten(2).transpose(1, 2)
        t = torch.cat((m.cls_token.expand(b, -1, -1).to(t.dtype), t), dim=1)
        t = t + self.resized_pos_embed(grid).to(t.dtype)
        for i, blk in enumerate(m.blocks[: max(vit_hooks) + 1]):
            t = blk(t)
            if i in vit_hooks:
                taps.append(t[:, 1:])
                cls.append(t[:, 0])
        return taps, cls, grid


class _SdpaWindowAttention(WindowAttentionV2):
    """timm's Swin V2 window attention with the softmax part done by ``F.scaled_dot_product_attention``.

    Same parameters, buffers and result (up to float rounding) as timm's ``WindowAttention.forward``: cosine
    attention with the per-head clamped ``logit_scale`` folded into the normalised queries, the continuous
    position bias ``16 * sigmoid(cpb_mlp(table))`` and the shift mask passed as an additive ``attn_mask``.

    Inference cache: with autograd off (``torch.no_grad`` / ``torch.inference_mode``) the weight-only terms
    (the concatenated qkv bias, the clamped ``exp(logit_scale)`` and the position bias, with the shift mask
    added) are computed once and reused. The cache key holds ``data_ptr`` and the in-place version counter of
    every tensor involved (``cpb_mlp`` weights, ``logit_scale``, q/k/v biases, the coordinate table and index
    buffers, the mask), so ``load_state_dict``, optimiser steps, ``.to()`` and in-place edits under
    ``torch.no_grad`` invalidate it. Edits through ``.data`` bypass version counting: call
    :meth:`clear_cache` after those. With autograd on, everything is recomputed (and nothing is cached).
    The full bias (nW or 1, nH, N, N) is cached when it takes at most ``full_bias_cache_bytes``; beyond that
    only the small (2Wh-1)(2Ww-1) x nH table of ``16 * sigmoid(cpb_mlp(table))`` is, and gathered per call.
    """

    full_bias_cache_bytes: int = 16 * 2**20

    def clear_cache(self) -> None:
        """Drop the cached weight-derived tensors (recomputed on the next inference call)."""
        self.__dict__["_infer_cache"] = {}

    def _cached(self, name: str, tensors: tuple, compute):
        """``compute()``, cached under ``name`` while ``tensors`` are unchanged (autograd off only)."""
        if torch.is_grad_enabled():
            return compute()
        cache = self.__dict__.setdefault("_infer_cache", {})
        hit = cache.get(name)
        if hit is not None and hit[0].matches(*tensors):
            return hit[1]
        value = compute()
        snapshot = TensorSnapshot(*tensors)
        if snapshot.valid:
            cache[name] = (snapshot, value)
        return value

    def _bias_table(self) -> torch.Tensor:
        """``16 * sigmoid(cpb_mlp(relative_coords_table))`` as (nH, (2Wh-1)(2Ww-1)) (the sigmoid commutes with
        the index gather, so applying it to the table is the same as timm's order)."""
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        return (16 * torch.sigmoid(table)).t().contiguous()

    def attention_bias(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Additive attention bias: position bias (1, nH, N, N), plus the shift ``mask`` (nW, N, N) when given
        -> (nW, nH, N, N). Cached in inference (see the class docstring)."""
        n = self.relative_position_index.shape[0]
        params = [*self.cpb_mlp.parameters(), self.relative_coords_table]
        nw = 1 if mask is None else mask.shape[0]
        full_bytes = nw * self.num_heads * n * n * self.relative_coords_table.element_size()

        def table():
            return self._bias_table()

        def full():
            t = self._cached("bias_table", tuple(params), table)
            bias = t[:, self.relative_position_index.view(-1)].view(1, self.num_heads, n, n)
            return bias if mask is None else bias + mask.unsqueeze(1).to(bias.dtype)

        if full_bytes <= self.full_bias_cache_bytes:
            name = "bias_full" if mask is None else "bias_full_masked"
            return self._cached(name, (*params, self.relative_position_index, mask), full)
        return full()

    def _qkv_bias(self) -> torch.Tensor | None:
        if self.q_bias is None:
            return None
        return self._cached("qkv_bias", (self.q_bias, self.k_bias, self.v_bias),
                            lambda: torch.cat((self.q_bias, self.k_bias, self.v_bias)))

    def _qk_scale(self) -> torch.Tensor:
        """(2, nH, 1): the clamped ``exp(logit_scale)`` for the queries, ones for the keys."""
        def compute():
            scale = torch.clamp(self.logit_scale, max=math.log(1.0 / 0.01)).exp().view(1, self.num_heads, 1)
            return torch.cat((scale, torch.ones_like(scale)))
        return self._cached("qk_scale", (self.logit_scale,), compute)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B*nW, N, C) windows -> (B*nW, N, C); ``mask`` (nW, N, N) additive or ``None``."""
        b_, n, c = x.shape
        qkv = F.linear(x, self.qkv.weight, self._qkv_bias()).view(b_, n, 3, self.num_heads, -1)
        qk = qkv[:, :, :2]
        # F.normalize(q) * exp(logit_scale) and F.normalize(k) in one pass: x * (scale / max(|x|, eps))
        norm = torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min(1e-12)
        qk = qk * torch.div(self._qk_scale(), norm)
        q, k, v = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        bias = self.attention_bias(mask).to(q.dtype)
        nw = bias.shape[0]
        if nw == 1 or nw == b_:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        else:  # B images of nW windows each: the (nW, nH, N, N) mask only broadcasts per image
            o = torch.cat([F.scaled_dot_product_attention(q[i:i + nw], k[i:i + nw], v[i:i + nw], attn_mask=bias,
                                                          scale=1.0) for i in range(0, b_, nw)])
        return self.proj(o.transpose(1, 2).reshape(b_, n, c))


class Swin2Backbone(nn.Module):
    """timm Swin Transformer V2 at its native (square) size; taps are stage outputs at the hooks, NCHW.

    ``fast_attention=True`` switches every window attention to :class:`_SdpaWindowAttention` (a subclass
    with the same state; results equal to float rounding) and runs the blocks with :meth:`block_forward`:
    the cyclic shift and window partition (and their inverse) as one precomputed row gather each, no
    zero-size padding copies, no partition at all when a window covers the whole map.
    """

    persistent_in_timm06 = ("attn_mask",)

    def __init__(self, cfg: MidasConfig, fast_attention: bool = True):
        super().__init__()
        self.cfg = cfg
        self.fast_attention = fast_attention
        self.model = timm.create_model(cfg.timm_name, pretrained=False)
        self._perm_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        if fast_attention:
            for mod in self.model.modules():
                if type(mod) is WindowAttentionV2:
                    mod.__class__ = _SdpaWindowAttention

    def window_permutation(self, batch: int, height: int, width: int, window: tuple[int, int],
                           shift: tuple[int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices ``(gather, scatter)`` into (batch*height*width, C) raster-order tokens.

        ``tokens[gather]`` equals timm's ``window_partition(torch.roll(x, -shift))`` flattened to
        (batch*nW*Wh*Ww, C); ``windows[scatter]`` undoes it (``window_reverse`` then ``torch.roll(+shift)``).
        """
        key = (batch, height, width, tuple(window), tuple(shift), str(device))
        hit = self._perm_cache.get(key)
        if hit is not None:
            return hit
        wh, ww = window
        sh, sw = shift
        r = torch.arange(height).view(height // wh, 1, wh, 1)  # rows of the rolled map, window-major order
        c = torch.arange(width).view(1, width // ww, 1, ww)
        src = (((r + sh) % height) * width + (c + sw) % width).reshape(-1)  # (H*W,) raster index per window slot
        gather = (torch.arange(batch).view(-1, 1) * (height * width) + src).reshape(-1)
        scatter = torch.empty_like(gather)
        scatter[gather] = torch.arange(gather.numel())
        hit = (gather.to(device), scatter.to(device))
        self._perm_cache[key] = hit
        return hit

    def block_forward(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One timm ``SwinTransformerV2Block`` (eval semantics): (B,H,W,C) -> (B,H,W,C)."""
        b, h, w, c = x.shape
        wh, ww = blk.window_size
        if h % wh or w % ww or getattr(blk, "dynamic_mask", False):
            return blk(x)  # padded windows: timm's own path
        n = wh * ww
        tokens = x.reshape(b * h * w, c)
        if (wh, ww) == (h, w) and not any(blk.shift_size):
            y = blk.attn(tokens.view(b, n, c), blk.attn_mask)  # one window per image: no partition
        else:
            gather, scatter = self.window_permutation(b, h, w, (wh, ww), blk.shift_size, x.device)
            y = blk.attn(tokens.index_select(0, gather).view(-1, n, c), blk.attn_mask)
            y = y.reshape(-1, c).index_select(0, scatter)
        x = x + blk.drop_path1(blk.norm1(y.view(b, h, w, c)))
        t = x.reshape(b, h * w, c)
        t = t + blk.drop_path2(blk.norm2(blk.mlp(t)))
        return t.view(b, h, w, c)

    @staticmethod
    def _downsample(ds: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """timm's PatchMerging without its (zero-size) padding copy on even maps: (B,H,W,C) -> (B,H/2,W/2,2C)."""
        b, h, w, c = x.shape
        if not isinstance(ds, PatchMergingV2) or h % 2 or w % 2:
            return ds(x)
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return ds.norm(ds.reduction(x))

    def forward(self, x: torch.Tensor):
        n = self.cfg.net_size
        if tuple(x.shape[-2:]) != (n, n):
            raise ValueError(f"{self.cfg.name} runs at {n}x{n} only (MiDaS resizes to it), got {tuple(x.shape[-2:])}")
        t = self.model.patch_embed(x)  # (B,h,w,C)
        taps = []
        for s, stage in enumerate(self.model.layers):
            if self.fast_attention:
                t = self._downsample(stage.downsample, t)
            else:
                t = stage.downsample(t)
            for i, blk in enumerate(stage.blocks):
                t = self.block_forward(blk, t) if self.fast_attention else blk(t)
                if i == self.cfg.hooks[s]:
                    taps.append(t.permute(0, 3, 1, 2))
        grid = tuple(taps[0].shape[-2:])
        return taps, [None] * 4, grid


_BACKBONES = {"beit": BeitBackbone, "vit": VitBackbone, "vit_hybrid": VitBackbone, "swin2": Swin2Backbone}

# ---------------------------------------------------------------------------------------------------------
# key layout (timm 0.6.13 MiDaS files <-> ours)
# ---------------------------------------------------------------------------------------------------------
_FROM_OFFICIAL: list[Rule] = [
    level_rule(r"pretrained\.act_postprocess(\d)\.0\.project\.0\.", "head.reassemble.{n}.readout.0.", -1),
    level_rule(r"pretrained\.act_postprocess(\d)\.3\.", "head.reassemble.{n}.project.", -1),
    level_rule(r"pretrained\.act_postprocess(\d)\.4\.", "head.reassemble.{n}.resize.", -1),
    level_rule(r"scratch\.layer(\d)_rn\.", "head.layer_rn.{n}.", -1),
    level_rule(r"scratch\.refinenet(\d)\.resConfUnit(\d)\.", "head.fusion.{n}.res{g2}.", -1),
    level_rule(r"scratch\.refinenet(\d)\.out_conv\.", "head.fusion.{n}.out_conv.", -1),
    *rules([
        (r"scratch\.output_conv\.0\.", "head.out_conv1."),
        (r"scratch\.output_conv\.2\.", "head.out_conv2."),
        (r"scratch\.output_conv\.4\.", "head.out_conv3."),
    ]),
]
_SWIN2_FROM_OFFICIAL: list[Rule] = [
    level_rule(r"pretrained\.model\.layers\.(\d+)\.downsample\.", "backbone.model.layers.{n}.downsample.", 1),
    *rules([(r"pretrained\.model\.head\.", "backbone.model.head.fc.")]),
]
_TO_OFFICIAL: list[Rule] = [
    level_rule(r"head\.reassemble\.(\d+)\.readout\.0\.", "pretrained.act_postprocess{n}.0.project.0.", 1),
    level_rule(r"head\.reassemble\.(\d+)\.project\.", "pretrained.act_postprocess{n}.3.", 1),
    level_rule(r"head\.reassemble\.(\d+)\.resize\.", "pretrained.act_postprocess{n}.4.", 1),
    level_rule(r"head\.layer_rn\.(\d+)\.", "scratch.layer{n}_rn.", 1),
    level_rule(r"head\.fusion\.(\d+)\.res(\d)\.", "scratch.refinenet{n}.resConfUnit{g2}.", 1),
    level_rule(r"head\.fusion\.(\d+)\.out_conv\.", "scratch.refinenet{n}.out_conv.", 1),
    *rules([
        (r"head\.out_conv1\.", "scratch.output_conv.0."),
        (r"head\.out_conv2\.", "scratch.output_conv.2."),
        (r"head\.out_conv3\.", "scratch.output_conv.4."),
    ]),
]
_SWIN2_TO_OFFICIAL: list[Rule] = [
    level_rule(r"backbone\.model\.layers\.(\d+)\.downsample\.", "pretrained.model.layers.{n}.downsample.", -1),
    *rules([(r"backbone\.model\.head\.fc\.", "pretrained.model.head.")]),
]
_PREFIX_FROM = rules([(r"pretrained\.model\.", "backbone.model.")])
_PREFIX_TO = rules([(r"backbone\.model\.", "pretrained.model.")])


class MidasDPT(nn.Module):
    """MiDaS v3.1 DPT network: normalised (B,3,H,W) -> relative disparity (B,H,W), ReLU'd.

    H and W must be multiples of 32 (the official resize guarantees it); Swin V2 models run at their square
    ``net_size`` only.
    """

    family = "midas"

    def __init__(self, cfg: MidasConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = _BACKBONES[cfg.kind](cfg)
        if cfg.kind == "swin2":
            resizes, readout = ("none",) * 4, "ignore"
        elif cfg.kind == "vit_hybrid":
            resizes, readout = ("none", "none", "none", "down2"), ("ignore", "ignore", "project", "project")
        else:
            resizes, readout = ("up4", "up2", "none", "down2"), "project"
        self.head = DPTHead(cfg.in_channels, cfg.reassemble_channels, resizes, cfg.features, readout=readout)

    def from_official_key(self, key: str) -> str:
        """Official (timm 0.6.13 MiDaS) key -> our state-dict key."""
        if self.cfg.kind == "swin2":
            new = rename_key(key, _SWIN2_FROM_OFFICIAL)
            if new != key:
                return new
        new = rename_key(key, _FROM_OFFICIAL)
        return new if new != key else rename_key(key, _PREFIX_FROM)

    def to_official_key(self, key: str) -> str:
        """Our state-dict key -> the official key."""
        if self.cfg.kind == "swin2":
            new = rename_key(key, _SWIN2_TO_OFFICIAL)
            if new != key:
                return new
        new = rename_key(key, _TO_OFFICIAL)
        return new if new != key else rename_key(key, _PREFIX_TO)

    def official_extra_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers the timm 0.6.13 files persist that timm >= 1.0 keeps non-persistent, under official keys."""
        suffixes = self.backbone.persistent_in_timm06
        persistent = set(self.state_dict(keep_vars=True).keys())
        out = {}
        for name, buf in self.named_buffers():
            if buf is not None and name not in persistent and name.rsplit(".", 1)[-1] in suffixes:
                out[self.to_official_key(name)] = buf
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"MiDaS input must be a multiple of 32 pixels, got {tuple(x.shape[-2:])}")
        taps, cls, grid = self.backbone(x)
        return self.head(taps, cls, grid)[:, 0]
