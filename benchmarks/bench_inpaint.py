"""Inpainting-stage benchmark on the bundled cluttered scene (issue 11).

One command::

    python benchmarks/bench_inpaint.py [--scene cluttered_room] [--field fast] [--inpaint fast]
                                       [--inpainters harmonic telea mirror] [--out exp/bench_inpaint/<scene>]

On ``example_data/cluttered_room`` (512x256, exact reference distance; ``--scene living_room``: the README's example,
with its own ground truth): train the field once (``--field`` preset),
then score novel panoramas against the ground truth at 0.2 m and 0.5 m (``poses.json``) for

* ``none``        -- the trained field (``inpaint=none``);
* ``none+steps``  -- the trained field trained further on the input panorama alone for as many steps as the stage
                     adds (the same training budget as the stage);
* ``<inpainter>`` -- the inpainting stage (``--inpaint`` preset) with that colour inpainter.

Scores per pose and method: PSNR and SSIM on three masks -- ``visible`` (the ground-truth hit point is visible from
the centre: ``r <= D0 (1 + 0.02) + 0.01`` against the reference distance, ``eval``'s rule), ``disoccluded`` (the rest)
and ``whole`` -- and the hole fraction (share of the sphere with rendered opacity < 0.5). SSIM: Wang et al. 2004
(Gaussian window sigma 1.5, scikit-image), its per-pixel map averaged over the mask. Stage times are printed but
measured under whatever load the machine has; take timings on an idle machine only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from skimage.metrics import structural_similarity

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from immersivedepth import io, sphere  # noqa: E402
from immersivedepth.config import from_mapping, to_plain  # noqa: E402
from immersivedepth.eval.metrics import psnr  # noqa: E402
from immersivedepth.inpaint.config import InpaintConfig  # noqa: E402
from immersivedepth.render.frames import render_pose  # noqa: E402
from immersivedepth.render.poses import load_poses_file  # noqa: E402
from immersivedepth.stages.inpaint import build_inpainter, continue_training, run_inpaint, sphere_dilate  # noqa: E402
from immersivedepth.stages.schema import register_configs  # noqa: E402
from immersivedepth.train.checkpoint import field_from_checkpoint, load_checkpoint  # noqa: E402
from immersivedepth.train.config import resolve_config  # noqa: E402
from immersivedepth.train.supervision import PosedPanorama  # noqa: E402
from immersivedepth.train.trainer import train_field  # noqa: E402

SCENE = REPO / "example_data" / "cluttered_room"
INPAINTERS = {
    "harmonic": {"_target_": "immersivedepth.inpaint.inpainters.HarmonicInpainter"},
    "telea": {"_target_": "immersivedepth.inpaint.inpainters.TeleaInpainter", "method": "telea"},
    "ns": {"_target_": "immersivedepth.inpaint.inpainters.TeleaInpainter", "method": "ns"},
    "mirror": {"_target_": "immersivedepth.inpaint.inpainters.MirrorInpainter"},
    # the same diffusion fed from every side of the hole (no occluder test): what depth-awareness is worth
    "harmonic_any_side": {"_target_": "immersivedepth.inpaint.inpainters.HarmonicInpainter", "depth_ratio": 1.0e9},
}
VISIBLE_REL, VISIBLE_ABS = 0.02, 0.01  # eval.evaluate.visible_from_centre's tolerances
HOLE_OPACITY = 0.5


def compose_groups(field: str, inpaint: str, render: str, extra=()) -> dict:
    """The ``field``/``inpaint``/``render`` groups as the command line composes them (Hydra, the typed schemas);
    ``extra``: more overrides, e.g. ``inpaint.anchors.max_radius=0.8``."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = compose(config_name="nerf", overrides=[f"field={field}", f"inpaint={inpaint}", f"render={render}",
                                                     *extra])
    return {k: to_plain(cfg[k]) for k in ("field", "inpaint", "render")}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def masked_ssim(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    _, smap = structural_similarity(gt, pred, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    return float(smap.mean(axis=-1)[mask].mean()) if mask.any() else float("nan")


RENDERS: dict = {}  # (method, pose) -> rendered RGB, for the figure


def score(field, poses, centre_distance: np.ndarray, method: str = "", scene: Path = SCENE) -> dict:
    out = {}
    for pose in poses:
        gt = io.read_panorama(scene / "gt" / f"{pose.name}.png")
        gd = np.load(scene / "gt" / f"{pose.name}_distance.npy")
        pose.height, pose.width = gd.shape
        r = render_pose(field, pose, normals=False)
        RENDERS[(method, pose.name)] = r["rgb"]
        pts = sphere.erp_points(pose.position, gd)
        rr, seen = sphere.panorama_depth_test(pts, np.zeros(3), centre_distance)
        visible = (seen > 0) & (rr <= seen * (1 + VISIBLE_REL) + VISIBLE_ABS)
        masks = {"visible": visible, "disoccluded": ~visible, "whole": np.ones_like(visible)}
        area = sphere.pixel_solid_angle(*gd.shape) / (4 * np.pi)
        row = {"hole_fraction": float(area[r["opacity"] < HOLE_OPACITY].sum()),
               "disoccluded_fraction": float(area[~visible].sum())}
        for k, m in masks.items():
            row[f"psnr_{k}"] = psnr(r["rgb"], gt, mask=m)
            row[f"ssim_{k}"] = masked_ssim(r["rgb"], gt, m)
        out[pose.name] = row
    return out


def compare_inpainters_on_gt(names) -> int:
    """Each inpainter on the exact disocclusions of the 0.5 m ground-truth panoramas: the pixels hidden from the
    centre are blanked (grown by 2 pixels, as the stage does) and filled from the rest of the true panorama and its
    true distance; PSNR / SSIM on the filled pixels. No field, no training: it isolates the colour fill."""
    distance = np.load(SCENE / "image_distance.npy")
    poses, _ = load_poses_file(SCENE / "poses.json")
    print("| inpainter | pose | hole % | PSNR hole | SSIM hole | seconds |\n|---|---|---|---|---|---|")
    for name in names:
        inp, _ = build_inpainter(from_mapping(InpaintConfig, {"inpainter": INPAINTERS[name]}, "inpaint"))
        for pose in poses:
            if np.linalg.norm(pose.position) < 0.4:
                continue
            gt = io.read_panorama(SCENE / "gt" / f"{pose.name}.png")
            gd = np.load(SCENE / "gt" / f"{pose.name}_distance.npy")
            rr, seen = sphere.panorama_depth_test(sphere.erp_points(pose.position, gd), np.zeros(3), distance)
            hole = sphere_dilate(~((seen > 0) & (rr <= seen * (1 + VISIBLE_REL) + VISIBLE_ABS)), 2)
            blank = np.where(hole[..., None], 0.0, gt)
            t0 = time.perf_counter()
            out = inp(blank, hole, np.where(hole, 0.0, gd))
            secs = time.perf_counter() - t0
            print(f"| {name} | {pose.name} | {100 * hole.mean():.1f} | {psnr(out, gt, mask=hole):.2f} | "
                  f"{masked_ssim(out, gt, hole):.3f} | {secs:.1f} |", flush=True)
    return 0


def mean_rows(rows: dict) -> dict:
    keys = next(iter(rows.values())).keys()
    return {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default=SCENE.name,
                    help="bundled example with ground-truth novel views (example_data/<scene>/gt, poses.json)")
    ap.add_argument("--field", default="fast", help="field preset (configs/field/<name>.yaml)")
    ap.add_argument("--inpaint", default="fast", help="inpaint preset (configs/inpaint/<name>.yaml)")
    ap.add_argument("--inpainters", nargs="+", default=["harmonic"], choices=sorted(INPAINTERS))
    ap.add_argument("--render", default="fast", help="render preset whose paths give anchor candidates")
    ap.add_argument("--out", default=None, help="output folder (default exp/bench_inpaint/<scene>)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", choices=("yes", "no", "only"), default="yes",
                    help="also train the same-budget baseline none+steps (only: just that, for a parallel run)")
    ap.add_argument("--extra-steps", type=int, default=None,
                    help="steps of the same-budget baseline (default: what the first stage run added)")
    ap.add_argument("--set", nargs="*", default=[], help="more config overrides, e.g. inpaint.anchors.max_radius=0.8")
    ap.add_argument("--tag", default="", help="suffix of the stage run folders (several settings side by side)")
    ap.add_argument("--figure", default=None, help="write ground truth | inpaint=none | stage at --figure-pose here")
    ap.add_argument("--figure-pose", default="x+0.50")
    ap.add_argument("--gt-inpainters", action="store_true",
                    help="only compare the inpainters on the ground-truth disocclusions (no training, seconds)")
    args = ap.parse_args(argv)
    if args.gt_inpainters:
        return compare_inpainters_on_gt(args.inpainters)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"exp/bench_inpaint/{args.scene}")
    scene = REPO / "example_data" / args.scene
    rgb = io.read_panorama(scene / "image.png")
    distance = np.load(scene / "image_distance.npy")
    poses, _ = load_poses_file(scene / "poses.json")
    groups = compose_groups(args.field, args.inpaint, args.render, args.set)
    field_cfg = resolve_config(groups["field"])
    render_cfg = groups["render"]
    icfg = groups["inpaint"]
    results, times = {}, {}

    base = out / "base"
    ck = base / "checkpoints" / "last.pt"
    t0 = time.perf_counter()
    if not ck.is_file():
        train_field(rgb, distance, base, field_cfg, seed=args.seed, progress=False)
    times["train"] = time.perf_counter() - t0
    field, _ = field_from_checkpoint(load_checkpoint(ck), "cpu", ck)
    results["none"] = score(field, poses, distance, "none", scene)

    extra_steps = args.extra_steps
    for name in (args.inpainters if args.baseline != "only" else []):
        cfg = _merge(icfg, {"inpainter": INPAINTERS[name]})
        run = out / f"stage_{name}{args.tag}"
        run.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        summary = run_inpaint(run, cfg, field_cfg=field_cfg, render_cfg=render_cfg, rgb=rgb, distance=distance,
                              checkpoint=ck, fingerprint=f"bench-{name}", seed=args.seed, progress=False)
        times[f"stage_{name}"] = time.perf_counter() - t0
        f2, _ = field_from_checkpoint(load_checkpoint(Path(summary["checkpoint"])), "cpu", summary["checkpoint"])
        results[name + args.tag] = score(f2, poses, distance, name + args.tag, scene)
        state = json.loads((run / "inpaint" / "anchors.json").read_text())
        extra_steps = extra_steps or (sum(r["train"]["steps"] for r in state["done"] if "train" in r)
                                      + (state["final"] or {}).get("steps", 0))
        print(f"[bench_inpaint] {name}: {summary['anchors']} anchors, {extra_steps} extra steps, "
              f"{times[f'stage_{name}']:.0f} s (under the current machine load)", flush=True)

    if extra_steps and args.baseline != "no":
        same = out / "none_same_budget"
        icfg_typed = from_mapping(InpaintConfig, icfg, "inpaint")
        t0 = time.perf_counter()
        s = continue_training(field_cfg, [PosedPanorama(rgb=rgb, distance=distance)], ck, same / "checkpoints",
                              same / "train", extra_steps, icfg_typed, device="cpu", seed=args.seed + 1,
                              progress=False)
        times["none+steps"] = time.perf_counter() - t0
        f3, _ = field_from_checkpoint(load_checkpoint(Path(s["checkpoint"])), "cpu", s["checkpoint"])
        results["none+steps"] = score(f3, poses, distance, "none+steps", scene)

    cols = ["psnr_visible", "psnr_disoccluded", "psnr_whole", "ssim_visible", "ssim_disoccluded", "ssim_whole",
            "hole_fraction"]
    print(f"\nfield={args.field} inpaint={args.inpaint}; mean over {len(poses)} poses "
          f"({', '.join(p.name for p in poses)}); hole = opacity < {HOLE_OPACITY} (share of the sphere)\n")
    print("| method | offset | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for method, rows in results.items():
        for label, sel in (("0.2 m", "0.20"), ("0.5 m", "0.50"), ("all", "")):
            sub = {k: v for k, v in rows.items() if sel in k}
            m = mean_rows(sub)
            print(f"| {method} | {label} | " + " | ".join(
                f"{100 * m[c]:.2f} %" if c == "hole_fraction" else f"{m[c]:.3f}" if c.startswith("ssim")
                else f"{m[c]:.2f}" for c in cols) + " |")
    print("\ntimes (s, NOT for reporting unless the machine was idle): "
          + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    if args.figure and args.baseline != "only":
        gt = io.read_panorama(scene / "gt" / f"{args.figure_pose}.png")
        rows = [gt, RENDERS[("none", args.figure_pose)], RENDERS[(args.inpainters[0] + args.tag, args.figure_pose)]]
        io.write_image(args.figure, np.concatenate(rows, axis=0))
        print(f"figure: {args.figure} (top to bottom: ground truth, inpaint=none, inpaint={args.inpaint} with "
              f"{args.inpainters[0]}; pose {args.figure_pose})")
    (out / "results.json").write_text(json.dumps({"results": results, "times": times, "args": vars(args)},
                                                 indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
