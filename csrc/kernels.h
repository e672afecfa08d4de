// Framework-agnostic core of the memory kernels: plain C++ on raw pointers, shared by the CPU (OpenMP) and CUDA
// backends, which only differ in how they loop over the work items below.
// Semantics follow mirage_env/ops/reference.py (the spec). Floating point must match torch bitwise, so both
// backends are compiled without FMA contraction or fast-math.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define MIRAGE_HD __host__ __device__ __forceinline__
#else
#define MIRAGE_HD inline
#endif

namespace mirage {

constexpr int64_t kEmptyKey = INT64_MAX;  // packed z-buffer value of a pixel no point reaches
constexpr int kIndexBits = 32;
constexpr int64_t kMaxPoints = int64_t(1) << kIndexBits;  // the point index must fit the low key bits

struct ZbufferArgs {
  const float* points;   // [n, 3]
  int64_t n;
  const float* cameras;  // [b, 16]: 3x4 world-to-camera (row-major), fx, fy, cx, cy
  int64_t b, h, w;
  float near;            // float32, as torch compares zc > near
  int64_t* out;          // [b, h * w] packed keys
};

struct DepthArgs {
  const float* points;          // [n, 3]
  const int32_t* source_frame;  // [n]
  int64_t n;
  const float* near_depth;      // [t, h, w] nearest valid depth in each pixel's window, +inf where none
  const float* far_depth;       // [t, h, w] farthest valid depth in each pixel's window
  int64_t t, h, w;
  const float* cameras;         // [t, 16]
  float lo, hi;                 // float32(1 - margin), float32(1 + margin)
  float near;
  int32_t* out;                 // [n, 3]: visible, in_front, behind
};

struct CellArgs {
  const float* depth;    // [t, big_h, big_w]
  const uint8_t* sky;    // [t, big_h, big_w] (bool) or null
  int64_t t, big_h, big_w, stride;  // cells are stride x stride pixel blocks
  float far;             // depths above it (or infinite, or sky) are far; far pixels are seen at `far`
  float inv_count;       // float32(1 / stride^2)
  float* mean;           // [t, h, w] mean depth of blocks without far or empty pixels, else 0
  uint8_t* is_far;       // [t, h, w] any far pixel
  float* nearest;        // [t, h, w] nearest seen depth (+inf where no pixel has depth)
  int32_t* index;        // [t, h, w] row-major block index of the first nearest pixel (0 where none)
};

struct FuseArgs {
  const int64_t* unique_keys;  // [u]
  const int64_t* starts;       // [u + 1] segment bounds in the sorted order
  int64_t u;
  const int64_t* order;        // [m] sorted position -> original row
  const float* positions;      // [m, 3]
  const float* features;       // [m, c]
  int64_t c;
  const float* weights;        // [m]
  const int64_t* store_keys;   // [s] ascending
  const int64_t* store_slots;  // [s]
  int64_t s;
  float* pos_sum;              // [u, 3]
  float* feat_sum;             // [u, c]
  float* weight_sum;           // [u]
  int64_t* slot;               // [u]
};

// ---- shared device/host math --------------------------------------------------------------------------------

struct Pixel {
  float zc;
  int32_t x, y;  // 0 when outside
  bool inside;
};

// Reference `_project` of point (x, y, z) with one camera: the same float32 operations in the same order. Written
// without branches so that the CPU batch loop vectorises. Two exact shortcuts, with s = u + 0.5:
// * a point behind the camera divides by 1 as in the reference (its pixel is discarded anyway);
// * floor(s) >= 0 <=> s >= 0 and floor(s) < W <=> s < W for the integer-valued W = float(w), and on [0, W)
//   floor is truncation, so the reference's floor never has to be computed.
MIRAGE_HD Pixel project(float x, float y, float z, const float* cam, int64_t h, int64_t w, float near) {
  const float xc = ((x * cam[0] + y * cam[1]) + z * cam[2]) + cam[3];
  const float yc = ((x * cam[4] + y * cam[5]) + z * cam[6]) + cam[7];
  const float zc = ((x * cam[8] + y * cam[9]) + z * cam[10]) + cam[11];
  const bool in_front = zc > near;
  const float safe_z = in_front ? zc : 1.f;
  const float su = (cam[12] * (xc / safe_z) + cam[14]) + 0.5f;
  const float sv = (cam[13] * (yc / safe_z) + cam[15]) + 0.5f;
  const bool inside = in_front & (su >= 0.f) & (su < static_cast<float>(w)) & (sv >= 0.f) &
                      (sv < static_cast<float>(h));
  return Pixel{zc, static_cast<int32_t>(inside ? su : 0.f), static_cast<int32_t>(inside ? sv : 0.f), inside};
}

// float_bits(z) << 32 | index, as int64 (the reference's two's-complement result).
MIRAGE_HD int64_t pack_key(float z, int64_t index) {
  uint32_t bits;
  memcpy(&bits, &z, sizeof bits);
  return static_cast<int64_t>((static_cast<uint64_t>(bits) << kIndexBits) | static_cast<uint64_t>(index));
}

// Flat index of pixel (x, y) of camera c in the [b, h * w] output.
MIRAGE_HD int64_t pixel_offset(const ZbufferArgs& a, int64_t c, int64_t x, int64_t y) {
  return (c * a.h + y) * a.w + x;
}

// Visible / in-front / behind counts of point i over every frame but its source frame.
MIRAGE_HD void depth_votes(const DepthArgs& a, int64_t i) {
  const float* p = a.points + 3 * i;
  int32_t visible = 0, front = 0, behind = 0;
  for (int64_t t = 0; t < a.t; ++t) {
    if (a.source_frame[i] == t) continue;
    const Pixel px = project(p[0], p[1], p[2], a.cameras + 16 * t, a.h, a.w, a.near);
    if (!px.inside) continue;
    const int64_t at = (t * a.h + px.y) * a.w + px.x;
    const float nearest = a.near_depth[at];
    if (!(nearest < INFINITY)) continue;  // the reference's isfinite(dmin): only +inf depths count as none
    ++visible;
    front += px.zc < nearest * a.lo;
    behind += px.zc > a.far_depth[at] * a.hi;
  }
  a.out[3 * i] = visible;
  a.out[3 * i + 1] = front;
  a.out[3 * i + 2] = behind;
}

// Statistics of one cell (flat index over [t, h, w]): its pixels in row-major order, the sum in that order.
MIRAGE_HD void cell_stats(const CellArgs& a, int64_t cell) {
  const int64_t h = a.big_h / a.stride, w = a.big_w / a.stride;
  const int64_t frame = cell / (h * w), row = (cell / w) % h, col = cell % w;
  float sum = 0.f, best = INFINITY;
  int32_t best_k = 0;
  bool any_far = false, complete = true;
  for (int64_t i = 0; i < a.stride; ++i) {
    const int64_t at = (frame * a.big_h + row * a.stride + i) * a.big_w + col * a.stride;
    for (int64_t j = 0; j < a.stride; ++j) {
      const float d = a.depth[at + j];
      const bool far = !(d < INFINITY) || d > a.far || (a.sky != nullptr && a.sky[at + j] != 0);
      const float seen = far ? a.far : d;
      any_far |= far;
      complete &= !far && d > 0.f;
      sum += d;
      if (seen > 0.f && seen < best) {
        best = seen;
        best_k = static_cast<int32_t>(i * a.stride + j);
      }
    }
  }
  a.mean[cell] = complete ? sum * a.inv_count : 0.f;
  a.is_far[cell] = any_far;
  a.nearest[cell] = best;
  a.index[cell] = best_k;
}

// Slot of key in the ascending store (first match, as searchsorted), or -1.
MIRAGE_HD int64_t find_slot(const int64_t* keys, const int64_t* slots, int64_t s, int64_t key) {
  int64_t lo = 0, hi = s;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (keys[mid] < key) lo = mid + 1; else hi = mid;
  }
  return lo < s && keys[lo] == key ? slots[lo] : -1;
}

// Output columns per segment: 3 position sums, c feature sums, then weight sum and slot.
MIRAGE_HD int64_t fuse_columns(const FuseArgs& a) { return a.c + 4; }

// One output column of one segment, summed sequentially in sorted order (deterministic, as index_add_ on CPU).
MIRAGE_HD void fuse_column(const FuseArgs& a, int64_t seg, int64_t col) {
  const int64_t begin = a.starts[seg], end = a.starts[seg + 1];
  float sum = 0.f;
  if (col < 3 + a.c) {
    const bool pos = col < 3;
    const float* values = pos ? a.positions : a.features;
    const int64_t stride = pos ? 3 : a.c, j = pos ? col : col - 3;
    for (int64_t k = begin; k < end; ++k) sum += values[a.order[k] * stride + j] * a.weights[a.order[k]];
    (pos ? a.pos_sum : a.feat_sum)[seg * stride + j] = sum;
    return;
  }
  for (int64_t k = begin; k < end; ++k) sum += a.weights[a.order[k]];
  a.weight_sum[seg] = sum;
  a.slot[seg] = find_slot(a.store_keys, a.store_slots, a.s, a.unique_keys[seg]);
}

// ---- host-side argument checks (std::invalid_argument becomes ValueError in Python) --------------------------

inline void require(bool ok, const char* op, const char* what) {
  if (!ok) throw std::invalid_argument(std::string(op) + ": " + what);
}

inline void validate(const ZbufferArgs& a) {
  require(a.n >= 0 && a.b >= 0 && a.h >= 0 && a.w >= 0, "project_zbuffer", "sizes must be non-negative");
  require(a.n <= kMaxPoints, "project_zbuffer", "at most 2**32 points (the index has 32 key bits)");
  require(a.h <= INT32_MAX && a.w <= INT32_MAX, "project_zbuffer", "h and w must fit in int32");
  require((a.n == 0 || (a.points && a.cameras)) && (a.b * a.h * a.w == 0 || a.out), "project_zbuffer",
          "null data pointer");
}

inline void validate(const DepthArgs& a) {
  require(a.n >= 0 && a.t >= 0 && a.h >= 0 && a.w >= 0, "depth_consistency", "sizes must be non-negative");
  require(a.h <= INT32_MAX && a.w <= INT32_MAX, "depth_consistency", "h and w must fit in int32");
  require(a.n == 0 || (a.points && a.source_frame && a.out &&
                       (a.t == 0 || (a.near_depth && a.far_depth && a.cameras))),
          "depth_consistency", "null data pointer");
}

inline void validate(const CellArgs& a) {
  require(a.t >= 0 && a.big_h >= 0 && a.big_w >= 0, "cell_stats", "sizes must be non-negative");
  require(a.stride >= 1 && a.big_h % a.stride == 0 && a.big_w % a.stride == 0, "cell_stats",
          "stride must be >= 1 and divide the image size");
  require(a.stride * a.stride <= INT32_MAX, "cell_stats", "stride * stride must fit in int32");
  require(a.t * a.big_h * a.big_w == 0 || (a.depth && a.mean && a.is_far && a.nearest && a.index), "cell_stats",
          "null data pointer");
}

inline int64_t cell_count(const CellArgs& a) { return a.t * (a.big_h / a.stride) * (a.big_w / a.stride); }

inline void validate(const FuseArgs& a) {
  require(a.u >= 0 && a.c >= 0 && a.s >= 0, "segment_fuse", "sizes must be non-negative");
  require(a.u == 0 || (a.unique_keys && a.starts && a.order && a.positions && a.weights && a.pos_sum &&
                       a.weight_sum && a.slot && (a.c == 0 || (a.features && a.feat_sum))),
          "segment_fuse", "null data pointer");
  require(a.s == 0 || (a.store_keys && a.store_slots), "segment_fuse", "null data pointer");
}

}  // namespace mirage
