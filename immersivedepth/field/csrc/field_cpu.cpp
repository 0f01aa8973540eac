// Fused CPU kernels for the radiance field's hot path (ImmersiveDepth).
//
//  * hashgrid_forward / hashgrid_backward: multiresolution hash encoding with
//    tiny-cuda-nn's exact semantics (see immersivedepth/field/encodings.py for the
//    formula; per-level scale / resolution / size / offset / dense flag are computed
//    once in Python and passed in, so every backend uses identical numbers).
//    Table layout = tcnn's flat parameter vector: entry (offset[l] + index) * F + f.
//  * mlp_forward / mlp_backward: a small fully connected network evaluated in
//    row chunks that stay in L1/L2. A training forward saves the hidden activations
//    (chunk-major) so the backward does not recompute them; without them (inference
//    forward, or old callers) the backward recomputes them chunk by chunk.
//
// Speed notes (CPU, random access into a table far larger than the caches):
//  * points are processed in small blocks; for each level the corner indices and
//    weights of the whole block are computed first and their cache lines prefetched,
//    then gathered / scattered, so many memory accesses are in flight at once;
//  * power-of-two level sizes use a mask instead of a 32-bit modulo;
//  * large buffers (features, table gradient, level-major scratch) come from anonymous
//    mmaps advised as transparent huge pages and are recycled through a small pool, so
//    a training step does not page-fault them in again every time.
//
// Parallelism uses at::parallel_for (torch's own OpenMP runtime and thread count).
// No atomics: every table-gradient entry is accumulated by one thread in point order
// (bitwise identical for any thread count); input and MLP weight gradients are reduced
// over per-thread partial sums in a fixed order (deterministic for a given thread count).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#define IMMERSIVEDEPTH_HAVE_MMAP 1
#endif

namespace {

// ---------------------------------------------------------------------------
// Allocation
// ---------------------------------------------------------------------------

constexpr int64_t kHugeThresholdBytes = int64_t(2) << 20;
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kPoolMaxRegions = 12;               // free regions kept for reuse
constexpr size_t kPoolMaxBytes = size_t(768) << 20;  // ... holding at most this many bytes

// Large buffers come from anonymous mappings advised for transparent huge pages. When a tensor that owns one
// dies, the mapping goes back to a small process-wide pool instead of the kernel, so the next step's buffer of
// the same size is already faulted in (page-faulting 64 MB of fresh zero pages costs more than the kernels that
// fill it, and the training loop allocates the same sizes every step). Reused regions hold stale data: callers
// write every element (the table gradient is zeroed level by level by the backward itself).
struct Region {
  void* raw = nullptr;      // mmap result
  size_t len = 0;           // mmap length
  void* data = nullptr;     // 2 MB aligned start
  size_t capacity = 0;      // usable bytes from `data`
};

struct RegionPool {
  std::mutex mu;
  std::vector<Region> free;  // oldest first
  size_t free_bytes = 0;
  int64_t hits = 0, misses = 0;
};

RegionPool& pool() {
  static RegionPool* p = new RegionPool();  // never destroyed: deleters may run during interpreter shutdown
  return *p;
}

void release_region(const Region& r) {
#ifdef IMMERSIVEDEPTH_HAVE_MMAP
  RegionPool& p = pool();
  std::vector<Region> drop;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.free.push_back(r);
    p.free_bytes += r.len;
    while (!p.free.empty() && (p.free.size() > kPoolMaxRegions || p.free_bytes > kPoolMaxBytes)) {
      drop.push_back(p.free.front());
      p.free_bytes -= p.free.front().len;
      p.free.erase(p.free.begin());
    }
  }
  for (const Region& d : drop) munmap(d.raw, d.len);
#else
  (void)r;
#endif
}

// A float32 CPU tensor of the given sizes with unspecified contents: the caller writes every element.
at::Tensor alloc_uninit(at::IntArrayRef sizes) {
  int64_t numel = 1;
  for (auto s : sizes) numel *= s;
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(at::kCPU);
  const int64_t bytes = numel * static_cast<int64_t>(sizeof(float));
#ifdef IMMERSIVEDEPTH_HAVE_MMAP
  if (bytes >= kHugeThresholdBytes) {
    const size_t rounded = (static_cast<size_t>(bytes) + kHugePage - 1) / kHugePage * kHugePage;
    Region r;
    bool reused = false;
    {
      RegionPool& p = pool();
      std::lock_guard<std::mutex> lock(p.mu);
      for (size_t i = p.free.size(); i-- > 0;) {  // newest first: most likely still in the caches
        if (p.free[i].capacity == rounded) {
          r = p.free[i];
          p.free_bytes -= r.len;
          p.free.erase(p.free.begin() + static_cast<std::ptrdiff_t>(i));
          reused = true;
          break;
        }
      }
      if (reused) ++p.hits; else ++p.misses;
    }
    if (!reused) {
      const size_t len = rounded + kHugePage;
      void* raw = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (raw != MAP_FAILED) {
        const uintptr_t aligned = (reinterpret_cast<uintptr_t>(raw) + kHugePage - 1) / kHugePage * kHugePage;
#ifdef MADV_HUGEPAGE
        madvise(reinterpret_cast<void*>(aligned), rounded, MADV_HUGEPAGE);
#endif
        r = Region{raw, len, reinterpret_cast<void*>(aligned), rounded};
      }
    }
    if (r.raw != nullptr) {
      return torch::from_blob(r.data, sizes, [r](void*) { release_region(r); }, opts);
    }
  }
#endif
  return at::empty(sizes, opts);
}

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

// ---------------------------------------------------------------------------
// Fused MLP
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Occupancy-grid march
// ---------------------------------------------------------------------------

// The first `max_segments` occupied coarse segments of each ray (sampler.occupied_segments with perturb=False):
// segment k starts at lo = t0 + k * step (k < m, lo < t1); it is occupied when its midpoint's cell is set in
// `mask` (X, Y, Z). Same float32 operations in the same order as the torch version, so the results are equal.
// Returns (seg_lo (N, S) float32, seg_ok (N, S) bool).
// x * y rounded to float before any following addition (the compiler may otherwise contract `a + x * y` into
// one fused multiply-add, which rounds once and would differ from torch's separate mul and add kernels).
inline float rounded_mul(float x, float y) {
  volatile float p = x * y;
  return p;
}

std::vector<at::Tensor> occupied_segments_march(const at::Tensor& mask_in, const at::Tensor& bmin_in,
                                                const at::Tensor& cell_in, const at::Tensor& origins_in,
                                                const at::Tensor& dirs_in, const at::Tensor& t0_in,
                                                const at::Tensor& t1_in, double coarse_step, int64_t max_segments,
                                                int64_t m) {
  TORCH_CHECK(mask_in.dim() == 3, "occupancy march: mask must be (X, Y, Z)");
  TORCH_CHECK(origins_in.scalar_type() == at::kFloat && dirs_in.scalar_type() == at::kFloat &&
                  t0_in.scalar_type() == at::kFloat && t1_in.scalar_type() == at::kFloat,
              "occupancy march: rays must be float32");
  auto mask = mask_in.contiguous().to(at::kBool);
  auto bmin = bmin_in.contiguous().to(at::kFloat);
  auto cell = cell_in.contiguous().to(at::kFloat);
  auto origins = origins_in.contiguous();
  auto dirs = dirs_in.contiguous();
  auto t0 = t0_in.contiguous();
  auto t1 = t1_in.contiguous();
  const int64_t N = origins.size(0);
  auto seg_lo = at::zeros({N, max_segments}, origins.options());
  auto seg_ok = at::zeros({N, max_segments}, origins.options().dtype(at::kBool));
  const int64_t rx = mask.size(0), ry = mask.size(1), rz = mask.size(2);
  const bool* mk = mask.data_ptr<bool>();
  const float bx = bmin.data_ptr<float>()[0], by = bmin.data_ptr<float>()[1], bz = bmin.data_ptr<float>()[2];
  const float cx = cell.data_ptr<float>()[0], cy = cell.data_ptr<float>()[1], cz = cell.data_ptr<float>()[2];
  const float step = static_cast<float>(coarse_step);
  const float half = 0.5f * step;
  const float* o = origins.data_ptr<float>();
  const float* d = dirs.data_ptr<float>();
  const float* a = t0.data_ptr<float>();
  const float* b = t1.data_ptr<float>();
  float* lo_out = seg_lo.data_ptr<float>();
  bool* ok_out = seg_ok.data_ptr<bool>();
  at::parallel_for(0, N, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t found = 0;
      for (int64_t k = 0; k < m && found < max_segments; ++k) {
        const float lo = a[r] + rounded_mul(static_cast<float>(k), step);
        if (!(lo < b[r])) break;  // segments start in ray order: none after this one is inside
        const float probe = lo + half;
        const float px = o[3 * r] + rounded_mul(d[3 * r], probe);
        const float py = o[3 * r + 1] + rounded_mul(d[3 * r + 1], probe);
        const float pz = o[3 * r + 2] + rounded_mul(d[3 * r + 2], probe);
        const float fx = std::floor((px - bx) / cx), fy = std::floor((py - by) / cy), fz = std::floor((pz - bz) / cz);
        if (!(fx >= 0.f && fy >= 0.f && fz >= 0.f && fx < static_cast<float>(rx) && fy < static_cast<float>(ry) &&
              fz < static_cast<float>(rz)))
          continue;
        const int64_t i = static_cast<int64_t>(fx), j = static_cast<int64_t>(fy), l = static_cast<int64_t>(fz);
        if (mk[(i * ry + j) * rz + l]) {
          lo_out[r * max_segments + found] = lo;
          ok_out[r * max_segments + found] = true;
          ++found;
        }
      }
    }
  });
  return {seg_lo, seg_ok};
}

// (hits, misses, free regions, free bytes) of the large-buffer pool.
std::vector<int64_t> buffer_pool_stats() {
  RegionPool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return {p.hits, p.misses, static_cast<int64_t>(p.free.size()), static_cast<int64_t>(p.free_bytes)};
}

// Returns every pooled region to the kernel (buffers still owned by live tensors are not affected).
void buffer_pool_release() {
  std::vector<Region> drop;
  {
    RegionPool& p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    drop.swap(p.free);
    p.free_bytes = 0;
  }
#ifdef IMMERSIVEDEPTH_HAVE_MMAP
  for (const Region& d : drop) munmap(d.raw, d.len);
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ImmersiveDepth fused CPU kernels: tcnn-exact hash grid encoding and a chunked fused MLP";
  m.def("hashgrid_forward", &hashgrid_forward, "hash grid encoding forward (CPU)");
  m.def("hashgrid_backward", &hashgrid_backward, "hash grid encoding backward (CPU)");
  m.def("mlp_forward", &mlp_forward, "fused MLP forward, optionally saving hidden activations (CPU)");
  m.def("mlp_backward", &mlp_backward, "fused MLP backward, recomputing what the forward did not save (CPU)");
  m.def("occupied_segments_march", &occupied_segments_march, "first occupied coarse segments per ray (CPU)");
  m.def("buffer_pool_stats", &buffer_pool_stats, "(hits, misses, free regions, free bytes) of the buffer pool");
  m.def("buffer_pool_release", &buffer_pool_release, "unmap every pooled (free) buffer");
}
