"""An RGB point-cloud cache: the memory of Spatia, Voyager and GEN3C, kept as a baseline for the latent memory.

The cache stores coloured 3D points at pixel resolution, one per written pixel, or one per voxel when
``downsample`` is set (Spatia's voxel-downsampled cloud). A read splats the points into every pixel frame of the
target segment with the shared z-buffer kernel (:func:`mirage_env.ops.project_zbuffer`) and VAE-encodes the rendered
video to get the conditioning latent: the render + encode round trip that :class:`LatentSpatialMemory` avoids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch

from mirage_env import ops
from mirage_env.geometry.camera import backproject_depth, pack_cameras
from mirage_env.geometry.checks import check_float, check_intrinsics, check_poses, check_shape
from mirage_env.memory.latent_memory import MemoryRead
from mirage_env.memory.lifting import check_depth
from mirage_env.memory.voxels import pack_voxel_keys, voxel_coords
from mirage_env.video import to_uint8

POINT_BYTES = 3 * 4 + 3  # float32 position + uint8 RGB
KEY_BYTES = 8  # one sorted voxel key per point when downsampling


class VideoEncoder(Protocol):
    """What the cache needs of a world model: its VAE encoder and strides (any :class:`WorldModel` has them)."""

    temporal_stride: int
    spatial_stride: int

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] in [-1, 1], T = 1 + temporal_stride * (t - 1) -> latents [B, C, t, h, w]."""
        ...


@dataclass(frozen=True)
class RgbCacheConfig:
    """Settings of an :class:`RgbPointCache`.

    Args:
        voxel_size: voxel edge of :attr:`RgbPointCache.keys` (keyframe retrieval) and of the downsampling.
        downsample: keep one point per voxel (the first written), as Spatia does; else one point per pixel.
        near: points closer than this z-depth to a camera are not drawn.
        coverage: fraction of a latent cell's pixels that must be drawn for the cell to count as covered.
    """

    voxel_size: float = 0.05
    downsample: bool = False
    near: float = 1e-2
    coverage: float = 0.5

    def __post_init__(self) -> None:
        if not self.voxel_size > 0 or not self.near >= 0 or not 0 < self.coverage <= 1:
            raise ValueError("voxel_size must be > 0, near >= 0 and coverage in (0, 1]")


class CacheStats(NamedTuple):
    points: int
    bytes: int  # allocated point rows (and the voxel index when downsampling)


class PointKeys:
    """Voxel keys of an :class:`RgbPointCache`'s points, computed for the points indexed (O(indexed), not O(N))."""

    def __init__(self, cache: RgbPointCache) -> None:
        self._cache = cache

    def __getitem__(self, index) -> torch.Tensor:
        return pack_voxel_keys(voxel_coords(self._cache.positions[index], self._cache.config.voxel_size))


class RgbPointCache:
    """Coloured points written from frames with depth, read by pixel-resolution splatting plus VAE encoding."""

    def __init__(self, config: RgbCacheConfig, encoder: VideoEncoder, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.encoder = encoder
        self.device = torch.device(device)
        self._n = 0
        self._positions = torch.zeros((0, 3), dtype=torch.float32, device=self.device)
        self._colors = torch.zeros((0, 3), dtype=torch.uint8, device=self.device)
        self._voxels = torch.empty(0, dtype=torch.int64, device=self.device)  # sorted keys, downsampling only

    def __len__(self) -> int:
        return self._n

    @property
    def positions(self) -> torch.Tensor:
        """Point positions [N, 3] float32 (a view)."""
        return self._positions[: self._n]

    @property
    def colors(self) -> torch.Tensor:
        """Point colours [N, 3] uint8 (a view)."""
        return self._colors[: self._n]

    @property
    def keys(self) -> PointKeys:
        """Voxel keys of the points: ``cache.keys[index]`` computes those of the indexed points (none are stored)."""
        return PointKeys(self)

    def stats(self) -> CacheStats:
        """Points held and bytes allocated for them."""
        held = self._positions.shape[0] * POINT_BYTES + self._voxels.numel() * KEY_BYTES
        return CacheStats(self._n, held)

    def _append(self, points: torch.Tensor, colors: torch.Tensor) -> None:
        """Append rows, growing storage geometrically."""
        n, m = self._n, points.shape[0]
        if n + m > self._positions.shape[0]:
            rows = max(n + m, 2 * self._positions.shape[0], 1024)
            self._positions = torch.cat([self.positions, self._positions.new_zeros((rows - n, 3))])
            self._colors = torch.cat([self.colors, self._colors.new_zeros((rows - n, 3))])
        self._positions[n: n + m] = points
        self._colors[n: n + m] = colors
        self._n = n + m

    def _first_in_new_voxels(self, points: torch.Tensor) -> torch.Tensor:
        """Indices of the first point of each voxel not yet in the cache; records those voxels."""
        keys = pack_voxel_keys(voxel_coords(points, self.config.voxel_size))
        sorted_keys, order = torch.sort(keys, stable=True)
        first = torch.ones_like(sorted_keys, dtype=torch.bool)
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
        if self._voxels.numel():
            at = torch.searchsorted(self._voxels, sorted_keys).clamp_(max=self._voxels.numel() - 1)
            first &= self._voxels[at] != sorted_keys
        self._voxels = torch.sort(torch.cat([self._voxels, sorted_keys[first]])).values
        return order[first].sort().values

    # ------------------------------------------------------------------ write
    def write(self, frames: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor,
              keep_mask: torch.Tensor | None = None) -> int:
        """Append one coloured point per pixel with depth (0 = none) and ``keep_mask``; returns the points added.

        Args:
            frames: [T, 3, H, W] float in [-1, 1].
            depth: [T, H, W] z-depth.
            K: [T, 3, 3] or [3, 3] intrinsics of the frames; c2w: [T, 4, 4] or [4, 4] poses (OpenCV).
            keep_mask: optional bool [T, H, W], or [T, h, w] on a grid that divides H x W (e.g. latent cells).
        """
        check_float("frames", frames)
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must have shape [T, 3, H, W], got {list(frames.shape)}")
        t, _, h, w = frames.shape
        check_depth("depth", depth)
        check_shape("depth", depth, (t, h, w))
        K, c2w = K.expand(t, 3, 3), c2w.expand(t, 4, 4)
        check_intrinsics(K)
        check_poses(c2w)
        frames, depth, K, c2w = (x.to(self.device) for x in (frames, depth, K, c2w))
        valid = depth > 0
        if keep_mask is not None:
            valid &= _to_pixels(keep_mask.to(self.device), (t, h, w))
        points = backproject_depth(depth, K, c2w)[valid]
        colors = to_uint8(frames)[valid]
        if self.config.downsample:
            keep = self._first_in_new_voxels(points)
            points, colors = points[keep], colors[keep]
        self._append(points, colors)
        return int(points.shape[0])

    # ------------------------------------------------------------------ read
    def render(self, K: torch.Tensor, c2w: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Splat the points into F cameras (K [F, 3, 3] for image size ``hw``, c2w [F, 4, 4]).

        Returns the packed z-buffer keys [F, H, W] (see :func:`mirage_env.ops.project_zbuffer`) and the rendered
        frames [F, 3, H, W] in [-1, 1], black where nothing is drawn.
        """
        check_intrinsics(K)
        check_poses(c2w)
        h, w = int(hw[0]), int(hw[1])
        cameras = pack_cameras(K.reshape(-1, 3, 3), c2w.reshape(-1, 4, 4), self.device)
        packed = ops.project_zbuffer(self.positions.contiguous(), cameras, h, w, self.config.near)
        drawn = packed != ops.EMPTY_KEY
        colors = self._colors if self._n else self._colors.new_zeros((1, 3))  # nothing drawn: any row will do
        rgb = colors[torch.where(drawn, packed & ops.INDEX_MASK, 0)].float() / 127.5 - 1
        rgb = torch.where(drawn[..., None], rgb, torch.full((), -1.0, device=self.device))
        return packed.reshape(-1, h, w), rgb.reshape(-1, h, w, 3).permute(0, 3, 1, 2)

    def read(self, K: torch.Tensor, c2w: torch.Tensor, hw: tuple[int, int]) -> MemoryRead:
        """Render the F = 1 + 4 (t - 1) pixel frames of a segment and encode them into t latent frames.

        ``K`` [F, 3, 3] are intrinsics for the pixel size ``hw``, ``c2w`` [F, 4, 4] the frames' poses. Returns a
        :class:`MemoryRead` at latent resolution for the t latent frames (pixel frames 0, 4, 8, ...): features =
        the VAE latent of the render, mask = cells with at least ``coverage`` of their pixels drawn, depth and
        index = the nearest point drawn in the cell (0 and -1 where not covered).
        """
        stride, s = self.encoder.temporal_stride, self.encoder.spatial_stride
        f = c2w.reshape(-1, 4, 4).shape[0]
        h, w = int(hw[0]), int(hw[1])
        if (f - 1) % stride or h % s or w % s:
            raise ValueError(f"a read needs 1 + {stride}k frames of a size divisible by {s}, got {f} of {h}x{w}")
        packed, video = self.render(K, c2w, (h, w))
        latents = self.encoder.encode(video[None])[0].permute(1, 0, 2, 3)  # [t, C, h/s, w/s]
        cells = packed[::stride].reshape(-1, h // s, s, w // s, s)
        nearest = cells.amin(dim=(2, 4))
        mask = (cells != ops.EMPTY_KEY).float().mean(dim=(2, 4)) >= self.config.coverage
        index = torch.where(mask, nearest & ops.INDEX_MASK, torch.full_like(nearest, -1))
        depth = torch.where(mask, ops.bits_to_float(nearest >> 32), torch.zeros((), device=self.device))
        return MemoryRead(latents, mask, depth, index)


def _to_pixels(mask: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """A bool mask [T, H, W] from one at pixel size or on a grid that divides it (nearest upsampling)."""
    t, h, w = shape
    if mask.dtype != torch.bool or mask.dim() != 3 or mask.shape[0] != t or h % mask.shape[1] or w % mask.shape[2]:
        raise ValueError(f"keep_mask must be a bool [{t}, H', W'] grid that divides {h}x{w}, got "
                         f"{mask.dtype} {list(mask.shape)}")
    return mask.repeat_interleave(h // mask.shape[1], dim=1).repeat_interleave(w // mask.shape[2], dim=2)
