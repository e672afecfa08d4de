"""Shared helpers of the benchmarks: best-of timing, peak memory of a call, results as JSON, plots as PNG.

Peak memory on the CPU is the peak resident set size (``VmHWM``) reached during the call minus the resident size
before it: ``/proc/self/clear_refs`` resets the high-water mark (Linux), and large blocks are served by mmap so
that freed memory leaves the process and every call starts from what is really live. On CUDA it is
``torch.cuda.max_memory_allocated`` over the call minus the memory allocated before it.
"""

from __future__ import annotations

import ctypes
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mirage_env.atomic import atomic_file, write_text
from mirage_env.memory import LatentSpatialMemory, MemoryConfig
from mirage_env.memory.voxels import pack_voxel_keys, voxel_coords

RESULTS = Path(__file__).parent / "results"
_M_MMAP_THRESHOLD = -3  # glibc mallopt: fixed threshold (no dynamic growth) so big blocks are unmapped on free

try:
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 1 << 16)
except OSError:  # not glibc: peaks may then include memory freed earlier but kept by the allocator
    _LIBC = None


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device) -> tuple[float, int, Any]:
    """(milliseconds, peak bytes above the memory in use before the call, result) of one call of ``fn``."""
    gc.collect()
    _sync(device)
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        base = _proc_status("VmRSS")
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    result = fn()
    _sync(device)
    ms = (time.perf_counter() - start) * 1e3
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _proc_status("VmHWM")
    return ms, max(peak - base, 0), result


def best_of(fn: Callable[[], Any], repeat: int, device: torch.device,
            warmup: bool = True) -> tuple[dict[str, float], Any]:
    """Fastest time (ms), median time (ms) and smallest peak (bytes) over ``repeat`` calls, after one untimed call if
    ``warmup``; and the last result."""
    if warmup:
        fn()
    runs = [measure(fn, device) for _ in range(repeat)]
    stats = {"ms": min(r[0] for r in runs), "median_ms": statistics.median(r[0] for r in runs),
             "peak_bytes": min(r[1] for r in runs), "runs": len(runs)}
    return stats, runs[-1][2]


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info = {"threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def save(name: str, payload: dict[str, Any], figure) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``results/<name>.png``; returns both paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, png_path = RESULTS / f"{name}.json", RESULTS / f"{name}.png"
    write_text(json_path, json.dumps(payload, indent=2, default=str))
    with atomic_file(png_path) as temp:
        figure.savefig(temp, dpi=120, bbox_inches="tight")
    return json_path, png_path


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (``pip install mirage-env[bench]``)."""
    try:
        import matplotlib
    except ImportError as error:
        raise SystemExit("the benchmarks plot with matplotlib: pip install 'mirage-env[bench]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def synthetic_memory(feature_dim: int, voxel_size: float, points: torch.Tensor,
                     generator: torch.Generator) -> LatentSpatialMemory:
    """A valid CPU memory (as after one write) holding the voxels of ``points``: the first point of each voxel,
    random features. With voxels far smaller than the points' spacing nearly every point is its own voxel."""
    keys = pack_voxel_keys(voxel_coords(points, voxel_size))
    sorted_keys, order = torch.sort(keys, stable=True)
    first = torch.ones_like(sorted_keys, dtype=torch.bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    kept = order[first].sort().values
    n = kept.numel()
    memory = LatentSpatialMemory(MemoryConfig(feature_dim=feature_dim, voxel_size=voxel_size, capacity=n))
    state = memory.state_dict()
    state.update(positions=points[kept], features=torch.randn(n, feature_dim, generator=generator),
                 weights=torch.ones(n), last_seen=torch.ones(n, dtype=torch.int64), keys=keys[kept],
                 step=torch.ones(1, dtype=torch.int64))
    memory.load_state_dict(state)
    return memory
