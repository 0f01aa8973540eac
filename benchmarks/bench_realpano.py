"""Fidelity where a panorama has no distance: training view split by distance validity, novel views (issue 15).

One command::

    python benchmarks/bench_realpano.py [--presets fast default] [--scenes open_room living_room replica_office
        mp3d_living] [--steps N] [--background env_map|learned] [--out exp/bench_realpano] [--threads N]

Scenes:

* ``open_room`` / ``living_room``: the bundled synthetic scenes (``immersivedepth.scenes.synthetic``), rendered at
  ``--height`` x 2 ``--height`` with 3x3 supersampling; the ground-truth distance marks rays through the open
  room's door and window invalid (0) like a depth sensor. Novel panoramas 0.5 m along +x and -z are scored against
  the analytic ground truth (``novel`` = all pixels, ``novel far`` = the pixels that see the far background).
* ``replica_office``: ``../shared/data/replica_office_*`` (Replica render, uint16 distance / 4000, 0 = invalid on
  1.5 %: an open doorway); ``mp3d_living``: ``../shared/data/mp3d_living_*`` (Matterport3D render, EXR metres).
  Training view only (no ground-truth novel views).

Per scene and preset: train on the panorama with its reference distance (CPU), render the training view from the
centre, print PSNR and WS-PSNR (cos-latitude weighted) on all pixels, on the pixels with a valid distance and on the
pixels without one. ``--background learned`` trains with the previous single background colour (the "before"
column). Quality only: the training times printed are for orientation, not benchmarks (they depend on load).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from immersivedepth import io  # noqa: E402
from immersivedepth.eval.metrics import psnr, ws_psnr  # noqa: E402
from immersivedepth.field.renderer import render_panorama  # noqa: E402
from immersivedepth.scenes.synthetic import make_scene  # noqa: E402
from immersivedepth.stages.schema import compose_config  # noqa: E402
from immersivedepth.train.checkpoint import load_trained_field  # noqa: E402
from immersivedepth.train.config import resolve_config  # noqa: E402
from immersivedepth.train.trainer import train_field  # noqa: E402

DATA = REPO.parent / "shared" / "data"
REAL = {
    "replica_office": ("replica_office_rgb.png", "replica_office_distance.png", "matterport3d"),
    "mp3d_living": ("mp3d_living_rgb.png", "mp3d_living_distance.exr", "exr"),
}
SYNTHETIC = ("open_room", "living_room")
POSES = {"x+0.50": (0.5, 0.0, 0.0), "z-0.50": (0.0, 0.0, -0.5)}


def load_scene(name: str, height: int, data_dir: Path) -> dict:
    """``rgb (H,W,3)``, ``distance (H,W)`` (0 = invalid) and, for synthetic scenes, the novel-view ground truth."""
    if name in SYNTHETIC:
        scene = make_scene(name)
        r = scene.render_panorama(height, 2 * height, supersample=3)
        dist = np.where(np.isfinite(r["distance"]), r["distance"], 0.0).astype(np.float32)  # sensor-style
        novel = {}
        for pose, pos in POSES.items():
            g = scene.render_panorama(height, 2 * height, position=pos, supersample=3)
            novel[pose] = {"rgb": g["rgb"], "far": ~np.isfinite(g["distance"]), "position": pos}
        return {"rgb": r["rgb"].astype(np.float32), "distance": dist, "novel": novel}
    if name not in REAL:
        raise SystemExit(f"unknown scene {name!r}; choose from {', '.join(SYNTHETIC + tuple(REAL))}")
    rgb_file, dist_file, fmt = REAL[name]
    if not (data_dir / rgb_file).is_file():
        raise SystemExit(f"{data_dir / rgb_file} not found: the real panoramas live in ../shared/data (--data-dir)")
    rgb = io.read_panorama(data_dir / rgb_file)
    dist = io.read_distance(data_dir / dist_file, fmt)
    return {"rgb": rgb, "distance": dist, "novel": {}}


def split_scores(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict:
    """PSNR / WS-PSNR on all pixels, on ``valid`` ones and on the others (NaN when a set is empty)."""
    out = {}
    for key, m in (("all", np.ones_like(valid)), ("valid", valid), ("none", ~valid)):
        ok = bool(m.any())
        out[f"psnr_{key}"] = psnr(np.clip(pred, 0, 1), gt, m) if ok else float("nan")
        out[f"ws_{key}"] = ws_psnr(np.clip(pred, 0, 1), gt, m) if ok else float("nan")
    return out


def preset_config(preset: str) -> dict:
    """The resolved ``field`` config of a preset (``configs/field/<preset>.yaml`` is an overlay on the schema's
    defaults; its ``defaults`` list only chains default.yaml, which changes nothing)."""
    return resolve_config(compose_config([f"field={preset}"]).field)


def run_one(name: str, data: dict, preset: str, args) -> dict:
    cfg = preset_config(preset)
    cfg["log"].update({"preview_every": 0, "tensorboard": False, "eval_stride": 4})
    cfg["model"]["background"] = args.background
    if args.steps:
        cfg["optim"]["steps"] = int(args.steps)
        cfg["optim"]["warmup_steps"] = min(int(cfg["optim"]["warmup_steps"]), max(1, int(args.steps) // 10))
    run = Path(args.out) / f"{name}_{preset}_{args.background}"
    t = time.perf_counter()
    summary = train_field(data["rgb"], data["distance"], run, cfg, seed=args.seed, progress=False)
    train_s = time.perf_counter() - t
    field, _ = load_trained_field(run)
    h, w = data["distance"].shape
    out = render_panorama(field, h, w)
    valid = np.isfinite(data["distance"]) & (data["distance"] > 0)
    row = {"scene": name, "preset": preset, "steps": summary["steps"], "train_s": train_s,
           "size": f"{w}x{h}", "no_distance": float((~valid).mean())}
    row.update(split_scores(out["rgb"], data["rgb"], valid))
    for pose, g in data["novel"].items():
        nv = render_panorama(field, h, w, position=g["position"])
        row[f"novel_{pose}"] = psnr(np.clip(nv["rgb"], 0, 1), g["rgb"])
        row[f"novel_far_{pose}"] = psnr(np.clip(nv["rgb"], 0, 1), g["rgb"], g["far"]) if g["far"].any() else float(
            "nan")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["fast", "default"])
    ap.add_argument("--scenes", nargs="+", default=[*SYNTHETIC, *REAL])
    ap.add_argument("--steps", type=int, default=None, help="override field.optim.steps (reduced budgets)")
    ap.add_argument("--background", default="env_map", help="field.model.background (learned = the old model)")
    ap.add_argument("--height", type=int, default=256, help="synthetic panorama height (width = 2 x height)")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", default=str(REPO / "exp" / "bench_realpano"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.scenes:
        data = load_scene(name, args.height, args.data_dir)
        for preset in args.presets:
            row = run_one(name, data, preset, args)
            rows.append(row)
            print(f"[{name} {preset}] {row}", flush=True)
    print(f"\nTraining view from the centre, field.model.background={args.background}, CPU, "
          f"{torch.get_num_threads()} threads, seed {args.seed}. PSNR / WS-PSNR (dB) on all pixels, on pixels with a "
          "valid reference distance, and on pixels without one. Novel views (synthetic scenes): PSNR on all pixels "
          "(and on the far-background pixels) 0.5 m from the centre.\n")
    print("| scene | size | preset | steps | no distance | PSNR all | PSNR valid | PSNR no-dist | WS all | WS valid | "
          "WS no-dist | novel x+0.50 (far) | novel z-0.50 (far) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        nov = [f"{r[f'novel_{p}']:.2f} ({r[f'novel_far_{p}']:.2f})" if f"novel_{p}" in r else "-" for p in POSES]
        print(f"| {r['scene']} | {r['size']} | {r['preset']} | {r['steps']} | {r['no_distance']:.1%} | "
              f"{r['psnr_all']:.2f} | {r['psnr_valid']:.2f} | {r['psnr_none']:.2f} | {r['ws_all']:.2f} | "
              f"{r['ws_valid']:.2f} | {r['ws_none']:.2f} | {nov[0]} | {nov[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
