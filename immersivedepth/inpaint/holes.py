"""Holes of an equirectangular panorama and their two sides (pure numpy).

A hole is a 4-connected component of the fill mask on the sphere: columns wrap around in longitude and the first
(last) row touches itself half a turn away across the pole. A hole that opened up behind an occluder is bordered
by the occluder on one side (near) and by the background it used to hide on the other (far). Fillers must draw
only on the far side, otherwise the occluder's colour and distance smear into the hole.

Side rule (per hole): the ring of known pixels 4-adjacent to the hole is split into two classes by Otsu's
threshold on log-distance when the ring's largest distance exceeds its smallest by more than ``depth_ratio``;
the far class is the source side. With a smaller spread the hole has no occluder edge and the whole ring is source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from immersivedepth.sphere import erp_pad

__all__ = ["HoleSides", "neighbour_index", "label_holes", "hole_sides", "occluder_fringe"]


def neighbour_index(height: int, width: int) -> np.ndarray:
    """Flat index of the 4 spherical neighbours of every ERP pixel -> ``(4, H, W)`` int64 (up, down, left, right).

    Left/right wrap around in longitude; up from row 0 (down from the last row) is the same row half a turn away.
    """
    v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    half = width // 2
    up_v = np.where(v == 0, 0, v - 1)
    up_u = np.where(v == 0, (u + half) % width, u)
    dn_v = np.where(v == height - 1, height - 1, v + 1)
    dn_u = np.where(v == height - 1, (u + half) % width, u)
    return np.stack([up_v * width + up_u, dn_v * width + dn_u, v * width + (u - 1) % width,
                     v * width + (u + 1) % width])


def label_holes(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Spherical 4-connected components of ``mask`` ``(H, W)`` bool -> (labels ``(H, W)``, 0 = no hole; count)."""
    m = np.asarray(mask, bool)
    h, w = m.shape
    lab, n = ndimage.label(m)
    if n == 0:
        return lab, 0
    # union-find over labels that touch across the seam or across a pole
    parent = np.arange(n + 1)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    flat = lab.reshape(-1)
    nb = neighbour_index(h, w)
    pairs = [(lab[:, 0], lab[:, -1]), (lab[0], flat[nb[0, 0]]), (lab[-1], flat[nb[1, -1]])]
    for a_arr, b_arr in pairs:
        both = (a_arr > 0) & (b_arr > 0)
        for a, b in zip(a_arr[both], b_arr[both]):
            ra, rb = find(int(a)), find(int(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n + 1)])
    uniq, new = np.unique(roots, return_inverse=True)
    return new[lab].astype(np.int32), len(uniq) - 1


def _otsu(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold of 1-D ``values`` (maximises the between-class variance over ``bins`` histogram cuts)."""
    hist, edges = np.histogram(values, bins=bins)
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * (1.0 - w0))
    between[~np.isfinite(between)] = -1.0
    return float(edges[int(np.argmax(between)) + 1])


@dataclass
class HoleSides:
    """The holes of a mask and their sides.

    ``labels`` ``(H, W)`` int (0 = known pixel, ``k`` = hole ``k``), ``count`` holes; ``ring`` ``(H, W)`` bool known
    pixels 4-adjacent to a hole; ``source`` ``(H, W)`` bool the far-side ring pixels fillers may draw from;
    ``threshold`` ``(count + 1,)`` per-hole distance splitting near from far (0 = no occluder edge: every known
    pixel counts as far); ``ring_label`` ``(H, W)`` the hole each ring pixel borders (the lowest label if several).
    """

    labels: np.ndarray
    count: int
    ring: np.ndarray
    source: np.ndarray
    threshold: np.ndarray
    ring_label: np.ndarray

    def far(self, distance: np.ndarray, label_map: np.ndarray) -> np.ndarray:
        """Known pixels that count as background for the hole given per pixel in ``label_map`` ``(H, W)``."""
        thr = self.threshold[np.clip(label_map, 0, self.count)]
        return (self.labels == 0) & (np.asarray(distance) >= thr)


def hole_sides(mask: np.ndarray, distance: np.ndarray, *, depth_ratio: float) -> HoleSides:
    """Split every hole's border into near and far side (module docstring).

    ``mask`` ``(H, W)`` bool True = hole; ``distance`` ``(H, W)`` known distances (values inside holes are ignored;
    non-finite or <= 0 outside count as unknown and are never sources). ``depth_ratio`` > 1.
    """
    m = np.asarray(mask, bool)
    d = np.asarray(distance, np.float64)
    if m.shape != d.shape:
        raise ValueError(f"hole_sides: mask {m.shape} and distance {d.shape} differ in shape")
    h, w = m.shape
    labels, count = label_holes(m)
    nb = neighbour_index(h, w)
    flat_lab = labels.reshape(-1)
    # label each known pixel by the smallest adjacent hole label (0 = not on a ring)
    big = count + 1
    adj = np.full((h, w), big, dtype=np.int64)
    for k in range(4):
        lk = flat_lab[nb[k]]
        adj = np.where(lk > 0, np.minimum(adj, lk), adj)
    known_ok = ~m & np.isfinite(d) & (d > 0)
    ring = known_ok & (adj < big)
    ring_label = np.where(ring, adj, 0)
    threshold = np.zeros(count + 1)
    source = np.zeros((h, w), bool)
    if count:
        logd = np.log(np.where(known_ok, d, 1.0))
        order = np.argsort(ring_label[ring], kind="stable")
        vals = logd[ring][order]
        labs = ring_label[ring][order]
        starts = np.searchsorted(labs, np.arange(1, count + 1), side="left")
        ends = np.searchsorted(labs, np.arange(1, count + 1), side="right")
        for k in range(1, count + 1):
            v = vals[starts[k - 1]:ends[k - 1]]
            if v.size >= 2 and v.max() - v.min() > np.log(depth_ratio):
                threshold[k] = float(np.exp(_otsu(v)))
        source = ring & (d >= threshold[ring_label])
        # a hole whose whole valid ring counts as near (or which has no far side) takes its ring as it is
        fed = np.zeros(count + 1, bool)
        fed[ring_label[source]] = True
        source |= ring & ~fed[ring_label]
    return HoleSides(labels=labels, count=count, ring=ring, source=source, threshold=threshold,
                     ring_label=ring_label)


def occluder_fringe(mask: np.ndarray, rendered: np.ndarray, completed: np.ndarray, *, px: int,
                    ratio: float = 1.1) -> np.ndarray:
    """Hole pixels beside an occluder's silhouette -> ``(H, W)`` bool.

    A pixel of ``mask`` is in the fringe when a known pixel (not in ``mask``) within ``px`` pixels (a square window,
    wrapped across the seam and the poles) has a rendered distance more than ``ratio`` times nearer than the pixel's
    completed distance. Such a pixel's ray grazes the occluder: its footprint straddles the silhouette, and training
    it as the background behind would eat into the occluder, which another panorama saw.

    ``mask`` ``(H, W)`` bool; ``rendered`` ``(H, W)`` distance of the known pixels; ``completed`` ``(H, W)`` the
    filled distance of the hole pixels.
    """
    m = np.asarray(mask, bool)
    if px <= 0 or not m.any():
        return np.zeros_like(m)
    known = np.where(m | ~np.isfinite(rendered) | (rendered <= 0), np.inf, rendered)
    nearest = ndimage.minimum_filter(erp_pad(known, px), size=2 * px + 1, mode="nearest")[px:-px, px:-px]
    return m & (nearest * float(ratio) < completed)
