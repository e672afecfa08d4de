// CUDA backend: grid-stride kernels over the per-item functions of kernels.h, queued on the caller's stream.
// Built with --fmad=false (and IEEE division, no fast-math) so the projection matches torch bitwise.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "ops.h"

namespace mirage {
namespace {

constexpr int kBlock = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride beyond this

template <class Item>
__global__ void for_each_kernel(int64_t total, Item item) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    item(k);
  }
}

// Runs item(k) for k in [0, total) on the stream; a launch error becomes std::runtime_error naming the kernel.
template <class Item>
void launch(const char* name, int64_t total, std::uintptr_t stream, Item item) {
  if (total == 0) return;
  const int64_t blocks = std::min((total + kBlock - 1) / kBlock, kMaxBlocks);
  for_each_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, reinterpret_cast<cudaStream_t>(stream)>>>(total, item);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("mirage_env._C_cuda: kernel ") + name + " failed: " + cudaGetErrorString(err));
  }
}

struct FillEmpty {
  int64_t* out;
  __device__ void operator()(int64_t k) const { out[k] = kEmptyKey; }
};

// One (point, camera) pair; a signed 64-bit atomicMin (the reference's int64 order) keeps the nearest depth,
// then the lowest index.
struct Splat {
  ZbufferArgs a;
  __device__ void operator()(int64_t k) const {
    const int64_t i = k / a.b, c = k % a.b;
    const float* p = a.points + 3 * i;
    const Pixel px = project(p[0], p[1], p[2], a.cameras + 16 * c, a.h, a.w, a.near);
    if (px.inside) {
      atomicMin(reinterpret_cast<long long*>(a.out + pixel_offset(a, c, px.x, px.y)),
                static_cast<long long>(pack_key(px.zc, i)));
    }
  }
};

struct Votes {
  DepthArgs a;
  __device__ void operator()(int64_t i) const { depth_votes(a, i); }
};

struct Cells {
  CellArgs a;
  __device__ void operator()(int64_t cell) const { cell_stats(a, cell); }
};

// One (segment, output column) pair.
struct Fuse {
  FuseArgs a;
  __device__ void operator()(int64_t k) const { fuse_column(a, k / fuse_columns(a), k % fuse_columns(a)); }
};

}  // namespace

void CudaOps::project_zbuffer(const ZbufferArgs& a, std::uintptr_t stream) {
  validate(a);
  launch("project_zbuffer_fill", a.b * a.h * a.w, stream, FillEmpty{a.out});
  launch("project_zbuffer_splat", a.n * a.b, stream, Splat{a});
}

void CudaOps::depth_consistency(const DepthArgs& a, std::uintptr_t stream) {
  validate(a);
  launch("depth_consistency", a.n, stream, Votes{a});
}

void CudaOps::segment_fuse(const FuseArgs& a, std::uintptr_t stream) {
  validate(a);
  launch("segment_fuse", a.u * fuse_columns(a), stream, Fuse{a});
}

void CudaOps::cell_stats(const CellArgs& a, std::uintptr_t stream) {
  validate(a);
  launch("cell_stats", cell_count(a), stream, Cells{a});
}

int CudaOps::device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the error so it does not surface at the next launch
    return 0;
  }
  return count;
}

}  // namespace mirage
