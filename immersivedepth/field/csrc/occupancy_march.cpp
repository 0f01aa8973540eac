// Occupancy-grid march (CPU): the first occupied coarse segments of each ray.

#include "field_ops.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <vector>

// The first `max_segments` occupied coarse segments of each ray (sampler.occupied_segments with perturb=False):
// segment k starts at lo = t0 + k * step (k < m, lo < t1); it is occupied when its midpoint's cell is set in
// `mask` (X, Y, Z). The march of ray r starts at k = k_start[r] (int64 (N,); an empty tensor: 0), so a ray can be
// marched on from where an earlier call stopped and get exactly the segments one longer march would have found. Same float32 operations in the same order as the torch version, so the results are equal.
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
                                                const at::Tensor& t1_in, const at::Tensor& k_start_in,
                                                double coarse_step, int64_t max_segments, int64_t m) {
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
  TORCH_CHECK(k_start_in.numel() == 0 || (k_start_in.numel() == N && k_start_in.scalar_type() == at::kLong),
              "occupancy march: k_start must be empty or int64 (N,)");
  auto k_start = k_start_in.contiguous();
  const int64_t* ks = k_start.numel() ? k_start.data_ptr<int64_t>() : nullptr;
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
      for (int64_t k = ks ? ks[r] : 0; k < m && found < max_segments; ++k) {
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
