"""The compiled extension: mirage_env._C is built with OpenMP, the CUDA sources compile here, _C_cuda imports."""

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def test_cpu_module_imports_and_reports_openmp():
    c = importlib.import_module("mirage_env._C")
    assert isinstance(c.has_openmp(), bool)
    if sys.platform.startswith("linux"):
        assert c.has_openmp(), "mirage_env._C was built without OpenMP"
    assert c.max_threads() >= 1


def test_cpu_module_rejects_bad_sizes_with_value_error():
    c = importlib.import_module("mirage_env._C")
    with pytest.raises(ValueError, match="non-negative"):
        c.project_zbuffer(0, -1, 0, 1, 1, 1, 0.1, 0, 1)
    with pytest.raises(ValueError, match="non-negative"):
        c.depth_consistency(0, 0, 0, 0, 0, -1, 1, 1, 0, 0.1, 0.1, 0, 1)
    with pytest.raises(ValueError, match="num_threads"):
        c.segment_fuse(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cuda_translation_unit_compiles(tmp_path):
    # the flags that matter from setup.py; one architecture keeps this at a few seconds
    command = ["nvcc", "-c", str(CSRC / "cuda_ops.cu"), "-o", str(tmp_path / "cuda_ops.o"), "-O3", "--fmad=false",
               "-std=c++17", "-Xcompiler", "-fPIC", "-gencode=arch=compute_80,code=sm_80"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cuda_ops.o").stat().st_size > 0


def test_cuda_module_device_count_never_throws():
    cuda = pytest.importorskip("mirage_env._C_cuda", reason="mirage_env._C_cuda is not built")
    count = cuda.device_count()
    assert isinstance(count, int) and count >= 0


def test_cuda_module_without_device_raises_runtime_error_naming_the_kernel():
    cuda = pytest.importorskip("mirage_env._C_cuda", reason="mirage_env._C_cuda is not built")
    if cuda.device_count() > 0:
        pytest.skip("a CUDA device is present; launching on fake pointers would corrupt its context")
    fake = 256  # never dereferenced: the launch fails first
    with pytest.raises(RuntimeError, match="project_zbuffer_fill"):
        cuda.project_zbuffer(fake, 1, fake, 1, 1, 1, 0.1, fake, 0)
