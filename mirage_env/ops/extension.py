"""Thin wrappers that call the compiled kernels (``mirage_env._C`` on CPU, ``mirage_env._C_cuda`` on CUDA).

The extension is built without libtorch: tensors cross the boundary as raw data pointers. These wrappers check
dtype, device and contiguity, allocate every output with torch, pass the current CUDA stream, and the C++ side
releases the GIL. Signatures and semantics follow :mod:`mirage_env.ops.reference` exactly.
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType

import torch

from mirage_env.ops.reference import EMPTY_KEY


def load_module(device_type: str) -> ModuleType | None:
    """Import the compiled module for ``device_type`` ("cpu" or "cuda"); None when it was not built."""
    name = "mirage_env._C" if device_type == "cpu" else "mirage_env._C_cuda"
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _check(name: str, tensor: torch.Tensor, dtype: torch.dtype, device: torch.device, ndim: int) -> None:
    if tensor.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {tensor.dtype}")
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device}, expected {device}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(tensor.shape)}")
    if not tensor.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _launch_args(device: torch.device) -> tuple[int]:
    """Trailing argument of every kernel: the thread count on CPU, the current stream on CUDA."""
    if device.type == "cuda":
        return (torch.cuda.current_stream(device).cuda_stream,)
    return (torch.get_num_threads(),)


def _on_device(device: torch.device):
    """Make ``device`` current while a CUDA kernel launches (tensors on cuda:1 while cuda:0 is current)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def project_zbuffer(module: ModuleType, points: torch.Tensor, cameras: torch.Tensor, h: int, w: int,
                    near: float) -> torch.Tensor:
    device = points.device
    _check("points", points, torch.float32, device, 2)
    _check("cameras", cameras, torch.float32, device, 2)
    out = torch.empty((cameras.shape[0], h * w), dtype=torch.int64, device=device)
    if out.numel() == 0:
        return out
    if points.shape[0] == 0:
        return out.fill_(EMPTY_KEY)
    with _on_device(device):
        module.project_zbuffer(points.data_ptr(), points.shape[0], cameras.data_ptr(), cameras.shape[0], h, w,
                               float(near), out.data_ptr(), *_launch_args(device))
    return out


def depth_consistency(module: ModuleType, points: torch.Tensor, source_frame: torch.Tensor,
                      near_depth: torch.Tensor, far_depth: torch.Tensor, cameras: torch.Tensor, margin: float,
                      near: float) -> torch.Tensor:
    device = points.device
    _check("points", points, torch.float32, device, 2)
    _check("source_frame", source_frame, torch.int32, device, 1)
    _check("near_depth", near_depth, torch.float32, device, 3)
    _check("far_depth", far_depth, torch.float32, device, 3)
    _check("cameras", cameras, torch.float32, device, 2)
    out = torch.zeros((points.shape[0], 3), dtype=torch.int32, device=device)
    if points.shape[0] == 0 or near_depth.shape[0] == 0:
        return out
    t, h, w = near_depth.shape
    with _on_device(device):
        module.depth_consistency(points.data_ptr(), source_frame.data_ptr(), points.shape[0], near_depth.data_ptr(),
                                 far_depth.data_ptr(), t, h, w, cameras.data_ptr(), float(margin), float(near),
                                 out.data_ptr(), *_launch_args(device))
    return out


def segment_fuse(module: ModuleType, sorted_keys: torch.Tensor, order: torch.Tensor, positions: torch.Tensor,
                 features: torch.Tensor, weights: torch.Tensor, store_keys: torch.Tensor,
                 store_slots: torch.Tensor):
    device = positions.device
    _check("sorted_keys", sorted_keys, torch.int64, device, 1)
    _check("order", order, torch.int64, device, 1)
    _check("positions", positions, torch.float32, device, 2)
    _check("features", features, torch.float32, device, 2)
    _check("weights", weights, torch.float32, device, 1)
    _check("store_keys", store_keys, torch.int64, device, 1)
    _check("store_slots", store_slots, torch.int64, device, 1)
    unique_keys, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    u, c = unique_keys.numel(), features.shape[1]
    starts = torch.zeros(u + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=starts[1:])
    pos_sum = torch.empty((u, 3), dtype=torch.float32, device=device)
    feat_sum = torch.empty((u, c), dtype=torch.float32, device=device)
    weight_sum = torch.empty(u, dtype=torch.float32, device=device)
    slot = torch.empty(u, dtype=torch.int64, device=device)
    if u:
        with _on_device(device):
            module.segment_fuse(unique_keys.data_ptr(), starts.data_ptr(), u, order.data_ptr(), positions.data_ptr(),
                                features.data_ptr(), c, weights.data_ptr(), store_keys.data_ptr(),
                                store_slots.data_ptr(), store_keys.numel(), pos_sum.data_ptr(),
                                feat_sum.data_ptr(), weight_sum.data_ptr(), slot.data_ptr(), *_launch_args(device))
    return unique_keys, pos_sum, feat_sum, weight_sum, slot


def cell_stats(module: ModuleType, depth: torch.Tensor, sky: torch.Tensor | None, stride: int, far: float):
    device = depth.device
    _check("depth", depth, torch.float32, device, 3)
    if sky is not None:
        _check("sky", sky, torch.bool, device, 3)
        if sky.shape != depth.shape:
            raise ValueError(f"sky must have the shape of depth {tuple(depth.shape)}, got {tuple(sky.shape)}")
    t, big_h, big_w = depth.shape
    if stride < 1 or big_h % stride or big_w % stride:
        raise ValueError(f"stride {stride} must be >= 1 and divide the depth size {big_h}x{big_w}")
    shape = (t, big_h // stride, big_w // stride)
    mean = torch.empty(shape, dtype=torch.float32, device=device)
    is_far = torch.empty(shape, dtype=torch.bool, device=device)
    nearest = torch.empty(shape, dtype=torch.float32, device=device)
    index = torch.empty(shape, dtype=torch.int32, device=device)
    if mean.numel():
        with _on_device(device):
            module.cell_stats(depth.data_ptr(), 0 if sky is None else sky.data_ptr(), t, big_h, big_w, stride,
                              float(far), mean.data_ptr(), is_far.data_ptr(), nearest.data_ptr(), index.data_ptr(),
                              *_launch_args(device))
    return mean, is_far, nearest, index
