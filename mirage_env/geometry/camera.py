"""Pinhole cameras in the OpenCV convention.

Conventions used everywhere in mirage_env:

* camera axes: x right, y down, z forward; poses are camera-to-world 4x4 matrices (``c2w``);
* intrinsics ``K`` are 3x3 in pixels, with pixel centres at integer coordinates: pixel ``(i, j)`` covers
  ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``;
* depth is z-depth (distance along the optical axis), not ray length; 0 means "no depth".
"""

from __future__ import annotations

import torch

from mirage_env.geometry.checks import check_intrinsics, check_poses


def scale_intrinsics(K: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """Rescale intrinsics from an image of size ``src_hw`` to ``dst_hw`` (pixel-centre correct).

    A continuous image coordinate ``x`` maps to ``(x + 0.5) * s - 0.5``, so the principal point moves by the
    half-pixel offset as well as the scale (plain ``cx * s`` is off by ``(s - 1) / 2`` pixels).
    """
    sy = dst_hw[0] / src_hw[0]
    sx = dst_hw[1] / src_hw[1]
    out = K.clone()
    out[..., 0, 0] = K[..., 0, 0] * sx
    out[..., 0, 1] = K[..., 0, 1] * sx
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 1] = K[..., 1, 1] * sy
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return out


def intrinsics_from_fov(fov_x_deg: float, hw: tuple[int, int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Square-pixel intrinsics with horizontal field of view ``fov_x_deg`` and the principal point at the centre."""
    h, w = hw
    f = 0.5 * w / torch.tan(torch.deg2rad(torch.tensor(fov_x_deg / 2.0, dtype=torch.float64)))
    return torch.tensor([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]], dtype=dtype)


def invert_pose(c2w: torch.Tensor) -> torch.Tensor:
    """World-to-camera matrices from camera-to-world ones (rigid inverse, batched)."""
    rot = c2w[..., :3, :3]
    out = torch.zeros_like(c2w)
    out[..., :3, :3] = rot.transpose(-1, -2)
    out[..., :3, 3] = -(rot.transpose(-1, -2) @ c2w[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def pixel_grid(h: int, w: int, dtype: torch.dtype = torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(u, v)``, each [h, w]."""
    v, u = torch.meshgrid(torch.arange(h, dtype=dtype, device=device), torch.arange(w, dtype=dtype, device=device),
                          indexing="ij")
    return u, v


def camera_rays(K: torch.Tensor, c2w: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins [B, 3] and directions [B, h, w, 3] with unit z in the camera frame.

    A point at z-depth ``d`` along pixel ``(i, j)`` is ``origin + d * direction[:, i, j]``.
    """
    check_intrinsics(K)
    check_poses(c2w)
    return pixel_rays(K, c2w, *pixel_grid(*hw, device=K.device))


def pixel_rays(K: torch.Tensor, c2w: torch.Tensor, u: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins [B, 3] and directions [B, h, w, 3] (unit z in the camera frame) through the pixel
    coordinates ``u``, ``v`` ([h, w], or [B, h, w] for a pixel per camera); inputs are not checked."""
    K = K.reshape(-1, 3, 3).to(torch.float64)
    c2w = c2w.reshape(-1, 4, 4).to(torch.float64)
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    cx, cy, skew = K[:, 0, 2, None, None], K[:, 1, 2, None, None], K[:, 0, 1, None, None]
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    local = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    directions = torch.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], local)
    return c2w[:, :3, 3], directions


def backproject_depth(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """Lift z-depth maps [T, h, w] to world points [T, h, w, 3] (float32)."""
    origins, directions = camera_rays(K, c2w, tuple(depth.shape[-2:]))
    points = origins[:, None, None, :] + depth.reshape(-1, *depth.shape[-2:])[..., None].to(torch.float64) * directions
    return points.to(torch.float32)


def project_points(points: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points [N, 3] into B cameras: pixel coordinates [B, N, 2] and z-depth [B, N]."""
    check_intrinsics(K)
    check_poses(c2w)
    w2c = invert_pose(c2w.reshape(-1, 4, 4).to(torch.float64))
    cam = torch.einsum("bij,nj->bni", w2c[:, :3, :3], points.to(torch.float64)) + w2c[:, None, :3, 3]
    z = cam[..., 2]
    pix = torch.einsum("bij,bnj->bni", K.reshape(-1, 3, 3).to(torch.float64), cam)
    return pix[..., :2] / z[..., None], z


def pack_cameras(K: torch.Tensor, c2w: torch.Tensor, device=None) -> torch.Tensor:
    """Cameras in the kernel layout of :mod:`mirage_env.ops`: float32 [B, 16] = w2c[:3, :4] row-major, fx, fy, cx, cy.

    The world-to-camera matrix is inverted in float64 and then rounded, so every backend sees the same numbers.
    Skewed intrinsics are not supported by the kernels.
    """
    K = K.reshape(-1, 3, 3).to(torch.float64)
    if torch.any(K[:, 0, 1] != 0):
        raise ValueError("intrinsics with skew (K[0, 1] != 0) are not supported by the memory kernels")
    w2c = invert_pose(c2w.reshape(-1, 4, 4).to(torch.float64))
    packed = torch.cat([w2c[:, :3, :4].reshape(-1, 12), K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None],
                        K[:, 1, 2, None]], dim=1)
    return packed.to(device=device if device is not None else c2w.device, dtype=torch.float32).contiguous()
