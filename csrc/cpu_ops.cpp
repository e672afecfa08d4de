// CPU backend: OpenMP loops over the per-item kernels of kernels.h. Results do not depend on the thread count.
#include <algorithm>
#include <vector>

#include "ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mirage {
namespace {

// Points are handled in chunks: deinterleaved, projected with vector instructions, then merged into the z-buffer one
// by one. A fixed size lets the compiler unroll the vector loops fully (with 16 or 32, GCC 12 loads each coordinate
// separately instead of shuffling whole vectors).
constexpr int kChunk = 64;
// Points per block handed to a thread (48 KB of input): small enough to balance N ~ 1e5 over the threads.
constexpr int64_t kBlock = 64 * kChunk;
// Prefetch distance in points (about 4 KiB ahead). The hardware prefetcher alone leaves the loads of each chunk
// waiting on memory between two bursts of arithmetic; prefetching overlaps them with the arithmetic (most where the
// points come from DRAM rather than the last-level cache).
constexpr int64_t kPrefetchPoints = 4096 / 12;
// Per-thread z-buffers merged by min at the end, instead of atomics, while a buffer has at most this many pixels.
constexpr int64_t kPrivateMaxPixels = int64_t(1) << 18;  // 2 MiB of keys per thread
// Index of the low 32-bit word of an int64 in memory.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
constexpr int kLowWord = 1;
#else
constexpr int kLowWord = 0;
#endif

// The splat loop is compiled for AVX-512, AVX2 and baseline x86-64, and the loader picks the clone that the CPU
// runs (an ifunc), so one portable wheel uses the wide vectors where they exist. All clones give identical bits:
// the same IEEE float32 operations in the same order, no FMA (-ffp-contract=off), exact division.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define MIRAGE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MIRAGE_CLONES
#endif

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

// The k-th int64 key of a chunk, stored as two 32-bit words.
inline int64_t key_at(const uint32_t* words, int k) {
  int64_t key;
  memcpy(&key, words + 2 * k, sizeof key);
  return key;
}

// Points [begin, end) into every camera's h * w plane of `zbuf`, which this thread alone writes unless `shared`
// (then through atomic min). Requires h * w <= INT32_MAX: pixel offsets are int32, twice as many per vector.
MIRAGE_CLONES void splat_range(const ZbufferArgs& a, int64_t begin, int64_t end, int64_t* zbuf, bool shared) {
  alignas(64) float x[kChunk], y[kChunk], z[kChunk], padded[3 * kChunk];
  alignas(64) int32_t offset[kChunk];
  alignas(64) uint32_t key_words[2 * kChunk];  // the int64 keys as 32-bit halves, in memory order
  const int32_t h = static_cast<int32_t>(a.h), w = static_cast<int32_t>(a.w);
  const int32_t spread = a.h * a.w >= kChunk ? kChunk - 1 : 0;
  for (int64_t first = begin; first < end; first += kChunk) {
    const float* xyz = a.points + 3 * first;
    if (end - first < kChunk) {  // a partial last chunk: pad it with NaN points, which are never drawn
      std::fill(padded, padded + 3 * kChunk, NAN);
      std::copy(xyz, xyz + 3 * (end - first), padded);
      xyz = padded;
    } else if (first + kPrefetchPoints + kChunk <= a.n) {
      const char* ahead = reinterpret_cast<const char*>(xyz + 3 * kPrefetchPoints);
      for (int byte = 0; byte < 3 * kChunk * 4; byte += 64) __builtin_prefetch(ahead + byte);
    }
    for (int k = 0; k < kChunk; ++k) {
      x[k] = xyz[3 * k];
      y[k] = xyz[3 * k + 1];
      z[k] = xyz[3 * k + 2];
    }
    for (int64_t c = 0; c < a.b; ++c) {
      float cam[16];  // a local copy: GCC otherwise reloads (masked) camera entries inside the vector loop
      for (int i = 0; i < 16; ++i) cam[i] = a.cameras[16 * c + i];
      // Branch-free, so it vectorises. A point not drawn gets kEmptyKey, which min leaves unchanged, at offset k
      // (not 0), so that such points do not chain their loads and stores on one address. The key pack_key(zc, i)
      // is written as its two 32-bit words: 64-bit lanes would keep the baseline (SSE2) clone scalar.
      for (int64_t k = 0; k < kChunk; ++k) {
        const Pixel p = project(x[k], y[k], z[k], cam, h, w, a.near);
        uint32_t depth_bits;
        memcpy(&depth_bits, &p.zc, sizeof depth_bits);
        offset[k] = p.inside ? p.y * w + p.x : (static_cast<int32_t>(k) & spread);
        key_words[2 * k + kLowWord] = p.inside ? static_cast<uint32_t>(first + k) : UINT32_MAX;
        key_words[2 * k + 1 - kLowWord] = p.inside ? depth_bits : uint32_t(INT32_MAX);
      }
      int64_t* plane = zbuf + c * a.h * a.w;
      if (shared) {
        for (int k = 0; k < kChunk; ++k) atomic_min(plane + offset[k], key_at(key_words, k));
      } else {
#pragma GCC unroll 8  // the loop is a handful of instructions: unrolled, its own add, compare and jump run less often
        for (int k = 0; k < kChunk; ++k) {
          const int64_t key = key_at(key_words, k), seen = plane[offset[k]];
          plane[offset[k]] = key < seen ? key : seen;  // branch-free: wins are unpredictable
        }
      }
    }
  }
}

// Images of more than INT32_MAX pixels: one point at a time with int64 offsets, through atomic min.
void splat_range_large(const ZbufferArgs& a, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float* p = a.points + 3 * i;
    for (int64_t c = 0; c < a.b; ++c) {
      const Pixel px = project(p[0], p[1], p[2], a.cameras + 16 * c, a.h, a.w, a.near);
      if (px.inside) atomic_min(a.out + pixel_offset(a, c, px.x, px.y), pack_key(px.zc, i));
    }
  }
}

}  // namespace

void CpuOps::project_zbuffer(const ZbufferArgs& a, int num_threads) {
  validate(a);
  const int threads = checked_threads(num_threads, "project_zbuffer");
  const int64_t size = a.b * a.h * a.w;
  if (size == 0) return;
  const bool large = a.h * a.w > INT32_MAX;
  // Several threads each fill a private copy when it is small and the points outnumber the pixels of all copies
  // (merging them then costs less than the splat); otherwise they share `out` through atomic min. One thread owns
  // `out`.
  const bool private_copies = !large && threads > 1 && size <= kPrivateMaxPixels && size * threads <= a.n * a.b;
  std::vector<int64_t> copies(private_copies ? (threads - 1) * size : 0);
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int thread = omp_get_thread_num(), team = omp_get_num_threads();
#else
    const int thread = 0, team = 1;
#endif
    const bool owned = team == 1 || private_copies;  // no other thread writes this thread's zbuf
    int64_t* zbuf = owned && thread > 0 ? copies.data() + (thread - 1) * size : a.out;
    if (owned) {
      std::fill(zbuf, zbuf + size, kEmptyKey);
    } else {
#pragma omp for schedule(static)
      for (int64_t k = 0; k < size; ++k) a.out[k] = kEmptyKey;
    }
    // Blocks of points are handed out as threads ask for them, so that a thread the OS leaves waiting (a busy
    // machine) does not hold the others back. min is order independent: any assignment gives the same keys.
    const int64_t blocks = (a.n + kBlock - 1) / kBlock;
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t begin = block * kBlock, end = std::min(a.n, begin + kBlock);
      if (large) splat_range_large(a, begin, end); else splat_range(a, begin, end, zbuf, !owned);
    }
    if (private_copies && team > 1) {
#pragma omp for schedule(static)
      for (int64_t k = 0; k < size; ++k) {
        int64_t best = a.out[k];
        for (int t = 1; t < team; ++t) best = std::min(best, copies[(t - 1) * size + k]);
        a.out[k] = best;
      }
    }
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

void CpuOps::cell_stats(const CellArgs& a, int num_threads) {
  validate(a);
  const int threads = checked_threads(num_threads, "cell_stats");
  const int64_t cells = cell_count(a);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t cell = 0; cell < cells; ++cell) mirage::cell_stats(a, cell);
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
