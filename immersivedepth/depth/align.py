"""Global alignment of per-tile disparities: one sparse robust least-squares problem for all tiles.

Model. Tile ``k`` returns a relative disparity ``d_k(x, y)`` (normalised here by its median). The
corrected inverse *planar* depth of the tile is

    q_k(x, y) = s_k(x, y) * d_k(x, y) + o_k(x, y)

where ``s_k`` and ``o_k`` are bilinear interpolants of a ``G x G`` grid of unknowns spanning the tile
image (``G = 1``: a plain per-tile affine map). A direction ``w`` seen by tile ``k`` has inverse *ray
distance* ``q_k * (w . f_k)`` (``f_k`` the tile's optical axis, since ``depth = distance * (w . f_k)``),
which must agree for every pair of tiles that see ``w``. That is linear in the unknowns.

Energy (all rows of one sparse linear system, solved by IRLS; the normal equations are assembled from
dense per-tile-pair blocks (each row touches two tiles) and solved by Cholesky)::

    E = 1/P sum_pairs rho( (p_k - p_l) / ((p_k + p_l) / 2) )          relative disagreement of inverse distance
      + smooth  * 1/N sum_tiles sum_nodes |D1 s|^2 + |D1 o|^2            first differences of the grids
      + bending * 1/N sum_tiles sum_nodes |D2 s|^2 + |D2 o|^2            second differences of the grids
      + rigidity * 1/N sum_tiles sum_nodes (s - mean_k s)^2 + (o - mean_k o)^2
      + prior * 1/N sum_tiles sum_nodes (s - 1)^2 + o^2                  tiny: tiles with no overlap stay defined
      + positivity * sum (q < eps * median q) (q - eps * median q)^2    keeps corrected disparity positive
    subject to mean(s) = 1 in every connected component of the tile-overlap graph (hard constraints:
    the unobservable global scale of each component)

``rho`` is Cauchy or Huber on residuals scaled by ``robust_k * 1.4826 * MAD``. Correspondences are the
exact ray intersections of a Fibonacci lattice of directions with the tiles (no image matching needed:
all tiles share the centre of projection).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from scipy.sparse.csgraph import connected_components

from immersivedepth import sphere
from immersivedepth.depth.tiles import fibonacci_sphere

__all__ = ["AlignConfig", "AlignResult", "align_tiles", "apply_alignment", "grid_basis", "bilinear_sample"]


@dataclass
class AlignConfig:
    """Parameters of :func:`align_tiles` (the ``depth.align`` config group)."""

    grid: int = 4  # G: G x G scale/shift nodes per tile (1 = per-tile affine only)
    samples: int = 12000  # Fibonacci directions used as correspondences
    border_px: float = 1.0  # ignore tile pixels closer than this to the tile edge
    smooth: float = 1e-2  # weight of first differences of the grids
    bending: float = 1e-3  # weight of second differences of the grids
    rigidity: float = 1e-4  # weight pulling each node to its tile's mean (prefers a per-tile affine map)
    prior: float = 1e-6  # weight pulling grids to (s=1, o=0): defines tiles without overlap
    robust: str = "cauchy"  # cauchy | huber | none
    robust_k: float = 2.5  # robust scale = robust_k * 1.4826 * MAD of residuals
    robust_min: float = 1e-3  # lower bound of the robust scale (relative residual units)
    iterations: int = 4  # IRLS iterations
    positivity: float = 10.0  # weight of the penalty on q < min_disparity * median(q)
    min_disparity: float = 0.02  # fraction of the median corrected disparity below which q is penalised
    threads: int | None = 1  # torch threads for the dense normal equations (None: leave torch's setting)

    def __post_init__(self) -> None:
        if int(self.grid) < 1:
            raise ValueError(f"depth.align.grid must be >= 1, got {self.grid}")
        if self.robust not in ("cauchy", "huber", "none"):
            raise ValueError(f"depth.align.robust must be cauchy, huber or none, got {self.robust!r}")
        if int(self.samples) < 100:
            raise ValueError(f"depth.align.samples must be >= 100, got {self.samples}")
        if int(self.iterations) < 1:
            raise ValueError(f"depth.align.iterations must be >= 1, got {self.iterations}")


@dataclass
class AlignResult:
    """Solved corrections. ``scale``/``shift``: ``(N, G, G)`` grids acting on ``disparity / norm``;
    ``norm`` ``(N,)`` the per-tile median used to normalise; ``info`` diagnostics."""

    scale: np.ndarray
    shift: np.ndarray
    norm: np.ndarray
    info: dict = field(default_factory=dict)


def grid_basis(coord: np.ndarray, n_pixels: int, grid: int):
    """Bilinear 1-D weights of pixel coordinates ``(M,)`` on ``grid`` nodes spanning ``[-0.5, n - 0.5]``.

    Returns ``(i0, i1, f)``: node indices ``(M,)`` and the weight ``f`` of ``i1`` (``1 - f`` of ``i0``).
    """
    if grid == 1:
        z = np.zeros(np.shape(coord), np.int64)
        return z, z, np.zeros(np.shape(coord))
    g = np.clip((np.asarray(coord, np.float64) + 0.5) / n_pixels * (grid - 1), 0.0, grid - 1.0)
    i0 = np.minimum(np.floor(g).astype(np.int64), grid - 2)
    return i0, i0 + 1, g - i0


def bilinear_sample(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``img`` ``(H, W)`` at continuous pixel coords (centres at integers), clamped."""
    h, w = img.shape
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2)
    fx, fy = x - x0, y - y0
    return (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x0 + 1] * fx * (1 - fy)
        + img[y0 + 1, x0] * (1 - fx) * fy
        + img[y0 + 1, x0 + 1] * fx * fy
    )


def _upsample_grid(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(G, G)`` node grid -> ``(h, w)`` bilinear field (same basis as :func:`grid_basis`)."""
    g = grid.shape[0]
    if g == 1:
        return np.full((h, w), grid[0, 0])

    def mat(n):
        i0, i1, f = grid_basis(np.arange(n), n, g)
        m = np.zeros((n, g))
        m[np.arange(n), i0] += 1 - f
        m[np.arange(n), i1] += f
        return m

    return mat(h) @ grid @ mat(w).T


def apply_alignment(disparity: np.ndarray, result: AlignResult) -> np.ndarray:
    """Corrected inverse planar depth ``q`` ``(N, h, w)`` of disparities ``(N, h, w)``."""
    n, h, w = disparity.shape
    out = np.empty((n, h, w), np.float32)
    for k in range(n):
        s = _upsample_grid(result.scale[k], h, w)
        o = _upsample_grid(result.shift[k], h, w)
        out[k] = s * (disparity[k] / result.norm[k]) + o
    return out


def _difference_rows(grid: int, n_tiles: int, order: int):
    """Sparse rows of 1st/2nd differences along both grid axes for every tile's node block."""
    rows, cols, vals = [], [], []
    stencil = [-1.0, 1.0] if order == 1 else [1.0, -2.0, 1.0]
    span = len(stencil)
    r = 0
    for k in range(n_tiles):
        base = k * grid * grid
        for i in range(grid):
            for j in range(grid - span + 1):
                for axis in (0, 1):
                    for t, c in enumerate(stencil):
                        ii, jj = (i, j + t) if axis == 0 else (j + t, i)
                        rows.append(r)
                        cols.append(base + ii * grid + jj)
                        vals.append(c)
                    r += 1
    return sp.csr_matrix((vals, (rows, cols)), shape=(r, n_tiles * grid * grid))


def _observations(cameras, disp, dirs, grid, border_px):
    """Every (direction, tile) hit: sample index, tile, normalised disparity, axis cosine, node weights."""
    n_nodes = grid * grid
    recs = []
    for k, cam in enumerate(cameras):
        x, y, valid = cam.project(dirs)
        h, w = cam.height, cam.width
        m = border_px - 0.5
        ok = valid & (x >= m) & (x <= w - 1 - m) & (y >= m) & (y <= h - 1 - m)
        idx = np.nonzero(ok)[0]
        if idx.size == 0:
            continue
        xs, ys = x[idx], y[idx]
        d = bilinear_sample(disp[k], xs, ys)
        good = np.isfinite(d) & (d > 0)
        idx, xs, ys, d = idx[good], xs[good], ys[good], d[good]
        c = dirs[idx] @ cam.forward
        ix0, ix1, fx = grid_basis(xs, w, grid)
        iy0, iy1, fy = grid_basis(ys, h, grid)
        nodes = np.stack([iy0 * grid + ix0, iy0 * grid + ix1, iy1 * grid + ix0, iy1 * grid + ix1], 1) + k * n_nodes
        wts = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], 1)
        recs.append((idx, np.full(idx.size, k), d, c, nodes, wts))
    if not recs:
        raise ValueError("no tile sees any sample direction: check the tile cameras and disparities")
    cat = [np.concatenate(r) for r in zip(*recs)]
    order = np.argsort(cat[0], kind="stable")
    return [a[order] for a in cat]


def _pairs(sample_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j), i < j, of observations of the same sample (``sample_idx`` sorted)."""
    n = sample_idx.size
    ii, jj = [], []
    off = 1
    while off < n:
        same = sample_idx[off:] == sample_idx[:-off]
        if not same.any():
            break
        i = np.nonzero(same)[0]
        ii.append(i)
        jj.append(i + off)
        off += 1
    if not ii:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ii), np.concatenate(jj)


def _robust_weights(r: np.ndarray, cfg: AlignConfig) -> np.ndarray:
    if cfg.robust == "none" or r.size == 0:
        return np.ones_like(r)
    c = max(cfg.robust_min, cfg.robust_k * 1.4826 * float(np.median(np.abs(r))))
    a = np.abs(r) / c
    if cfg.robust == "cauchy":
        return 1.0 / (1.0 + a * a)
    return np.where(a <= 1.0, 1.0, 1.0 / np.maximum(a, 1e-12))


_DENSE_LIMIT = 16_000_000  # n_unknowns^2 up to which the normal matrix is dense


def _outer_terms(ia: np.ndarray, va: np.ndarray, ib: np.ndarray, vb: np.ndarray, n: int):
    """Outer products of sparse rows (ids/values ``(R, m)``): flat indices and values ``(R, m*m)``."""
    r = len(ia)
    vals = (va[:, :, None] * vb[:, None, :]).reshape(r, -1)
    if n * n <= _DENSE_LIMIT:
        return (ia[:, :, None] * n + ib[:, None, :]).reshape(r, -1), vals
    rows, cols = np.broadcast_arrays(ia[:, :, None], ib[:, None, :])
    return np.stack([rows.reshape(r, -1), cols.reshape(r, -1)]), vals


def _accumulate(idx: np.ndarray, vals: np.ndarray, weights: np.ndarray, n: int):
    """``sum_r weights[r] * outer_r`` as a dense ``(n, n)`` array (small n) or a sparse CSR matrix."""
    v = (vals * weights[:, None]).ravel()
    if n * n <= _DENSE_LIMIT:
        return np.bincount(idx.ravel(), v, n * n).reshape(n, n)
    return sp.csr_matrix((v, (idx[0].ravel(), idx[1].ravel())), shape=(n, n))


def _solve(nmat, rhs: np.ndarray, gmat: np.ndarray) -> np.ndarray:
    """Minimise the quadratic ``x^T N x / 2 - rhs . x`` subject to ``G x = 1`` (the gauges, ``G`` ``(C, n)``)
    via the KKT system ``[[N, G^T], [G, 0]] [x; lam] = [rhs; 1]`` (dense via torch, sparse via SuperLU)."""
    n, c = rhs.size, gmat.shape[0]
    b = np.concatenate([rhs, np.ones(c)])
    if sp.issparse(nmat):
        g = sp.csr_matrix(gmat)
        kkt = sp.bmat([[nmat, g.T], [g, None]], format="csc")
        return spla.spsolve(kkt, b)[:n]
    kkt = np.zeros((n + c, n + c))
    kkt[:n, :n] = nmat
    kkt[:n, n:] = gmat.T
    kkt[n:, :n] = gmat
    return torch.linalg.solve(torch.from_numpy(kkt), torch.from_numpy(b)).numpy()[:n]


@contextmanager
def _torch_threads(n: int | None):
    """Temporarily set torch's intra-op threads (small dense solves are fastest single-threaded,
    and spinning BLAS threads on a loaded machine can cost 10x)."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def align_tiles(
    cameras: Sequence[sphere.TangentCamera], disparity: np.ndarray, cfg: AlignConfig | None = None
) -> AlignResult:
    """Solve the per-tile scale/shift grids. ``disparity`` ``(N, h, w)`` >= 0 (0 = invalid pixel).

    Returns an :class:`AlignResult`; ``info`` has the residuals before/after, the tiles without any
    overlap (kept at their median normalisation and reported), pairs per tile and the solve time.
    """
    cfg = cfg or AlignConfig()
    with _torch_threads(cfg.threads):
        return _align_tiles(cameras, disparity, cfg)


def _align_tiles(
    cameras: Sequence[sphere.TangentCamera], disparity: np.ndarray, cfg: AlignConfig
) -> AlignResult:
    t0 = time.perf_counter()
    disp = np.asarray(disparity, np.float64)
    n = len(cameras)
    if disp.ndim != 3 or disp.shape[0] != n:
        raise ValueError(f"align_tiles: disparity has shape {disp.shape}; expected ({n}, h, w) for {n} tiles")
    norm = np.empty(n)
    for k in range(n):
        v = disp[k][np.isfinite(disp[k]) & (disp[k] > 0)]
        if v.size == 0:
            raise ValueError(f"align_tiles: tile {k} has no positive disparity")
        norm[k] = np.median(v)
    disp = disp / norm[:, None, None]
    g = int(cfg.grid)
    n_nodes = g * g
    n_s = n * n_nodes
    n_unk = 2 * n_s

    dirs = fibonacci_sphere(int(cfg.samples))
    sample, tile, d, c, nodes, wts = _observations(cameras, disp, dirs, g, cfg.border_px)
    n_obs = sample.size
    # observation o touches 8 unknowns (4 scale and 4 shift nodes of its tile):
    # p_o = c * sum_j w_j (s_j d + o_j) = sum gval[o] * x[gid[o]]
    gid = np.concatenate([nodes, nodes + n_s], axis=1)
    gval = np.concatenate([wts * (c * d)[:, None], wts * c[:, None]], axis=1)

    def predict(xv: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", gval, xv[gid])

    pi, pj = _pairs(sample)
    n_pairs = pi.size
    pairs_per_tile = np.bincount(np.concatenate([tile[pi], tile[pj]]), minlength=n) if n_pairs else np.zeros(n, int)
    no_overlap = [int(k) for k in np.nonzero(pairs_per_tile == 0)[0]]

    # constant part of the normal equations: regularisers and prior
    blocks = []
    for weight, mat in (
        (cfg.smooth, _difference_rows(g, n, 1) if g > 1 else None),
        (cfg.bending, _difference_rows(g, n, 2) if g > 2 else None),
    ):
        if mat is not None and weight > 0:
            blocks.append(np.sqrt(weight / n) * sp.block_diag([mat, mat]))
    if cfg.rigidity > 0 and g > 1:
        centre = sp.kron(sp.eye(n), sp.eye(n_nodes) - np.full((n_nodes, n_nodes), 1.0 / n_nodes))
        blocks.append(np.sqrt(cfg.rigidity / n) * sp.block_diag([centre, centre]))
    n_const = sp.csr_matrix((n_unk, n_unk))
    for blk in blocks:
        n_const = n_const + (blk.T @ blk)
    n_const = (n_const + sp.eye(n_unk) * (cfg.prior / n)).tocsr()
    if n_unk * n_unk <= 16_000_000:
        n_const = n_const.toarray()
    b_const = np.concatenate([np.full(n_s, cfg.prior / n), np.zeros(n_s)])
    # gauge: mean scale = 1 within every connected component of the tile-overlap graph (each component
    # has its own unobservable global scale; usually there is one component)
    adj = sp.csr_matrix((np.ones(n_pairs), (tile[pi], tile[pj])), shape=(n, n))
    n_comp, comp = connected_components(adj, directed=False)
    gvec = np.zeros((n_comp, n_unk))
    for ci in range(n_comp):
        members = np.flatnonzero(comp == ci)
        gvec[ci, (members[:, None] * n_nodes + np.arange(n_nodes)).ravel()] = 1.0 / (members.size * n_nodes)

    # sum_p w_p (u_i - u_j)(u_i - u_j)^T = sum_i W_i u_i u_i^T - sum_p w_p (u_i u_j^T + u_j u_i^T): the
    # outer products of the 8 non-zeros and their flat (row, col) indices are fixed, only weights change
    diag_idx, diag_val = _outer_terms(gid, gval, gid, gval, n_unk)
    cross_idx, cross_val = _outer_terms(gid[pi], gval[pi], gid[pj], gval[pj], n_unk)
    x = np.concatenate([np.ones(n_s), np.zeros(n_s)])
    pos_obs = np.zeros(0, np.int64)
    res_before = None
    rel = np.zeros(0)
    w_rob = np.ones(n_pairs)
    qval = gval / c[:, None]  # rows giving q (inverse planar depth) instead of p
    for _ in range(int(cfg.iterations)):
        p = predict(x)
        p1, p2 = p[pi], p[pj]
        denom = np.maximum(0.5 * (np.abs(p1) + np.abs(p2)), 1e-6)
        rel = (p1 - p2) / denom
        if res_before is None:
            res_before = float(np.median(np.abs(rel))) if n_pairs else 0.0
        w_rob = _robust_weights(rel, cfg)
        row_w = w_rob / max(n_pairs, 1) / denom**2
        w_obs = np.bincount(pi, row_w, n_obs) + np.bincount(pj, row_w, n_obs)
        diag = _accumulate(diag_idx, diag_val, w_obs, n_unk)
        cross = _accumulate(cross_idx, cross_val, row_w, n_unk)
        nmat = n_const + diag - cross - cross.T
        rhs = b_const.copy()
        if pos_obs.size:
            q = np.einsum("ij,ij->i", qval, x[gid])
            target = cfg.min_disparity * float(np.median(q))
            wp = cfg.positivity / pos_obs.size
            qv = qval[pos_obs]
            pidx, pval = _outer_terms(gid[pos_obs], qv, gid[pos_obs], qv, n_unk)
            nmat = nmat + _accumulate(pidx, pval, np.full(pos_obs.size, wp), n_unk)
            np.add.at(rhs, gid[pos_obs].ravel(), (wp * target * qv).ravel())
        x = _solve(nmat, rhs, gvec)
        q = np.einsum("ij,ij->i", qval, x[gid])
        low = np.nonzero(q < cfg.min_disparity * float(np.median(q)))[0]
        pos_obs = np.union1d(pos_obs, low)

    p = predict(x)
    if n_pairs:
        denom = np.maximum(0.5 * (np.abs(p[pi]) + np.abs(p[pj])), 1e-6)
        rel = (p[pi] - p[pj]) / denom
    scale = x[:n_s].reshape(n, g, g)
    shift = x[n_s:].reshape(n, g, g)
    info = {
        "align_tiles": n,
        "align_grid": g,
        "align_observations": int(n_obs),
        "align_pairs": int(n_pairs),
        "align_pairs_per_tile": pairs_per_tile.tolist(),
        "tiles_without_overlap": no_overlap,
        "align_components": int(n_comp),
        "align_residual_before": res_before,
        "align_residual_after": float(np.median(np.abs(rel))) if n_pairs else 0.0,
        "align_outlier_fraction": float(np.mean(w_rob < 0.5)) if n_pairs else 0.0,
        "align_positivity_rows": int(pos_obs.size),
        "tile_scale": (scale.mean(axis=(1, 2)) / norm).tolist(),
        "tile_shift": shift.mean(axis=(1, 2)).tolist(),
        "align_time": time.perf_counter() - t0,
    }
    return AlignResult(scale=scale, shift=shift, norm=norm, info=info)
