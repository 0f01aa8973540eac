"""Radiance-field quality benchmark on the bundled synthetic scene (issue 5).

One command::

    python benchmarks/bench_train.py [--presets fast default] [--out exp/bench_train] [--threads N]

For each preset: train on the living-room panorama (512x256, 3x3 supersampled like ``example_data``) with its exact
reference distance as supervision, on the CPU; then score

* the training view (all pixels for PSNR, valid distances for AbsRel),
* novel panoramas 0.2 m and 0.5 m from the centre (along +x and -z), against the analytic ground truth, on the
  pixels visible from the training position.

Visibility rule (the mask) and image metrics are ``mode=evaluate``'s own (one owner: ``immersivedepth.eval``): a
novel-view pixel counts when its ground-truth hit point P, seen from the panorama centre, is the first surface along
that direction, ``| |P| - D0(P/|P|) | <= rel_tol * |P|`` (``eval/visibility.py``; ``rel_tol`` is
the default of ``evaluate.visibility.rel_tol``, 1 %), with ``D0`` the exact distance cast from the centre
(scene ray casting); PSNR / WS-PSNR / SSIM come from ``eval/novel_view.py``.

Two references are computed in the same run on the same mask: the identity baseline (the input panorama shown
unchanged at the novel position) and the ideal warp ceiling (the input panorama re-projected with the exact
geometry: each novel pixel takes the input's bilinear colour in the direction of its true hit point).
Prints a markdown table.
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

from immersivedepth import sphere  # noqa: E402
from immersivedepth.config import to_plain  # noqa: E402
from immersivedepth.eval.config import EvaluateConfig  # noqa: E402
from immersivedepth.eval.metrics import depth_metrics  # noqa: E402
from immersivedepth.eval.novel_view import image_metrics  # noqa: E402
from immersivedepth.eval.visibility import hit_points, visible_mask  # noqa: E402
from immersivedepth.field.renderer import render_panorama  # noqa: E402
from immersivedepth.scenes.synthetic import make_scene  # noqa: E402
from immersivedepth.stages.schema import compose_config  # noqa: E402
from immersivedepth.train.trainer import train_field  # noqa: E402

POSES = {"x+0.20": (0.2, 0.0, 0.0), "z-0.20": (0.0, 0.0, -0.2), "x+0.50": (0.5, 0.0, 0.0), "z-0.50": (0.0, 0.0, -0.5)}
VIS_TOL = EvaluateConfig().visibility.rel_tol  # evaluate.visibility.rel_tol's default: the same rule as mode=evaluate


def psnr01(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR of images clipped to [0, 1] on ``mask``: ``mode=evaluate``'s ``psnr_visible``."""
    return image_metrics(a, b, {"visible": mask})["psnr_visible"]


def references(scene, rgb0: np.ndarray, h: int, w: int, pos) -> dict:
    """GT novel panorama, visibility mask, identity and ideal-warp images for position ``pos``."""
    gt = scene.render_panorama(h, w, position=pos, supersample=3)

    def exact_centre_distance(u: np.ndarray) -> np.ndarray:  # (h, w, 3) unit directions -> (h, w)
        flat = u.reshape(-1, 3)
        return scene.cast(np.zeros_like(flat), flat)["distance"].reshape(u.shape[:2])

    visible = visible_mask(pos, gt["distance"], exact_centre_distance, VIS_TOL)
    _, _, u = hit_points(pos, gt["distance"])
    warp = sphere.erp_sample_dirs(rgb0, u)
    return {"rgb": gt["rgb"], "distance": gt["distance"], "mask": visible, "warp": warp.astype(np.float32)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["fast", "default"])
    ap.add_argument("--out", default=str(REPO / "exp" / "bench_train"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--height", type=int, default=256)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = args.height, 2 * args.height
    scene = make_scene("living_room")
    train = scene.render_panorama(h, w, supersample=3)
    rgb0, dist0 = train["rgb"].astype(np.float32), train["distance"].astype(np.float32)
    refs = {name: references(scene, rgb0, h, w, p) for name, p in POSES.items()}
    rows = []
    for preset in args.presets:
        cfg = to_plain(compose_config([f"field={preset}"]).field)
        run = Path(args.out) / preset
        t = time.perf_counter()
        s = train_field(rgb0, dist0, run, cfg, seed=args.seed, progress=False)
        total = time.perf_counter() - t
        from immersivedepth.train.checkpoint import load_trained_field

        field, _ = load_trained_field(run)
        row = {"preset": preset, "train_s": s["wall_time"], "total_s": total, "steps": s["steps"],
               "train_psnr": s["psnr"], "train_absrel": s["abs_rel"]}
        for name, p in POSES.items():
            ref = refs[name]
            t = time.perf_counter()
            out = render_panorama(field, h, w, position=p)
            row[f"{name}_render_s"] = time.perf_counter() - t
            m = ref["mask"]
            row[f"{name}_psnr"] = psnr01(out["rgb"], ref["rgb"], m)
            row[f"{name}_absrel"] = depth_metrics(out["distance"], ref["distance"], valid=m)["abs_rel"]
            row[f"{name}_identity"] = psnr01(rgb0, ref["rgb"], m)
            row[f"{name}_warp"] = psnr01(ref["warp"], ref["rgb"], m)
            row[f"{name}_visible"] = float(m.mean())
        rows.append(row)
        print(f"[{preset}] {row}", flush=True)

    print(f"\nRadiance field on the synthetic living room, {w}x{h}, reference distance as supervision, CPU, "
          f"{torch.get_num_threads()} threads, seed {args.seed}.")
    print(f"Novel-view mask: pixels whose true hit point is the first surface seen from the centre "
          f"(| |P| - D0(P/|P|) | <= {VIS_TOL:.0%} |P|); PSNR/AbsRel on that mask. identity = input panorama "
          "unchanged; ideal warp = input re-projected with the exact geometry.\n")
    print("| preset | steps | train time (s) | train PSNR | train AbsRel | pose | visible | PSNR field | identity | "
          "ideal warp | AbsRel field | render (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for i, name in enumerate(POSES):
            head = (f"| {r['preset']} | {r['steps']} | {r['train_s']:.0f} | {r['train_psnr']:.2f} | "
                    f"{r['train_absrel']:.4f} " if i == 0 else "| | | | | ")
            print(head + f"| {name} | {r[f'{name}_visible']:.0%} | {r[f'{name}_psnr']:.2f} | "
                  f"{r[f'{name}_identity']:.2f} | {r[f'{name}_warp']:.2f} | {r[f'{name}_absrel']:.4f} | "
                  f"{r[f'{name}_render_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
