"""Anchor positions for inpainting: where novel views will go, chosen by how much unseen area they reveal.

Candidates come from (1) the configured render paths (``render.paths``: tour, circle, spiral, forward, file —
built with :func:`immersivedepth.render.paths.make_path`, so anchors cover exactly where videos will go), (2) PERF's
rings at fractions of the safe radius, and (3) explicit positions. Every candidate must lie in the free space of
the distance panorama (:class:`~immersivedepth.render.paths.FreeSpace`: in front of what the centre saw, by a
margin) and within ``max_radius`` of the centre; others are skipped with a log line naming them.

Selection is greedy and progressive: before each anchor, every candidate not yet used is rendered with the current
field (a small panorama is enough) and scored by the solid angle of its pixels no supervision panorama saw
(:func:`visibility.unseen_mask`); the one revealing most is filled and trained on, and the next choice sees the
result (what the filled panoramas now cover, holes the training closed), until ``count`` anchors are filled or the
best one reveals less than ``min_gain`` of the sphere. (Choosing all anchors up front from the first field scored
the holes of a candidate next to a chosen anchor as still unseen, and spent anchors on nothing.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from immersivedepth import sphere
from immersivedepth.inpaint.visibility import View, unseen_mask
from immersivedepth.render.paths import FreeSpace, make_path

__all__ = ["Candidate", "path_candidates", "ring_candidates", "keep_in_free_space", "best_candidate"]

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
    kept, far = [], []
    for c, b in zip(candidates, bad):
        if b:
            LOG.warning("inpaint: anchor %s at %s is inside an object or outside the room (beyond %.0f%% of the "
                        "distance seen in its direction, or within %g of a surface); skipped", c.name,
                        np.round(c.position, 3).tolist(), 100 * free.max_fraction, free.margin)
        elif max_radius is not None and float(np.linalg.norm(c.position)) > max_radius:
            far.append(c.name)
        else:
            kept.append(c)
    if far:  # a deliberate limit, not a fault: one line naming them all
        LOG.info("inpaint: %d candidate anchors farther than %.3g from the centre (inpaint.anchors.max_radius, or "
                 "median_fraction of the median distance) not used: %s", len(far), max_radius, ", ".join(far))
    return kept


def best_candidate(candidates: Sequence[Candidate], render: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                   views: Sequence[View], *, min_gain: float, rel_tol: float, abs_tol: float,
                   min_opacity: float) -> tuple[Candidate, float] | None:
    """The candidate revealing the most unseen area (module docstring) -> ``(candidate, gain)``, ``gain`` = unseen
    fraction of the sphere; ``None`` when no candidate reveals ``min_gain``. Ties go to the first candidate.

    ``render(position (3,)) -> (distance (h, w), opacity (h, w))`` renders a candidate with the current field (any
    small size); ``views`` are every supervision panorama so far, so the gains reflect what was already filled.
    """
    best, best_gain = None, -1.0
    for c in candidates:
        d, o = render(np.asarray(c.position, np.float64))
        area = sphere.pixel_solid_angle(*d.shape) / (4.0 * np.pi)
        unseen = unseen_mask(c.position, d, views, rel_tol=rel_tol, abs_tol=abs_tol, opacity=o,
                             min_opacity=min_opacity)
        gain = float(area[unseen].sum())
        if gain > best_gain:
            best, best_gain = c, gain
    if best is None or best_gain < min_gain:
        return None
    return best, best_gain
