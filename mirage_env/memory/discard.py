"""Dynamic-object discard at segment boundaries, before the segment is written into the memory.

Mirage writes only static content. For a segment of T frames with depth, :func:`discard_dynamic`:

1. drops cells that an external mask marks dynamic (a segmenter, or the simulator's mask when it is the world);
2. flags cells that the other frames of the segment and the last ``history_frames`` frames of earlier segments
   show to be free space at another time: the *nearest surface point* of the cell (its block's nearest pixel,
   lifted where that pixel is) projects into a frame *in front of* every surface that frame saw nearby (the
   nearest depth of any pixel in the cell's window, by a relative ``margin``) in at least ``min_votes`` frames.
   Static geometry can never do that, whatever the cell mixes (silhouettes, thin boards, grazing floors): the
   pixel that frame saw there is at or in front of the point. Sky counts as seen at ``far``, so an object in
   front of the sky that moved is found too. Flags then grow ``grow_steps`` times into 4-neighbouring cells
   whose nearest depth continues the flagged surface (within ``grow_tolerance``): the parts of a mover whose own
   motion kept them in front of itself (its inside, its lower edge over the floor);
3. drops sky and far cells (infinite depth, beyond ``far``, or marked sky);
4. evicts memory voxels that the window's frames show to be free space: voxels seen in front of the nearest
   observed surface in at least ``free_space_votes`` frames (the object that left them is gone).

The per-cell depth statistics run on the :func:`mirage_env.ops.cell_stats` kernel, steps 2 and 4 on
:func:`mirage_env.ops.depth_consistency`. The frames an earlier call saw come
back as :attr:`DiscardResult.history`; pass them to the next call of the same camera stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from mirage_env import ops
from mirage_env.geometry.camera import pack_cameras, pixel_rays, scale_intrinsics
from mirage_env.geometry.checks import check_float, check_intrinsics, check_poses, check_shape
from mirage_env.memory.latent_memory import LatentSpatialMemory


@dataclass(frozen=True)
class DiscardConfig:
    """Thresholds of :func:`discard_dynamic`.

    Args:
        margin: relative depth difference that counts as a contradiction (0.03 = 3 %).
        window_radius: half-size of the window whose nearest depth a point is compared with.
        min_votes: frames that must contradict a cell to flag it dynamic.
        history_frames: frames of earlier segments that vote (and evict) with the segment's own.
        grow_steps: times flags grow into depth-continuous neighbouring cells.
        grow_tolerance: relative depth step between neighbours that still counts as one surface.
        far: cells with any pixel beyond this depth (or infinite) are dropped as sky / far background.
        free_space_votes: frames that must see through a memory voxel before it is evicted.
        free_space_margin: relative margin for the free-space test.
    """

    margin: float = 0.03
    window_radius: int = 1
    min_votes: int = 1
    history_frames: int = 8
    grow_steps: int = 2
    grow_tolerance: float = 0.03
    far: float = 100.0
    free_space_votes: int = 2
    free_space_margin: float = 0.1

    def __post_init__(self) -> None:
        for name in ("margin", "free_space_margin", "grow_tolerance"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.window_radius < 0 or self.min_votes < 1 or self.free_space_votes < 1 or not self.far > 0:
            raise ValueError("window_radius >= 0, min_votes >= 1, free_space_votes >= 1 and far > 0 are required")
        if self.history_frames < 0 or self.grow_steps < 0:
            raise ValueError("history_frames and grow_steps must be >= 0")


class DiscardHistory(NamedTuple):
    """Recent frames at the latent grid, as :func:`discard_dynamic` compares with them."""

    depth: torch.Tensor  # [P, h, w] float32: nearest depth seen in each cell (sky at ``far``), 0 where none
    cameras: torch.Tensor  # [P, 16] float32 packed latent-grid cameras (:func:`~mirage_env.geometry.pack_cameras`)


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
    history: DiscardHistory  # the last ``history_frames`` frames, for the next segment's call


def _blocks(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """[T, H, W] -> [T, h, w, s * s]: each cell's pixel block, row-major."""
    t, big_h, big_w = x.shape
    s = big_h // hw[0]
    return x.reshape(t, hw[0], s, hw[1], s).permute(0, 1, 3, 2, 4).reshape(t, hw[0], hw[1], s * s)


def _check_segment(depth, K, c2w, hw, masks, history) -> None:
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
    if history is not None:
        if not isinstance(history, DiscardHistory):
            raise TypeError(f"history must be a DiscardHistory, got {type(history).__name__}")
        p = history.depth.shape[0] if history.depth.dim() == 3 else -1
        if (history.depth.dtype != torch.float32 or tuple(history.depth.shape[1:]) != tuple(hw)
                or history.cameras.dtype != torch.float32 or tuple(history.cameras.shape) != (p, 16)
                or history.depth.device != depth.device or history.cameras.device != depth.device):
            raise ValueError(f"history must hold float32 depth [P, {h}, {w}] and cameras [P, 16] on {depth.device}")


def segment_cameras(K: torch.Tensor, c2w: torch.Tensor, big_hw: tuple[int, int], hw: tuple[int, int],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent-grid intrinsics [T, 3, 3] and the packed kernel cameras [T, 16] of a segment."""
    K_lat = scale_intrinsics(K.to(torch.float64), big_hw, hw)
    return K_lat, pack_cameras(K_lat, c2w, device)


def lift_pixels(depth: torch.Tensor, index: torch.Tensor, stride: int, K: torch.Tensor,
                c2w: torch.Tensor) -> torch.Tensor:
    """World points [T, h, w, 3] (float32) at ``depth`` [T, h, w] along the pixel at row-major position ``index``
    [T, h, w] of each cell's ``stride`` x ``stride`` block; ``K`` [T, 3, 3] of the pixel grid, ``c2w`` [T, 4, 4]."""
    _, h, w = depth.shape
    index = index.to(torch.int64)
    rows = torch.arange(h, device=depth.device)[:, None] * stride + index // stride
    cols = torch.arange(w, device=depth.device) * stride + index % stride
    origins, directions = pixel_rays(K, c2w, cols.to(torch.float64), rows.to(torch.float64))
    points = origins[:, None, None, :] + depth[..., None].to(torch.float64) * directions
    return points.to(torch.float32)


def grow(flags: torch.Tensor, depth: torch.Tensor, allowed: torch.Tensor, steps: int, tolerance: float) -> torch.Tensor:
    """Grow ``flags`` [T, h, w] ``steps`` times into ``allowed`` 4-neighbours whose ``depth`` differs from the
    flagged cell's by less than ``tolerance`` times their own."""
    for _ in range(steps):
        grown = flags.clone()
        for dim in (1, 2):
            n = flags.shape[dim]
            for here, there in ((slice(1, n), slice(0, n - 1)), (slice(0, n - 1), slice(1, n))):
                at = [slice(None)] * 3
                at[dim] = here
                src = [slice(None)] * 3
                src[dim] = there
                d = depth[tuple(at)]
                grown[tuple(at)] |= flags[tuple(src)] & ((d - depth[tuple(src)]).abs() < tolerance * d)
        flags = grown & allowed
    return flags


def discard_dynamic(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor, latent_hw: tuple[int, int],
                    config: DiscardConfig = DiscardConfig(), dynamic_mask: torch.Tensor | None = None,
                    sky_mask: torch.Tensor | None = None, memory: LatentSpatialMemory | None = None,
                    history: DiscardHistory | None = None) -> DiscardResult:
    """Decide which latent cells of a segment to write and evict free space from ``memory``.

    Args:
        depth: [T, H, W] z-depth of the segment's frames (pixel or latent resolution); inf marks sky, 0 no depth.
        K: [T, 3, 3] intrinsics of ``depth``; c2w: [T, 4, 4] poses.
        latent_hw: the latent grid (h, w); H, W must be integer multiples of it.
        dynamic_mask: optional external bool mask [T, H, W] of dynamic pixels (never written).
        sky_mask: optional bool mask [T, H, W] of sky pixels.
        memory: when given, voxels the frames see through are evicted from it.
        history: the previous call's :attr:`DiscardResult.history` (same camera stream and latent grid).

    Returns the keep mask and latent depth to pass to :meth:`LatentSpatialMemory.write`, the counts, and the
    frames to pass as ``history`` next time.
    """
    _check_segment(depth, K, c2w, latent_hw, {"dynamic_mask": dynamic_mask, "sky_mask": sky_mask}, history)
    t, big_h, _ = depth.shape
    device = depth.device
    stride = big_h // latent_hw[0]
    # per cell: mean depth (0 unless every pixel has depth and none is far), any far pixel, and the nearest
    # pixel seen (sky and far pixels at `far`) with its place in the block
    sky = sky_mask.contiguous() if sky_mask is not None else None
    cell_depth, cell_far, nearest, index = ops.cell_stats(depth.to(torch.float32).contiguous(), sky, stride, config.far)
    no_depth = (cell_depth <= 0) & ~cell_far
    external = _blocks(dynamic_mask, latent_hw).any(dim=-1) if dynamic_mask is not None else torch.zeros_like(cell_far)
    external &= ~cell_far & ~no_depth

    points = lift_pixels(nearest, index, stride, K, c2w)
    observed = torch.where(torch.isfinite(nearest), nearest, torch.zeros_like(nearest))
    _, cameras = segment_cameras(K, c2w, tuple(depth.shape[1:]), latent_hw, device)
    if history is not None:
        observed = torch.cat([history.depth, observed])
        cameras = torch.cat([history.cameras, cameras])
    first = observed.shape[0] - t  # the segment's first frame among the window's

    candidates = (cell_depth > 0) & ~external
    frame = torch.arange(first, first + t, dtype=torch.int32, device=device)[:, None, None].expand_as(candidates)
    votes = ops.depth_consistency(points[candidates].contiguous(), frame[candidates].contiguous(),
                                  observed.contiguous(), cameras, config.margin, config.window_radius, 0.0)
    dynamic = torch.zeros_like(candidates)
    dynamic[candidates] = votes[:, 1] >= config.min_votes
    dynamic = grow(dynamic, nearest, candidates, config.grow_steps, config.grow_tolerance)
    keep = candidates & ~dynamic

    evicted = 0
    if memory is not None and len(memory):
        evicted = memory.remove(evict_free_space(memory, observed, cameras, config))
    stats = DiscardStats(cells=t * latent_hw[0] * latent_hw[1], no_depth=int(no_depth.sum()),
                         sky_or_far=int(cell_far.sum()), external_mask=int(external.sum()),
                         inconsistent=int(dynamic.sum()), kept=int(keep.sum()), evicted=evicted)
    start = max(0, observed.shape[0] - config.history_frames)
    kept_history = DiscardHistory(observed[start:].contiguous(), cameras[start:].contiguous())
    return DiscardResult(keep, cell_depth, dynamic, stats, kept_history)


def evict_free_space(memory: LatentSpatialMemory, observed_depth: torch.Tensor, cameras: torch.Tensor,
                     config: DiscardConfig) -> torch.Tensor:
    """Slots of memory voxels seen in front of the observed surfaces in ``free_space_votes`` frames or more."""
    source = torch.full((len(memory),), -1, dtype=torch.int32, device=memory.device)
    votes = ops.depth_consistency(memory.positions.contiguous(), source, observed_depth.contiguous(), cameras,
                                  config.free_space_margin, config.window_radius, memory.config.near)
    return torch.nonzero(votes[:, 1] >= config.free_space_votes).flatten()
