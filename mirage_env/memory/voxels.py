"""Voxel keys: integer voxel coordinates packed into one int64, and a sorted key -> slot index."""

from __future__ import annotations

import torch

AXIS_BITS = 21
AXIS_OFFSET = 1 << (AXIS_BITS - 1)
AXIS_MASK = (1 << AXIS_BITS) - 1


def voxel_coords(points: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """Integer voxel coordinates [N, 3] (int64) of world points [N, 3]."""
    return torch.floor(points.to(torch.float64) / voxel_size).to(torch.int64)


def pack_voxel_keys(coords: torch.Tensor) -> torch.Tensor:
    """Pack voxel coordinates [N, 3] into int64 keys; raises ValueError outside +-2**20 voxels per axis."""
    shifted = coords + AXIS_OFFSET
    if shifted.numel() and (bool((shifted < 0).any()) or bool((shifted > AXIS_MASK).any())):
        raise ValueError(f"points lie more than {AXIS_OFFSET} voxels from the origin; use a larger voxel_size")
    return (shifted[:, 0] << (2 * AXIS_BITS)) | (shifted[:, 1] << AXIS_BITS) | shifted[:, 2]


def unpack_voxel_keys(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_voxel_keys`."""
    return torch.stack([(keys >> (2 * AXIS_BITS)) & AXIS_MASK, (keys >> AXIS_BITS) & AXIS_MASK, keys & AXIS_MASK],
                       dim=1) - AXIS_OFFSET


def merge_sorted(keys_a: torch.Tensor, slots_a: torch.Tensor, keys_b: torch.Tensor,
                 slots_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two sorted, disjoint key arrays (with their slots) into one sorted array in O(n log m)."""
    n, m = keys_a.numel(), keys_b.numel()
    keys = torch.empty(n + m, dtype=keys_a.dtype, device=keys_a.device)
    slots = torch.empty(n + m, dtype=slots_a.dtype, device=slots_a.device)
    at_a = torch.arange(n, device=keys_a.device) + torch.searchsorted(keys_b, keys_a)
    at_b = torch.arange(m, device=keys_b.device) + torch.searchsorted(keys_a, keys_b)
    keys[at_a], slots[at_a] = keys_a, slots_a
    keys[at_b], slots[at_b] = keys_b, slots_b
    return keys, slots
