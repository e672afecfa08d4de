// mirage_env._C: the CPU (OpenMP) kernels.
#include "bindings.h"

PYBIND11_MODULE(_C, m) {
  using mirage::CpuOps;
  m.doc() = "CPU (OpenMP) kernels of mirage_env.ops; call them through mirage_env.ops.extension.";
  mirage::def_kernels<CpuOps>(m);
  m.def("has_openmp", &CpuOps::has_openmp, "Whether the module was built with OpenMP.", mirage::Release());
  m.def("max_threads", &CpuOps::max_threads, "omp_get_max_threads(), or 1 without OpenMP.", mirage::Release());
}
