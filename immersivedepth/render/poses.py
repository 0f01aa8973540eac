"""Camera poses for rendering, and the poses-file / nerfstudio camera-path readers.

A :class:`CameraPose` is a position in world units (origin = panorama centre, y up) and a
rotation. For a **perspective** pose the rotation is the camera-to-world matrix of an OpenCV
camera (x right, y down, z forward), as everywhere in the project. For an **equirectangular**
pose the rotation rotates the panorama's own frame: a direction ``d`` of the standard ERP
convention (``sphere.pixel_to_dir``) becomes ``R @ d`` in the world, so the identity renders a
world-aligned panorama (centre column looking along -z).

Poses file (``render.poses_file``), our format::

    {"poses": [
        {"name": "p0", "position": [x, y, z],
         "rotation": [[...], [...], [...]],      # optional, 3x3 row-major, default identity
         "type": "equirectangular",              # or "perspective"
         "fov_deg": 90.0,                        # perspective only: HORIZONTAL field of view
         "width": 1024, "height": 512}           # optional, defaults from the caller
    ]}

nerfstudio camera paths (``ns-render camera-path`` JSON: ``camera_path[].camera_to_world`` a
row-major 4x4 in OpenGL camera axes x right, y up, z back; ``fov`` the vertical field of view
in degrees; ``render_width``/``render_height``; ``camera_type``; ``fps``/``seconds``) are
detected by their ``camera_path`` key and converted: the perspective rotation becomes
``R_gl @ diag(1, -1, -1)`` (OpenGL -> OpenCV camera axes). nerfstudio's equirectangular camera
looks along its -z with +x to the right and +y up, which is exactly our ERP frame, so for
equirectangular paths ``R_gl`` is used unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from immersivedepth import sphere
from immersivedepth.errors import InputError, InputNotFoundError
from immersivedepth.io import atomic_path

__all__ = [
    "CameraPose",
    "POSE_TYPES",
    "OPENGL_TO_OPENCV",
    "load_poses_file",
    "parse_poses",
    "parse_nerfstudio_camera_path",
    "poses_to_json",
    "save_poses_file",
    "pose_rays",
]

POSE_TYPES = ("equirectangular", "perspective")
_TYPE_ALIASES = {"erp": "equirectangular", "equirectangular": "equirectangular", "panorama": "equirectangular",
                 "perspective": "perspective", "pinhole": "perspective"}
#: Right-multiplying a camera-to-world rotation in OpenGL camera axes by this gives OpenCV axes.
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


@dataclass
class CameraPose:
    """One camera. ``position`` ``(3,)`` world units; ``rotation`` ``(3, 3)`` (see module doc);
    ``fov_deg`` is the horizontal field of view of a perspective camera."""

    position: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    type: str = "equirectangular"
    width: int = 512
    height: int = 256
    fov_deg: float = 90.0
    name: str = ""

    def __post_init__(self):
        self.position = np.asarray(self.position, dtype=np.float64).reshape(3)
        self.rotation = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        self.type = normalize_pose_type(self.type, where=f"pose {self.name!r}")
        self.width, self.height = int(self.width), int(self.height)

    @property
    def intrinsics(self) -> np.ndarray:
        """Pixel intrinsics ``(3, 3)`` of a perspective pose (square pixels, centred principal point)."""
        f = self.width / (2.0 * math.tan(math.radians(self.fov_deg) / 2.0))
        return np.array([[f, 0.0, self.width / 2.0], [0.0, f, self.height / 2.0], [0.0, 0.0, 1.0]])

    def camera(self) -> sphere.TangentCamera:
        """The perspective camera of this pose (rotation only; the position is separate)."""
        return sphere.TangentCamera(R=self.rotation, K=self.intrinsics, height=self.height, width=self.width)

    def to_dict(self) -> dict:
        d = {"name": self.name, "position": [float(x) for x in self.position],
             "rotation": [[float(x) for x in row] for row in self.rotation], "type": self.type,
             "width": self.width, "height": self.height}
        if self.type == "perspective":
            d["fov_deg"] = float(self.fov_deg)
        return d


def normalize_pose_type(t: str, where: str = "pose") -> str:
    key = str(t).lower()
    if key not in _TYPE_ALIASES:
        raise InputError(f"{where}: unknown camera type {t!r}; expected one of {POSE_TYPES} (or 'erp').")
    return _TYPE_ALIASES[key]


def pose_rays(pose: CameraPose) -> tuple[np.ndarray, np.ndarray]:
    """World rays of a pose's pixel centres: origins ``(H, W, 3)`` and unit directions ``(H, W, 3)`` (float32)."""
    if pose.type == "equirectangular":
        d = sphere.erp_directions(pose.height, pose.width, np.float64) @ pose.rotation.T
    else:
        d = pose.camera().rays()
    o = np.broadcast_to(pose.position, d.shape)
    return o.astype(np.float32), d.astype(np.float32)


# --------------------------------------------------------------------------- reading
def _numeric(value, where: str, key: str, what: str, kind=float):
    """``kind(value)`` (``float``/``int``) or ``np.asarray(value, float64)`` (``kind=None``), else an InputError
    naming the pose and the key: ``float('abc')``'s own message names neither."""
    try:
        if kind is None:
            return np.asarray(value, dtype=np.float64)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {key!r} must be {what}, got {value!r}; fix the poses file") from None


def _check_rotation(r, where: str) -> np.ndarray:
    try:
        r = np.asarray(r, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: 'rotation' is not numeric ({e}).") from e
    if r.size != 9:
        raise InputError(f"{where}: 'rotation' must be a 3x3 matrix (row-major), got {r.size} numbers.")
    r = r.reshape(3, 3)
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-3) or np.linalg.det(r) < 0:
        raise InputError(f"{where}: 'rotation' is not a proper rotation (R R^T != I or det < 0): {r.tolist()}.")
    # re-orthonormalise small numeric drift
    u, _, vt = np.linalg.svd(r)
    return u @ vt


def parse_poses(data: Mapping, *, source: str = "poses", default_width: int = 1024, default_height: int = 512,
                default_fov_deg: float = 90.0) -> list[CameraPose]:
    """Our poses JSON (already parsed) -> list of :class:`CameraPose` (see module doc)."""
    if not isinstance(data, Mapping) or "poses" not in data:
        got = list(data)[:8] if isinstance(data, Mapping) else type(data).__name__
        raise InputError(f"{source}: expected a JSON object with a 'poses' list (or a nerfstudio camera path "
                         f"with 'camera_path'); got {got}.")
    items = data["poses"]
    if not isinstance(items, Sequence) or len(items) == 0:
        raise InputError(f"{source}: 'poses' must be a non-empty list.")
    poses, names = [], set()
    for k, p in enumerate(items):
        where = f"{source}: pose #{k}"
        if not isinstance(p, Mapping) or "position" not in p:
            raise InputError(f"{where} has no 'position' [x, y, z].")
        name = str(p.get("name", f"pose_{k:04d}"))
        where = f"{source}: pose #{k} ({name!r})"
        if name in names:
            raise InputError(f"{where}: duplicate name; every pose needs a unique 'name' (it names the output files).")
        if any(c in name for c in "/\\") or name in ("", ".", ".."):
            raise InputError(f"{where}: 'name' must be a plain file stem without path separators.")
        names.add(name)
        pos = _numeric(p["position"], where, "position", "3 finite numbers [x, y, z]", kind=None)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            raise InputError(f"{where}: 'position' must be 3 finite numbers, got {p['position']!r}.")
        rot = _check_rotation(p["rotation"], where) if p.get("rotation") is not None else np.eye(3)
        ptype = normalize_pose_type(p.get("type", "equirectangular"), where)
        w = _numeric(p.get("width", default_width if ptype == "equirectangular" else default_height), where,
                     "width", "a whole number of pixels", kind=int)
        h = _numeric(p.get("height", default_height), where, "height", "a whole number of pixels", kind=int)
        if w <= 0 or h <= 0:
            raise InputError(f"{where}: width/height must be positive, got {w}x{h}.")
        fov = _numeric(p.get("fov_deg", default_fov_deg), where, "fov_deg", "a number of degrees")
        if ptype == "perspective" and not 1.0 < fov < 179.0:
            raise InputError(f"{where}: 'fov_deg' must lie in (1, 179) degrees, got {fov}.")
        poses.append(CameraPose(position=pos, rotation=rot, type=ptype, width=w, height=h, fov_deg=fov, name=name))
    return poses


def parse_nerfstudio_camera_path(data: Mapping, *, source: str = "camera_path") -> tuple[list[CameraPose], float]:
    """nerfstudio camera-path JSON (parsed) -> (poses, fps). See the module doc for the conversion."""
    cams = data.get("camera_path")
    if not isinstance(cams, Sequence) or len(cams) == 0:
        raise InputError(f"{source}: nerfstudio camera path has no 'camera_path' entries.")
    try:
        width = _numeric(data["render_width"], source, "render_width", "a whole number of pixels", kind=int)
        height = _numeric(data["render_height"], source, "render_height", "a whole number of pixels", kind=int)
    except KeyError as e:
        raise InputError(f"{source}: nerfstudio camera path lacks {e.args[0]!r}.") from e
    ctype = str(data.get("camera_type", "perspective")).lower()
    if ctype not in ("perspective", "equirectangular"):
        raise InputError(f"{source}: camera_type {ctype!r} is not supported (perspective or equirectangular).")
    fps = _numeric(data.get("fps", 0) or 0, source, "fps", "a number of frames per second")
    if fps <= 0:
        seconds = _numeric(data.get("seconds", 0) or 0, source, "seconds", "a number of seconds")
        fps = len(cams) / seconds if seconds > 0 else 30.0
    poses = []
    for k, c in enumerate(cams):
        where = f"{source}: camera_path[{k}]"
        if not isinstance(c, Mapping):
            raise InputError(f"{where} must be an object with 'camera_to_world' (and 'fov'), got {c!r}")
        m = _numeric(c.get("camera_to_world", []), where, "camera_to_world", "16 (or 12) numbers", kind=None)
        if m.size not in (12, 16):
            raise InputError(f"{where}: 'camera_to_world' must be a flattened 4x4 (or 3x4), got {m.size} numbers.")
        m = m.reshape(-1, 4)[:3]
        r_gl = _check_rotation(m[:, :3], where)
        if ctype == "perspective":
            fov_y = _numeric(c.get("fov", data.get("default_fov", 50.0)), where, "fov", "a number of degrees")
            fov_x = math.degrees(2 * math.atan(math.tan(math.radians(fov_y) / 2) * width / height))
            poses.append(CameraPose(position=m[:, 3], rotation=r_gl @ OPENGL_TO_OPENCV, type="perspective",
                                    width=width, height=height, fov_deg=fov_x, name=f"frame_{k:05d}"))
        else:
            poses.append(CameraPose(position=m[:, 3], rotation=r_gl, type="equirectangular", width=width,
                                    height=height, name=f"frame_{k:05d}"))
    return poses, fps


def load_poses_file(path, *, default_width: int = 1024, default_height: int = 512,
                    default_fov_deg: float = 90.0) -> tuple[list[CameraPose], float | None]:
    """Read a poses file (our format or a nerfstudio camera path) -> (poses, fps or None)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"poses file {path} does not exist; pass render.poses_file=<path to a JSON file> "
                                f"(format: {{'poses': [{{'name', 'position', ...}}]}}).")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"poses file {path} is not valid JSON: {e}.") from e
    if isinstance(data, Mapping) and "camera_path" in data:
        return parse_nerfstudio_camera_path(data, source=str(path))
    fps = data.get("fps") if isinstance(data, Mapping) else None
    poses = parse_poses(data, source=str(path), default_width=default_width, default_height=default_height,
                        default_fov_deg=default_fov_deg)
    return poses, (float(fps) if fps else None)


def poses_to_json(poses: Sequence[CameraPose], fps: float | None = None) -> dict:
    d = {"poses": [p.to_dict() for p in poses]}
    if fps:
        d["fps"] = float(fps)
    return d


def save_poses_file(path, poses: Sequence[CameraPose], fps: float | None = None) -> Path:
    """Write poses in our format (atomically)."""

    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(poses_to_json(poses, fps), indent=1))
    return path
