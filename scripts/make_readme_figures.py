"""Compose the README's overview picture from a finished run of the bundled example.

    python scripts/make_readme_figures.py exp/living_room/default [docs/example_overview.png]

Panels: the input panorama, the distance map, the normals (all from ``depth/``) and a novel view
(the middle frame of ``render/tour/video.mp4``), each labelled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from immersivedepth import io  # noqa: E402


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = np.ascontiguousarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    cv2.rectangle(out, (0, 0), (12 + 9 * len(text), 24), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out.astype(np.float32) / 255.0


def _middle_frame(video: Path) -> np.ndarray:
    reader = imageio.get_reader(str(video))
    try:
        frames = [f for f in reader]
    finally:
        reader.close()
    return frames[len(frames) // 2].astype(np.float32) / 255.0


def compose(run_dir: Path, image_path: Path, width: int = 512) -> np.ndarray:
    """``(2h, 2w, 3)`` float image of the four labelled panels."""
    h = width // 2
    panels = [
        (io.read_panorama(image_path), "input panorama"),
        (io.read_panorama(run_dir / "depth" / "distance.png"), "distance (depth/distance.png)"),
        (io.read_panorama(run_dir / "depth" / "normals.png"), "normals (depth/normals.png)"),
    ]
    video = run_dir / "render" / "tour" / "video.mp4"
    if video.is_file():
        panels.append((_middle_frame(video), "novel view (render/tour/video.mp4)"))
    tiles = [_label(cv2.resize(p, (width, h), interpolation=cv2.INTER_AREA), t) for p, t in panels]
    while len(tiles) < 4:
        tiles.append(np.zeros((h, width, 3), np.float32))
    return np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path, nargs="?", default=Path("docs/example_overview.png"))
    ap.add_argument("--image", type=Path, default=Path("example_data/living_room/image.png"))
    args = ap.parse_args()
    io.write_image(args.out, compose(args.run_dir, args.image))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
