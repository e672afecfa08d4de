"""Whether the camera may move from one position to the next: the simulator's geometry when the episode is a
simulated scene, otherwise the points of the latent memory (what the world has generated so far)."""

from __future__ import annotations

import torch

from mirage_env.memory import LatentSpatialMemory
from mirage_env.sim import Scene


def memory_segment_is_free(points: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor, radius: float) -> bool:
    """No point [N, 3] lies within ``radius`` of the segment ``p0 -> p1``."""
    if points.numel() == 0:
        return True
    p0, d = p0.to(points), (p1 - p0).to(points)
    length2 = float(d @ d)
    t = ((points - p0) @ d / length2).clamp(0.0, 1.0) if length2 > 0 else points.new_zeros(len(points))
    nearest = p0 + t[:, None] * d
    return bool(((points - nearest).square().sum(-1) > radius * radius).all())


def segment_is_free(scene: Scene | None, memory: LatentSpatialMemory, p0: torch.Tensor, p1: torch.Tensor,
                    radius: float) -> bool:
    """Collision check of one camera move; ``scene`` None falls back to the memory's points."""
    if scene is not None:
        return scene.segment_is_free(p0.numpy(), p1.numpy(), radius)
    return memory_segment_is_free(memory.positions, p0, p1, radius)
