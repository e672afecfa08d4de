"""Where an episode starts: a simulator scene (default), a user's view, or the first frame of a ``geometry.npz``.

Views of another size are resized to the world's frame size (colour bilinear with antialiasing, depth and masks
nearest) and their intrinsics scaled accordingly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mirage_env.geometry.camera import scale_intrinsics
from mirage_env.geometry.camera_files import load_geometry_npz
from mirage_env.geometry.checks import check_poses, check_shape
from mirage_env.sim import Scene, render, sample_scene, start_pose
from mirage_env.sim.scene import KINDS
from mirage_env.world import InitialView, check_view

SCENE_KINDS = ("indoor", "outdoor", "any")
OPTION_KEYS = ("scene", "pose", "view", "geometry_npz", "goal_pose")


@dataclass
class Start:
    view: InitialView
    scene: Scene | None  # None: no simulator behind the episode (depth and collision come from the memory)


def fit_view(view: InitialView, hw: tuple[int, int]) -> InitialView:
    """``view`` at frame size ``hw``."""
    src = tuple(view.image.shape[:2])
    if src == tuple(hw):
        return view

    def nearest(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x[None, None].float(), size=hw, mode="nearest")[0, 0]

    image = F.interpolate(view.image.permute(2, 0, 1)[None].float(), size=hw, mode="bilinear", antialias=True,
                          align_corners=False)[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)
    mask = None if view.dynamic_mask is None else nearest(view.dynamic_mask).bool()
    return InitialView(image, nearest(view.depth).to(view.depth.dtype), scale_intrinsics(view.K, src, hw), view.c2w,
                       mask)


def scene_start(scene: Scene, K: torch.Tensor, hw: tuple[int, int], pose: torch.Tensor | None,
                rng: np.random.Generator) -> Start:
    """Render the start view of ``scene`` at ``pose`` (a checked float64 pose; default: a free pose from ``rng``)."""
    if pose is None:
        pose = start_pose(scene, rng)
    out = render(scene, K, pose, hw)
    return Start(InitialView(out.rgb[0], out.depth[0], K, pose, out.dynamic_mask[0]), scene)


def npz_start(path: str | Path) -> InitialView:
    """The first frame of a Mirage ``geometry.npz`` (which must hold ``frames``) as a start view."""
    sequence = load_geometry_npz(path)
    if sequence.frames is None:
        raise ValueError(f"{path}: starting from a geometry.npz needs its optional 'frames' array")
    mask = None if sequence.masks is None else sequence.masks[0]
    return InitialView(sequence.frames[0], sequence.depths[0], sequence.intrinsics[0], sequence.poses_c2w[0], mask)


def pose_option(name: str, value: Any) -> torch.Tensor:
    """A pose option as a float64 tensor [4, 4]: a finite rigid camera-to-world transform (tensor or array)."""
    if isinstance(value, torch.Tensor):
        pose = value
    elif isinstance(value, (np.ndarray, list, tuple)):
        try:
            pose = torch.from_numpy(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise TypeError(f"options[{name!r}] must be a 4x4 array of numbers ({error})") from None
    else:
        raise TypeError(f"options[{name!r}] must be a 4x4 torch.Tensor or numpy array, got {type(value).__name__}")
    if pose.is_complex() or pose.dtype == torch.bool:
        raise TypeError(f"options[{name!r}] must hold real numbers, got {pose.dtype}")
    pose = pose.to(torch.float64)
    check_shape(f"options[{name!r}]", pose, (4, 4))
    check_poses(pose, f"options[{name!r}]")
    return pose


def check_reset_options(options: Any, extra_keys: tuple[str, ...] = ()) -> dict:
    """``reset`` options checked before anything changes: None or a dict of keys from :data:`OPTION_KEYS` (plus
    ``extra_keys``) holding values of the right types. Returns a copy without the keys whose value is None (not
    given) and with poses as float64 tensors."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
    known = (*OPTION_KEYS, *extra_keys)
    unknown = [k for k in options if k not in known]
    if unknown:
        raise ValueError(f"unknown reset options {unknown}; known: {list(known)}")
    options = {k: v for k, v in options.items() if v is not None}
    sources = [k for k in ("scene", "view", "geometry_npz") if k in options]
    if len(sources) > 1:
        raise ValueError(f"reset options {sources} are exclusive: give one start")
    if "pose" in options and sources and sources[0] != "scene":
        raise ValueError("the 'pose' option goes with a simulator scene, not with 'view' or 'geometry_npz'")
    for name in ("pose", "goal_pose"):
        if name in options:
            options[name] = pose_option(name, options[name])
    if "scene" in options and not isinstance(options["scene"], Scene):
        raise TypeError(f"options['scene'] must be a mirage_env.sim.Scene, got {type(options['scene']).__name__}")
    if "view" in options:
        check_view(options["view"], name="options['view']")
    path = options.get("geometry_npz")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"options['geometry_npz'] must be a path, got {type(path).__name__}")
    return options


def make_start(options: dict, K: torch.Tensor, hw: tuple[int, int], kind: str, rng: np.random.Generator) -> Start:
    """The start of an episode from options checked by :func:`check_reset_options`."""
    if options.get("view") is not None:
        return Start(fit_view(options["view"], hw), None)
    if options.get("geometry_npz") is not None:
        return Start(fit_view(npz_start(options["geometry_npz"]), hw), None)
    scene = options.get("scene")
    if scene is None:
        if kind == "any":
            kind = KINDS[int(rng.integers(len(KINDS)))]
        scene = sample_scene(int(rng.integers(2**31)), kind)
    return scene_start(scene, K, hw, options.get("pose"), rng)
