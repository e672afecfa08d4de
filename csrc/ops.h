// The two backends of the kernels in kernels.h. Each takes the argument struct plus a trailing launch argument:
// the OpenMP thread count on CPU, the cudaStream_t (as an integer) on CUDA. No CUDA types appear here, so the
// pybind11 bindings compile with the host compiler alone.
#pragma once

#include <cstdint>

#include "kernels.h"

namespace mirage {

struct CpuOps {
  using Launch = int;
  static constexpr const char* kLaunchName = "num_threads";
  static void project_zbuffer(const ZbufferArgs& a, int num_threads);
  static void depth_consistency(const DepthArgs& a, int num_threads);
  static void segment_fuse(const FuseArgs& a, int num_threads);
  static void cell_stats(const CellArgs& a, int num_threads);
  static bool has_openmp();
  static int max_threads();
};

struct CudaOps {
  using Launch = std::uintptr_t;
  static constexpr const char* kLaunchName = "stream";
  // Kernels are queued on the stream; launch errors raise std::runtime_error naming the kernel.
  static void project_zbuffer(const ZbufferArgs& a, std::uintptr_t stream);
  static void depth_consistency(const DepthArgs& a, std::uintptr_t stream);
  static void segment_fuse(const FuseArgs& a, std::uintptr_t stream);
  static void cell_stats(const CellArgs& a, std::uintptr_t stream);
  static int device_count();  // 0 when there is no driver or GPU; never throws
};

}  // namespace mirage
