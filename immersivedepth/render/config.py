"""The ``render`` config group (``render_dense``): its typed schema -- every key, default and meaning.

``configs/render/default.yaml`` selects these defaults; ``configs/render/fast.yaml`` lists only what it changes.
Camera-path entries of ``render.paths`` are :class:`PathSpec` s: a misspelt key inside one is an error naming
``render.paths[i].<key>`` and the valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from typing import Any

from immersivedepth.config import non_negative, one_of, positive, require
from immersivedepth.render.depth_mesh import DepthMeshOptions
from immersivedepth.render.mesh import FieldMeshOptions
from immersivedepth.render.splat import SplatOptions

__all__ = ["PATH_KINDS", "PathSpec", "RenderConfig", "FieldMeshExport", "DepthMeshExport", "SplatExport",
           "options_of"]

PATH_KINDS = ("tour", "circle", "spiral", "forward", "file")
DEFAULT_FPS = 30.0
VIDEO_OUTPUTS = ("rgb", "distance", "normal", "opacity")


@dataclass
class PathSpec:
    """One camera path of ``render.paths``; it renders ``<run>/render/<name>/``.

    Fractions are of the smallest safe horizontal radius (circle, spiral) or of the radius in that direction (tour,
    forward), so the path stays in free space.
    """

    name: str | None = None  # output folder; null: the kind
    kind: str | None = None  # tour | circle | spiral | forward | file; null: the name
    type: str = "erp"  # erp (equirectangular panorama) | perspective
    width: int = 512  # pixels (even sizes encode best)
    height: int | None = None  # null: 256 for erp, 512 for perspective
    fov_deg: float = 90.0  # horizontal field of view (perspective)
    n_frames: int = 180
    fps: float | None = None  # null: DEFAULT_FPS, or the camera-path file's own rate
    # auto (erp: world-aligned, perspective: look along the motion) | motion | fixed | look_at
    heading: str = "auto"
    smooth_frames: float = 3.0  # Gaussian sigma (frames) of the heading
    pitch_deg: float = 0.0
    camera_height: float = 0.0  # y of the path (world units above the panorama centre)
    seed: int = 0  # tour: order of the anchors
    frames_outputs: list[str] | None = None  # also save per-frame files for these outputs (null: video.frames)
    fractions: list[float] = dataclass_field(default_factory=lambda: [0.2, 0.4, 0.6])  # tour: anchor rings
    anchors_per_ring: int = 8  # tour
    radius_fraction: float = 0.5  # circle (unless radius is given)
    radius: float | None = None  # circle: world units
    turns: float | None = None  # circle (default 1) and spiral (default 2)
    radius_fractions: list[float] = dataclass_field(default_factory=lambda: [0.1, 0.7])  # spiral [r0, r1]
    heights: list[float] | None = None  # spiral [y0, y1]; null: camera_height throughout
    yaw_deg: float | None = None  # forward: null = the most open direction
    fraction: float = 0.8  # forward
    file: str | None = None  # file: our poses JSON or a nerfstudio camera-path JSON

    def __post_init__(self):
        self.kind = self.kind or self.name or "tour"
        self.name = self.name or self.kind
        where = f"render path {self.name!r}"
        one_of(self.kind, PATH_KINDS, f"{where}: kind")
        positive(self.n_frames, f"{where}: n_frames")
        if self.fps is not None:
            positive(self.fps, f"{where}: fps")
        positive(self.width, f"{where}: width")
        if self.height is not None:
            positive(self.height, f"{where}: height")
        require(0 < self.fov_deg < 180, f"{where}: fov_deg", f"must be in (0, 180), got {self.fov_deg}")
        require(len(self.radius_fractions) == 2, f"{where}: radius_fractions", "must be [r0, r1]")
        require(self.heights is None or len(self.heights) == 2, f"{where}: heights", "must be [y0, y1]")
        require(self.kind != "file" or bool(self.file), f"{where}: file",
                "is needed for kind file (our poses JSON or a nerfstudio camera path)")


def _default_paths() -> list[PathSpec]:
    return [PathSpec(name="tour", kind="tour", type="erp", width=512, height=256, n_frames=180, fps=30),
            PathSpec(name="walk", kind="forward", type="perspective", width=512, height=512, fov_deg=90.0,
                     n_frames=90, fps=30, fraction=0.8)]


@dataclass
class PosesDefaults:
    """Size and field of view for poses-file poses that do not give their own."""

    width: int = 1024
    height: int = 512
    fov_deg: float = 90.0


@dataclass
class FreeSpaceConfig:
    """Where cameras may go: clear of every surface the distance map shows."""

    margin: float = 0.1  # world units kept between the camera and any surface seen in the distance map
    max_fraction: float = 0.8  # never farther than this fraction of the distance to the wall in that direction
    erode_deg: float = 3.0  # angular min-filter on the distance map (keeps clear of thin structures)

    def __post_init__(self):
        non_negative(self.margin, "render.free_space.margin")
        require(0 < self.max_fraction <= 1, "render.free_space.max_fraction", f"must be in (0, 1], got "
                f"{self.max_fraction}")
        non_negative(self.erode_deg, "render.free_space.erode_deg")


@dataclass
class RenderOptions:
    """How rays are rendered."""

    chunk: int = 32768  # rays per batch: bounds memory at any resolution
    near: float = 0.0
    far: float | None = None  # null: where the ray leaves the field's box
    options: Any = None  # overrides of the volume renderer's options (field.renderer.DEFAULT_RENDER_OPTIONS)

    def __post_init__(self):
        positive(self.chunk, "render.render.chunk")
        non_negative(self.near, "render.render.near")


@dataclass
class VideoConfig:
    outputs: list[str] = dataclass_field(default_factory=lambda: ["rgb", "distance"])  # rgb -> video.mp4, ...
    frames: list[str] = dataclass_field(default_factory=list)  # per-frame files for all paths
    frame_formats: list[str] = dataclass_field(default_factory=lambda: ["png"])  # png and/or exr (raw floats)
    cmap: str = "turbo"  # distance colour map (range fixed per run from the distance panorama)
    log_distance: bool = False

    def __post_init__(self):
        for i, o in enumerate(self.outputs):
            one_of(o, VIDEO_OUTPUTS, f"render.video.outputs[{i}]")
        for i, o in enumerate(self.frames):
            one_of(o, VIDEO_OUTPUTS, f"render.video.frames[{i}]")
        for i, o in enumerate(self.frame_formats):
            one_of(o, ("png", "exr"), f"render.video.frame_formats[{i}]")


@dataclass
class FieldMeshExport(FieldMeshOptions):
    """``render.export.field_mesh``: marching tetrahedra on the density -> ``export/mesh.*``."""

    enabled: bool = True


@dataclass
class DepthMeshExport(DepthMeshOptions):
    """``render.export.depth_mesh``: sphere-grid triangulation of the distance panorama -> ``export/depth_mesh.*``."""

    enabled: bool = True
    textured: bool = True  # also depth_mesh_textured.obj/.mtl/.glb + depth_mesh_texture.png


@dataclass
class PointsExport:
    """``render.export.points``: coloured point cloud with normals -> ``export/points.ply``."""

    enabled: bool = True
    stride: int = 1

    def __post_init__(self):
        positive(self.stride, "render.export.points.stride")


@dataclass
class SplatExport(SplatOptions):
    """``render.export.splat``: one flat Gaussian per strided distance-map pixel -> ``export/scene_splat.ply``
    (3D Gaussian Splatting PLY: x y z, nx ny nz, f_dc_0..2, opacity logit, scale_0..2 log, rot_0..3 wxyz)."""

    enabled: bool = True


@dataclass
class ExportConfig:
    formats: list[str] = dataclass_field(default_factory=lambda: ["glb", "ply", "obj"])
    field_mesh: FieldMeshExport = dataclass_field(default_factory=FieldMeshExport)
    depth_mesh: DepthMeshExport = dataclass_field(default_factory=DepthMeshExport)
    points: PointsExport = dataclass_field(default_factory=PointsExport)
    splat: SplatExport = dataclass_field(default_factory=SplatExport)

    def __post_init__(self):
        for i, f in enumerate(self.formats):
            one_of(f, ("glb", "ply", "obj"), f"render.export.formats[{i}]")


@dataclass
class RenderConfig:
    """The ``render`` config group: camera-path videos, poses-file panoramas, meshes and point clouds."""

    paths: list[PathSpec] = dataclass_field(default_factory=_default_paths)
    # JSON {"poses": [{"name", "position", "rotation"?, "type"?, "fov_deg"?, "width"?, "height"?}]} (or a nerfstudio
    # camera path); each pose writes render/poses/<name>.png + <name>_distance.npy + <name>_opacity.npy
    poses_file: str | None = None
    poses_defaults: PosesDefaults = dataclass_field(default_factory=PosesDefaults)
    # a pose that leaves the scene or comes closer than free_space.margin to geometry: clamp (warn, move it back
    # radially into free space) | error (reject, naming the pose)
    on_violation: str = "clamp"
    free_space: FreeSpaceConfig = dataclass_field(default_factory=FreeSpaceConfig)
    render: RenderOptions = dataclass_field(default_factory=RenderOptions)
    video: VideoConfig = dataclass_field(default_factory=VideoConfig)
    export: ExportConfig = dataclass_field(default_factory=ExportConfig)
    image_path: str | None = None  # panorama for the depth mesh colours; null: the run's dataset.image_path
    # render a field whose training did not finish (interrupted, failed): false refuses with a message
    allow_unfinished: bool = False

    def __post_init__(self):
        one_of(self.on_violation, ("clamp", "error"), "render.on_violation")
        names = [p.name for p in self.paths]
        dup = sorted({n for n in names if names.count(n) > 1})
        require(not dup, "render.paths", f"has several paths named {dup}: give each a distinct name")


def options_of(cls: type, section) -> Any:
    """The algorithm options ``cls`` (e.g. :class:`FieldMeshOptions`) from its export section (drops ``enabled``...)."""
    return cls(**{f.name: getattr(section, f.name) for f in fields(cls)})
