"""render_dense benchmark: rendering speed, marching-tetrahedra time/memory, mesh accuracy.

    python benchmarks/bench_render.py                      # trains a small field on the bundled scene first
    python benchmarks/bench_render.py --run exp/living_room/default   # use a trained run (its field + distance)
    python benchmarks/bench_render.py --only-speed         # just the frames/s rows (old vs new inference path)

Rows (printed as a markdown table; ``--json out.json`` also writes the raw numbers):
* frames/s and rays/s of 512x256 equirectangular panoramas and 512x512 perspective frames (CPU, RGB + distance,
  normals off, i.e. what the videos and the inpainting anchors need), on the trained field, with the forward-only
  "packed" inference path (the default) and the original "padded" path side by side, frames interleaved;
* marching-tetrahedra time and peak memory (RSS growth of a fresh process) at 256^3 and 512^3 lattices, on the
  trained field (sparse bricks) — and on the analytic stand-in field of the tests;
* Chamfer distance (mean of accuracy and completeness, metres; see ``mesh_accuracy``) and F-score@5 cm of the
  field mesh and of the depth mesh to the true surfaces of the bundled scene visible from the panorama centre.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _train_small(run: Path, steps: int, size: tuple[int, int]):
    from immersivedepth.scenes.synthetic import make_scene
    from immersivedepth.train.trainer import train_field

    sc = make_scene("living_room")
    p = sc.render_panorama(*size)
    (run / "depth").mkdir(parents=True, exist_ok=True)
    np.save(run / "depth" / "distance.npy", p["distance"].astype(np.float32))
    t = time.perf_counter()
    res = train_field(p["rgb"], p["distance"], run, {"optim": {"steps": steps, "batch_rays": 2048},
                                                     "log": {"tensorboard": False, "preview_every": 10**9}},
                      progress=True)
    print(f"trained {steps} steps in {time.perf_counter() - t:.0f} s: psnr {res['psnr']:.2f}, "
          f"abs_rel {res['abs_rel']:.4f}", flush=True)


def _load_field(run: str | None):
    if run is None:
        from test_render_support import AnalyticSceneField

        return AnalyticSceneField(beta=0.01)
    from immersivedepth.train.checkpoint import load_trained_field

    return load_trained_field(run)[0]


def _mc_child(run, resolution, q):
    """Fresh process: time, peak RSS growth and peak numpy memory (tracemalloc) of one field-mesh extraction."""
    import tracemalloc

    from immersivedepth.render.mesh import FieldMeshOptions, field_mesh

    field = _load_field(run)
    dist = np.load(Path(run) / "depth" / "distance.npy") if run else None
    if dist is None:
        from immersivedepth.scenes.synthetic import make_scene

        dist = make_scene("living_room").render_panorama(128, 256)["distance"]
    base = _rss_mb()
    tracemalloc.start()
    t = time.perf_counter()
    m = field_mesh(field, FieldMeshOptions(resolution=resolution), distance=dist, progress=False)
    secs = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    q.put({"seconds": secs, "peak_rss_mb": _rss_mb() - base, "peak_numpy_mb": peak / 2**20,
           "faces": int(len(m.faces)), "evaluated": int(m.info["evaluated_points"]),
           "lattice": m.info["lattice_shape"]})


def marching_benchmark(run, resolution):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_mc_child, args=(run, resolution, q))
    p.start()
    out = q.get()
    p.join()
    return out


def render_fps(field, kind: str, width: int, height: int, n: int, paths=("padded", "packed")) -> dict:
    """Frames/s of ``n`` poses per inference path (renderer option ``inference``), the paths interleaved frame by
    frame so both see the same machine load."""
    from immersivedepth import sphere
    from immersivedepth.render.frames import render_pose
    from immersivedepth.render.poses import CameraPose

    poses = [CameraPose(position=[0.3 * np.sin(i), 0.0, 0.3 * np.cos(i)], type=kind, width=width, height=height,
                        rotation=sphere.yaw_pitch_roll(0.5 * i) if kind == "perspective" else np.eye(3),
                        fov_deg=90.0) for i in range(n)]
    secs = dict.fromkeys(paths, 0.0)
    for path in paths:  # warm-up
        render_pose(field, poses[0], normals=False, render_kwargs={"options": {"inference": path}})
    for p in poses:
        for path in paths:
            t = time.perf_counter()
            render_pose(field, p, normals=False, render_kwargs={"options": {"inference": path}})
            secs[path] += time.perf_counter() - t
    return {path: n / secs[path] for path in paths}


def mesh_accuracy(mesh_vertices, mesh_faces, scene, gt_points, n: int = 1_000_000):
    """Accuracy / completeness of a mesh against the true surfaces visible from the panorama centre.

    accuracy: mean exact distance (analytic signed distance of the scene) from area-uniform mesh samples that
    the centre sees (|p| <= true distance * 1.01 + 2 cm) to the true surfaces; completeness: mean distance from
    visible true surface samples ``gt_points`` to the nearest of ``n`` mesh samples (1 M samples: ~1 cm spacing
    floor on this scene); chamfer = their mean; F-score at 5 cm from both.
    """
    import trimesh
    from scipy.spatial import cKDTree
    from test_render_support import scene_sdf

    tm = trimesh.Trimesh(mesh_vertices, mesh_faces, process=False)
    pts, _ = trimesh.sample.sample_surface(tm, n, seed=0)
    r = np.linalg.norm(pts, axis=1)
    seen = scene.cast(np.zeros(3), pts / r[:, None])["distance"]
    vis = pts[r <= seen * 1.01 + 0.02]
    acc = np.abs(scene_sdf(scene, vis[:200_000]))
    comp, _ = cKDTree(pts).query(gt_points)
    prec, rec = float(np.mean(acc <= 0.05)), float(np.mean(comp <= 0.05))
    return {"a_to_b": float(acc.mean()), "b_to_a": float(comp.mean()),
            "chamfer": float(0.5 * (acc.mean() + comp.mean())),
            "fscore": 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="trained run directory (default: train a small field in a temp dir)")
    ap.add_argument("--train-steps", type=int, default=500)
    ap.add_argument("--frames", type=int, default=3, help="frames per speed measurement")
    ap.add_argument("--resolutions", type=int, nargs="*", default=[256, 512])
    ap.add_argument("--analytic-resolutions", type=int, nargs="*", default=[256, 512],
                    help="marching-tetrahedra sizes also run on the analytic stand-in field")
    ap.add_argument("--skip-analytic", action="store_true")
    ap.add_argument("--skip-speed", action="store_true", help="skip the frames/s rows")
    ap.add_argument("--only-speed", action="store_true", help="only the frames/s rows (no meshes, no Chamfer)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()

    from immersivedepth.render.depth_mesh import depth_mesh
    from immersivedepth.render.mesh import FieldMeshOptions, field_mesh
    from immersivedepth.scenes.synthetic import make_scene

    tmp = None
    run = args.run
    if run is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench_render_"))
        run = str(tmp / "run")
        _train_small(Path(run), args.train_steps, (128, 256))
    results: dict = {"threads": torch.get_num_threads()}
    field = _load_field(run)
    if not args.skip_speed:
        for key, kind, w, h in (("erp_512x256", "equirectangular", 512, 256),
                                ("persp_512x512", "perspective", 512, 512)):
            fps = render_fps(field, kind, w, h, args.frames)
            results[f"{key}_fps"] = fps["packed"]
            results[f"{key}_fps_padded"] = fps["padded"]
            print(f"render {key}: packed {fps['packed']:.3f} fps ({fps['packed'] * w * h:,.0f} rays/s), padded (old) "
                  f"{fps['padded']:.3f} fps ({fps['padded'] * w * h:,.0f} rays/s): "
                  f"{fps['packed'] / fps['padded']:.2f}x", flush=True)
    if args.only_speed:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    for res in args.resolutions:
        results[f"mc_{res}_trained"] = marching_benchmark(run, res)
        print(f"mc {res}^3 trained: {results[f'mc_{res}_trained']}", flush=True)
        if not args.skip_analytic and res in args.analytic_resolutions:
            results[f"mc_{res}_analytic"] = marching_benchmark(None, res)
            print(f"mc {res}^3 analytic: {results[f'mc_{res}_analytic']}", flush=True)

    scene = make_scene("living_room")
    gt, _ = scene.sample_surface(50_000, visible_from=np.zeros(3))
    dist = np.load(Path(run) / "depth" / "distance.npy")
    m = field_mesh(field, FieldMeshOptions(resolution=256), distance=dist, progress=False)
    results["chamfer_field_mesh_trained"] = mesh_accuracy(m.vertices, m.faces, scene, gt)
    if not args.skip_analytic:
        m = field_mesh(_load_field(None), FieldMeshOptions(resolution=256), distance=dist, progress=False)
        results["chamfer_field_mesh_analytic"] = mesh_accuracy(m.vertices, m.faces, scene, gt)
    pano = scene.render_panorama(512, 1024)
    t = time.perf_counter()
    dm = depth_mesh(pano["rgb"], pano["distance"])
    results["depth_mesh_seconds_1024x512"] = time.perf_counter() - t
    results["chamfer_depth_mesh_gt_1024x512"] = mesh_accuracy(dm.vertices, dm.faces, scene, gt)
    dm = depth_mesh(None, dist)
    results["chamfer_depth_mesh_run_distance"] = mesh_accuracy(dm.vertices, dm.faces, scene, gt)

    def c(k):
        r = results[k]
        return (f"{r['chamfer']:.4f} m (accuracy {r['a_to_b']:.4f}, completeness {r['b_to_a']:.4f}, "
                f"F@5cm {r['fscore']:.3f})")

    rows = []
    if "erp_512x256_fps" in results:
        for key, label, rays in (("erp_512x256", "ERP 512x256", 512 * 256), ("persp_512x512", "perspective 512x512",
                                                                              512 * 512)):
            new_fps, old_fps = results[f"{key}_fps"], results[f"{key}_fps_padded"]
            rows.append((f"{label} frames/s (CPU, trained field), packed / padded (old) inference",
                         f"{new_fps:.3f} / {old_fps:.3f} ({new_fps * rays:,.0f} / {old_fps * rays:,.0f} rays/s, "
                         f"{new_fps / old_fps:.2f}x)"))
    for res in args.resolutions:
        for kind in ("trained", "analytic"):
            k = f"mc_{res}_{kind}"
            if k in results:
                r = results[k]
                rows.append((f"marching tetrahedra {res}^3, {kind} field",
                             f"{r['seconds']:.1f} s, peak +{r['peak_rss_mb']:.0f} MB RSS / {r['peak_numpy_mb']:.0f} MB "
                             f"numpy, {r['faces']} faces, "
                             f"{r['evaluated']} density evaluations (lattice {r['lattice']})"))
    rows.append(("Chamfer field mesh (trained, 256^3)", c("chamfer_field_mesh_trained")))
    if "chamfer_field_mesh_analytic" in results:
        rows.append(("Chamfer field mesh (analytic density, 256^3)", c("chamfer_field_mesh_analytic")))
    rows.append(("Chamfer depth mesh (true 1024x512 distance)", c("chamfer_depth_mesh_gt_1024x512")
                 + f", built in {results['depth_mesh_seconds_1024x512']:.2f} s"))
    rows.append(("Chamfer depth mesh (run's distance map)", c("chamfer_depth_mesh_run_distance")))
    print("\n| benchmark | result |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
