"""Training clips from the simulator: RGB, depth, dynamic masks and cameras along varied paths.

Every clip is a deterministic function of its index: the scene seed, the kind (indoor/outdoor alternate), the
camera path and the time offset are drawn from ``numpy.random.default_rng((seed, index))``. Paths mix the camera
motions the environments produce (walking, turning, looking up and down) and return towards their start, so
that late frames revisit what early frames saw: the statistics the memory is trained for.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mirage_env.atomic import atomic_file
from mirage_env.geometry import integrate_velocity, intrinsics_from_fov
from mirage_env.sim import Scene, render, scene_by_seed, start_pose
from mirage_env.video import to_unit


@dataclass
class Clip:
    """``frames`` uint8 [T, H, W, 3]; ``depth`` [T, H, W] (inf = sky); ``dynamic`` bool [T, H, W];
    ``K`` [3, 3]; ``poses`` [T, 4, 4] camera-to-world; ``times`` [T] seconds."""

    frames: torch.Tensor
    depth: torch.Tensor
    dynamic: torch.Tensor
    K: torch.Tensor
    poses: torch.Tensor
    times: torch.Tensor


@dataclass(frozen=True)
class ClipConfig:
    """Size and motion of simulator clips. ``scenes`` distinct scene seeds starting at ``first_scene``."""

    hw: tuple[int, int] = (64, 64)
    frames: int = 17
    fps: float = 16.0
    fov_deg: float = 70.0
    scenes: int = 200
    first_scene: int = 0
    max_speed: float = 0.08  # metres per frame
    max_turn_deg: float = 6.0  # degrees per frame
    returning: bool = True  # the second half of the path walks back towards the start


def camera_path(scene: Scene, start: torch.Tensor, frames: int, rng: np.random.Generator,
                config: ClipConfig) -> torch.Tensor:
    """Poses [frames, 4, 4]: a random but smooth walk for the first half, then back towards the start (with
    ``config.returning``; otherwise the walk goes on for every frame)."""
    outbound = frames // 2 + 1 if config.returning else frames
    speed = rng.uniform(0.0, config.max_speed)
    turn = math.radians(rng.uniform(-config.max_turn_deg, config.max_turn_deg))
    tilt = math.radians(rng.uniform(-1.0, 1.0))
    poses = [start.to(torch.float64)]
    for _ in range(outbound - 1):
        velocity = torch.tensor([0.0, 0.0, speed, turn, tilt, 0.0], dtype=torch.float64)
        step = integrate_velocity(poses[-1], velocity)
        if not scene.segment_is_free(poses[-1][:3, 3].numpy(), step[:3, 3].numpy(), 0.15):
            step = integrate_velocity(poses[-1], velocity * torch.tensor([0, 0, 0, 1, 1, 0], dtype=torch.float64))
        poses.append(step)
    back = poses[-2::-1][: frames - outbound]
    return torch.stack(poses + back)


def sample_clip(index: int, config: ClipConfig = ClipConfig(), seed: int = 0) -> Clip:
    """The clip with this index (deterministic)."""
    rng = np.random.default_rng((seed, index))
    scene_seed = config.first_scene + int(rng.integers(config.scenes))
    scene = scene_by_seed(scene_seed)
    poses = camera_path(scene, start_pose(scene, rng), config.frames, rng, config)
    K = intrinsics_from_fov(config.fov_deg, config.hw)
    times = torch.tensor(rng.uniform(0.0, 10.0) + np.arange(config.frames) / config.fps)
    view = render(scene, K, poses, config.hw, time=times)
    return Clip(view.rgb, view.depth, view.dynamic_mask, K, poses, times)


ClipSource = Callable[[int], Clip]
"""Where training clips come from: a deterministic ``index -> Clip`` (:class:`SimulatorClips`, or real sequences:
:class:`~mirage_env.train.real_data.RealClips`)."""


@dataclass(frozen=True)
class SimulatorClips:
    """The simulator as a :data:`ClipSource`: ``sample_clip(index, config, seed)``.

    With ``cache_dir``, every clip rendered is also saved there (one ``torch.save`` file per clip, named by a hash
    of the config and seed and by the index) and later calls load it instead of rendering again: worker processes
    can render ahead of the process that needs the clips.
    """

    config: ClipConfig
    seed: int = 0
    cache_dir: Path | None = None

    def cache_path(self, index: int) -> Path:
        key = hashlib.sha256(repr((asdict(self.config), self.seed)).encode()).hexdigest()[:16]
        return Path(self.cache_dir) / f"clip-{key}-{index}.pt"

    def __call__(self, index: int) -> Clip:
        if self.cache_dir is None:
            return sample_clip(index, self.config, self.seed)
        path = self.cache_path(index)
        if path.exists():
            return Clip(**torch.load(path, weights_only=True))
        clip = sample_clip(index, self.config, self.seed)
        with atomic_file(path) as partial:  # complete or absent: a clip is never read half-written
            torch.save(vars(clip), partial)
        return clip


def frames_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., T, H, W, 3] -> float video [..., 3, T, H, W] in [-1, 1] (the VAE's layout)."""
    return to_unit(frames).movedim(-4, -3)
