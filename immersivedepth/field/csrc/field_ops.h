// Shared declarations of ImmersiveDepth's fused CPU ops (one source file per op, bound in bindings.cpp).
//
// Parallelism everywhere uses at::parallel_for (torch's own OpenMP runtime and thread count).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace immersivedepth {

// A float32 CPU tensor of the given sizes with unspecified contents (the caller writes every element); large
// ones come from the recycled huge-page buffer pool (buffer_pool.cpp).
at::Tensor alloc_uninit(at::IntArrayRef sizes);

}  // namespace immersivedepth

// buffer_pool.cpp
std::vector<int64_t> buffer_pool_stats();
void buffer_pool_release();

// hashgrid.cpp
at::Tensor hashgrid_forward(const at::Tensor& x_in, const at::Tensor& table_in, const at::Tensor& scales,
                            const at::Tensor& resolutions, const at::Tensor& offsets, const at::Tensor& dense,
                            int64_t F);
std::vector<at::Tensor> hashgrid_backward(const at::Tensor& x_in, const at::Tensor& table_in,
                                          const at::Tensor& grad_out_in, const at::Tensor& scales,
                                          const at::Tensor& resolutions, const at::Tensor& offsets,
                                          const at::Tensor& dense, int64_t F, bool need_grad_x, int64_t block);

// fused_mlp.cpp
std::vector<at::Tensor> mlp_forward(const at::Tensor& x_in, const std::vector<at::Tensor>& weights,
                                    const std::vector<at::Tensor>& biases, int64_t act, int64_t out_act, int64_t chunk,
                                    bool save_hidden);
std::vector<at::Tensor> mlp_backward(const at::Tensor& x_in, const std::vector<at::Tensor>& weights,
                                     const std::vector<at::Tensor>& biases, const at::Tensor& grad_y_in, int64_t act,
                                     int64_t out_act, int64_t chunk, bool need_grad_x, const at::Tensor& hidden);

// occupancy_march.cpp
std::vector<at::Tensor> occupied_segments_march(const at::Tensor& mask_in, const at::Tensor& bmin_in,
                                                const at::Tensor& cell_in, const at::Tensor& origins_in,
                                                const at::Tensor& dirs_in, const at::Tensor& t0_in,
                                                const at::Tensor& t1_in, const at::Tensor& k_start_in,
                                                double coarse_step, int64_t max_segments, int64_t m);
