"""Optional Stable-Diffusion inpainting of ERP holes on tangent tiles (``diffusers``, a local model only).

Used when ``inpaint.model_dir`` points at a diffusers Stable-Diffusion *inpainting* folder (``model_index.json``,
``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``); nothing is downloaded. The panorama is cut
into the 20 icosahedron tangent views (:func:`immersivedepth.sphere.tangent_cameras`, the depth stage's cameras);
every view holding hole pixels is inpainted as an ordinary photo, and every hole pixel of the panorama takes a
blend of the views that see it, weighted toward the view whose centre is nearest (no seams at tile borders).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from immersivedepth import sphere
from immersivedepth.errors import ConfigError
from immersivedepth.inpaint.inpainters import check_inputs

__all__ = ["REQUIRED_PARTS", "check_model_dir", "TileDiffusionInpainter"]

#: what a diffusers pipeline folder must contain (``save_pretrained`` layout)
REQUIRED_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")


def check_model_dir(model_dir) -> Path:
    """``model_dir`` exists and holds :data:`REQUIRED_PARTS`, else a one-line :class:`ConfigError` naming the gap."""
    if model_dir in (None, ""):
        raise ConfigError("inpaint.model_dir is not set; point it at a local diffusers Stable-Diffusion inpainting "
                          f"folder ({', '.join(REQUIRED_PARTS)})")
    p = Path(str(model_dir)).expanduser()
    if not p.is_dir():
        raise ConfigError(f"inpaint.model_dir={p} does not exist; expected a local diffusers Stable-Diffusion "
                          f"inpainting folder with {', '.join(REQUIRED_PARTS)} (e.g. from pipeline.save_pretrained)")
    missing = [n for n in REQUIRED_PARTS if not (p / n).exists()]
    if missing:
        raise ConfigError(f"inpaint.model_dir={p} is incomplete: {', '.join(missing)} missing; expected a diffusers "
                          f"Stable-Diffusion inpainting folder with {', '.join(REQUIRED_PARTS)}")
    return p


class TileDiffusionInpainter:
    """Stable-Diffusion inpainting on icosahedron tangent tiles (module docstring).

    ``tile_size`` pixels per tile side (a multiple of 8), ``steps`` denoising steps, ``seed`` + tile index seeds each
    tile (deterministic), ``blend_power`` sharpens the nearest-view weighting ``max(0, cos angle - cos half-fov)``.
    """

    def __init__(self, model_dir, *, prompt: str = "", negative_prompt: str = "", steps: int = 25,
                 guidance_scale: float = 7.5, tile_size: int = 512, seed: int = 0, device: str = "cpu",
                 blend_power: float = 2.0):
        self.model_dir = check_model_dir(model_dir)
        try:
            import diffusers  # optional extra (requirements-inpaint.txt)
        except ImportError as exc:
            raise ConfigError("inpaint.model_dir is set but the optional package diffusers is not installed; "
                              "pip install -r requirements-inpaint.txt") from exc
        if tile_size % 8:
            raise ConfigError(f"inpaint.diffusion.tile_size={tile_size} must be a multiple of 8")
        self._diffusers = diffusers
        self.prompt, self.negative_prompt = str(prompt), str(negative_prompt)
        self.steps, self.guidance_scale = int(steps), float(guidance_scale)
        self.tile_size, self.seed, self.device = int(tile_size), int(seed), device
        self.blend_power = float(blend_power)
        self._pipe = None

    def pipeline(self):
        """The diffusers pipeline, loaded from ``model_dir`` on first use (local files only)."""
        if self._pipe is None:
            try:
                pipe = self._diffusers.AutoPipelineForInpainting.from_pretrained(str(self.model_dir),
                                                                                 local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"inpaint.model_dir={self.model_dir} could not be loaded as a Stable-Diffusion "
                                  f"inpainting pipeline ({str(exc).splitlines()[0][:200]})") from exc
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe.to(self.device)
        return self._pipe

    def __call__(self, rgb, mask, distance):
        rgb, mask, _ = check_inputs(rgb, mask, distance)
        if not mask.any():
            return rgb.astype(np.float32)
        h, w = mask.shape
        cams = sphere.tangent_cameras(self.tile_size)
        dirs = sphere.erp_directions(h, w, np.float64)[mask]  # (M, 3) hole directions
        cos_half = math.cos(math.radians(cams[0].fov_deg[0]) / 2.0)
        acc = np.zeros((dirs.shape[0], 3))
        wsum = np.zeros(dirs.shape[0])
        pipe = self.pipeline()
        for cam in cams:
            x, y, valid = cam.project(dirs)
            if not valid.any():
                continue
            tile = sphere.tangent_image_from_erp(rgb.astype(np.float32), cam)
            tmask = sphere.tangent_image_from_erp(mask.astype(np.float32), cam) > 0.0
            gen = torch.Generator(device="cpu").manual_seed(self.seed + cam.index)
            out = pipe(prompt=self.prompt, negative_prompt=self.negative_prompt or None,
                       image=torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))[None],
                       mask_image=torch.from_numpy(tmask.astype(np.float32))[None, None],
                       height=self.tile_size, width=self.tile_size, num_inference_steps=self.steps,
                       guidance_scale=self.guidance_scale, generator=gen, output_type="np").images[0]
            out = np.asarray(out, np.float32)
            samp = cv2.remap(out, x[valid].astype(np.float32)[None], y[valid].astype(np.float32)[None],
                             cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]
            wt = np.maximum(dirs[valid] @ cam.forward - cos_half, 0.0) ** self.blend_power + 1e-12
            acc[valid] += wt[:, None] * samp
            wsum[valid] += wt
        filled = rgb.copy()
        filled[mask] = np.where(wsum[:, None] > 0, acc / np.maximum(wsum, 1e-12)[:, None], rgb[mask])
        return np.clip(filled, 0.0, 1.0).astype(np.float32)
