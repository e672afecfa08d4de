"""Dynamic-object discard at segment boundaries, before the segment is written into the memory.

Mirage writes only static content. For a segment of T frames with depth, :func:`discard_dynamic`:

1. drops cells that an external mask marks dynamic (a segmenter, or the simulator's mask when it is the world);
2. flags cells whose depth contradicts the other frames of the segment under the static-scene assumption: a
   cell lifted with its depth and projected into frame s lies *in front of* the surface that frame s observed
   there (by a relative ``margin``, against the nearest depth in a small window so silhouettes do not vote) in
   at least ``min_votes`` frames — something stood there that has since moved away;
3. drops sky and far cells (infinite depth, beyond ``far``, or marked sky);
4. evicts memory voxels that the segment shows to be free space: voxels seen in front of an observed surface in
   at least ``free_space_votes`` frames (the object that left them is gone).

Steps 2 and 4 run on the :func:`mirage_env.ops.depth_consistency` kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from mirage_env import ops
from mirage_env.geometry.camera import backproject_depth, pack_cameras, scale_intrinsics
from mirage_env.geometry.checks import check_float, check_intrinsics, check_poses, check_shape
from mirage_env.memory.latent_memory import LatentSpatialMemory
from mirage_env.memory.lifting import downsample_depth


@dataclass(frozen=True)
class DiscardConfig:
    """Thresholds of :func:`discard_dynamic`.

    Args:
        margin: relative depth difference that counts as a contradiction (0.05 = 5 %).
        window_radius: half-size of the window whose nearest (farthest) depth a point is compared with.
        min_votes: frames that must contradict a cell to flag it dynamic.
        far: cells with any pixel beyond this depth (or infinite) are dropped as sky / far background.
        free_space_votes: frames that must see through a memory voxel before it is evicted.
        free_space_margin: relative margin for the free-space test.
    """

    margin: float = 0.05
    window_radius: int = 1
    min_votes: int = 1
    far: float = 100.0
    free_space_votes: int = 2
    free_space_margin: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1 or not 0 <= self.free_space_margin < 1:
            raise ValueError("margins must lie in [0, 1)")
        if self.window_radius < 0 or self.min_votes < 1 or self.free_space_votes < 1 or not self.far > 0:
            raise ValueError("window_radius >= 0, min_votes >= 1, free_space_votes >= 1 and far > 0 are required")


class DiscardStats(NamedTuple):
    """Why cells of a segment were not written, and how many memory voxels were evicted."""

    cells: int
    no_depth: int
    sky_or_far: int
    external_mask: int
    inconsistent: int
    kept: int
    evicted: int


class DiscardResult(NamedTuple):
    keep_mask: torch.Tensor  # [T, h, w] bool: cells to write
    cell_depth: torch.Tensor  # [T, h, w] float32 latent-resolution depth, 0 where invalid, sky or far
    dynamic: torch.Tensor  # [T, h, w] bool: cells flagged by the consistency test
    stats: DiscardStats


def _block_any(mask: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    t, big_h, big_w = mask.shape
    s = big_h // hw[0]
    return mask.reshape(t, hw[0], s, hw[1], s).any(dim=4).any(dim=2)


def _check_segment(depth, K, c2w, hw, masks) -> None:
    check_float("depth", depth)
    if depth.dim() != 3:
        raise ValueError(f"depth must have shape [T, H, W], got {list(depth.shape)}")
    if bool(torch.isnan(depth).any()) or bool((depth < 0).any()):
        raise ValueError("depth contains NaN or negative values")
    t, big_h, big_w = depth.shape
    check_shape("K", K, (t, 3, 3))
    check_shape("c2w", c2w, (t, 4, 4))
    check_intrinsics(K)
    check_poses(c2w)
    h, w = hw
    if h <= 0 or w <= 0 or big_h % h or big_w % w or big_h // h != big_w // w:
        raise ValueError(f"depth {big_h}x{big_w} is not an integer multiple of the latent grid {h}x{w}")
    for name, mask in masks.items():
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(depth.shape)):
            raise ValueError(f"{name} must be a bool tensor of shape {list(depth.shape)}")


def segment_cameras(K: torch.Tensor, c2w: torch.Tensor, big_hw: tuple[int, int], hw: tuple[int, int],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent-grid intrinsics [T, 3, 3] and the packed kernel cameras [T, 16] of a segment."""
    K_lat = scale_intrinsics(K.to(torch.float64), big_hw, hw)
    return K_lat, pack_cameras(K_lat, c2w, device)


def discard_dynamic(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor, latent_hw: tuple[int, int],
                    config: DiscardConfig = DiscardConfig(), dynamic_mask: torch.Tensor | None = None,
                    sky_mask: torch.Tensor | None = None,
                    memory: LatentSpatialMemory | None = None) -> DiscardResult:
    """Decide which latent cells of a segment to write and evict free space from ``memory``.

    Args:
        depth: [T, H, W] z-depth of the segment's frames (pixel or latent resolution); inf marks sky, 0 no depth.
        K: [T, 3, 3] intrinsics of ``depth``; c2w: [T, 4, 4] poses.
        latent_hw: the latent grid (h, w); H, W must be integer multiples of it.
        dynamic_mask: optional external bool mask [T, H, W] of dynamic pixels (never written).
        sky_mask: optional bool mask [T, H, W] of sky pixels.
        memory: when given, voxels the segment sees through are evicted from it.

    Returns the keep mask and latent depth to pass to :meth:`LatentSpatialMemory.write`, and the counts.
    """
    _check_segment(depth, K, c2w, latent_hw, {"dynamic_mask": dynamic_mask, "sky_mask": sky_mask})
    t = depth.shape[0]
    device = depth.device
    far = ~torch.isfinite(depth) | (depth > config.far)
    if sky_mask is not None:
        far |= sky_mask
    cell_far = _block_any(far, latent_hw)
    cell_depth = downsample_depth(torch.where(far, torch.zeros_like(depth), depth), latent_hw)
    no_depth = (cell_depth <= 0) & ~cell_far
    external = _block_any(dynamic_mask, latent_hw) if dynamic_mask is not None else torch.zeros_like(cell_far)
    external &= ~cell_far & ~no_depth

    K_lat, cameras = segment_cameras(K, c2w, tuple(depth.shape[1:]), latent_hw, device)
    candidates = (cell_depth > 0) & ~external
    points = backproject_depth(cell_depth, K_lat, c2w)[candidates].contiguous()
    frame = torch.arange(t, dtype=torch.int32, device=device)[:, None, None].expand_as(candidates)[candidates]
    votes = ops.depth_consistency(points, frame.contiguous(), cell_depth.contiguous(), cameras, config.margin,
                                  config.window_radius, 0.0)
    dynamic = torch.zeros_like(candidates)
    dynamic[candidates] = votes[:, 1] >= config.min_votes
    keep = candidates & ~dynamic

    evicted = 0
    if memory is not None and len(memory):
        observed = downsample_depth(torch.where(torch.isfinite(depth), depth, torch.full_like(depth, config.far)),
                                    latent_hw).clamp(max=config.far)
        free = evict_free_space(memory, observed, cameras, config)
        evicted = memory.remove(free)
    stats = DiscardStats(cells=t * latent_hw[0] * latent_hw[1], no_depth=int(no_depth.sum()),
                         sky_or_far=int(cell_far.sum()), external_mask=int(external.sum()),
                         inconsistent=int(dynamic.sum()), kept=int(keep.sum()), evicted=evicted)
    return DiscardResult(keep, cell_depth, dynamic, stats)


def evict_free_space(memory: LatentSpatialMemory, observed_depth: torch.Tensor, cameras: torch.Tensor,
                     config: DiscardConfig) -> torch.Tensor:
    """Slots of memory voxels seen in front of the observed surfaces in ``free_space_votes`` frames or more."""
    source = torch.full((len(memory),), -1, dtype=torch.int32, device=memory.device)
    votes = ops.depth_consistency(memory.positions.contiguous(), source, observed_depth.contiguous(), cameras,
                                  config.free_space_margin, config.window_radius, memory.config.near)
    return torch.nonzero(votes[:, 1] >= config.free_space_votes).flatten()
