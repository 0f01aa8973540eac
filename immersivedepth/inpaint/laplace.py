"""Harmonic (Laplace) fill of ERP holes on the sphere, from chosen boundary pixels only.

Solves the Laplace-Beltrami equation of the sphere on the hole pixels: with the metric
``ds^2 = dlat^2 + cos^2(lat) dlon^2`` and equal angular steps in both directions (W = 2H), multiplying the
operator by ``cos(lat)`` gives the symmetric 5-point stencil whose vertical links weigh ``cos`` of the latitude of
the edge between the two rows and whose horizontal links weigh ``1 / cos(lat)`` of the row. Near a pole the rows
therefore couple strongly around their ring, which is how the sphere looks there: the fill is smooth across the
pole, not across the image's top edge. Columns wrap around in longitude.

Boundary conditions: known ``source`` neighbours are Dirichlet values; any other known neighbour (the near side of
an occluder edge) is left out, which is a zero-flux (Neumann) condition, so nothing flows in from it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from immersivedepth.inpaint.holes import label_holes, neighbour_index

__all__ = ["sphere_link_weights", "harmonic_fill"]


def sphere_link_weights(height: int, width: int) -> np.ndarray:
    """Weights ``(4, H, W)`` of the up/down/left/right links of :func:`holes.neighbour_index` (see module doc).

    The pole is a point, so the links across it (row 0 to row 0 half a turn away) would weigh ``cos(90 deg) = 0``;
    they get the small weight ``cos`` of the first row's latitude instead, which keeps every hole that is connected
    across the pole one system (its values flow mostly around the ring, as on the sphere).
    """
    lat_edges = math.pi / 2.0 - np.arange(height + 1) / height * math.pi  # row i spans edges i..i+1
    lat_rows = 0.5 * (lat_edges[:-1] + lat_edges[1:])
    up = np.cos(lat_edges[:-1])
    down = np.cos(lat_edges[1:])
    up[0] = np.cos(lat_rows[0])
    down[-1] = np.cos(lat_rows[-1])
    side = 1.0 / np.cos(lat_rows)
    w = np.empty((4, height, width))
    w[0] = np.clip(up, 0.0, None)[:, None]
    w[1] = np.clip(down, 0.0, None)[:, None]
    w[2] = side[:, None]
    w[3] = side[:, None]
    return w


def harmonic_fill(values: np.ndarray, mask: np.ndarray, source: np.ndarray, *, orphan_value=None) -> np.ndarray:
    """Fill ``mask`` pixels of ``values`` ``(H, W)`` or ``(H, W, C)`` harmonically from ``source`` pixels.

    ``mask`` ``(H, W)`` bool True = unknown; ``source`` ``(H, W)`` bool known pixels used as boundary values (others
    are zero-flux). Returns a float64 copy with the hole pixels replaced; pixels outside ``mask`` are unchanged.
    A hole that touches no source pixel has undetermined values: it takes ``orphan_value`` (a scalar or ``(C,)``)
    when given, else ``ValueError`` is raised.
    """
    vals = np.asarray(values, np.float64)
    m = np.asarray(mask, bool)
    src = np.asarray(source, bool) & ~m
    h, w = m.shape
    out = vals.copy()
    if not m.any():
        return out
    flat_vals = vals.reshape(h * w, -1)
    idx = np.flatnonzero(m.reshape(-1))
    n = idx.size
    pos = np.full(h * w, -1, dtype=np.int64)
    pos[idx] = np.arange(n)
    nb = neighbour_index(h, w).reshape(4, -1)[:, idx]
    wt = sphere_link_weights(h, w).reshape(4, -1)[:, idx]
    src_flat = src.reshape(-1)
    rows, cols, data = [], [], []
    diag = np.zeros(n)
    rhs = np.zeros((n, flat_vals.shape[1]))
    has_source = np.zeros(n, bool)
    for k in range(4):
        j = nb[k]
        wk = wt[k]
        self_link = j == idx  # a pole row's "up" link onto itself carries no weight anyway
        unknown = (pos[j] >= 0) & ~self_link & (wk > 0)
        dirichlet = src_flat[j] & ~self_link & (wk > 0)
        diag += np.where(unknown | dirichlet, wk, 0.0)
        rows.append(np.flatnonzero(unknown))
        cols.append(pos[j[unknown]])
        data.append(-wk[unknown])
        rhs[dirichlet] += wk[dirichlet, None] * flat_vals[j[dirichlet]]
        has_source |= dirichlet
    labels, count = label_holes(m)
    lab = labels.reshape(-1)[idx]
    fed = np.zeros(count + 1, bool)
    fed[lab[has_source]] = True
    if not fed[1:].all():
        starving = int(np.flatnonzero(~fed[1:])[0]) + 1
        if orphan_value is None:
            v, u = divmod(int(idx[np.flatnonzero(lab == starving)[0]]), w)
            raise ValueError(f"harmonic_fill: a hole (first pixel row {v}, column {u}) touches no source pixel; its "
                             "values are undetermined")
        # orphans become known pixels of the given value; the remaining holes are solved as usual
        orphan = ~fed[labels] & m
        filled = vals.copy()
        filled[orphan] = orphan_value
        return harmonic_fill(filled, m & ~orphan, src)
    a = sparse.csc_matrix((np.concatenate([diag, *data]),
                           (np.concatenate([np.arange(n), *rows]), np.concatenate([np.arange(n), *cols]))),
                          shape=(n, n))
    sol = splu(a).solve(rhs)
    out.reshape(h * w, -1)[idx] = sol
    return out
