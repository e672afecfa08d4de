"""Checks of world snapshots (:meth:`~mirage_env.world.World.state_dict`) before anything is restored.

A snapshot is a dict (layout in docs/formats.md). :func:`check_world_snapshot` raises ``ValueError`` naming the
key and the problem: a foreign format, a missing key, a pose that is not a finite rigid transform, invalid
intrinsics, latents of another shape or with NaN, frame indices that are negative or lie after the world's frame,
a keyframe store whose lists disagree. The memory inside is checked by the memory's own ``load_state_dict``.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from mirage_env.geometry.checks import check_finite, check_intrinsics, check_poses, check_shape

SNAPSHOT_FORMAT = "mirage-env-world"
SNAPSHOT_VERSION = 1
SNAPSHOT_KEYS = ("format", "version", "memory", "K", "pose", "frame", "generator", "first_latent", "history",
                 "history_frames", "keyframes")
KEYFRAME_KEYS = ("capacity", "latents", "poses", "keys", "frame_index")


def check_world_snapshot(state: Any, latent_shape: tuple[int, int, int]) -> None:
    """``state`` must be a complete, consistent world snapshot whose latents are [C, h, w] = ``latent_shape``."""
    if not isinstance(state, dict):
        raise ValueError(f"a world snapshot must be a dict, got {type(state).__name__}")
    if state.get("format") != SNAPSHOT_FORMAT or state.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"not a {SNAPSHOT_FORMAT} snapshot of version {SNAPSHOT_VERSION}")
    _require_keys("world snapshot", state, SNAPSHOT_KEYS)
    if not isinstance(state["memory"], dict):
        raise ValueError(f"world snapshot memory must be a dict, got {type(state['memory']).__name__}")
    check_intrinsics(_float_tensor("K", state["K"], (3, 3)), "world snapshot K")
    check_poses(_float_tensor("pose", state["pose"], (4, 4)), "world snapshot pose")
    frame = _index("frame", state["frame"], None)
    generator = state["generator"]
    if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8:
        raise ValueError("world snapshot generator must be a uint8 tensor (torch.Generator.get_state())")
    try:
        torch.Generator().set_state(generator)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"world snapshot generator is not a generator state ({error})") from None
    c, h, w = latent_shape
    _float_tensor("first_latent", state["first_latent"], (c, 1, h, w))
    history, history_frames = _list("history", state["history"]), _list("history_frames", state["history_frames"])
    if not history or len(history) != len(history_frames):
        raise ValueError(f"world snapshot history and history_frames must be equally long and not empty, got "
                         f"{len(history)} and {len(history_frames)}")
    for i, (latent, index) in enumerate(zip(history, history_frames)):
        _float_tensor(f"history[{i}]", latent, (c, h, w))
        _index(f"history_frames[{i}]", index, frame)
    check_keyframes(state["keyframes"], latent_shape, frame)
    if "discard_history" in state:  # optional: snapshots written before it load with an empty one
        check_discard_history(state["discard_history"], (h, w))


def check_discard_history(state: Any, latent_hw: tuple[int, int]) -> None:
    """``{"depth": float32 [P, h, w] >= 0, "cameras": float32 [P, 16]}``, finite (the discard's recent frames)."""
    if not isinstance(state, dict) or set(state) != {"depth", "cameras"}:
        raise ValueError("world snapshot discard_history must be a dict with keys 'depth' and 'cameras'")
    depth, cameras = state["depth"], state["cameras"]
    frames = depth.shape[0] if isinstance(depth, torch.Tensor) and depth.dim() == 3 else None
    for name, x, shape in (("depth", depth, (frames, *latent_hw)), ("cameras", cameras, (frames, 16))):
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
            raise ValueError(f"world snapshot discard_history {name} must be a float32 tensor")
        _float_tensor(f"discard_history {name}", x, shape)
    if bool((depth < 0).any()):
        raise ValueError("world snapshot discard_history depth must be >= 0")


def check_keyframes(state: Any, latent_shape: tuple[int, int, int], frame: int) -> None:
    """A :class:`~mirage_env.world.KeyframeStore` state: equally long lists within ``capacity`` of latents
    [C, h, w], rigid poses [4, 4], int64 voxel keys [n] and frame indices in ``[0, frame]``."""
    if not isinstance(state, dict):
        raise ValueError(f"world snapshot keyframes must be a dict, got {type(state).__name__}")
    _require_keys("world snapshot keyframes", state, KEYFRAME_KEYS)
    capacity = _index("keyframes capacity", state["capacity"], None)
    lists = {name: _list(f"keyframes {name}", state[name]) for name in KEYFRAME_KEYS[1:]}
    lengths = {name: len(items) for name, items in lists.items()}
    if len(set(lengths.values())) > 1 or max(lengths.values()) > capacity or capacity < 1:
        raise ValueError(f"world snapshot keyframes lists must be equally long and within capacity {capacity}, got "
                         f"{lengths}")
    for i, (latent, pose, keys, index) in enumerate(zip(*lists.values())):
        _float_tensor(f"keyframes latents[{i}]", latent, latent_shape)
        check_poses(_float_tensor(f"keyframes poses[{i}]", pose, (4, 4)), f"world snapshot keyframes poses[{i}]")
        if not isinstance(keys, torch.Tensor) or keys.dtype != torch.int64 or keys.dim() != 1:
            raise ValueError(f"world snapshot keyframes keys[{i}] must be an int64 tensor [n]")
        _index(f"keyframes frame_index[{i}]", index, frame)


def _require_keys(what: str, state: dict, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{what} is missing {', '.join(repr(k) for k in missing)}")


def _float_tensor(name: str, x: Any, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"world snapshot {name} must be a floating-point tensor, got {kind}")
    check_shape(f"world snapshot {name}", x, shape)
    check_finite(f"world snapshot {name}", x)
    return x


def _list(name: str, x: Any) -> list:
    if not isinstance(x, (list, tuple)):
        raise ValueError(f"world snapshot {name} must be a list, got {type(x).__name__}")
    return list(x)


def _index(name: str, x: Any, last: int | None) -> int:
    """A frame index (or count): an int >= 0, at most ``last``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise ValueError(f"world snapshot {name} must be an integer, got {type(x).__name__} {x!r}")
    if x < 0 or (last is not None and x > last):
        raise ValueError(f"world snapshot {name} must lie in [0, {'inf' if last is None else last}], got {x}")
    return int(x)
