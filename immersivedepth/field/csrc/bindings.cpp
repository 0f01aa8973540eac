// Python bindings of ImmersiveDepth's fused CPU ops (each op lives in its own source file, see field_ops.h).

#include <torch/extension.h>

#include "field_ops.h"

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
