#!/usr/bin/env python
"""Regenerate the bundled synthetic example panorama and its exact ground truth.

    python scripts/make_example_scene.py            # writes example_data/living_room/

Writes (all atomically, deterministic: same code -> same files)::

    <out>/<scene>/image.png                 ERP RGB, 8-bit, supersampled (anti-aliased)
    <out>/<scene>/image_distance.npy        float32 (H,W) metres along each pixel-centre ray (0 = no return:
                                            the ray leaves through an opening to the far background, marked
                                            invalid the way real depth sensors do)
    <out>/<scene>/gt/<pose>.png             ERP RGB seen from an offset position (novel-view ground truth)
    <out>/<scene>/gt/<pose>_distance.npy    its exact distance (float32, metres, from that position)
    <out>/<scene>/poses.json                the offset positions, in the render.poses_file format
    <out>/<scene>/scene.json                scene description, units, generator version, this command

The scene itself (geometry, textures, lights) lives in :mod:`immersivedepth.scenes.synthetic`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from immersivedepth.io import atomic_path, write_distance, write_image  # noqa: E402
from immersivedepth.scenes.synthetic import SCENE_NAMES, SCENE_VERSION, make_scene  # noqa: E402

#: Offsets (metres) of the novel-view ground-truth panoramas: 0.2 m and 0.5 m along +x and -z.
DEFAULT_OFFSETS = ("x+0.20", "x+0.50", "z-0.20", "z-0.50")


def parse_offset(name: str) -> list[float]:
    """``"x+0.20"`` -> ``[0.2, 0, 0]``; axis letter(s) x/y/z, a signed distance in metres."""
    axes = {"x": 0, "y": 1, "z": 2}
    if len(name) < 3 or name[0] not in axes or name[1] not in "+-":
        raise ValueError(f"offset {name!r} must look like 'x+0.20' (axis x|y|z, sign, metres)")
    try:
        value = float(name[1:])
    except ValueError as exc:
        raise ValueError(f"offset {name!r}: {name[1:]!r} is not a number (expected e.g. 'x+0.20')") from exc
    pos = [0.0, 0.0, 0.0]
    pos[axes[name[0]]] = value
    return pos


def sensor_distance(distance: np.ndarray) -> np.ndarray:
    """Ground-truth distance as a depth sensor reports it: rays that hit nothing (``inf``: an open door or window
    onto the far background) get no return, stored as 0 (the Matterport3D / ``distance_format`` convention)."""
    return np.where(np.isfinite(distance), distance, 0.0).astype(np.float32)


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default="example_data", help="parent directory (default: example_data)")
    ap.add_argument("--scene", default="living_room", choices=SCENE_NAMES)
    ap.add_argument("--width", type=int, default=1024, help="input panorama width (height = width / 2)")
    ap.add_argument("--supersample", type=int, default=3, help="k x k sub-pixel rays per pixel for the RGB")
    ap.add_argument("--gt-width", type=int, default=512, help="ground-truth panorama width (height = width / 2)")
    ap.add_argument("--gt-supersample", type=int, default=3)
    ap.add_argument("--offsets", nargs="+", default=list(DEFAULT_OFFSETS),
                    help="offset positions of the ground-truth panoramas, e.g. x+0.20 z-0.50")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, w in (("--width", args.width), ("--gt-width", args.gt_width)):
        if w < 2 or w % 2:
            raise SystemExit(f"{name} must be an even number >= 2, got {w}")
    scene = make_scene(args.scene)
    out = Path(args.out_dir) / args.scene
    poses = [{"name": n, "position": parse_offset(n), "type": "equirectangular",
              "width": args.gt_width, "height": args.gt_width // 2} for n in args.offsets]
    occupied = scene.occupancy(np.array([p["position"] for p in poses]))
    if occupied.any():
        bad = [p["name"] for p, o in zip(poses, occupied) if o]
        raise SystemExit(f"offsets {bad} are not in free space of scene {args.scene!r}; choose smaller offsets")

    t0 = time.time()
    h, w = args.width // 2, args.width
    print(f"[make_example_scene] {args.scene}: {w}x{h} panorama, supersample {args.supersample}")
    r = scene.render_panorama(h, w, supersample=args.supersample, progress=None)
    write_image(out / "image.png", r["rgb"])
    write_distance(out / "image_distance.npy", sensor_distance(r["distance"]))

    gh, gw = args.gt_width // 2, args.gt_width
    for p in poses:
        print(f"[make_example_scene] ground truth {p['name']} at {p['position']}: {gw}x{gh}")
        g = scene.render_panorama(gh, gw, p["position"], supersample=args.gt_supersample, progress=None)
        write_image(out / "gt" / f"{p['name']}.png", g["rgb"])
        write_distance(out / "gt" / f"{p['name']}_distance.npy", sensor_distance(g["distance"]))
    write_json(out / "poses.json", {"poses": poses})

    command = "python scripts/make_example_scene.py " + " ".join(
        shlex.quote(a) for a in [
            "--out-dir", args.out_dir, "--scene", args.scene, "--width", str(args.width),
            "--supersample", str(args.supersample), "--gt-width", str(args.gt_width),
            "--gt-supersample", str(args.gt_supersample), "--offsets", *args.offsets,
        ]
    )
    write_json(out / "scene.json", {
        "scene": args.scene,
        "units": "metres",
        "distance": "Euclidean distance along each pixel-centre ray from the panorama centre (float32 .npy); 0 = no "
                    "return (the ray leaves through an opening to the far background at infinity)",
        "generator": "immersivedepth.scenes.synthetic",
        "generator_version": SCENE_VERSION,
        "command": command,
        "image": {"file": "image.png", "width": w, "height": h, "supersample": args.supersample,
                  "position": [0.0, 0.0, 0.0], "distance_file": "image_distance.npy"},
        "ground_truth": {"dir": "gt", "width": gw, "height": gh, "supersample": args.gt_supersample,
                         "poses_file": "poses.json"},
        "description": scene.describe(),
    })
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"[make_example_scene] wrote {out} ({total / 1e6:.2f} MB) in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
