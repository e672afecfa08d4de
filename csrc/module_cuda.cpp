// mirage_env._C_cuda: the CUDA kernels (cudart linked statically, so importing needs no driver).
#include "bindings.h"

PYBIND11_MODULE(_C_cuda, m) {
  using mirage::CudaOps;
  m.doc() = "CUDA kernels of mirage_env.ops; call them through mirage_env.ops.extension.";
  mirage::def_kernels<CudaOps>(m);
  m.def("device_count", &CudaOps::device_count, "Visible CUDA devices; 0 without a driver or GPU.",
        mirage::Release());
}
