"""The persistent 3D latent memory of Mirage: lift latents with depth, fuse into voxels, read by projection."""

from mirage_env.memory.latent_memory import LatentSpatialMemory, MemoryConfig, MemoryRead, MemoryStats, WriteStats
from mirage_env.memory.lifting import downsample_depth

__all__ = ["LatentSpatialMemory", "MemoryConfig", "MemoryRead", "MemoryStats", "WriteStats", "downsample_depth"]
