// Large-buffer pool of the fused CPU ops (features, table gradient, level-major scratch, saved activations).
//
// Large buffers come from anonymous mmaps advised as transparent huge pages and are recycled through a small
// process-wide pool, so a training step does not page-fault them in again every time.

#include "field_ops.h"

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#define IMMERSIVEDEPTH_HAVE_MMAP 1
#endif

namespace {

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

}  // namespace

namespace immersivedepth {

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
      return at::from_blob(r.data, sizes, [r](void*) { release_region(r); }, opts);
    }
  }
#endif
  return at::empty(sizes, opts);
}

}  // namespace immersivedepth

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
