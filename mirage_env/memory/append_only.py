"""The public Mirage release's memory behaviour, kept as a baseline: every lifted cell appended, nothing fused."""

from __future__ import annotations

import torch

from mirage_env.memory.latent_memory import LatentSpatialMemory, WriteStats
from mirage_env.memory.lifting import lift_cells
from mirage_env.memory.voxels import pack_voxel_keys, voxel_coords


class AppendOnlyLatentMemory(LatentSpatialMemory):
    """A :class:`LatentSpatialMemory` whose writes append one point per valid cell: no voxel fusion, no eviction.

    Reads, :attr:`keys` (voxel keys, repeated across points) and :meth:`stats` are inherited. ``capacity`` is a
    hard limit here: a write that would exceed it raises. Snapshots cannot be loaded back (duplicate keys).
    """

    def write(self, latents: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor,
              keep_mask: torch.Tensor | None = None, confidence: torch.Tensor | None = None) -> WriteStats:
        """Lift as :meth:`LatentSpatialMemory.write` does and append every lifted cell as a new point."""
        lifted = lift_cells(latents, depth, K, c2w, self.config.feature_dim, self.device, keep_mask, confidence)
        m = lifted.points.shape[0]
        if self._n + m > self.config.capacity:
            raise ValueError(f"append-only memory full: {self._n} + {m} points exceed capacity {self.config.capacity}")
        keys = pack_voxel_keys(voxel_coords(lifted.points, self.config.voxel_size))
        self._reserve(self._n + m)
        self.step += 1
        rows = slice(self._n, self._n + m)
        self._positions[rows] = lifted.points
        self._features[rows] = lifted.features.to(self._features.dtype)
        self._weights[rows] = lifted.weights
        self._last_seen[rows] = self.step
        self._keys[rows] = keys
        self._n += m
        return WriteStats(lifted.cells, lifted.invalid_depth, lifted.masked, m, m, 0, 0)
