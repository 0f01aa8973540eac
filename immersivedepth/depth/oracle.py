"""An exact "depth model" for tests and benchmarks, plus a tiny analytic box room.

:class:`OracleDepthModel` renders the true planar depth of a synthetic scene for each tile camera it is
called with, converts it to disparity (``1 / depth``) and then distorts it on purpose, the way monocular
networks are wrong: a random per-tile affine map (scale and shift), a smooth low-frequency multiplicative
warp, an optional edge blur and multiplicative noise. Every distortion is configurable and seeded per tile
(the seed mixes ``seed`` with the tile's camera, so results do not depend on batching or tile order).

The oracle knows only its own scene, so it checks that the tiles it is given are that scene: each tile's colours are
compared with the scene's render of the same camera (both area-averaged to ``CHECK_GRID`` x ``CHECK_GRID`` blocks,
which hides resampling, 8-bit quantisation and aliasing of a low-resolution panorama). A batch whose mean absolute
difference exceeds ``CHECK_THRESHOLD`` raises :class:`~immersivedepth.errors.ConfigError`: any other panorama would
silently get the synthetic scene's depth. Measured per tile: renders of the scene differ by <= 0.03 (<= 0.05 for the
box room cut from a 32x16 panorama); five real photo panoramas, noise, flat grey and the box room / living room
swapped by 0.07-0.7, and 0.09 or more in every batch of 4 tiles (the default ``depth.tiles.batch_size``), so such a
run is refused at its first batch. Scenes that share most of the living room's walls (``open_room``,
``cluttered_room``) are not told apart from it.

:class:`BoxRoomScene` is a closed-form scene (a room plus a few boxes) with the same ``render_camera`` /
``render_panorama`` interface as ``immersivedepth.scenes.synthetic``; it needs nothing else and is used
when ``scene="box"``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from immersivedepth import sphere
from immersivedepth.errors import ConfigError
from immersivedepth.scenes.synthetic import make_scene, ray_box_slabs

__all__ = ["BoxRoomScene", "CHECK_GRID", "CHECK_THRESHOLD", "OracleDepthModel", "load_scene", "scene_label"]

# The input check (see the module doc): tiles and renders are compared as CHECK_GRID x CHECK_GRID block means; a
# batch whose mean absolute RGB difference is above CHECK_THRESHOLD is not a rendering of the oracle's scene.
CHECK_GRID = 4
CHECK_THRESHOLD = 0.075


class BoxRoomScene:
    """A room ``[lo, hi]`` (metres, containing the origin) with axis-aligned boxes inside, ray cast exactly.

    ``boxes``: sequence of ``(min (3,), max (3,))``. Colours are a procedural checker pattern per surface
    so that the panorama has texture.
    """

    def __init__(
        self,
        lo: Sequence[float] = (-2.5, -1.4, -3.0),
        hi: Sequence[float] = (3.0, 1.3, 2.2),
        boxes: Sequence[tuple[Sequence[float], Sequence[float]]] = (
            ((0.8, -1.4, -2.2), (1.8, -0.4, -1.2)),
            ((-2.0, -1.4, 0.6), (-1.2, 0.2, 1.5)),
        ),
    ) -> None:
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)
        self.boxes = [(np.asarray(a, np.float64), np.asarray(b, np.float64)) for a, b in boxes]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lo.copy(), self.hi.copy()

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
        """Rays ``(N, 3)`` -> distance ``(N,)``, rgb ``(N, 3)``, normal ``(N, 3)`` (facing the ray), object_id."""
        o = np.asarray(origins, np.float64)
        d = np.asarray(dirs, np.float64)
        _, t, _, axis = ray_box_slabs(o, d, self.lo, self.hi)  # the room's walls: where the ray leaves it
        obj = np.zeros(len(o), np.int64)
        for k, (a, b) in enumerate(self.boxes, start=1):
            tn, tf, near_axis, _ = ray_box_slabs(o, d, a, b)
            hit = (tn <= tf) & (tn > 1e-6) & (tn < t)
            t = np.where(hit, tn, t)
            axis = np.where(hit, near_axis, axis)
            obj = np.where(hit, k, obj)
        p = o + t[:, None] * d
        normal = np.zeros_like(p)
        normal[np.arange(len(p)), axis] = -np.sign(d[np.arange(len(p)), axis])
        check = (np.floor(p * 2.0).sum(axis=1) % 2).astype(np.float64)
        base = np.array([[0.8, 0.7, 0.6], [0.4, 0.6, 0.8], [0.7, 0.4, 0.4]])[axis] * (0.6 + 0.4 * (obj[:, None] == 0))
        rgb = np.clip(base * (0.55 + 0.45 * check[:, None]), 0.0, 1.0)
        return {"distance": t, "rgb": rgb.astype(np.float32), "normal": normal, "object_id": obj}

    def render_camera(self, camera: sphere.TangentCamera, position=(0.0, 0.0, 0.0)) -> dict[str, np.ndarray]:
        """rgb ``(h, w, 3)``, planar depth ``(h, w)``, distance ``(h, w)``, normal ``(h, w, 3)`` of a tile camera."""
        dirs = camera.rays().reshape(-1, 3)
        hit = self.cast(np.broadcast_to(np.asarray(position, np.float64), dirs.shape), dirs)
        shape = (camera.height, camera.width)
        dist = hit["distance"].reshape(shape)
        depth = dist / camera.ray_norm_factor()
        return {
            "rgb": hit["rgb"].reshape(shape + (3,)),
            "depth": depth.astype(np.float32),
            "distance": dist.astype(np.float32),
            "normal": hit["normal"].reshape(shape + (3,)).astype(np.float32),
        }

    def render_panorama(self, height: int, width: int, position=(0.0, 0.0, 0.0)) -> dict[str, np.ndarray]:
        """ERP rgb ``(H, W, 3)``, distance ``(H, W)``, normal ``(H, W, 3)``."""
        dirs = sphere.erp_directions(height, width, np.float64).reshape(-1, 3)
        hit = self.cast(np.broadcast_to(np.asarray(position, np.float64), dirs.shape), dirs)
        return {
            "rgb": hit["rgb"].reshape(height, width, 3),
            "distance": hit["distance"].reshape(height, width).astype(np.float32),
            "normal": hit["normal"].reshape(height, width, 3).astype(np.float32),
        }


def load_scene(scene):
    """A scene object from a name: ``"box"`` -> :class:`BoxRoomScene`, any other name ->
    ``immersivedepth.scenes.synthetic.make_scene(name)``. Objects with ``render_camera`` pass through."""
    if hasattr(scene, "render_camera"):
        return scene
    if scene == "box":
        return BoxRoomScene()
    return make_scene(scene)


def scene_label(scene) -> str:
    """How messages name an oracle's scene: ``'living_room'`` or ``'box'`` (a name) or the scene object's type."""
    if isinstance(scene, str):
        return repr(scene)
    if isinstance(scene, BoxRoomScene):
        return repr("box")
    name = getattr(scene, "name", None)
    return repr(name) if isinstance(name, str) else type(scene).__name__


def _block_means(img: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` -> ``(CHECK_GRID, CHECK_GRID, 3)`` area means."""
    return cv2.resize(np.ascontiguousarray(img, dtype=np.float32), (CHECK_GRID, CHECK_GRID),
                      interpolation=cv2.INTER_AREA)


def _smooth_warp(h: int, w: int, rng: np.random.Generator, frequency: float, n_waves: int = 3) -> np.ndarray:
    """Smooth field ``(h, w)`` with max |f| = 1: a sum of plane waves of ``frequency`` cycles per tile width."""
    y, x = np.meshgrid((np.arange(h) + 0.5) / w, (np.arange(w) + 0.5) / w, indexing="ij")
    f = np.zeros((h, w))
    for _ in range(n_waves):
        ang = rng.uniform(0, 2 * math.pi)
        ph = rng.uniform(0, 2 * math.pi)
        f += np.cos(2 * math.pi * frequency * (x * math.cos(ang) + y * math.sin(ang)) + ph)
    m = np.abs(f).max()
    return f / m if m > 0 else f


class OracleDepthModel:
    """Exact planar depth of a synthetic scene per tile, returned as deliberately distorted disparity.

    Call: ``model(tiles (B,3,H,W), *, K (B,3,3), R (B,3,3)) -> (B,H,W)`` float32 disparity. ``tiles`` must be
    the scene's own colours (float RGB in [0, 1], as the pipeline cuts them from a panorama of the scene): the batch
    is compared with the scene's render of the same cameras and refused with :class:`ConfigError` when it is not a
    rendering of the scene (see the module doc). ``check_input=False`` skips the check, for callers that pass
    placeholder tiles only for their shape. ``name``: how the error names the model (the registry passes the preset
    name). Per tile (seeded by ``seed`` and the camera): disparity ``1/depth``,
    Gaussian blur of ``blur_sigma`` tile pixels, times ``1 + warp_amplitude * f(x, y)`` with ``f`` a smooth
    field of ``warp_frequency`` cycles per tile (max |f| = 1), then ``scale * d + shift * median(scale * d)``
    with ``log(scale)`` uniform in ``log(scale_range)`` and ``shift`` uniform in ``shift_range``, then
    times ``1 + noise * N(0, 1)``, clipped at 0.
    """

    def __init__(
        self,
        scene="living_room",
        position: Sequence[float] = (0.0, 0.0, 0.0),
        scale_range: Sequence[float] = (0.5, 2.0),
        shift_range: Sequence[float] = (0.0, 0.5),
        warp_amplitude: float = 0.0,
        warp_frequency: float = 0.5,
        noise: float = 0.0,
        blur_sigma: float = 0.0,
        seed: int = 0,
        input_size: int | Sequence[int] = 256,
        check_input: bool = True,
        name: str | None = None,
    ) -> None:
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"oracle scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        if len(shift_range) != 2 or not 0 <= shift_range[0] <= shift_range[1]:
            raise ValueError(f"oracle shift_range must be (lo, hi) with 0 <= lo <= hi, got {shift_range}")
        if not 0 <= warp_amplitude < 1:
            raise ValueError(f"oracle warp_amplitude must lie in [0, 1), got {warp_amplitude}")
        if noise < 0 or blur_sigma < 0:
            raise ValueError(f"oracle noise and blur_sigma must be >= 0, got {noise}, {blur_sigma}")
        self._scene_spec = scene
        self._scene = None
        self.position = tuple(float(p) for p in position)
        self.scale_range = tuple(float(s) for s in scale_range)
        self.shift_range = tuple(float(s) for s in shift_range)
        self.warp_amplitude = float(warp_amplitude)
        self.warp_frequency = float(warp_frequency)
        self.noise = float(noise)
        self.blur_sigma = float(blur_sigma)
        self.seed = int(seed)
        self.input_size = input_size if isinstance(input_size, int) else tuple(int(s) for s in input_size)
        self.check_input = bool(check_input)
        self.name = name

    @property
    def scene(self):
        if self._scene is None:
            self._scene = load_scene(self._scene_spec)
        return self._scene

    def _tile_rng(self, R: np.ndarray, K: np.ndarray) -> np.random.Generator:
        key = np.round(np.concatenate([R.ravel(), K.ravel()]), 5).astype(np.float64).tobytes()
        return np.random.default_rng([self.seed, zlib.crc32(key)])

    def render_tile(self, K: np.ndarray, R: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
        """The scene's render (``rgb``, ``depth``, ...) of one tile camera from ``position``."""
        cam = sphere.TangentCamera(R=np.asarray(R, np.float64), K=np.asarray(K, np.float64), height=height, width=width)
        return self.scene.render_camera(cam, position=self.position)

    def true_disparity(self, K: np.ndarray, R: np.ndarray, height: int, width: int) -> np.ndarray:
        """Undistorted ``1 / planar depth`` ``(height, width)`` float64 of one tile camera."""
        depth = np.asarray(self.render_tile(K, R, height, width)["depth"], np.float64)
        return 1.0 / np.maximum(depth, 1e-9)

    @staticmethod
    def rgb_mismatch(tile_rgb: np.ndarray, render_rgb: np.ndarray) -> float:
        """Mean absolute difference of two ``(h, w, 3)`` images' ``CHECK_GRID`` x ``CHECK_GRID`` block means."""
        return float(np.mean(np.abs(_block_means(np.clip(tile_rgb, 0.0, 1.0)) - _block_means(render_rgb))))

    def _refuse(self, mismatch: float) -> ConfigError:
        what = f"preset {self.name!r}" if self.name else f"OracleDepthModel(scene={scene_label(self._scene_spec)})"
        return ConfigError(
            f"depth.models: {what} only reproduces the built-in synthetic scene {scene_label(self._scene_spec)} (for "
            f"tests and benchmarks) and this panorama is not a rendering of it (mean colour difference "
            f"{mismatch:.2f} > {CHECK_THRESHOLD} on its tiles), so it would get that scene's depth; for your own "
            "panorama pick a real model preset (e.g. depth.models=[dav2_vitl]) and point depth.checkpoint_dir or "
            "$IMMERSIVEDEPTH_CHECKPOINTS at its weights, or give a reference distance (dataset.distance_path=...)")

    def distort(self, disp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply this oracle's distortions to one tile's disparity ``(h, w)`` using ``rng``."""
        h, w = disp.shape
        d = disp.astype(np.float64)
        if self.blur_sigma > 0:
            d = cv2.GaussianBlur(d, (0, 0), self.blur_sigma, borderType=cv2.BORDER_REFLECT)
        warp = _smooth_warp(h, w, rng, self.warp_frequency)
        if self.warp_amplitude > 0:
            d = d * (1.0 + self.warp_amplitude * warp)
        lo, hi = self.scale_range
        scale = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        shift = rng.uniform(*self.shift_range)
        d = scale * d
        d = d + shift * float(np.median(d))
        eps = rng.standard_normal(d.shape)
        if self.noise > 0:
            d = d * (1.0 + self.noise * eps)
        return np.maximum(d, 0.0)

    def __call__(self, tiles: torch.Tensor, *, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        if tiles.ndim != 4:
            raise ValueError(f"OracleDepthModel expects tiles (B,3,H,W), got shape {tuple(tiles.shape)}")
        b, _, h, w = tiles.shape
        Kn = torch.as_tensor(K).detach().cpu().double().numpy().reshape(b, 3, 3)
        Rn = torch.as_tensor(R).detach().cpu().double().numpy().reshape(b, 3, 3)
        rgb = tiles.detach().float().cpu().numpy().transpose(0, 2, 3, 1) if self.check_input else None
        out = np.empty((b, h, w), np.float32)
        mismatch = []
        for i in range(b):
            render = self.render_tile(Kn[i], Rn[i], h, w)
            if rgb is not None and "rgb" in render:
                mismatch.append(self.rgb_mismatch(rgb[i], np.asarray(render["rgb"], np.float32)))
            depth = np.asarray(render["depth"], np.float64)
            out[i] = self.distort(1.0 / np.maximum(depth, 1e-9), self._tile_rng(Rn[i], Kn[i]))
        if mismatch and float(np.mean(mismatch)) > CHECK_THRESHOLD:
            raise self._refuse(float(np.mean(mismatch)))
        return torch.from_numpy(out).to(tiles.device)

    def __repr__(self) -> str:
        return (
            f"OracleDepthModel(scene={self._scene_spec!r}, scale_range={self.scale_range}, "
            f"shift_range={self.shift_range}, warp_amplitude={self.warp_amplitude}, noise={self.noise}, "
            f"blur_sigma={self.blur_sigma}, seed={self.seed}, input_size={self.input_size}, "
            f"check_input={self.check_input})"
        )
