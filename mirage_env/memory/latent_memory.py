"""LatentSpatialMemory: a bounded, voxel-fused 3D store of a world model's latent features."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mirage_env import ops
from mirage_env.atomic import atomic_file
from mirage_env.config_checks import check_choice, check_int, check_number
from mirage_env.geometry.camera import pack_cameras
from mirage_env.geometry.checks import check_finite, check_intrinsics, check_poses
from mirage_env.memory.lifting import lift_cells
from mirage_env.memory.voxels import merge_sorted, pack_voxel_keys, unpack_voxel_keys, voxel_coords

FORMAT_NAME = "mirage-env-latent-memory"
FORMAT_VERSION = "1"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MEMORY_DTYPES = tuple(_DTYPES)
MAX_CAPACITY = (1 << 32) - 1  # z-buffer keys hold a 32-bit index


@dataclass(frozen=True)
class MemoryConfig:
    """Settings of a :class:`LatentSpatialMemory`.

    Args:
        feature_dim: channels C of a latent feature (48 for Wan2.2-TI2V-5B).
        voxel_size: edge of a fusion voxel in world units; cells falling in one voxel are averaged.
        capacity: the most voxels kept. When a write brings more new voxels than there is room for, the voxels
            seen longest ago are evicted first (then the lowest weight, then the lowest key).
        dtype: storage dtype of features: "float32", "float16" or "bfloat16" (fusion runs in float32).
        max_weight: cap of a voxel's fused weight, so that new observations keep a share of at least
            ``1 / max_weight`` in the running average.
        near: points closer than this z-depth to a camera are not drawn by :meth:`LatentSpatialMemory.read`.
    """

    feature_dim: int
    voxel_size: float = 0.05
    capacity: int = 1 << 20
    dtype: str = "float32"
    max_weight: float = 64.0
    near: float = 1e-2

    def __post_init__(self) -> None:
        check_int("feature_dim", self.feature_dim, 1)
        check_int("capacity", self.capacity, 1, MAX_CAPACITY)
        check_number("voxel_size", self.voxel_size, 0.0, low_open=True)
        check_choice("dtype", self.dtype, MEMORY_DTYPES)
        check_number("max_weight", self.max_weight, 1.0)
        check_number("near", self.near, 0.0)


class MemoryRead(NamedTuple):
    """What a set of cameras sees in the memory."""

    features: torch.Tensor  # [B, C, h, w], zeros where nothing is visible
    mask: torch.Tensor  # [B, h, w] bool, True where a point was drawn
    depth: torch.Tensor  # [B, h, w] float32 z-depth of the drawn point, 0 where empty
    index: torch.Tensor  # [B, h, w] int64 slot of the drawn voxel, -1 where empty


class WriteStats(NamedTuple):
    """Counts of one :meth:`LatentSpatialMemory.write`."""

    cells: int
    invalid_depth: int
    masked: int
    written: int
    new_voxels: int
    fused_voxels: int
    evicted: int


class MemoryStats(NamedTuple):
    points: int
    bytes: int
    capacity: int
    capacity_bytes: int


class LatentSpatialMemory:
    """Persistent 3D memory of latent features, read by projection and written by lifting with depth.

    Each voxel keeps a fused feature, the fused position of its points, a confidence weight and the step it was
    last written. Reads draw one point per voxel into the target cameras with a deterministic z-buffer (nearest
    depth wins, lowest slot on ties), so results are identical on every thread count and device.
    """

    def __init__(self, config: MemoryConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.clear()

    # ------------------------------------------------------------------ storage
    def clear(self) -> None:
        """Forget every voxel and reset the step counter."""
        self.step = 0
        self._n = 0
        self._allocate(0)
        self._sorted_keys = torch.empty(0, dtype=torch.int64, device=self.device)
        self._sorted_slots = torch.empty(0, dtype=torch.int64, device=self.device)

    def _allocate(self, rows: int) -> None:
        c, device = self.config.feature_dim, self.device
        self._positions = torch.zeros((rows, 3), dtype=torch.float32, device=device)
        self._features = torch.zeros((rows, c), dtype=_DTYPES[self.config.dtype], device=device)
        self._weights = torch.zeros(rows, dtype=torch.float32, device=device)
        self._last_seen = torch.zeros(rows, dtype=torch.int64, device=device)
        self._keys = torch.zeros(rows, dtype=torch.int64, device=device)

    def _reserve(self, rows: int) -> None:
        """Grow storage geometrically (never beyond capacity) to hold ``rows`` voxels."""
        allocated = self._keys.shape[0]
        if rows <= allocated:
            return
        new_rows = min(self.config.capacity, max(rows, 2 * allocated, 1024))
        old = (self._positions, self._features, self._weights, self._last_seen, self._keys)
        self._allocate(new_rows)
        for dst, src in zip((self._positions, self._features, self._weights, self._last_seen, self._keys), old):
            dst[: self._n] = src[: self._n]

    @property
    def positions(self) -> torch.Tensor:
        """Fused voxel positions [N, 3] (a view)."""
        return self._positions[: self._n]

    @property
    def features(self) -> torch.Tensor:
        """Fused features [N, C] (a view)."""
        return self._features[: self._n]

    @property
    def weights(self) -> torch.Tensor:
        return self._weights[: self._n]

    @property
    def last_seen(self) -> torch.Tensor:
        return self._last_seen[: self._n]

    @property
    def keys(self) -> torch.Tensor:
        """Packed voxel keys [N] (see :mod:`mirage_env.memory.voxels`)."""
        return self._keys[: self._n]

    def __len__(self) -> int:
        return self._n

    def _row_bytes(self) -> int:
        feature_bytes = self.config.feature_dim * torch.empty((), dtype=_DTYPES[self.config.dtype]).element_size()
        return 3 * 4 + feature_bytes + 4 + 8 + 8 + 2 * 8  # position, feature, weight, last seen, key, index

    def stats(self) -> MemoryStats:
        """Voxel count and bytes held (allocated rows and the key index) against the configured capacity."""
        row = self._row_bytes()
        held = self._keys.shape[0] * (row - 16) + self._sorted_keys.numel() * 16
        return MemoryStats(self._n, held, self.config.capacity, self.config.capacity * row)

    # ------------------------------------------------------------------ write
    def write(self, latents: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor,
              keep_mask: torch.Tensor | None = None, confidence: torch.Tensor | None = None) -> WriteStats:
        """Lift latent frames to 3D with depth and fuse them into the voxel store.

        Args:
            latents: [T, C, h, w] latent features.
            depth: [T, H, W] z-depth at latent resolution or an integer multiple of it; 0 = no depth. A cell is
                invalid when any pixel of its block has no depth. NaN, inf and negative values are errors.
            K: [T, 3, 3] or [3, 3] intrinsics of the depth maps' resolution (scaled to the latent grid inside).
            c2w: [T, 4, 4] or [4, 4] camera-to-world poses (OpenCV).
            keep_mask: optional bool [T, h, w] or [T, H, W]; False cells (e.g. dynamic objects) are not written.
            confidence: optional [T, h, w] per-cell fusion weights (default 1).

        Invalid input raises before anything changes. Returns the counts of the write.
        """
        lifted = lift_cells(latents, depth, K, c2w, self.config.feature_dim, self.device, keep_mask, confidence)
        keys = pack_voxel_keys(voxel_coords(lifted.points, self.config.voxel_size))
        sorted_keys, order = torch.sort(keys, stable=True)
        unique, pos_sum, feat_sum, weight_sum, slot = ops.segment_fuse(
            sorted_keys, order, lifted.points, lifted.features, lifted.weights, self._sorted_keys, self._sorted_slots)
        step = self.step + 1
        fused = slot >= 0
        fused_slots = slot[fused]
        old_w = self._weights[fused_slots]
        total = old_w + weight_sum[fused]
        fused_pos = (self._positions[fused_slots] * old_w[:, None] + pos_sum[fused]) / total[:, None]
        fused_feat = (self._features[fused_slots].float() * old_w[:, None] + feat_sum[fused]) / total[:, None]

        new = ~fused
        new_w = weight_sum[new]
        new_keys, new_pos, new_feat = unique[new], pos_sum[new] / new_w[:, None], feat_sum[new] / new_w[:, None]
        if new_keys.numel() > self.config.capacity:
            keep = _eviction_order(-new_w, new_keys, torch.zeros_like(new_keys))[: self.config.capacity]
            keep = keep.sort().values
            new_keys, new_pos, new_feat, new_w = new_keys[keep], new_pos[keep], new_feat[keep], new_w[keep]
        evict = self._evictable(new_keys.numel(), fused_slots, step)

        # Commit: nothing below can fail on valid state.
        self._positions[fused_slots] = fused_pos
        self._features[fused_slots] = fused_feat.to(self._features.dtype)
        self._weights[fused_slots] = total.clamp(max=self.config.max_weight)
        self._last_seen[fused_slots] = step
        self._sorted_keys, self._sorted_slots = self._drop_from_index(evict)
        free = torch.cat([evict, torch.arange(self._n, self._n + new_keys.numel() - evict.numel(),
                                              device=self.device)])
        self._reserve(self._n + new_keys.numel() - evict.numel())
        self._positions[free] = new_pos
        self._features[free] = new_feat.to(self._features.dtype)
        self._weights[free] = new_w.clamp(max=self.config.max_weight)
        self._last_seen[free] = step
        self._keys[free] = new_keys
        self._n += new_keys.numel() - evict.numel()
        self._sorted_keys, self._sorted_slots = merge_sorted(self._sorted_keys, self._sorted_slots, new_keys, free)
        self.step = step
        return WriteStats(lifted.cells, lifted.invalid_depth, lifted.masked, lifted.points.shape[0],
                          int(new_keys.numel()), int(fused_slots.numel()), int(evict.numel()))

    def _evictable(self, incoming: int, protected: torch.Tensor, step: int) -> torch.Tensor:
        """Slots to free so that ``incoming`` new voxels fit: oldest last-seen, then lowest weight, then key."""
        overflow = self._n + incoming - self.config.capacity
        if overflow <= 0:
            return torch.empty(0, dtype=torch.int64, device=self.device)
        seen = self.last_seen.clone()
        seen[protected] = step
        order = _eviction_order(seen, self.keys, self.weights)
        return order[:overflow].sort().values

    def _drop_from_index(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if slots.numel() == 0:
            return self._sorted_keys, self._sorted_slots
        gone = torch.zeros(self._keys.shape[0], dtype=torch.bool, device=self.device)
        gone[slots] = True
        keep = ~gone[self._sorted_slots]
        return self._sorted_keys[keep], self._sorted_slots[keep]

    def remove(self, slots: torch.Tensor) -> int:
        """Delete the voxels at ``slots`` (e.g. free space seen through them); returns how many were removed.

        The last voxels move into the freed slots, so slots are always ``0 .. len(self) - 1``.
        """
        slots = torch.unique(slots.to(device=self.device, dtype=torch.int64))
        if slots.numel() and (int(slots[0]) < 0 or int(slots[-1]) >= self._n):
            raise ValueError(f"slots must lie in [0, {self._n}), got {int(slots[0])} .. {int(slots[-1])}")
        if slots.numel() == 0:
            return 0
        self._sorted_keys, self._sorted_slots = self._drop_from_index(slots)
        n_after = self._n - slots.numel()
        holes = slots[slots < n_after]
        tail = torch.ones(self._n - n_after, dtype=torch.bool, device=self.device)
        tail[slots[slots >= n_after] - n_after] = False
        movers = torch.arange(n_after, self._n, device=self.device)[tail]
        for store in (self._positions, self._features, self._weights, self._last_seen, self._keys):
            store[holes] = store[movers]
        remap = torch.arange(self._keys.shape[0], device=self.device)
        remap[movers] = holes
        self._sorted_slots = remap[self._sorted_slots]
        self._n = n_after
        return int(slots.numel())

    # ------------------------------------------------------------------ read
    def read(self, K: torch.Tensor, c2w: torch.Tensor, hw: tuple[int, int]) -> MemoryRead:
        """Project the memory into B cameras: K [B, 3, 3] for a grid of size ``hw``, c2w [B, 4, 4]."""
        check_intrinsics(K)
        check_poses(c2w)
        K, c2w = K.reshape(-1, 3, 3), c2w.reshape(-1, 4, 4)
        if K.shape[0] != c2w.shape[0]:
            raise ValueError(f"K and c2w must hold the same number of cameras, got {K.shape[0]} and {c2w.shape[0]}")
        h, w = int(hw[0]), int(hw[1])
        if h <= 0 or w <= 0:
            raise ValueError(f"hw must be positive, got {hw}")
        cameras = pack_cameras(K, c2w, self.device)
        packed = ops.project_zbuffer(self.positions.contiguous(), cameras, h, w, self.config.near)
        mask = packed != ops.EMPTY_KEY
        index = torch.where(mask, packed & ops.INDEX_MASK, torch.full_like(packed, -1))
        depth = torch.where(mask, ops.bits_to_float(packed >> 32), torch.zeros((), device=self.device))
        b = cameras.shape[0]
        features = torch.zeros((b * h * w, self.config.feature_dim), dtype=self._features.dtype, device=self.device)
        flat_mask = mask.reshape(-1)
        features[flat_mask] = self._features[index.reshape(-1)[flat_mask]]
        features = features.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
        return MemoryRead(features, mask.reshape(b, h, w), depth.reshape(b, h, w), index.reshape(b, h, w))

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that fully describe the memory (copies), including the config as a uint8 JSON tensor."""
        config = json.dumps(asdict(self.config)).encode()
        return {
            "positions": self.positions.clone(),
            "features": self.features.clone(),
            "weights": self.weights.clone(),
            "last_seen": self.last_seen.clone(),
            "keys": self.keys.clone(),
            "step": torch.tensor([self.step], dtype=torch.int64),
            "config": torch.tensor(list(config), dtype=torch.uint8),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the contents with ``state``; raises ValueError (memory unchanged) when it is inconsistent (see
        :func:`check_memory_state`)."""
        fields = ("positions", "features", "weights", "last_seen", "keys", "step", "config")
        missing = [k for k in fields if k not in state]
        if missing:
            raise ValueError(f"memory state is missing {missing}")
        try:
            config = MemoryConfig(**json.loads(bytes(state["config"].tolist()).decode()))
        except (AttributeError, TypeError, ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"memory state has an unreadable config ({error})") from error
        if config != self.config:
            raise ValueError(f"memory state was saved with {config}, this memory has {self.config}")
        check_memory_state(state, config)
        n = state["keys"].shape[0]
        keys = state["keys"].to(self.device)
        sorted_keys, sorted_slots = torch.sort(keys)
        self._n = 0
        self._allocate(n)
        self._positions.copy_(state["positions"])
        self._features.copy_(state["features"])
        self._weights.copy_(state["weights"])
        self._last_seen.copy_(state["last_seen"])
        self._keys.copy_(keys)
        self._n = n
        self._sorted_keys, self._sorted_slots = sorted_keys, sorted_slots
        self.step = int(state["step"][0])

    def save(self, path: str | Path) -> None:
        """Write the memory to a safetensors file atomically (exact round trip with :meth:`load`)."""
        tensors = {k: v.cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_file(path) as temp:
            save_file(tensors, str(temp), metadata={"format": FORMAT_NAME, "version": FORMAT_VERSION})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> LatentSpatialMemory:
        """Read a memory written by :meth:`save`; a corrupt or foreign file raises ValueError naming it."""
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable safetensors memory file ({error})") from error
        if "config" not in state:
            raise ValueError(f"{path}: not a mirage-env memory file (no config tensor)")
        try:
            config = MemoryConfig(**json.loads(bytes(state["config"].tolist()).decode()))
        except (TypeError, ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: unreadable memory config ({error})") from error
        memory = cls(config, device)
        try:
            memory.load_state_dict(state)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        return memory

    def to(self, device: torch.device | str) -> LatentSpatialMemory:
        """Move the memory to ``device`` in place; returns self."""
        device = torch.device(device)
        for name in ("_positions", "_features", "_weights", "_last_seen", "_keys", "_sorted_keys", "_sorted_slots"):
            setattr(self, name, getattr(self, name).to(device))
        self.device = device
        return self


def check_memory_state(state: dict[str, torch.Tensor], config: MemoryConfig) -> None:
    """ValueError naming the problem unless ``state`` is a consistent memory of ``config``: tensors of the stored
    dtypes and matching shapes, at most ``capacity`` voxels, finite positions and features, weights in
    ``(0, max_weight]``, distinct keys that are the voxels of the positions, ``0 <= last_seen <= step``."""
    dtypes = {"positions": torch.float32, "features": _DTYPES[config.dtype], "weights": torch.float32,
              "last_seen": torch.int64, "keys": torch.int64, "step": torch.int64}
    for name, dtype in dtypes.items():
        if not isinstance(state[name], torch.Tensor):
            raise ValueError(f"memory state {name} must be a torch.Tensor, got {type(state[name]).__name__}")
        if state[name].dtype != dtype:
            kind = "an int64" if dtype == torch.int64 else f"a {str(dtype).removeprefix('torch.')}"
            raise ValueError(f"memory state {name} must be {kind} tensor, got {state[name].dtype}")
    n = state["keys"].shape[0] if state["keys"].dim() == 1 else -1
    expected = {"positions": (n, 3), "features": (n, config.feature_dim), "weights": (n,), "last_seen": (n,),
                "keys": (n,), "step": (1,)}
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise ValueError(f"memory state {name} has shape {list(state[name].shape)}, expected {list(shape)}")
    if n > config.capacity:
        raise ValueError(f"memory state holds {n} voxels, more than the capacity {config.capacity}")
    for name in ("positions", "features", "weights"):
        try:
            check_finite(name, state[name])
        except ValueError as error:
            raise ValueError(f"memory state {error}") from None
    weights = state["weights"]
    if n and (bool((weights <= 0).any()) or bool((weights > config.max_weight).any())):
        raise ValueError(f"memory state weights must lie in (0, {config.max_weight}], got "
                         f"{float(weights.min())} .. {float(weights.max())}")
    step, last_seen = int(state["step"][0]), state["last_seen"]
    if step < 0:
        raise ValueError(f"memory state step must be >= 0, got {step}")
    if n and int(last_seen.min()) < 0:
        raise ValueError(f"memory state last_seen must be >= 0, got {int(last_seen.min())}")
    if n and int(last_seen.max()) > step:
        raise ValueError(f"memory state has last_seen {int(last_seen.max())} after step {step}")
    keys = state["keys"]
    if n > 1 and bool((keys.sort().values.diff() == 0).any()):
        raise ValueError("memory state has duplicate voxel keys")
    # A fused position is a mean of points inside its voxel; allow float32 rounding at the voxel's borders.
    corner = unpack_voxel_keys(keys).to(torch.float64) * config.voxel_size
    positions = state["positions"].to(torch.float64)
    slack = 1e-3 * config.voxel_size + 1e-6 * positions.abs()
    outside = (positions < corner - slack) | (positions > corner + config.voxel_size + slack)
    if bool(outside.any()):
        slot = int(outside.any(dim=1).nonzero()[0, 0])
        raise ValueError(f"memory state keys do not match the voxels of positions ({int(outside.any(dim=1).sum())} "
                         f"voxels, e.g. slot {slot}: position {positions[slot].tolist()} lies outside the voxel of "
                         f"its key, corner {corner[slot].tolist()}, size {config.voxel_size})")


def _eviction_order(primary: torch.Tensor, keys: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Indices sorted by ``primary``, then ``secondary``, then ``keys``, all ascending (deterministic)."""
    order = torch.argsort(keys, stable=True)
    order = order[torch.argsort(secondary[order], stable=True)]
    return order[torch.argsort(primary[order], stable=True)]
