"""Input validation shared by geometry, memory and environments.

Every check raises ``ValueError`` (or ``TypeError`` for dtypes) with a message that names the argument and the
problem, before any state is touched.
"""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float(name: str, x: torch.Tensor) -> None:
    """``x`` must be a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def check_shape(name: str, x: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    """``x`` must have ``len(shape)`` dims; ``None`` entries match any size."""
    ok = x.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(x.shape)}")


def check_finite(name: str, x: torch.Tensor) -> None:
    """No NaN or infinity in ``x``."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "infinite values"
        raise ValueError(f"{name} contains {bad}")


def check_intrinsics(K: torch.Tensor, name: str = "K") -> None:
    """Intrinsics [..., 3, 3]: finite, positive focal lengths, last row (0, 0, 1)."""
    check_float(name, K)
    if K.dim() < 2 or K.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape [..., 3, 3], got {list(K.shape)}")
    check_finite(name, K)
    if bool((K[..., 0, 0] <= 0).any()) or bool((K[..., 1, 1] <= 0).any()):
        raise ValueError(f"{name} must have positive focal lengths fx, fy")
    last = torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype, device=K.device)
    if not bool((K[..., 2, :] == last).all()):
        raise ValueError(f"{name} must have last row (0, 0, 1)")
    if bool((K[..., 1, 0] != 0).any()):
        raise ValueError(f"{name}[1, 0] must be 0")


def check_poses(c2w: torch.Tensor, name: str = "c2w", tol: float = 1e-3) -> None:
    """Camera-to-world poses [..., 4, 4]: finite, rotation orthonormal with det +1, last row (0, 0, 0, 1)."""
    check_float(name, c2w)
    if c2w.dim() < 2 or c2w.shape[-2:] != (4, 4):
        raise ValueError(f"{name} must have shape [..., 4, 4], got {list(c2w.shape)}")
    check_finite(name, c2w)
    pose = c2w.to(torch.float64)
    last = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64, device=c2w.device)
    if not bool((pose[..., 3, :] == last).all()):
        raise ValueError(f"{name} must have last row (0, 0, 0, 1)")
    rot = pose[..., :3, :3]
    det = torch.linalg.det(rot)
    if bool((det.abs() < tol).any()):
        raise ValueError(f"{name} is singular (rotation determinant {det.abs().min().item():.3g})")
    eye = torch.eye(3, dtype=torch.float64, device=c2w.device)
    error = (rot.transpose(-1, -2) @ rot - eye).abs().amax()
    if error > tol or bool((det < 0).any()):
        raise ValueError(f"{name} rotation is not orthonormal with det +1 (error {error.item():.3g}); "
                         "poses must be rigid camera-to-world transforms")
