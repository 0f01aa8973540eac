// A small fully connected network (fused MLP) evaluated in row chunks that stay in L1/L2 (CPU).
//
// A training forward saves the hidden activations (chunk-major) so the backward does not recompute them; without
// them (inference forward, or old callers) the backward recomputes them chunk by chunk. MLP weight gradients are
// reduced over per-thread partial sums in a fixed order (deterministic for a given thread count).

#include "field_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

using immersivedepth::alloc_uninit;

namespace {

typedef float v8 __attribute__((vector_size(32), aligned(4)));

inline int pad8(int64_t n) { return static_cast<int>((n + 7) / 8 * 8); }

enum Act : int64_t { kNone = 0, kRelu = 1, kSigmoid = 2 };

inline v8 bcast(float a) { return v8{a, a, a, a, a, a, a, a}; }

// Register tiles of T rows x NT column vectors (8 floats each). AVX2 has 16 vector registers: T * NT
// accumulators + NT loaded vectors + 1 broadcast must fit, and about 10-12 independent accumulators are needed to
// cover the FMA latency on two FMA pipes. Hence 6 x 2 tiles (12 accumulators, 15 registers) where the width
// allows, 8 x 1 for single-vector widths. Leftover rows run the same kernel with a smaller T (no slow path).
template <int NB>
constexpr int col_tile() { return NB >= 2 ? 2 : 1; }
template <int NB>
constexpr int row_tile() { return col_tile<NB>() == 2 ? 6 : 8; }

// A T x NT register tile: rank-1 update acc[q][b] += a[q * a_step] * v[b], and load / store at row stride ld.
template <int T, int NT>
inline void tile_fma(v8 (&acc)[T][NT], const float* a, int64_t a_step, const v8 (&v)[NT]) {
#pragma GCC unroll 8
  for (int q = 0; q < T; ++q) {
    const v8 av = bcast(a[q * a_step]);
#pragma GCC unroll 8
    for (int b = 0; b < NT; ++b) acc[q][b] += av * v[b];
  }
}

template <int T, int NT>
inline void tile_load(v8 (&acc)[T][NT], const float* src, int64_t ld) {
#pragma GCC unroll 8
  for (int q = 0; q < T; ++q)
#pragma GCC unroll 8
    for (int b = 0; b < NT; ++b) acc[q][b] = *reinterpret_cast<const v8*>(src + q * ld + b * 8);
}

template <int T, int NT>
inline void tile_store(const v8 (&acc)[T][NT], float* dst, int64_t ld) {
#pragma GCC unroll 8
  for (int q = 0; q < T; ++q)
#pragma GCC unroll 8
    for (int b = 0; b < NT; ++b) *reinterpret_cast<v8*>(dst + q * ld + b * 8) = acc[q][b];
}

template <int NT>
inline void load_vecs(v8 (&v)[NT], const float* src) {
#pragma GCC unroll 8
  for (int b = 0; b < NT; ++b) v[b] = *reinterpret_cast<const v8*>(src + b * 8);
}

// C[r, cb*8 : (cb+NT)*8] = bias + sum_k A[r, k] * M[k, cb*8 : (cb+NT)*8]  for r in [r0, r0 + T).
struct RowsTile {
  template <int T, int NT, int W>
  static inline void run(int r0, int cb, const float* A, int K, int lda, const float* M, const float* bias, float* C,
                         int ldc) {
    v8 acc[T][NT];
    if (bias) {
      tile_load<T, NT>(acc, bias + cb * 8, 0);
    } else {
#pragma GCC unroll 8
      for (int q = 0; q < T; ++q)
#pragma GCC unroll 8
        for (int b = 0; b < NT; ++b) acc[q][b] = bcast(0.f);
    }
    const float* a = A + static_cast<int64_t>(r0) * lda;
    for (int k = 0; k < K; ++k) {
      v8 mv[NT];
      load_vecs<NT>(mv, M + static_cast<int64_t>(k) * W + cb * 8);
      tile_fma<T, NT>(acc, a + k, lda, mv);
    }
    tile_store<T, NT>(acc, C + static_cast<int64_t>(r0) * ldc + cb * 8, ldc);
  }
};

// dMT[k, cb*8 : (cb+NT)*8] += sum_r A[r, k] * G[r, cb*8 : (cb+NT)*8]   for k in [k0, k0 + T).
struct OuterTile {
  template <int T, int NT, int W>
  static inline void run(int k0, int cb, const float* A, int R, int lda, const float* G, int ldg, float* dMT) {
    v8 acc[T][NT];
    float* d = dMT + static_cast<int64_t>(k0) * W + cb * 8;
    tile_load<T, NT>(acc, d, W);
    for (int r = 0; r < R; ++r) {
      v8 gv[NT];
      load_vecs<NT>(gv, G + static_cast<int64_t>(r) * ldg + cb * 8);
      tile_fma<T, NT>(acc, A + static_cast<int64_t>(r) * lda + k0, 1, gv);
    }
    tile_store<T, NT>(acc, d, W);
  }
};

// Tile::run<t, NT, W> for a runtime t in [1, T].
template <class Tile, int T, int NT, int W, class... Args>
inline void run_tile_n(int t, int i0, int cb, Args... args) {
  if (t == T) {
    Tile::template run<T, NT, W>(i0, cb, args...);
  } else if constexpr (T > 1) {
    run_tile_n<Tile, T - 1, NT, W>(t, i0, cb, args...);
  }
}

// Covers [0, count) x (NB column vectors) with Tile's T x NT tiles (T x 1 for the last vector of an odd NB; a
// shorter tile for the last rows).
template <class Tile, int NB, class... Args>
inline void sweep_tiles(int count, Args... args) {
  constexpr int NT = col_tile<NB>();
  constexpr int T = row_tile<NB>();
  constexpr int W = NB * 8;
  for (int cb = 0; cb < NB; cb += NT) {
    const bool full = cb + NT <= NB;
    int i = 0;
    for (; i + T <= count; i += T) {
      if (full) Tile::template run<T, NT, W>(i, cb, args...);
      else Tile::template run<T, 1, W>(i, cb, args...);
    }
    if (i < count) {
      if (full) run_tile_n<Tile, T, NT, W>(count - i, i, cb, args...);
      else run_tile_n<Tile, T, 1, W>(count - i, i, cb, args...);
    }
  }
}

// C[r, 0:NB*8] = bias + sum_k A[r, k] * M[k, 0:NB*8]   for r < R   (M row stride NB*8).
template <int NB>
void rows_times(const float* A, int R, int K, int lda, const float* M, const float* bias, float* C, int ldc) {
  sweep_tiles<RowsTile, NB>(R, A, K, lda, M, bias, C, ldc);
}

// dMT[k, 0:NB*8] += sum_r A[r, k] * G[r, 0:NB*8]   for k < K   (dMT row stride NB*8)
template <int NB>
void outer_acc(const float* A, int R, int K, int lda, const float* G, int ldg, float* dMT) {
  sweep_tiles<OuterTile, NB>(K, A, R, lda, G, ldg, dMT);
}

using RowsFn = void (*)(const float*, int, int, int, const float*, const float*, float*, int);
using OuterFn = void (*)(const float*, int, int, int, const float*, int, float*);

template <int NB>
constexpr RowsFn rows_fn() { return &rows_times<NB>; }
template <int NB>
constexpr OuterFn outer_fn() { return &outer_acc<NB>; }

RowsFn pick_rows(int width_pad) {
  static const RowsFn table[] = {nullptr,        rows_fn<1>(),  rows_fn<2>(),  rows_fn<3>(),  rows_fn<4>(),
                                 rows_fn<5>(),  rows_fn<6>(),  rows_fn<7>(),  rows_fn<8>(),  rows_fn<9>(),
                                 rows_fn<10>(), rows_fn<11>(), rows_fn<12>(), rows_fn<13>(), rows_fn<14>(),
                                 rows_fn<15>(), rows_fn<16>()};
  const int nb = width_pad / 8;
  TORCH_CHECK(nb >= 1 && nb <= 16, "fused mlp: layer widths must be <= 128, got ", width_pad);
  return table[nb];
}

OuterFn pick_outer(int width_pad) {
  static const OuterFn table[] = {nullptr,         outer_fn<1>(),  outer_fn<2>(),  outer_fn<3>(),  outer_fn<4>(),
                                  outer_fn<5>(),  outer_fn<6>(),  outer_fn<7>(),  outer_fn<8>(),  outer_fn<9>(),
                                  outer_fn<10>(), outer_fn<11>(), outer_fn<12>(), outer_fn<13>(), outer_fn<14>(),
                                  outer_fn<15>(), outer_fn<16>()};
  const int nb = width_pad / 8;
  TORCH_CHECK(nb >= 1 && nb <= 16, "fused mlp: layer widths must be <= 128, got ", width_pad);
  return table[nb];
}

inline void apply_act(float* a, int R, int width_pad, int64_t act) {
  const int64_t n = static_cast<int64_t>(R) * width_pad;
  if (act == kRelu) {
    for (int64_t i = 0; i < n; ++i) a[i] = a[i] > 0.f ? a[i] : 0.f;
  } else if (act == kSigmoid) {
    for (int64_t i = 0; i < n; ++i) a[i] = 1.f / (1.f + std::exp(-a[i]));
  }
}

// g *= act'(.) expressed through the activation's output y.
inline void mul_act_grad(float* g, const float* y, int R, int width_pad, int64_t act) {
  const int64_t n = static_cast<int64_t>(R) * width_pad;
  if (act == kRelu) {
    for (int64_t i = 0; i < n; ++i) g[i] = y[i] > 0.f ? g[i] : 0.f;
  } else if (act == kSigmoid) {
    for (int64_t i = 0; i < n; ++i) g[i] *= y[i] * (1.f - y[i]);
  }
}

struct PaddedNet {
  int n_layers = 0;
  std::vector<int> in_pad, out_pad, in_dim, out_dim;
  std::vector<std::vector<float>> WT;    // (in_pad, out_pad): forward
  std::vector<std::vector<float>> Wp;    // (out_pad, in_pad): input gradient
  std::vector<std::vector<float>> bias;  // (out_pad,)
};

PaddedNet pad_net(const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases, int64_t n_in) {
  PaddedNet net;
  net.n_layers = static_cast<int>(weights.size());
  TORCH_CHECK(net.n_layers >= 1, "fused mlp: need at least one layer");
  TORCH_CHECK(biases.empty() || biases.size() == weights.size(), "fused mlp: one bias per layer or none");
  int64_t prev = n_in;
  for (int l = 0; l < net.n_layers; ++l) {
    auto W = weights[l].contiguous().to(at::kFloat);
    TORCH_CHECK(W.dim() == 2 && W.size(1) == prev, "fused mlp: layer ", l, " weight must be (out, ", prev, "), got ",
                W.sizes());
    const int o = static_cast<int>(W.size(0)), i = static_cast<int>(W.size(1));
    const int op = pad8(o), ip = pad8(i);
    net.in_dim.push_back(i);
    net.out_dim.push_back(o);
    net.in_pad.push_back(ip);
    net.out_pad.push_back(op);
    std::vector<float> wt(static_cast<size_t>(ip) * op, 0.f), wp(static_cast<size_t>(op) * ip, 0.f), b(op, 0.f);
    const float* w = W.data_ptr<float>();
    for (int r = 0; r < o; ++r) {
      for (int c = 0; c < i; ++c) {
        wt[static_cast<size_t>(c) * op + r] = w[static_cast<size_t>(r) * i + c];
        wp[static_cast<size_t>(r) * ip + c] = w[static_cast<size_t>(r) * i + c];
      }
    }
    if (!biases.empty()) {
      auto B = biases[l].contiguous().to(at::kFloat);
      TORCH_CHECK(B.numel() == o, "fused mlp: layer ", l, " bias must have ", o, " values");
      std::memcpy(b.data(), B.data_ptr<float>(), sizeof(float) * o);
    }
    net.WT.push_back(std::move(wt));
    net.Wp.push_back(std::move(wp));
    net.bias.push_back(std::move(b));
    prev = o;
  }
  return net;
}

struct Workspace {
  std::vector<std::vector<float>> own;  // storage of the activations not kept in a saved-hidden buffer
  std::vector<float*> acts;             // acts[0] = padded input chunk, acts[l+1] = output of layer l
  std::vector<float> g0, g1;
};

void make_workspace(const PaddedNet& net, int R, Workspace* ws) {
  ws->own.resize(net.n_layers + 1);
  ws->acts.resize(net.n_layers + 1);
  ws->own[0].assign(static_cast<size_t>(R) * net.in_pad[0], 0.f);
  int maxw = net.in_pad[0];
  for (int l = 0; l < net.n_layers; ++l) {
    ws->own[l + 1].assign(static_cast<size_t>(R) * net.out_pad[l], 0.f);
    maxw = std::max(maxw, net.out_pad[l]);
  }
  for (int l = 0; l <= net.n_layers; ++l) ws->acts[l] = ws->own[l].data();
  ws->g0.assign(static_cast<size_t>(R) * maxw, 0.f);
  ws->g1.assign(static_cast<size_t>(R) * maxw, 0.f);
}

// Saved hidden activations (training forward -> backward, so the backward need not recompute them): chunk-major,
// chunk c holds the outputs of hidden layers 0..n_layers-2, each an (R, out_pad) block.
int64_t hidden_per_row(const PaddedNet& net) {
  int64_t h = 0;
  for (int l = 0; l + 1 < net.n_layers; ++l) h += net.out_pad[l];
  return h;
}

// Points ws->acts[1 .. n_layers-1] at chunk c's blocks of the saved-hidden buffer.
void use_hidden(const PaddedNet& net, float* hidden, int64_t c, int R, Workspace* ws) {
  float* base = hidden + c * static_cast<int64_t>(R) * hidden_per_row(net);
  for (int l = 0; l + 1 < net.n_layers; ++l) {
    ws->acts[l + 1] = base;
    base += static_cast<int64_t>(R) * net.out_pad[l];
  }
}

void load_input_chunk(const PaddedNet& net, const float* x, int64_t r0, int R, Workspace* ws) {
  const int n_in = net.in_dim[0], ip = net.in_pad[0];
  float* a0 = ws->acts[0];
  for (int r = 0; r < R; ++r) std::memcpy(a0 + static_cast<int64_t>(r) * ip, x + (r0 + r) * n_in, sizeof(float) * n_in);
}

// Layers [l0, n_layers) of rows [r0, r0 + R), input ws->acts[l0] already filled.
void forward_layers(const PaddedNet& net, int l0, int R, int64_t act, int64_t out_act, Workspace* ws) {
  for (int l = l0; l < net.n_layers; ++l) {
    pick_rows(net.out_pad[l])(ws->acts[l], R, net.in_pad[l], net.in_pad[l], net.WT[l].data(), net.bias[l].data(),
                              ws->acts[l + 1], net.out_pad[l]);
    apply_act(ws->acts[l + 1], R, net.out_pad[l], l + 1 == net.n_layers ? out_act : act);
  }
}

}  // namespace

// x (N, n_in) float32 -> [y (N, n_out), hidden]. With save_hidden the hidden activations are returned for
// mlp_backward (which then skips recomputing them); otherwise `hidden` is an empty tensor.
std::vector<at::Tensor> mlp_forward(const at::Tensor& x_in, const std::vector<at::Tensor>& weights,
                                    const std::vector<at::Tensor>& biases, int64_t act, int64_t out_act, int64_t chunk,
                                    bool save_hidden) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.scalar_type() == at::kFloat && x_in.dim() == 2,
              "fused mlp: x must be a float32 (N, n_in) CPU tensor");
  auto x = x_in.contiguous();
  const PaddedNet net = pad_net(weights, biases, x.size(1));
  const int64_t N = x.size(0);
  const int n_out = net.out_dim.back();
  auto y = at::empty({N, n_out}, x.options());
  const int R = static_cast<int>(std::max<int64_t>(1, chunk));
  const int64_t n_chunks = (N + R - 1) / R;
  at::Tensor hidden = at::empty({0}, x.options());
  float* hp = nullptr;
  if (save_hidden && hidden_per_row(net) > 0) {
    hidden = alloc_uninit({n_chunks * R * hidden_per_row(net)});  // rows past N in the last chunk are never read
    hp = hidden.data_ptr<float>();
  }
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, n_chunks, 1, [&](int64_t cb, int64_t ce) {
    Workspace ws;
    make_workspace(net, R, &ws);
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t r0 = c * R;
      const int rows = static_cast<int>(std::min<int64_t>(R, N - r0));
      if (hp) use_hidden(net, hp, c, R, &ws);
      load_input_chunk(net, xp, r0, rows, &ws);
      forward_layers(net, 0, rows, act, out_act, &ws);
      const float* last = ws.acts[net.n_layers];
      const int op = net.out_pad.back();
      for (int r = 0; r < rows; ++r) std::memcpy(yp + (r0 + r) * n_out, last + r * op, sizeof(float) * n_out);
    }
  });
  return {y, hidden};
}

// Returns [grad_x (or undefined), grad_W_0..grad_W_{L-1}, grad_b_0..grad_b_{L-1}]. `hidden`: the buffer
// mlp_forward(save_hidden=true) returned for the same x / weights / chunk, or an empty tensor (recompute).
std::vector<at::Tensor> mlp_backward(const at::Tensor& x_in, const std::vector<at::Tensor>& weights,
                                     const std::vector<at::Tensor>& biases, const at::Tensor& grad_y_in, int64_t act,
                                     int64_t out_act, int64_t chunk, bool need_grad_x, const at::Tensor& hidden) {
  auto x = x_in.contiguous();
  auto gy = grad_y_in.contiguous().to(at::kFloat);
  const PaddedNet net = pad_net(weights, biases, x.size(1));
  const int64_t N = x.size(0);
  const int nl = net.n_layers;
  TORCH_CHECK(gy.dim() == 2 && gy.size(0) == N && gy.size(1) == net.out_dim.back(),
              "fused mlp: grad_y has the wrong shape");
  const int R = static_cast<int>(std::max<int64_t>(1, chunk));
  const int64_t n_chunks = (N + R - 1) / R;
  float* hp = nullptr;
  if (hidden.numel() > 0) {
    TORCH_CHECK(hidden.numel() == n_chunks * R * hidden_per_row(net) && hidden.is_contiguous() &&
                    hidden.scalar_type() == at::kFloat,
                "fused mlp: saved hidden activations do not match this input / network / chunk size");
    hp = hidden.data_ptr<float>();
  }
  const int64_t nt = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_chunks));
  // Per-task accumulators: dWT[l] (in_pad, out_pad) and db[l] (out_pad).
  std::vector<std::vector<std::vector<float>>> dWT(nt), dB(nt);
  at::Tensor gx;
  float* gxp = nullptr;
  if (need_grad_x) {
    gx = alloc_uninit({x.size(0), x.size(1)});  // every row written
    gxp = gx.data_ptr<float>();
  }
  const float* xp = x.data_ptr<float>();
  const float* gyp = gy.data_ptr<float>();
  const int n_out = net.out_dim.back();
  // Split the chunks into exactly nt contiguous task ranges so the reduction order is fixed.
  at::parallel_for(0, nt, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      auto& dw = dWT[t];
      auto& db = dB[t];
      dw.resize(nl);
      db.resize(nl);
      for (int l = 0; l < nl; ++l) {
        dw[l].assign(static_cast<size_t>(net.in_pad[l]) * net.out_pad[l], 0.f);
        db[l].assign(net.out_pad[l], 0.f);
      }
      Workspace ws;
      make_workspace(net, R, &ws);
      const int64_t c0 = n_chunks * t / nt, c1 = n_chunks * (t + 1) / nt;
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t r0 = c * R;
        const int rows = static_cast<int>(std::min<int64_t>(R, N - r0));
        load_input_chunk(net, xp, r0, rows, &ws);
        if (hp) {  // hidden activations saved by the forward: only the (narrow) output layer is recomputed
          use_hidden(net, hp, c, R, &ws);
          forward_layers(net, nl - 1, rows, act, out_act, &ws);
        } else {
          forward_layers(net, 0, rows, act, out_act, &ws);
        }
        // g = dL/d(output of the last layer), padded.
        float* g = ws.g0.data();
        float* gnext = ws.g1.data();
        {
          const int op = net.out_pad.back();
          std::fill(g, g + static_cast<int64_t>(rows) * op, 0.f);
          for (int r = 0; r < rows; ++r) std::memcpy(g + r * op, gyp + (r0 + r) * n_out, sizeof(float) * n_out);
        }
        for (int l = nl - 1; l >= 0; --l) {
          const int op = net.out_pad[l], ip = net.in_pad[l];
          mul_act_grad(g, ws.acts[l + 1], rows, op, l + 1 == nl ? out_act : act);
          // bias and weight gradients
          float* dbl = db[l].data();
          for (int r = 0; r < rows; ++r) {
            const float* gr = g + static_cast<int64_t>(r) * op;
            for (int j = 0; j < op; ++j) dbl[j] += gr[j];
          }
          pick_outer(op)(ws.acts[l], rows, ip, ip, g, op, dw[l].data());
          if (l == 0 && !need_grad_x) break;
          // gradient wrt this layer's input
          pick_rows(ip)(g, rows, op, op, net.Wp[l].data(), nullptr, gnext, ip);
          std::swap(g, gnext);
        }
        if (need_grad_x) {
          const int ip = net.in_pad[0], n_in = net.in_dim[0];
          for (int r = 0; r < rows; ++r) std::memcpy(gxp + (r0 + r) * n_in, g + r * ip, sizeof(float) * n_in);
        }
      }
    }
  });
  std::vector<at::Tensor> result;
  result.push_back(gx);
  std::vector<at::Tensor> gbs;
  for (int l = 0; l < nl; ++l) {
    const int o = net.out_dim[l], i = net.in_dim[l], op = net.out_pad[l];
    auto gw = at::zeros({o, i}, x.options());
    auto gb = at::zeros({o}, x.options());
    float* gwp = gw.data_ptr<float>();
    float* gbp = gb.data_ptr<float>();
    for (int64_t t = 0; t < nt; ++t) {
      const float* src = dWT[t][l].data();
      for (int r = 0; r < o; ++r)
        for (int c = 0; c < i; ++c) gwp[r * i + c] += src[static_cast<int64_t>(c) * op + r];
      for (int r = 0; r < o; ++r) gbp[r] += dB[t][l][r];
    }
    result.push_back(gw);
    gbs.push_back(gb);
  }
  for (auto& gb : gbs) result.push_back(gb);
  return result;
}
