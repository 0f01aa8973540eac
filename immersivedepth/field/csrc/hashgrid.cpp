// Multiresolution hash encoding with tiny-cuda-nn's exact semantics, forward and backward (CPU).
//
// See immersivedepth/field/encodings.py for the formula; per-level scale / resolution / size / offset / dense
// flag are computed once in Python and passed in, so every backend uses identical numbers.
// Table layout = tcnn's flat parameter vector: entry (offset[l] + index) * F + f.
//
// Speed notes (CPU, random access into a table far larger than the caches):
//  * points are processed in small blocks; for each level the corner indices and weights of the whole block are
//    computed first and their cache lines prefetched, then gathered / scattered, so many memory accesses are in
//    flight at once;
//  * power-of-two level sizes use a mask instead of a 32-bit modulo;
//  * large buffers come from the pool of buffer_pool.cpp.
//
// No atomics: every table-gradient entry is accumulated by one thread in point order (bitwise identical for any
// thread count); input gradients are reduced over per-thread partial sums in a fixed order.

#include "field_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

using immersivedepth::alloc_uninit;

namespace {

// ---------------------------------------------------------------------------
// Hash grid
// ---------------------------------------------------------------------------

constexpr uint32_t kPrimes[3] = {1u, 2654435761u, 805459861u};
constexpr int kBlock = 64;  // points whose corners are resolved (and prefetched) together

struct LevelInfo {
  float scale;
  uint32_t resolution;
  uint32_t size;    // hashmap_size = offset[l+1] - offset[l] (entries)
  uint32_t offset;  // first entry of the level
  bool dense;
  bool pow2;        // size is a power of two -> index & (size - 1)
};

// Clamp to [0, 1]; returns false for non-finite input.
inline bool clamp01(float v, float* out) {
  if (!std::isfinite(v)) return false;
  *out = v < 0.f ? 0.f : (v > 1.f ? 1.f : v);
  return true;
}

// Corner indices (entries, relative to the level) and weights for a block of nb <= kBlock points, in
// structure-of-arrays form so the compiler vectorises over points. xs[d][j]: clamped coordinates.
// Outputs idx[c][j], w[c][j] (c = corner, bit d of c = +1 along dimension d) and frac[d][j].
template <int D>
inline void block_corners(const LevelInfo& lv, const float (*xs)[kBlock], int nb, uint32_t (*idx)[kBlock],
                          float (*w)[kBlock], float (*frac)[kBlock]) {
  uint32_t cell[D][kBlock];
  const float s = lv.scale;
  for (int d = 0; d < D; ++d) {
#pragma omp simd
    for (int j = 0; j < kBlock; ++j) {
      const float p = std::fma(s, xs[d][j], 0.5f);  // tcnn: fmaf(scale, x, 0.5f)
      const float fl = std::floor(p);
      cell[d][j] = static_cast<uint32_t>(static_cast<int>(fl));
      frac[d][j] = p - fl;
    }
  }
  // Index multipliers: dense strides (1, res, res^2 in uint32) or the hash primes.
  uint32_t mul[D];
  uint32_t stride = 1;
  for (int d = 0; d < D; ++d) {
    mul[d] = lv.dense ? stride : kPrimes[d];
    stride *= lv.resolution;
  }
  const uint32_t mask = lv.size - 1;
  for (int c = 0; c < (1 << D); ++c) {
    uint32_t* ic = idx[c];
    float* wc = w[c];
    if (lv.dense) {
#pragma omp simd
      for (int j = 0; j < kBlock; ++j) {
        uint32_t index = 0;
        for (int d = 0; d < D; ++d) index += (cell[d][j] + ((c >> d) & 1u)) * mul[d];
        ic[j] = index;
      }
    } else {
#pragma omp simd
      for (int j = 0; j < kBlock; ++j) {
        uint32_t index = 0;
        for (int d = 0; d < D; ++d) index ^= (cell[d][j] + ((c >> d) & 1u)) * mul[d];
        ic[j] = index;
      }
    }
    if (lv.pow2) {
#pragma omp simd
      for (int j = 0; j < kBlock; ++j) ic[j] &= mask;
    } else {
      for (int j = 0; j < nb; ++j) ic[j] %= lv.size;
    }
#pragma omp simd
    for (int j = 0; j < kBlock; ++j) {
      float wj = 1.f;
      for (int d = 0; d < D; ++d) wj *= ((c >> d) & 1) ? frac[d][j] : 1.f - frac[d][j];
      wc[j] = wj;
    }
  }
}

std::vector<LevelInfo> make_levels(const at::Tensor& scales, const at::Tensor& resolutions, const at::Tensor& offsets,
                                   const at::Tensor& dense) {
  const int64_t L = scales.size(0);
  TORCH_CHECK(L >= 1 && resolutions.size(0) == L && dense.size(0) == L && offsets.size(0) == L + 1,
              "hashgrid: level metadata has inconsistent lengths");
  auto s = scales.contiguous().to(at::kFloat);
  auto r = resolutions.contiguous().to(at::kLong);
  auto o = offsets.contiguous().to(at::kLong);
  auto dn = dense.contiguous().to(at::kBool);
  std::vector<LevelInfo> levels(L);
  for (int64_t l = 0; l < L; ++l) {
    LevelInfo& lv = levels[l];
    lv.scale = s.data_ptr<float>()[l];
    lv.resolution = static_cast<uint32_t>(r.data_ptr<int64_t>()[l]);
    lv.offset = static_cast<uint32_t>(o.data_ptr<int64_t>()[l]);
    lv.size = static_cast<uint32_t>(o.data_ptr<int64_t>()[l + 1] - o.data_ptr<int64_t>()[l]);
    lv.dense = dn.data_ptr<bool>()[l];
    lv.pow2 = (lv.size & (lv.size - 1)) == 0;
    TORCH_CHECK(lv.size > 0, "hashgrid: level ", l, " has an empty table");
  }
  return levels;
}

template <int NC, int F>
inline void prefetch_block(const float* tl, const uint32_t (*idx)[kBlock], int nb, bool write) {
  for (int c = 0; c < NC; ++c) {
    for (int j = 0; j < nb; ++j) {
      if (write) {
        __builtin_prefetch(tl + static_cast<int64_t>(idx[c][j]) * F, 1, 1);
      } else {
        __builtin_prefetch(tl + static_cast<int64_t>(idx[c][j]) * F, 0, 1);
      }
    }
  }
}

// Loads a block of points (clamped, SoA, zero-padded to kBlock). Returns false if any is non-finite.
template <int D>
inline bool load_block(const float* x, int64_t i0, int nb, float (*xs)[kBlock], bool (*inside)[kBlock]) {
  bool ok = true;
  for (int j = 0; j < kBlock; ++j) {
    for (int d = 0; d < D; ++d) {
      if (j < nb) {
        const float v = x[(i0 + j) * D + d];
        ok &= clamp01(v, &xs[d][j]);
        if (inside) inside[d][j] = (v >= 0.f && v <= 1.f);
      } else {
        xs[d][j] = 0.f;
        if (inside) inside[d][j] = false;
      }
    }
  }
  return ok;
}

// Level-major forward (as tcnn does on the GPU): each thread takes a contiguous range of points and sends all
// of them through one level before the next, so the level's part of the table (a few MB) stays in the
// last-level cache while it is gathered many times (the threads move through the levels roughly together).
// Results go to a level-major (L, N, F) buffer that each thread transposes to (N, L*F) for its own points;
// the whole forward is a single parallel region (cheap under oversubscription, no barriers between levels).
template <int D, int F>
void encode_forward(const float* x, const float* table, float* out, int64_t N, const std::vector<LevelInfo>& levels,
                    bool* bad) {
  const int L = static_cast<int>(levels.size());
  constexpr int NC = 1 << D;
  at::Tensor lm_t = alloc_uninit({static_cast<int64_t>(L), N, F});  // every element written below
  float* lm = lm_t.data_ptr<float>();
  const int64_t nblocks = (N + kBlock - 1) / kBlock;
  std::atomic<bool> any_bad{false};
  at::parallel_for(0, nblocks, 16, [&](int64_t bb, int64_t be) {
    const int64_t p0 = bb * kBlock, p1 = std::min(N, be * kBlock);
    for (int64_t k = p0 * D; k < p1 * D; ++k) {
      if (!std::isfinite(x[k])) {
        any_bad.store(true, std::memory_order_relaxed);
        return;
      }
    }
    alignas(64) float xs[D][kBlock];
    alignas(64) uint32_t idx[2][NC][kBlock];
    alignas(64) float w[2][NC][kBlock];
    alignas(64) float frac[D][kBlock];
    for (int l = 0; l < L; ++l) {
      const LevelInfo& lv = levels[l];
      const float* tl = table + static_cast<int64_t>(lv.offset) * F;
      float* ol = lm + static_cast<int64_t>(l) * N * F;
      // Software pipeline: block b + 1's corners are resolved before block b is gathered, and prefetched point by
      // point inside block b's gather loop (a steady stream; a burst of 512 prefetches stalls on the miss buffers).
      auto prepare = [&](int64_t blk, int buf) {
        const int64_t i0 = blk * kBlock;
        const int nb = static_cast<int>(std::min<int64_t>(kBlock, N - i0));
        load_block<D>(x, i0, nb, xs, nullptr);
        block_corners<D>(lv, xs, nb, idx[buf], w[buf], frac);
      };
      int cur = 0;
      prepare(bb, 0);
      prefetch_block<NC, F>(tl, idx[0], static_cast<int>(std::min<int64_t>(kBlock, N - bb * kBlock)), false);
      for (int64_t blk = bb; blk < be; ++blk) {
        const bool has_next = blk + 1 < be;
        if (has_next) prepare(blk + 1, 1 - cur);
        const int64_t i0 = blk * kBlock;
        const int nb = static_cast<int>(std::min<int64_t>(kBlock, N - i0));
        const int nb_next = has_next ? static_cast<int>(std::min<int64_t>(kBlock, N - i0 - kBlock)) : 0;
        const uint32_t(*ic)[kBlock] = idx[cur];
        const uint32_t(*in)[kBlock] = idx[1 - cur];
        const float(*wc)[kBlock] = w[cur];
        for (int j = 0; j < nb; ++j) {
          if (j < nb_next) {  // the next block's corners, one point at a time: a steady stream of prefetches
            for (int c = 0; c < NC; ++c) __builtin_prefetch(tl + static_cast<int64_t>(in[c][j]) * F, 0, 1);
          }
          float acc[F];
          for (int f = 0; f < F; ++f) acc[f] = 0.f;
          for (int c = 0; c < NC; ++c) {  // corner order and float32 accumulation as in tcnn
            const float* v = tl + static_cast<int64_t>(ic[c][j]) * F;
            for (int f = 0; f < F; ++f) acc[f] += wc[c][j] * v[f];
          }
          float* o = ol + (i0 + j) * F;
          for (int f = 0; f < F; ++f) o[f] = acc[f];
        }
        cur = 1 - cur;
      }
    }
    for (int64_t i = p0; i < p1; ++i)
      for (int l = 0; l < L; ++l)
        for (int f = 0; f < F; ++f) out[(i * L + l) * F + f] = lm[(static_cast<int64_t>(l) * N + i) * F + f];
  });
  *bad = any_bad.load();
}

// Backward: each task owns a fixed set of levels (interleaved so coarse and fine levels
// are spread over the threads), hence no two threads ever write the same table entry.
template <int D, int F>
void encode_backward(const float* x, const float* table, const float* gout, float* gtable, float* gx, int64_t N,
                     const std::vector<LevelInfo>& levels, int64_t block) {
  const int L = static_cast<int>(levels.size());
  constexpr int NC = 1 << D;
  const int64_t ntasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), L));
  std::vector<std::vector<float>> gx_local(gx ? ntasks : 0);
  // Level-major copy of the incoming gradient (each task fills the rows of its own levels), so every level
  // pass reads it contiguously.
  at::Tensor glm_t = alloc_uninit({static_cast<int64_t>(L), N, F});  // every element written below
  float* glm = glm_t.data_ptr<float>();
  at::parallel_for(0, ntasks, 1, [&](int64_t tb, int64_t te) {
    for (int64_t task = tb; task < te; ++task) {
      for (int64_t i = 0; i < N; ++i)
        for (int l = static_cast<int>(task); l < L; l += static_cast<int>(ntasks))
          for (int f = 0; f < F; ++f) glm[(static_cast<int64_t>(l) * N + i) * F + f] = gout[(i * L + l) * F + f];
    }
    alignas(64) float xs[2][D][kBlock];
    alignas(64) bool inside[2][D][kBlock];
    alignas(64) uint32_t idx[2][NC][kBlock];
    alignas(64) float w[2][NC][kBlock];
    alignas(64) float frac[2][D][kBlock];
    for (int64_t task = tb; task < te; ++task) {
      float* gxt = nullptr;
      if (gx) {
        gx_local[task].assign(static_cast<size_t>(N * D), 0.f);
        gxt = gx_local[task].data();
      }
      for (int64_t b0 = 0; b0 < N; b0 += block) {
        const int64_t b1 = std::min(N, b0 + block);
        for (int l = static_cast<int>(task); l < L; l += static_cast<int>(ntasks)) {
          const LevelInfo& lv = levels[l];
          float* gl = gtable + static_cast<int64_t>(lv.offset) * F;
          const float* tl = table + static_cast<int64_t>(lv.offset) * F;
          // The level's gradient slice is zeroed by its owning task right before its first scatter pass, so the
          // scatter finds the lines in cache instead of re-reading a zeroed 64 MB table from memory.
          if (b0 == 0) std::memset(gl, 0, static_cast<size_t>(lv.size) * F * sizeof(float));
          // Software pipeline: resolve and prefetch the next sub-block while scattering this one (here a burst measured
          // faster than the forward's point-by-point stream: the just-zeroed level slice is mostly cache-resident).
          auto prepare = [&](int64_t i0, int buf) {
            const int nb = static_cast<int>(std::min<int64_t>(kBlock, b1 - i0));
            load_block<D>(x, i0, nb, xs[buf], inside[buf]);
            block_corners<D>(lv, xs[buf], nb, idx[buf], w[buf], frac[buf]);
            prefetch_block<NC, F>(gl, idx[buf], nb, true);
          };
          int cur = 0;
          prepare(b0, 0);
          for (int64_t i0 = b0; i0 < b1; i0 += kBlock) {
            const int nb = static_cast<int>(std::min<int64_t>(kBlock, b1 - i0));
            if (i0 + kBlock < b1) prepare(i0 + kBlock, 1 - cur);
            const uint32_t(*ic)[kBlock] = idx[cur];
            const float(*wc)[kBlock] = w[cur];
            for (int j = 0; j < nb; ++j) {
              const float* g = glm + (static_cast<int64_t>(l) * N + i0 + j) * F;
#if defined(__SSE2__)
              if constexpr (F == 2) {  // one 64-bit read-modify-write per corner instead of two scalar ones
                const __m128 gv = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(g)));
                for (int c = 0; c < NC; ++c) {
                  double* e = reinterpret_cast<double*>(gl + static_cast<int64_t>(ic[c][j]) * F);
                  const __m128 ev = _mm_castpd_ps(_mm_load_sd(e));
                  const __m128 r = _mm_add_ps(ev, _mm_mul_ps(_mm_set1_ps(wc[c][j]), gv));
                  _mm_store_sd(e, _mm_castps_pd(r));
                }
                continue;
              }
#endif
              for (int c = 0; c < NC; ++c) {
                float* e = gl + static_cast<int64_t>(ic[c][j]) * F;
                for (int f = 0; f < F; ++f) e[f] += wc[c][j] * g[f];
              }
            }
            if (gxt) {
              const float(*fr)[kBlock] = frac[cur];
              for (int j = 0; j < nb; ++j) {
                const float* g = glm + (static_cast<int64_t>(l) * N + i0 + j) * F;
                float dfrac[D];
                for (int d = 0; d < D; ++d) dfrac[d] = 0.f;
                for (int c = 0; c < NC; ++c) {
                  const float* v = tl + static_cast<int64_t>(ic[c][j]) * F;
                  float gv = 0.f;
                  for (int f = 0; f < F; ++f) gv += g[f] * v[f];
                  for (int d = 0; d < D; ++d) {
                    float wd = (c & (1 << d)) ? 1.f : -1.f;
                    for (int d2 = 0; d2 < D; ++d2) {
                      if (d2 != d) wd *= (c & (1 << d2)) ? fr[d2][j] : 1.f - fr[d2][j];
                    }
                    dfrac[d] += wd * gv;
                  }
                }
                for (int d = 0; d < D; ++d) {
                  if (inside[cur][d][j]) gxt[(i0 + j) * D + d] += dfrac[d] * lv.scale;
                }
              }
            }
            cur = 1 - cur;
          }
        }
      }
    }
  });
  if (gx) {
    for (int64_t t = 0; t < ntasks; ++t) {
      const float* src = gx_local[t].data();
      at::parallel_for(0, N * D, 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) gx[k] += src[k];
      });
    }
  }
}

template <int D>
void dispatch_forward(int F, const float* x, const float* table, float* out, int64_t N,
                      const std::vector<LevelInfo>& lv, bool* bad) {
  switch (F) {
    case 1: encode_forward<D, 1>(x, table, out, N, lv, bad); break;
    case 2: encode_forward<D, 2>(x, table, out, N, lv, bad); break;
    case 4: encode_forward<D, 4>(x, table, out, N, lv, bad); break;
    case 8: encode_forward<D, 8>(x, table, out, N, lv, bad); break;
    default: TORCH_CHECK(false, "hashgrid: n_features_per_level must be 1, 2, 4 or 8, got ", F);
  }
}

template <int D>
void dispatch_backward(int F, const float* x, const float* table, const float* gout, float* gtable, float* gx,
                       int64_t N, const std::vector<LevelInfo>& lv, int64_t block) {
  switch (F) {
    case 1: encode_backward<D, 1>(x, table, gout, gtable, gx, N, lv, block); break;
    case 2: encode_backward<D, 2>(x, table, gout, gtable, gx, N, lv, block); break;
    case 4: encode_backward<D, 4>(x, table, gout, gtable, gx, N, lv, block); break;
    case 8: encode_backward<D, 8>(x, table, gout, gtable, gx, N, lv, block); break;
    default: TORCH_CHECK(false, "hashgrid: n_features_per_level must be 1, 2, 4 or 8, got ", F);
  }
}

void check_inputs(const at::Tensor& x, const at::Tensor& table, int64_t F) {
  TORCH_CHECK(x.device().is_cpu() && table.device().is_cpu(), "hashgrid cpu op: tensors must be on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat && table.scalar_type() == at::kFloat,
              "hashgrid cpu op: x and table must be float32");
  TORCH_CHECK(x.dim() == 2 && (x.size(1) == 2 || x.size(1) == 3), "hashgrid cpu op: x must be (N, 2) or (N, 3)");
  TORCH_CHECK(table.dim() == 1 && table.numel() % F == 0, "hashgrid cpu op: table must be flat with F | numel");
}

}  // namespace

// x (N, D) float32; table (n_params,) float32 -> (N, L*F).
at::Tensor hashgrid_forward(const at::Tensor& x_in, const at::Tensor& table_in, const at::Tensor& scales,
                            const at::Tensor& resolutions, const at::Tensor& offsets, const at::Tensor& dense,
                            int64_t F) {
  check_inputs(x_in, table_in, F);
  const auto levels = make_levels(scales, resolutions, offsets, dense);
  TORCH_CHECK(static_cast<int64_t>(levels.back().offset + levels.back().size) * F == table_in.numel(),
              "hashgrid cpu op: table has ", table_in.numel(), " values, level layout needs ",
              static_cast<int64_t>(levels.back().offset + levels.back().size) * F);
  auto x = x_in.contiguous();
  auto table = table_in.contiguous();
  const int64_t N = x.size(0);
  const int64_t L = static_cast<int64_t>(levels.size());
  auto out = alloc_uninit({N, L * F});  // every element written
  bool bad = false;
  if (x.size(1) == 3) {
    dispatch_forward<3>(static_cast<int>(F), x.data_ptr<float>(), table.data_ptr<float>(), out.data_ptr<float>(), N,
                        levels, &bad);
  } else {
    dispatch_forward<2>(static_cast<int>(F), x.data_ptr<float>(), table.data_ptr<float>(), out.data_ptr<float>(), N,
                        levels, &bad);
  }
  TORCH_CHECK(!bad, "HashGridEncoding: x contains NaN or infinite coordinates; positions must be finite");
  return out;
}

// Returns (grad_table (n_params,), grad_x (N, D) or an undefined tensor).
std::vector<at::Tensor> hashgrid_backward(const at::Tensor& x_in, const at::Tensor& table_in,
                                          const at::Tensor& grad_out_in, const at::Tensor& scales,
                                          const at::Tensor& resolutions, const at::Tensor& offsets,
                                          const at::Tensor& dense, int64_t F, bool need_grad_x, int64_t block) {
  check_inputs(x_in, table_in, F);
  const auto levels = make_levels(scales, resolutions, offsets, dense);
  auto x = x_in.contiguous();
  auto table = table_in.contiguous();
  auto gout = grad_out_in.contiguous().to(at::kFloat);
  TORCH_CHECK(static_cast<int64_t>(levels.back().offset + levels.back().size) * F == table.numel(),
              "hashgrid cpu op: table has ", table.numel(), " values, level layout needs ",
              static_cast<int64_t>(levels.back().offset + levels.back().size) * F);
  const int64_t N = x.size(0);
  TORCH_CHECK(gout.dim() == 2 && gout.size(0) == N && gout.size(1) == static_cast<int64_t>(levels.size()) * F,
              "hashgrid cpu op: grad_out has the wrong shape");
  // each level's slice is zeroed by the task that owns it (before its first scatter; N = 0 scatters nothing)
  auto gtable = N > 0 ? alloc_uninit({table.numel()}) : at::zeros({table.numel()}, table.options());
  at::Tensor gx;
  float* gxp = nullptr;
  if (need_grad_x) {
    gx = at::zeros_like(x);
    gxp = gx.data_ptr<float>();
  }
  if (block <= 0) block = N;  // default: every level streams through all points (level-major)
  block = std::max<int64_t>(kBlock, block);
  if (x.size(1) == 3) {
    dispatch_backward<3>(static_cast<int>(F), x.data_ptr<float>(), table.data_ptr<float>(), gout.data_ptr<float>(),
                         gtable.data_ptr<float>(), gxp, N, levels, block);
  } else {
    dispatch_backward<2>(static_cast<int>(F), x.data_ptr<float>(), table.data_ptr<float>(), gout.data_ptr<float>(),
                         gtable.data_ptr<float>(), gxp, N, levels, block);
  }
  return {gtable, gx};
}
