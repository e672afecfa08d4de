"""Build the compiled kernels; project metadata lives in pyproject.toml.

* ``mirage_env._C``: CPU kernels (OpenMP), always built.
* ``mirage_env._C_cuda``: CUDA kernels, built when nvcc is found (``CUDA_HOME``/``CUDA_PATH``, else ``PATH``);
  cudart is linked statically, so the module imports on machines without a GPU or driver.

Environment: ``MIRAGE_ENV_CUDA`` = ``0`` skips CUDA, ``1`` makes a missing nvcc or a failing CUDA build an error,
``auto`` (default) builds it when possible and otherwise only warns. ``MIRAGE_ENV_CUDA_ARCH`` lists compute
capabilities (default ``80,90``): machine code for each, plus PTX for the last one.
No torch at build time: the kernels take raw data pointers.
"""

import os
import re
import shutil
import subprocess

from pybind11.setup_helpers import Pybind11Extension, has_flag
from setuptools import setup
from setuptools.command.build_ext import build_ext

# No FMA contraction (results bitwise equal to torch). -fno-trapping-math changes no value, it only lets the
# compiler vectorise the branch-free projection (FP exception flags are not observed).
CPU_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]
NVCC_FLAGS = ["-O3", "--fmad=false", "-std=c++17", "-Xcompiler", "-fPIC", "-Xcompiler", "-ffp-contract=off",
              "-Xcompiler", "-fvisibility=hidden"]
CUDA_LIBRARIES = ["cudart_static", "dl", "rt", "pthread"]
HEADERS = ["csrc/kernels.h", "csrc/ops.h", "csrc/bindings.h"]


def cuda_mode() -> str:
    mode = os.environ.get("MIRAGE_ENV_CUDA", "auto").strip().lower() or "auto"
    if mode not in ("0", "1", "auto"):
        raise ValueError(f"MIRAGE_ENV_CUDA={mode!r}: expected 0, 1 or auto")
    return mode


def find_nvcc() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def cuda_library_dirs(nvcc: str) -> list[str]:
    """The folders nvcc links cudart from, read from its dry run (this also sees through wrapper scripts)."""
    dry_run = subprocess.run([nvcc, "--dryrun", "-o", os.devnull, "probe.cu"], capture_output=True, text=True)
    for line in (dry_run.stdout + dry_run.stderr).splitlines():
        if "LIBRARIES=" in line:
            return [d for d in re.findall(r'-L"?([^"\s]+)', line) if os.path.basename(d.rstrip("/")) != "stubs"]
    raise RuntimeError(f"cannot find the CUDA library folder from `{nvcc} --dryrun`")


def cuda_archs() -> list[str]:
    archs = [a.replace(".", "") for a in re.split(r"[,;\s]+", os.environ.get("MIRAGE_ENV_CUDA_ARCH", "80,90")) if a]
    if not archs:
        raise ValueError("MIRAGE_ENV_CUDA_ARCH lists no architecture")
    return archs


def gencode_flags() -> list[str]:
    archs = cuda_archs()
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs] + [
        f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}"]


class BuildExt(build_ext):
    """Compiles .cu sources with nvcc; a CUDA build failure only skips _C_cuda unless MIRAGE_ENV_CUDA=1."""

    def build_extensions(self):
        self.summary, self.skipped = [], []
        if not has_flag(self.compiler, "-fopenmp"):
            self.warn("the C++ compiler does not accept -fopenmp: mirage_env._C is built single-threaded")
            for ext in self.extensions:
                ext.extra_compile_args = [f for f in ext.extra_compile_args if f != "-fopenmp"]
                ext.extra_link_args = [f for f in ext.extra_link_args if f != "-fopenmp"]
        super().build_extensions()
        self.extensions = [ext for ext in self.extensions if ext not in self.skipped]  # nothing to copy or install
        print("mirage_env extension modules:\n  " + "\n  ".join(self.summary), flush=True)

    def build_extension(self, ext):
        if not any(source.endswith(".cu") for source in ext.sources):
            super().build_extension(ext)
            self.summary.append(f"{ext.name}: built" + (" (OpenMP)" if "-fopenmp" in ext.extra_link_args else ""))
            return
        try:
            self.build_cuda_extension(ext)
            archs = cuda_archs()
            self.summary.append(f"{ext.name}: built (sm_{', sm_'.join(archs)} + PTX compute_{archs[-1]})")
        except Exception as error:
            if cuda_mode() == "1":
                raise
            self.warn(f"{ext.name} is not built ({error}); CUDA tensors will use the PyTorch reference")
            self.summary.append(f"{ext.name}: NOT built ({error})")
            self.skipped.append(ext)

    def build_cuda_extension(self, ext):
        nvcc = find_nvcc()
        if nvcc is None:
            raise RuntimeError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
        cuda_sources = [source for source in ext.sources if source.endswith(".cu")]
        ext.sources = [source for source in ext.sources if source not in cuda_sources]
        ext.extra_objects += [self.nvcc_compile(nvcc, source, ext.depends) for source in cuda_sources]
        ext.library_dirs += cuda_library_dirs(nvcc)
        super().build_extension(ext)

    def nvcc_compile(self, nvcc: str, source: str, depends: list[str]) -> str:
        obj = os.path.join(self.build_temp, source + ".o")
        inputs = [source, *depends]
        if self.force or not os.path.exists(obj) or os.path.getmtime(obj) < max(map(os.path.getmtime, inputs)):
            os.makedirs(os.path.dirname(obj), exist_ok=True)
            command = [nvcc, "-c", source, "-o", obj, *NVCC_FLAGS, *gencode_flags()]
            print(" ".join(command), flush=True)
            if subprocess.run(command).returncode != 0:
                raise RuntimeError(f"nvcc failed on {source} (its errors are above)")
        return obj


def extensions() -> list[Pybind11Extension]:
    modules = [Pybind11Extension("mirage_env._C", ["csrc/module_cpu.cpp", "csrc/cpu_ops.cpp"], depends=HEADERS,
                                 cxx_std=17, extra_compile_args=CPU_FLAGS, extra_link_args=["-fopenmp"])]
    if cuda_mode() != "0":
        modules.append(Pybind11Extension("mirage_env._C_cuda", ["csrc/module_cuda.cpp", "csrc/cuda_ops.cu"],
                                         depends=HEADERS + ["csrc/cuda_ops.cu"], cxx_std=17,
                                         extra_compile_args=["-O3", "-ffp-contract=off"],
                                         libraries=CUDA_LIBRARIES, extra_link_args=["-Wl,--exclude-libs,ALL"]))
    return modules


if __name__ == "__main__":
    setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
