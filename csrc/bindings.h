// pybind11 bindings shared by mirage_env._C and mirage_env._C_cuda. Tensors arrive as raw data pointers (Python
// ints, see mirage_env/ops/extension.py); every call runs with the GIL released.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "ops.h"

namespace mirage {

namespace py = pybind11;
using Ptr = std::uintptr_t;
using Release = py::call_guard<py::gil_scoped_release>;

template <class T>
T* as(Ptr p) {
  return reinterpret_cast<T*>(p);
}

// Defines project_zbuffer, depth_consistency, segment_fuse and cell_stats on `m`, running on backend `Ops`.
template <class Ops>
void def_kernels(py::module_& m) {
  using Launch = typename Ops::Launch;
  m.def(
      "project_zbuffer",
      [](Ptr points, int64_t n, Ptr cameras, int64_t b, int64_t h, int64_t w, double near, Ptr out, Launch launch) {
        // torch compares zc > near in float32
        Ops::project_zbuffer({as<const float>(points), n, as<const float>(cameras), b, h, w,
                              static_cast<float>(near), as<int64_t>(out)},
                             launch);
      },
      "Packed z-buffer keys int64 [b, h*w] (see mirage_env.ops.reference.project_zbuffer).", py::arg("points"),
      py::arg("n"), py::arg("cameras"), py::arg("b"), py::arg("h"), py::arg("w"), py::arg("near"), py::arg("out"),
      py::arg(Ops::kLaunchName), Release());
  m.def(
      "depth_consistency",
      [](Ptr points, Ptr source_frame, int64_t n, Ptr near_depth, Ptr far_depth, int64_t t, int64_t h, int64_t w,
         Ptr cameras, double margin, double near, Ptr out, Launch launch) {
        // the reference rounds 1 -/+ margin (computed in double) to float32
        Ops::depth_consistency({as<const float>(points), as<const int32_t>(source_frame), n,
                                as<const float>(near_depth), as<const float>(far_depth),
                                t, h, w, as<const float>(cameras), static_cast<float>(1.0 - margin),
                                static_cast<float>(1.0 + margin), static_cast<float>(near),
                                as<int32_t>(out)},
                               launch);
      },
      "Visible / in-front / behind counts int32 [n, 3] (see mirage_env.ops.reference.depth_consistency).",
      py::arg("points"), py::arg("source_frame"), py::arg("n"), py::arg("near_depth"), py::arg("far_depth"),
      py::arg("t"), py::arg("h"), py::arg("w"), py::arg("cameras"), py::arg("margin"), py::arg("near"), py::arg("out"),
      py::arg(Ops::kLaunchName), Release());
  m.def(
      "segment_fuse",
      [](Ptr unique_keys, Ptr starts, int64_t u, Ptr order, Ptr positions, Ptr features, int64_t c, Ptr weights,
         Ptr store_keys, Ptr store_slots, int64_t s, Ptr pos_sum, Ptr feat_sum, Ptr weight_sum, Ptr slot,
         Launch launch) {
        Ops::segment_fuse({as<const int64_t>(unique_keys), as<const int64_t>(starts), u, as<const int64_t>(order),
                           as<const float>(positions), as<const float>(features), c, as<const float>(weights),
                           as<const int64_t>(store_keys), as<const int64_t>(store_slots), s, as<float>(pos_sum),
                           as<float>(feat_sum), as<float>(weight_sum), as<int64_t>(slot)},
                          launch);
      },
      "Weighted per-segment sums and store slots (see mirage_env.ops.reference.segment_fuse).",
      py::arg("unique_keys"), py::arg("starts"), py::arg("u"), py::arg("order"), py::arg("positions"),
      py::arg("features"), py::arg("c"), py::arg("weights"), py::arg("store_keys"), py::arg("store_slots"),
      py::arg("s"), py::arg("pos_sum"), py::arg("feat_sum"), py::arg("weight_sum"), py::arg("slot"),
      py::arg(Ops::kLaunchName), Release());
  m.def(
      "cell_stats",
      [](Ptr depth, Ptr sky, int64_t t, int64_t big_h, int64_t big_w, int64_t stride, double far, Ptr mean,
         Ptr is_far, Ptr nearest, Ptr index, Launch launch) {
        // the reference compares in float32 and multiplies by float32(1 / stride^2)
        const double count = stride >= 1 ? static_cast<double>(stride) * static_cast<double>(stride) : 1.0;
        Ops::cell_stats({as<const float>(depth), as<const uint8_t>(sky), t, big_h, big_w, stride,
                         static_cast<float>(far), static_cast<float>(1.0 / count), as<float>(mean),
                         as<uint8_t>(is_far), as<float>(nearest), as<int32_t>(index)},
                        launch);
      },
      "Per-cell mean, far flag, nearest depth and its block index (see mirage_env.ops.reference.cell_stats).",
      py::arg("depth"), py::arg("sky"), py::arg("t"), py::arg("big_h"), py::arg("big_w"), py::arg("stride"),
      py::arg("far"), py::arg("mean"), py::arg("is_far"), py::arg("nearest"), py::arg("index"),
      py::arg(Ops::kLaunchName), Release());
}

}  // namespace mirage
