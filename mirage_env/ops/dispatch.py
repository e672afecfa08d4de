"""Choose, per call, between the compiled kernels and the PyTorch reference.

``MIRAGE_ENV_BACKEND`` selects the backend: ``auto`` (default: the extension when it was built for the tensors'
device, else the reference with a one-time warning), ``extension`` (fail when it is missing) or ``reference``.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

import torch

from mirage_env.ops import extension, reference

BACKENDS = ("auto", "extension", "reference")
_warned: set[str] = set()


def requested_backend() -> str:
    """The backend asked for through ``MIRAGE_ENV_BACKEND``."""
    choice = os.environ.get("MIRAGE_ENV_BACKEND", "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"MIRAGE_ENV_BACKEND={choice!r} is not one of {BACKENDS}")
    return choice


def extension_module(device: torch.device) -> ModuleType | None:
    """The compiled module that will run ops on ``device``, or None when the reference will."""
    choice = requested_backend()
    if choice == "reference":
        return None
    module = extension.load_module(device.type)
    if module is None:
        what = "mirage_env._C" if device.type == "cpu" else "mirage_env._C_cuda"
        if choice == "extension":
            raise RuntimeError(f"MIRAGE_ENV_BACKEND=extension but {what} is not built; reinstall with `pip install .`")
        if device.type not in _warned:
            _warned.add(device.type)
            warnings.warn(f"{what} is not available; memory ops on {device.type} use the PyTorch reference",
                          RuntimeWarning, stacklevel=3)
    return module


def backend_name(device: torch.device | str = "cpu") -> str:
    """``"extension"`` or ``"reference"``: what runs the ops on ``device`` now."""
    return "extension" if extension_module(torch.device(device)) is not None else "reference"


def project_zbuffer(points: torch.Tensor, cameras: torch.Tensor, h: int, w: int, near: float) -> torch.Tensor:
    """See :func:`mirage_env.ops.reference.project_zbuffer`."""
    module = extension_module(points.device)
    if module is None:
        return reference.project_zbuffer(points, cameras, h, w, near)
    return extension.project_zbuffer(module, points, cameras, h, w, near)


def depth_consistency(points: torch.Tensor, source_frame: torch.Tensor, depths: torch.Tensor, cameras: torch.Tensor,
                      margin: float, radius: int, near: float) -> torch.Tensor:
    """Visible / in-front / behind counts of points against depth maps [T, h, w] (0 = no depth) compared over
    (2 radius + 1)^2 windows; see :func:`mirage_env.ops.reference.depth_consistency`."""
    near_depth, far_depth = reference.window_depth_range(depths, radius)
    module = extension_module(points.device)
    if module is None:
        return reference.depth_consistency(points, source_frame, near_depth, far_depth, cameras, margin, near)
    return extension.depth_consistency(module, points, source_frame, near_depth, far_depth, cameras, margin, near)


def segment_fuse(sorted_keys: torch.Tensor, order: torch.Tensor, positions: torch.Tensor, features: torch.Tensor,
                 weights: torch.Tensor, store_keys: torch.Tensor, store_slots: torch.Tensor):
    """See :func:`mirage_env.ops.reference.segment_fuse`."""
    module = extension_module(positions.device)
    if module is None:
        return reference.segment_fuse(sorted_keys, order, positions, features, weights, store_keys, store_slots)
    return extension.segment_fuse(module, sorted_keys, order, positions, features, weights, store_keys, store_slots)


def cell_stats(depth: torch.Tensor, sky: torch.Tensor | None, stride: int, far: float):
    """Per-cell mean depth, far flag, nearest seen depth and its block index of depth maps [T, H, W]; see
    :func:`mirage_env.ops.reference.cell_stats`."""
    module = extension_module(depth.device)
    if module is None:
        return reference.cell_stats(depth, sky, stride, far)
    return extension.cell_stats(module, depth, sky, stride, far)
