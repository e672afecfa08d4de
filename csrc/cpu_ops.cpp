// CPU backend: OpenMP loops over the per-item kernels of kernels.h. Results do not depend on the thread count.
#include <algorithm>

#include "ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mirage {
namespace {

constexpr int64_t kBatch = 256;  // points projected per vectorised batch

int checked_threads(int num_threads, const char* op) {
  require(num_threads >= 1, op, "num_threads must be >= 1");
  return num_threads;
}

// *target = min(*target, key); min is order independent, so racing threads give the same result.
inline void atomic_min(int64_t* target, int64_t key) {
  int64_t seen = __atomic_load_n(target, __ATOMIC_RELAXED);
  while (key < seen && !__atomic_compare_exchange_n(target, &seen, key, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

// Points [begin, end) into every camera. The batch is first transposed to columns, so that projecting it is a
// branch-free unit-stride loop the compiler vectorises; then the keys of the points inside are merged.
void splat_batch(const ZbufferArgs& a, int64_t begin, int64_t end) {
  float x[kBatch], y[kBatch], z[kBatch], zc[kBatch];
  int32_t px[kBatch], py[kBatch], inside[kBatch];
  const int count = static_cast<int>(end - begin);
  for (int k = 0; k < count; ++k) {
    const float* p = a.points + 3 * (begin + k);
    x[k] = p[0];
    y[k] = p[1];
    z[k] = p[2];
  }
  for (int64_t c = 0; c < a.b; ++c) {
    for (int k = 0; k < count; ++k) {
      const Pixel pixel = project(x[k], y[k], z[k], a.cameras + 16 * c, a.h, a.w, a.near);
      px[k] = pixel.x;
      py[k] = pixel.y;
      zc[k] = pixel.zc;
      inside[k] = pixel.inside;
    }
    for (int k = 0; k < count; ++k) {
      if (inside[k]) atomic_min(a.out + pixel_offset(a, c, px[k], py[k]), pack_key(zc[k], begin + k));
    }
  }
}

}  // namespace

void CpuOps::project_zbuffer(const ZbufferArgs& a, int num_threads) {
  validate(a);
  const int threads = checked_threads(num_threads, "project_zbuffer");
  const int64_t size = a.b * a.h * a.w;
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t k = 0; k < size; ++k) a.out[k] = kEmptyKey;
#pragma omp for schedule(static)
    for (int64_t begin = 0; begin < a.n; begin += kBatch) splat_batch(a, begin, std::min(begin + kBatch, a.n));
  }
}

void CpuOps::depth_consistency(const DepthArgs& a, int num_threads) {
  validate(a);
  const int threads = checked_threads(num_threads, "depth_consistency");
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < a.n; ++i) depth_votes(a, i);
}

void CpuOps::segment_fuse(const FuseArgs& a, int num_threads) {
  validate(a);
  const int threads = checked_threads(num_threads, "segment_fuse");
  const int64_t columns = fuse_columns(a);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t seg = 0; seg < a.u; ++seg) {
    for (int64_t col = 0; col < columns; ++col) fuse_column(a, seg, col);
  }
}

bool CpuOps::has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int CpuOps::max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace mirage
