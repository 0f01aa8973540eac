"""Hash-grid encoding (tcnn semantics) and fast MLPs: reference checks, backend agreement, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from immersivedepth.field import _cpu_ext
from immersivedepth.field.backends import tcnn_available
from immersivedepth.field.encodings import (
    HashGridEncoding,
    hash_encode_torch,
    hashgrid_layout,
    per_level_scale_for,
)
from immersivedepth.field.mlp import FusedMLP, make_mlp

PRIMES = (1, 2654435761, 805459861)
# Small config where both dense and hashed levels occur (and a dense size needs padding to a multiple of 8):
# scale = 6 * 1.5^l - 1 -> res 6, 9, 14, 21 -> res^3 216, 729 (-> 736), 2744 > 1024, 9261 > 1024.
SMALL = dict(n_input_dims=3, n_levels=4, n_features_per_level=2, log2_hashmap_size=10, base_resolution=6,
             per_level_scale=1.5)


@pytest.fixture(scope="session")
def cpu_ext():
    """The fused C++ op, built once per session (about a minute the first time); skip if it cannot build."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ext = _cpu_ext.load_cpu_ext()
    if ext is None:
        pytest.skip(f"fused CPU op unavailable: {_cpu_ext.cpu_ext_error()}")
    return ext


# ---------------------------------------------------------------------------------------------------------------
# Scalar pure-Python re-implementation of tcnn's formula (loops, Python ints for the hash)
# ---------------------------------------------------------------------------------------------------------------
def ref_levels(n_input_dims, n_levels, n_features_per_level, log2_hashmap_size, base_resolution, per_level_scale):
    """[(scale, res, size, offset, dense)] per level, tcnn's constructor written out with float32 scalars."""
    f32 = np.float32
    log2_pls = f32(math.log2(f32(per_level_scale)))
    table, offset, levels = 2**log2_hashmap_size, 0, []
    for level in range(n_levels):
        scale = f32(f32(f32(2.0 ** float(f32(f32(level) * log2_pls))) * f32(base_resolution)) - f32(1.0))
        res = math.ceil(float(scale)) + 1
        size = min((res**n_input_dims + 7) // 8 * 8, table)
        levels.append((float(scale), res, size, offset, res**n_input_dims <= table))
        offset += size
    return levels


def ref_encode(x, params, levels, n_features):
    """x: list of D floats; params: flat float64 array. Returns (features, table_grad_fn, dfeatures/dx)."""
    d_in = len(x)
    feats, dfeat_dx, contributions = [], [], []
    for level, (scale, res, size, offset, dense) in enumerate(levels):
        xc = [min(max(v, 0.0), 1.0) for v in x]
        pos = [float(np.float32(scale * v + 0.5)) for v in xc]  # fmaf in float32: one rounding of the exact value
        cell = [math.floor(p) for p in pos]
        frac = [p - c for p, c in zip(pos, cell)]
        level_feat = [0.0] * n_features
        level_dx = [[0.0] * d_in for _ in range(n_features)]
        for c in range(2**d_in):
            loc = [cell[d] + ((c >> d) & 1) for d in range(d_in)]
            w = 1.0
            for d in range(d_in):
                w *= frac[d] if (c >> d) & 1 else 1.0 - frac[d]
            if dense:
                idx = sum(loc[d] * res**d for d in range(d_in)) % (2**32) % size
            else:
                h = 0
                for d in range(d_in):
                    h ^= (loc[d] * PRIMES[d]) % (2**32)
                idx = h % size
            entry = offset + idx
            contributions.append((level, entry, w))
            for f in range(n_features):
                v = float(params[entry * n_features + f])
                level_feat[f] += w * v
                for d in range(d_in):
                    dw = 1.0 if (c >> d) & 1 else -1.0
                    for d2 in range(d_in):
                        if d2 != d:
                            dw *= frac[d2] if (c >> d2) & 1 else 1.0 - frac[d2]
                    level_dx[f][d] += dw * v * scale
        feats.extend(level_feat)
        dfeat_dx.extend(level_dx)
    return feats, contributions, dfeat_dx


def _enc(backend="torch", seed=0, value_range=0.5, **cfg):
    torch.manual_seed(seed)
    enc = HashGridEncoding(**{**SMALL, **cfg}, backend=backend)
    with torch.no_grad():
        enc.params.uniform_(-value_range, value_range)  # O(1) values make the comparisons meaningful
    return enc


def _interior_points(n, d, levels, margin=1e-3, seed=0):
    """Random points whose fractional cell position is >= margin from 0 and 1 on every level (no cell crossing
    under finite-difference perturbations)."""
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.random(d).astype(np.float32)
        ok = True
        for scale, *_ in levels:
            fr = [float(np.float32(scale * float(v) + 0.5)) % 1.0 for v in p]
            ok &= all(margin < f < 1 - margin for f in fr)
        if ok:
            pts.append(p)
    return torch.from_numpy(np.stack(pts))


# ---------------------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------------------
def test_small_layout_matches_formula():
    lay = hashgrid_layout(**SMALL)
    ref = ref_levels(**SMALL)
    assert lay.resolutions.tolist() == [6, 9, 14, 21]
    assert lay.sizes.tolist() == [216, 736, 1024, 1024]  # 729 rounded up to a multiple of 8; hashed levels = T
    assert lay.offsets.tolist() == [0, 216, 952, 1976, 3000]
    assert lay.dense.tolist() == [True, True, False, False]
    assert lay.n_params == 3000 * 2
    assert [r[0] for r in ref] == pytest.approx(lay.scales.tolist(), abs=0)
    assert lay.scales.tolist() == pytest.approx([5.0, 8.0, 12.5, 19.25], abs=1e-6)


def test_default_layout_by_hand():
    # Defaults: L=16, F=2, T=2^19, base 16, per_level_scale 2 -> scale = 16 * 2^l - 1, res = 16 * 2^l.
    enc = HashGridEncoding(backend="torch")
    lay = enc.layout
    assert lay.resolutions.tolist() == [16 * 2**level for level in range(16)]
    # 16^3 = 4096, 32^3 = 32768, 64^3 = 262144 fit (already multiples of 8); 128^3 > 2^19 -> 2^19 from level 3 on.
    assert lay.sizes.tolist() == [4096, 32768, 262144] + [524288] * 13
    assert lay.offsets[:5].tolist() == [0, 4096, 36864, 299008, 823296]
    assert lay.offsets[-1] == 299008 + 13 * 524288
    assert enc.params.numel() == (299008 + 13 * 524288) * 2
    assert enc.n_output_dims == 32
    # tcnn's dense-stride test runs in uint32: for res = 2^16..2^19 the stride res^2 * res wraps to 0, so tcnn
    # treats those levels as "dense" (z drops out of the index). Reproduced on purpose.
    assert lay.dense.tolist() == [True] * 3 + [False] * 9 + [True] * 4
    assert 0.0 < float(enc.params.detach().abs().max()) <= 1e-4  # tcnn init U(-1e-4, 1e-4)


def test_nerf_layout_resolutions():
    # base 16, finest 2048 over 16 levels (the radiance field's config): no uint32 stride overflow anywhere.
    pls = per_level_scale_for(16, 2048, 16)
    assert pls == pytest.approx(2 ** (7 / 15), rel=1e-12)
    with pytest.raises(ValueError, match=r"need 0 < base_resolution <= finest_resolution, got 16 and 8"):
        per_level_scale_for(16, 8, 16)
    lay = hashgrid_layout(3, 16, 2, 19, 16, pls)
    assert lay.resolutions[0] == 16 and 2040 <= lay.resolutions[-1] <= 2050
    assert lay.dense.tolist() == [r**3 <= 2**19 for r in lay.resolutions.tolist()]
    assert all(s % 8 == 0 for s in lay.sizes.tolist())


# ---------------------------------------------------------------------------------------------------------------
# Torch backend vs the scalar reference
# ---------------------------------------------------------------------------------------------------------------
def test_torch_forward_and_grads_match_scalar_reference():
    enc = _enc("torch")
    levels = ref_levels(**SMALL)
    x = torch.rand(200, 3)
    x[0] = torch.tensor([0.0, 0.0, 0.0])
    x[1] = torch.tensor([1.0, 1.0, 1.0])
    x[2] = torch.tensor([0.0, 1.0, 0.5])
    params64 = enc.params.detach().double().numpy()
    g = torch.randn(200, enc.n_output_dims)

    xr = x.clone().requires_grad_(True)
    out = enc(xr)
    gp, gx = torch.autograd.grad(out, [enc.params, xr], g)

    expected = np.zeros((200, enc.n_output_dims))
    grad_table = np.zeros(enc.params.numel())
    grad_x = np.zeros((200, 3))
    for i in range(200):
        feats, contribs, dfdx = ref_encode([float(v) for v in x[i]], params64, levels, 2)
        expected[i] = feats
        for level, entry, w in contribs:
            for f in range(2):
                grad_table[entry * 2 + f] += w * float(g[i, level * 2 + f])
        grad_x[i] = np.asarray(dfdx).T @ g[i].double().numpy()
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(gp.numpy(), grad_table, rtol=0, atol=1e-5)
    inside = ((x > 0) & (x < 1)).all(1).numpy()
    np.testing.assert_allclose(gx.numpy()[inside], grad_x[inside], rtol=1e-4, atol=1e-4)
    assert np.abs(grad_table).sum() > 0 and np.abs(grad_x).max() > 1


def test_hashed_indices_use_uint32_wraparound():
    # Large coordinates make corner * prime overflow 32 bits; with Python's unbounded ints the hash would differ.
    enc = _enc("torch", n_levels=1, base_resolution=2000, per_level_scale=1.5, log2_hashmap_size=12)
    levels = ref_levels(**{**SMALL, "n_levels": 1, "base_resolution": 2000, "log2_hashmap_size": 12})
    assert levels[0][4] is False  # hashed
    x = torch.rand(50, 3) * 0.5 + 0.5
    params64 = enc.params.detach().double().numpy()
    expected = np.array([ref_encode([float(v) for v in p], params64, levels, 2)[0] for p in x])
    np.testing.assert_allclose(enc(x).detach().numpy(), expected, rtol=0, atol=1e-6)
    # Without the & 0xFFFFFFFF the indices would mostly differ: check the reference actually needs the wrap.
    cell = math.floor(levels[0][0] * 0.9 + 0.5)
    assert cell * PRIMES[1] >= 2**32


def test_gradcheck_float64_torch_backend():
    cfg = dict(n_levels=2, log2_hashmap_size=6, base_resolution=3, per_level_scale=2.0)
    enc = _enc("torch", **cfg).double()
    levels = ref_levels(**{**SMALL, **cfg})
    x = _interior_points(6, 3, levels).double().requires_grad_(True)
    params = enc.params.detach().clone().requires_grad_(True)
    layout = enc.layout
    assert torch.autograd.gradcheck(lambda xx, pp: hash_encode_torch(xx, pp, layout), (x, params), eps=1e-6,
                                    atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# C++ backend vs torch backend
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [
    {},
    dict(n_levels=6, log2_hashmap_size=14, base_resolution=16, per_level_scale=1.8),
    dict(n_input_dims=2, n_features_per_level=4, n_levels=5, log2_hashmap_size=11),
    dict(n_features_per_level=1, n_levels=3, log2_hashmap_size=9, base_resolution=2),
    dict(n_features_per_level=8, n_levels=2, log2_hashmap_size=8),
])
def test_cpu_backend_matches_torch(cpu_ext, cfg):
    enc = _enc("cpu", **cfg)
    d = enc.n_input_dims
    x = (torch.rand(3001, d) * 1.2 - 0.1).requires_grad_(True)  # includes clamped points outside [0, 1]
    g = torch.randn(3001, enc.n_output_dims)
    y_cpu = enc(x)
    gp_cpu, gx_cpu = torch.autograd.grad(y_cpu, [enc.params, x], g)
    y_ref = hash_encode_torch(x, enc.params, enc.layout)
    gp_ref, gx_ref = torch.autograd.grad(y_ref, [enc.params, x], g)
    assert enc.resolve_backend(x) == "cpu"
    torch.testing.assert_close(y_cpu, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gp_cpu, gp_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_cpu, gx_ref, rtol=1e-4, atol=1e-4 * float(gx_ref.abs().max()))


def test_cpu_backward_is_deterministic(cpu_ext):
    enc = _enc("cpu", n_levels=6, log2_hashmap_size=12, base_resolution=8, per_level_scale=2.0)
    x = torch.rand(5000, 3)
    grads = []
    for _ in range(2):
        enc.params.grad = None
        enc(x).square().sum().backward()
        grads.append(enc.params.grad.clone())
    assert torch.equal(grads[0], grads[1])
    assert grads[0].abs().sum() > 0
    # Each level's gradient is accumulated by one thread in point order: identical for any thread count.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        enc.params.grad = None
        enc(x).square().sum().backward()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(enc.params.grad, grads[0])


def test_cpu_backend_matches_scalar_reference(cpu_ext):
    enc = _enc("cpu")
    levels = ref_levels(**SMALL)
    x = torch.rand(100, 3)
    params64 = enc.params.detach().double().numpy()
    expected = np.array([ref_encode([float(v) for v in p], params64, levels, 2)[0] for p in x])
    np.testing.assert_allclose(enc(x).detach().numpy(), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Clamping, parameters, tcnn translation
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_inputs_outside_unit_cube_are_clamped(backend, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_ext")
    enc = _enc(backend)
    x = torch.tensor([[-0.5, 0.3, 1.5], [2.0, -1.0, 0.0], [0.0, 1.0, 1.0], [-1e-3, 1 + 1e-3, 0.5]],
                     requires_grad=True)
    out = enc(x)
    torch.testing.assert_close(out, enc(x.detach().clamp(0, 1)), rtol=0, atol=0)
    (gx,) = torch.autograd.grad(out.sum(), [x])
    outside = (x < 0) | (x > 1)
    assert torch.all(gx[outside] == 0)
    assert torch.all(gx[~outside][:2] != 0)


def test_tcnn_translation_and_state_dict():
    enc = _enc("torch")
    cfg = enc.tcnn_config()
    assert cfg == {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": 2, "log2_hashmap_size": 10,
                   "base_resolution": 6, "per_level_scale": 1.5, "interpolation": "Linear"}
    assert list(enc.state_dict()) == ["params"]
    other = _enc("torch", seed=1)
    assert not torch.equal(other.params, enc.params)
    other.from_tcnn_params(enc.to_tcnn_params())
    x = torch.rand(64, 3)
    torch.testing.assert_close(other(x), enc(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected a flat vector of 6000 values"):
        other.from_tcnn_params(torch.zeros(5999))


def test_empty_batch():
    enc = _enc("torch")
    assert enc(torch.zeros(0, 3)).shape == (0, 8)


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(n_levels=0), r"n_levels must be an integer in \[1, 32\], got 0"),
    (dict(per_level_scale=0.0), r"per_level_scale must be a finite number > 0, got 0.0"),
    (dict(per_level_scale=-2.0), r"per_level_scale must be a finite number > 0"),
    (dict(per_level_scale=float("nan")), r"per_level_scale must be a finite number > 0"),
    (dict(log2_hashmap_size=0), r"log2_hashmap_size must be an integer in \[1, 30\], got 0"),
    (dict(log2_hashmap_size=31), r"log2_hashmap_size must be an integer in \[1, 30\], got 31"),
    (dict(n_features_per_level=3), r"n_features_per_level must be one of \(1, 2, 4, 8\)"),
    (dict(n_input_dims=4), r"n_input_dims must be 2 or 3"),
    (dict(base_resolution=0), r"base_resolution must be an integer >= 1"),
    (dict(backend="cuda"), r"backend must be one of \('auto', 'torch', 'cpu', 'tcnn'\), got 'cuda'"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HashGridEncoding(**kwargs)


def test_tcnn_backend_without_cuda_raises():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match=r"needs tinycudann and a CUDA device"):
        HashGridEncoding(backend="tcnn")


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_bad_inputs_raise(backend):
    enc = _enc(backend)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\), got \(10, 2\)"):
        enc(torch.rand(10, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\), got \(3,\)"):
        enc(torch.rand(3))
    with pytest.raises(ValueError, match=r"floating-point"):
        enc(torch.zeros(4, 3, dtype=torch.int64))
    bad = torch.rand(5, 3)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite"):
        enc(bad)


def test_missing_compiler_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(_cpu_ext, "_tried", False)
    monkeypatch.setattr(_cpu_ext, "_module", None)
    monkeypatch.setattr(_cpu_ext, "_error", None)
    monkeypatch.setenv("IMMERSIVEDEPTH_DISABLE_CPU_EXT", "")
    monkeypatch.setenv("CXX", "definitely-not-a-compiler-xyz")
    with pytest.warns(RuntimeWarning, match=r"no C\+\+ compiler found.*falling back to the pure-PyTorch path"):
        enc = _enc("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        x = torch.rand(20, 3)
        assert enc.resolve_backend(x) == "torch"
        torch.testing.assert_close(enc(x), hash_encode_torch(x, enc.params, enc.layout))
    assert "no C++ compiler" in _cpu_ext.cpu_ext_error()


# ---------------------------------------------------------------------------------------------------------------
# MLP
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_in, width, depth, n_out, act, out_act", [
    (32, 64, 2, 4, "relu", None),
    (35, 48, 1, 3, "relu", "sigmoid"),
    (32, 128, 3, 16, "relu", "relu"),
    (5, 8, 0, 1, "relu", None),
    (16, 24, 2, 2, "sigmoid", None),
])
def test_fused_mlp_matches_torch(cpu_ext, n_in, width, depth, n_out, act, out_act):
    torch.manual_seed(0)
    mlp = FusedMLP(n_in, n_out, width, depth, activation=act, output_activation=out_act, backend="cpu",
                   chunk_rows=37)  # odd chunk size exercises remainder rows
    x = torch.randn(1001, n_in, requires_grad=True)
    y = mlp(x)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *mlp.parameters()], g)
    mlp.backend = "torch"
    y_ref = mlp(x)
    grads_ref = torch.autograd.grad(y_ref, [x, *mlp.parameters()], g)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(b.abs().max())))
    assert len(mlp.layers) == depth + 1 and mlp.layers[0].in_features == n_in


def test_make_mlp_structure_and_errors():
    mlp = make_mlp(32, 4, width=64, depth=2, backend="torch")
    assert [(layer.in_features, layer.out_features) for layer in mlp.layers] == [(32, 64), (64, 64), (64, 4)]
    x = torch.randn(10, 32)
    ref = torch.relu(mlp.layers[1](torch.relu(mlp.layers[0](x))))
    torch.testing.assert_close(mlp(x), mlp.layers[2](ref))
    with pytest.raises(ValueError, match=r"activation must be one of 'relu', 'sigmoid', 'none' or None, got 'gelu'"):
        make_mlp(4, 4, activation="gelu")
    with pytest.raises(ValueError, match=r"width must be an integer >= 1, got 0"):
        make_mlp(4, 4, width=0)
    with pytest.raises(ValueError, match=r"backend must be 'auto', 'tcnn', 'cpu' or 'torch', got 'gpu'"):
        make_mlp(4, 4, backend="gpu")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 32\), got \(10, 31\)"):
        mlp(torch.randn(10, 31))


def test_fused_mlp_saved_hidden_equals_recompute(cpu_ext):
    """The training forward saves the hidden activations (pooled buffer above 2 MB) and the backward reads them;
    the result must be bitwise the recomputing backward's, and a buffer of the wrong size is refused."""
    torch.manual_seed(1)
    mlp = FusedMLP(32, 4, 64, 2, backend="cpu", chunk_rows=32)
    w = [layer.weight.detach() for layer in mlp.layers]
    b = [layer.bias.detach() for layer in mlp.layers]
    x = torch.randn(20001, 32)  # hidden = 20001 x 128 floats ~ 10 MB: the pooled path
    y, hidden = cpu_ext.mlp_forward(x, w, b, 1, 0, 32, True)
    y2, none = cpu_ext.mlp_forward(x, w, b, 1, 0, 32, False)
    assert torch.equal(y, y2) and none.numel() == 0 and hidden.numel() == 626 * 32 * 128
    g = torch.randn_like(y)
    saved = cpu_ext.mlp_backward(x, w, b, g, 1, 0, 32, True, hidden)
    recomputed = cpu_ext.mlp_backward(x, w, b, g, 1, 0, 32, True, torch.empty(0))
    for a, r in zip(saved, recomputed):
        assert torch.equal(a, r)
    with pytest.raises(RuntimeError, match="saved hidden activations do not match"):
        cpu_ext.mlp_backward(x[:-1], w, b, g[:-1], 1, 0, 16, True, hidden)


def test_fused_mlp_saves_hidden_only_when_a_backward_follows(cpu_ext, monkeypatch):
    calls = []

    class Spy:
        def mlp_forward(self, *args):
            calls.append(args[-1])
            return cpu_ext.mlp_forward(*args)

        def mlp_backward(self, *args):
            return cpu_ext.mlp_backward(*args)

    spy = Spy()
    monkeypatch.setattr(FusedMLP, "_ext", staticmethod(lambda: spy))
    mlp = FusedMLP(8, 2, 16, 1, backend="auto")
    x = torch.randn(50, 8)
    with torch.no_grad():
        mlp(x)
    mlp(x).sum().backward()  # parameters require grad
    for p in mlp.parameters():
        p.requires_grad_(False)
    mlp(x)
    assert calls == [False, True, False]
    assert mlp.layers[0].weight.grad is not None


def test_cpu_buffer_pool_reuses_and_rezeroes_gradients(cpu_ext):
    """Large kernel buffers come back from a pool: the second backward reuses the first one's (dirty) table
    gradient buffer, which must be zeroed again, so both gradients equal the torch reference."""
    enc = _enc("cpu", n_levels=16, log2_hashmap_size=16, base_resolution=16, per_level_scale=1.5)  # 8 MB table
    x = torch.rand(20000, 3)
    cpu_ext.buffer_pool_release()
    hits0, misses0, _, _ = cpu_ext.buffer_pool_stats()
    for seed in (0, 1):
        g = torch.randn(20000, enc.n_output_dims, generator=torch.Generator().manual_seed(seed))
        (gp,) = torch.autograd.grad(enc(x), [enc.params], g)
        (ref,) = torch.autograd.grad(hash_encode_torch(x, enc.params, enc.layout), [enc.params], g)
        torch.testing.assert_close(gp, ref, rtol=1e-5, atol=1e-5)
        del gp
    hits, misses, free, free_bytes = cpu_ext.buffer_pool_stats()
    assert misses > misses0 and hits > hits0  # the second step reused the first step's buffers
    # an empty batch scatters nothing: its table gradient is all zeros even though dirty buffers are pooled
    sc, rs, of, dn, f = enc._meta
    empty = cpu_ext.hashgrid_backward(x[:0], enc.params.detach(), torch.zeros(0, enc.n_output_dims), sc, rs, of, dn, f,
                                      False, 0)[0]
    assert empty.shape == enc.params.shape and not empty.any()
    assert free >= 1 and free_bytes >= 8 << 20
    cpu_ext.buffer_pool_release()
    assert cpu_ext.buffer_pool_stats()[2:] == [0, 0]


# ---------------------------------------------------------------------------------------------------------------
# GPU paths (run only where CUDA and tinycudann are present; this project's CI has neither)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not tcnn_available(), reason="needs tinycudann and a CUDA device")
def test_tcnn_backend_matches_torch_reference_on_gpu():
    """Same table in tcnn and in our torch formula: equal features and table gradients (tcnn computes in fp32 here
    with ``dtype=torch.float32``; tolerance covers its atomics' summation order)."""
    enc = _enc("tcnn", seed=5, n_levels=8, log2_hashmap_size=14, base_resolution=16, per_level_scale=1.5).cuda()
    x = torch.rand(4096, 3, device="cuda")
    g = torch.randn(4096, enc.n_output_dims, device="cuda")
    y = enc(x)
    (gp,) = torch.autograd.grad(y, [enc.params], g)
    ref = _enc("torch", seed=5, n_levels=8, log2_hashmap_size=14, base_resolution=16, per_level_scale=1.5)
    y_ref = ref(x.cpu())
    (gp_ref,) = torch.autograd.grad(y_ref, [ref.params], g.cpu())
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gp.cpu(), gp_ref, rtol=1e-3, atol=1e-5)
