"""Observation spaces and values.

``obs_mode="rgb"``: the last generated frame, uint8 [H, W, 3]. ``obs_mode="dict"``: a flat Dict with ``rgb``,
``pose`` (camera-to-world, OpenCV axes, metres: its first three rows ``(R | t)`` flattened, float32 [12]) and
``depth`` (z-depth of the last frame in metres, float32 [H, W, 1]; 0 = unknown or sky, clipped to ``DEPTH_MAX``),
plus the reward's own keys (e.g. ``goal_pose``, like ``pose``). The observation size may differ from the world's frame size (bilinear with antialiasing for
colour, nearest for depth); ``render()`` always returns the frame at the world's size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

OBS_MODES = ("rgb", "dict")
DEPTH_MAX = 1000.0  # metres
POSE_LIMIT = 1e6  # metres; the bounds of the translation entries of a pose


def pose_space() -> spaces.Box:
    """Camera-to-world poses as observations: the first three rows ``(R | t)`` row-major, float32 [12]; rotation
    entries in [-1, 1], translation within +-``POSE_LIMIT`` metres."""
    high = np.ones((3, 4), np.float32)
    high[:, 3] = POSE_LIMIT
    return spaces.Box(-high.reshape(12), high.reshape(12), dtype=np.float32)


def pose_value(c2w: torch.Tensor) -> np.ndarray:
    """A pose [4, 4] as an observation [12] (rotation entries clipped against float rounding)."""
    pose = c2w[:3].to(torch.float32).numpy().copy()
    pose[:, :3] = pose[:, :3].clip(-1.0, 1.0)
    return pose.reshape(12)


def observation_space(mode: str, hw: tuple[int, int], extra: dict[str, spaces.Space]) -> spaces.Space:
    rgb = spaces.Box(0, 255, (*hw, 3), np.uint8)
    if mode == "rgb":
        return rgb
    if mode == "dict":
        return spaces.Dict({"rgb": rgb, "pose": pose_space(),
                            "depth": spaces.Box(0.0, DEPTH_MAX, (*hw, 1), np.float32), **extra})
    raise ValueError(f"obs_mode must be 'rgb' or 'dict', got {mode!r}")


def resize_rgb(frame: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [h, w, 3] as a new numpy array."""
    if tuple(frame.shape[:2]) == tuple(hw):
        return frame.numpy().copy()
    x = frame.permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def resize_depth(depth: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """z-depth [H, W] (NaN-free; inf = sky) -> float32 [h, w, 1] with sky 0 and far values clipped."""
    depth = torch.where(torch.isfinite(depth), depth, torch.zeros((), dtype=depth.dtype)).clamp(0.0, DEPTH_MAX)
    if tuple(depth.shape) != tuple(hw):
        depth = F.interpolate(depth[None, None].float(), size=hw, mode="nearest")[0, 0]
    return depth.to(torch.float32)[..., None].numpy().copy()


def observation(mode: str, hw: tuple[int, int], frame: torch.Tensor, depth: torch.Tensor, c2w: torch.Tensor,
                extra: dict[str, np.ndarray]):
    """The observation of one world (fresh arrays every call)."""
    rgb = resize_rgb(frame, hw)
    if mode == "rgb":
        return rgb
    return {"rgb": rgb, "pose": pose_value(c2w), "depth": resize_depth(depth, hw),
            **{k: v.copy() for k, v in extra.items()}}
