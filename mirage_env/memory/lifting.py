"""Validate a write and lift latent cells to world points: one point per latent cell."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mirage_env.geometry.camera import backproject_depth, scale_intrinsics
from mirage_env.geometry.checks import check_finite, check_float, check_intrinsics, check_poses, check_shape


@dataclass
class LiftedCells:
    """Valid latent cells of a write: world points [M, 3], features [M, C] float32, weights [M]."""

    points: torch.Tensor
    features: torch.Tensor
    weights: torch.Tensor
    cells: int
    invalid_depth: int
    masked: int


def check_depth(name: str, depth: torch.Tensor) -> None:
    """Depth maps must be finite and non-negative (0 marks a pixel without depth)."""
    check_float(name, depth)
    if bool(torch.isnan(depth).any()):
        raise ValueError(f"{name} contains NaN")
    if bool(torch.isinf(depth).any()):
        raise ValueError(f"{name} contains infinite values; mark sky or missing depth with 0 (see discard_far)")
    if bool((depth < 0).any()):
        raise ValueError(f"{name} contains negative values")


def downsample_depth(depth: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Validity-aware downsampling of depth [T, H, W] to [T, h, w] by whole blocks.

    A cell takes the mean of its block when every pixel of the block has depth (> 0), else 0 (invalid).
    """
    t, big_h, big_w = depth.shape
    h, w = hw
    if big_h % h or big_w % w or big_h // h != big_w // w:
        raise ValueError(f"depth {big_h}x{big_w} is not an integer multiple of the latent grid {h}x{w} "
                         "with the same factor on both axes")
    s = big_h // h
    if s == 1:
        return depth.to(torch.float32)
    blocks = depth.to(torch.float32).reshape(t, h, s, w, s).permute(0, 1, 3, 2, 4).reshape(t, h, w, s * s)
    valid = (blocks > 0).all(dim=-1)
    return torch.where(valid, blocks.mean(dim=-1), torch.zeros((), dtype=torch.float32, device=depth.device))


def _per_frame(name: str, x: torch.Tensor, t: int, tail: tuple[int, ...]) -> torch.Tensor:
    if x.dim() == len(tail) and tuple(x.shape) == tail:
        x = x.expand(t, *tail)
    check_shape(name, x, (t, *tail))
    return x


def _cell_mask(name: str, mask: torch.Tensor, t: int, hw: tuple[int, int], big_hw: tuple[int, int]) -> torch.Tensor:
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {mask.dtype}")
    if tuple(mask.shape) == (t, *hw):
        return mask
    if tuple(mask.shape) == (t, *big_hw):
        s = big_hw[0] // hw[0]
        return mask.reshape(t, hw[0], s, hw[1], s).all(dim=4).all(dim=2)
    raise ValueError(f"{name} must have shape [{t}, {hw[0]}, {hw[1]}] or [{t}, {big_hw[0]}, {big_hw[1]}], "
                     f"got {list(mask.shape)}")


def lift_cells(latents: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor,
               feature_dim: int, device: torch.device, keep_mask: torch.Tensor | None = None,
               confidence: torch.Tensor | None = None) -> LiftedCells:
    """Check every argument of :meth:`LatentSpatialMemory.write` and lift the valid, kept cells."""
    check_float("latents", latents)
    if latents.dim() != 4 or latents.shape[1] != feature_dim:
        raise ValueError(f"latents must have shape [T, {feature_dim}, h, w], got {list(latents.shape)}")
    t, _, h, w = latents.shape
    if h == 0 or w == 0:
        raise ValueError(f"latents have an empty grid {h}x{w}")
    for name, x in (("depth", depth), ("K", K), ("c2w", c2w)):
        check_float(name, x)
    for name, x in (("latents", latents), ("depth", depth), ("K", K), ("c2w", c2w),
                    ("keep_mask", keep_mask), ("confidence", confidence)):
        if x is not None and x.device != device:
            raise ValueError(f"{name} is on {x.device} but the memory is on {device}")
    check_finite("latents", latents)
    check_depth("depth", depth)
    if depth.dim() != 3 or depth.shape[0] != t:
        raise ValueError(f"depth must have shape [{t}, H, W], got {list(depth.shape)}")
    K = _per_frame("K", K, t, (3, 3))
    c2w = _per_frame("c2w", c2w, t, (4, 4))
    check_intrinsics(K)
    check_poses(c2w)
    big_hw = tuple(depth.shape[1:])
    cell_depth = downsample_depth(depth, (h, w))
    valid = cell_depth > 0
    kept = valid if keep_mask is None else valid & _cell_mask("keep_mask", keep_mask, t, (h, w), big_hw)
    weights = torch.ones((t, h, w), dtype=torch.float32, device=device)
    if confidence is not None:
        check_float("confidence", confidence)
        check_shape("confidence", confidence, (t, h, w))
        check_finite("confidence", confidence)
        if bool((confidence < 0).any()):
            raise ValueError("confidence contains negative values")
        weights = confidence.to(torch.float32)
        kept = kept & (weights > 0)
    points = backproject_depth(cell_depth, scale_intrinsics(K.to(torch.float64), big_hw, (h, w)), c2w)
    features = latents.permute(0, 2, 3, 1)[kept].to(torch.float32)
    return LiftedCells(points[kept].contiguous(), features.contiguous(), weights[kept].contiguous(),
                       cells=t * h * w, invalid_depth=int((~valid).sum()), masked=int((valid & ~kept).sum()))
