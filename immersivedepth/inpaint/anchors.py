"""Anchor positions for inpainting: where novel views will go, chosen by how much unseen area they reveal.

Candidates come from (1) the configured render paths (``render.paths``: tour, circle, spiral, forward, file —
built with :func:`immersivedepth.render.paths.make_path`, so anchors cover exactly where videos will go), (2) PERF's
rings at fractions of the safe radius, and (3) explicit positions. Every candidate must lie in the free space of
the distance panorama (:class:`~immersivedepth.render.paths.FreeSpace`: in front of what the centre saw, by a
margin) and within ``max_radius`` of the centre; others are skipped with a log line naming them.

Selection is greedy set cover: render each candidate (a small panorama is enough), count the solid angle of its
pixels no view saw (:func:`visibility.unseen_mask`), take the candidate revealing most, add its panorama to the
views, recount, until ``count`` anchors are chosen or the best one reveals less than ``min_gain`` of the sphere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from immersivedepth import sphere
from immersivedepth.inpaint.visibility import View, unseen_mask
from immersivedepth.render.paths import FreeSpace, make_path

__all__ = ["Candidate", "path_candidates", "ring_candidates", "keep_in_free_space", "greedy_anchors"]

LOG = logging.getLogger("immersivedepth.inpaint")


@dataclass(frozen=True)
class Candidate:
    """A possible anchor: ``name`` (for logs and files), ``position`` ``(3,)`` world units."""

    name: str
    position: np.ndarray


def path_candidates(path_specs: Sequence[Mapping], free: FreeSpace, per_path: int) -> list[Candidate]:
    """``per_path`` positions spread along every render path (``render.paths`` entries) -> candidates."""
    out = []
    for k, spec in enumerate(path_specs):
        s = dict(spec)
        name = str(s.get("name", f"path{k}"))
        if str(s.get("kind", "")) != "file":
            s["n_frames"] = int(per_path)
        poses, _ = make_path(s, free, on_violation="clamp")
        pick = np.unique(np.linspace(0, len(poses) - 1, min(int(per_path), len(poses))).round().astype(int))
        out += [Candidate(f"{name}_{i:03d}", np.asarray(poses[i].position, np.float64)) for i in pick]
    return out


def ring_candidates(free: FreeSpace, fractions: Sequence[float], per_ring: int, height: float = 0.0) -> list[Candidate]:
    """PERF's anchors: ``per_ring`` azimuths on rings at ``fractions`` of the safe horizontal radius (the rings are
    rotated by half a step against each other so they do not line up)."""
    out = []
    for j, f in enumerate(fractions):
        az = (np.arange(per_ring) + 0.5 * (j % 2)) * (2 * np.pi / per_ring)
        r = float(f) * free.horizontal_radius(az, height)
        for i in range(per_ring):
            out.append(Candidate(f"ring{j}_{i:02d}", np.array([r[i] * np.sin(az[i]), height, -r[i] * np.cos(az[i])])))
    return out


def keep_in_free_space(candidates: Sequence[Candidate], free: FreeSpace, max_radius: float | None = None
                       ) -> list[Candidate]:
    """Candidates in free space and within ``max_radius`` of the centre; the others are logged by name and dropped."""
    if not candidates:
        return []
    pos = np.stack([c.position for c in candidates])
    _, bad = free.clamp(pos)
    kept = []
    for c, b in zip(candidates, bad):
        where = np.round(c.position, 3).tolist()
        if b:
            LOG.warning("inpaint: anchor %s at %s is inside an object or outside the room (beyond %.0f%% of the "
                        "distance seen in its direction, or within %g of a surface); skipped", c.name, where,
                        100 * free.max_fraction, free.margin)
        elif max_radius is not None and float(np.linalg.norm(c.position)) > max_radius:
            LOG.info("inpaint: anchor %s at %s is farther than %g from the centre (inpaint.anchors.max_radius, or "
                     "median_fraction of the median distance); skipped", c.name, where, max_radius)
        else:
            kept.append(c)
    return kept


def greedy_anchors(candidates: Sequence[Candidate], render: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                   views: Sequence[View], *, count: int, min_gain: float, rel_tol: float, abs_tol: float,
                   min_opacity: float) -> list[tuple[Candidate, float]]:
    """Greedy choice (module docstring) -> ``[(candidate, gain)]`` in order, ``gain`` = unseen fraction of the sphere.

    ``render(position (3,)) -> (distance (h, w), opacity (h, w))`` renders a candidate (any small size).
    """
    if count <= 0 or not candidates:
        return []
    shots = [render(np.asarray(c.position, np.float64)) for c in candidates]
    h, w = shots[0][0].shape
    area = sphere.pixel_solid_angle(h, w) / (4.0 * np.pi)
    known = list(views)
    unseen = [unseen_mask(c.position, d, known, rel_tol=rel_tol, abs_tol=abs_tol, opacity=o, min_opacity=min_opacity)
              for c, (d, o) in zip(candidates, shots)]
    chosen: list[tuple[Candidate, float]] = []
    left = set(range(len(candidates)))
    while left and len(chosen) < count:
        gains = {i: float(area[unseen[i]].sum()) for i in left}
        best = max(sorted(left), key=lambda i: gains[i])  # sorted: ties go to the first candidate, deterministic
        if gains[best] < min_gain:
            break
        chosen.append((candidates[best], gains[best]))
        left.discard(best)
        new = View(np.asarray(candidates[best].position, np.float64), shots[best][0])
        for i in left:  # only pixels still unseen can change
            if unseen[i].any():
                d, o = shots[i]
                again = unseen_mask(candidates[i].position, np.where(unseen[i], d, 0.0), [new], rel_tol=rel_tol,
                                    abs_tol=abs_tol)
                valid = np.isfinite(d) & (d > 0) & (o >= min_opacity)
                unseen[i] = unseen[i] & (again | ~valid)
    return chosen
