"""Pluggable rewards. Each world of an env holds its own reward object; ``reward=`` takes a name or a factory.

* ``"exploration"`` (default): new memory voxels written this step divided by the latent cells of the step's new
  frames, in [0, 1]. Only geometry the memory keeps counts (sky, far and dynamic content are discarded), and
  looking again at known places gives nothing. Never terminates.
* ``"goal"``: reach a goal view (pose). Reward = decrease of ``position error (m) + metres_per_radian * angle
  error (rad)``, plus ``success_bonus`` when within ``position_tol_m`` and ``angle_tol_deg``, which terminates
  the episode. The goal is ``options["goal_pose"]`` or a free pose drawn near the start; the Dict observation
  carries it as ``goal_pose``.
* ``"none"``: always 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from gymnasium import spaces

from mirage_env.envs.observations import pose_space, pose_value
from mirage_env.geometry.checks import check_poses
from mirage_env.geometry.poses import euler_from_rotation, pose_from_euler
from mirage_env.sim import Scene


@dataclass(frozen=True)
class Transition:
    """What a reward sees of one step of one world."""

    pose_before: torch.Tensor  # [4, 4]
    pose: torch.Tensor
    voxels_before: int
    voxels: int
    cells: int  # latent cells of the new frames
    blocked: bool


class Reward(Protocol):
    def extra_spaces(self) -> dict[str, spaces.Space]:
        """Extra keys of the Dict observation."""

    def extra_observation(self) -> dict[str, np.ndarray]:
        ...

    def reset(self, scene: Scene | None, pose: torch.Tensor, rng: np.random.Generator, options: dict) -> None:
        ...

    def __call__(self, step: Transition) -> tuple[float, bool]:
        """(reward, terminated)."""


class _NoExtras:
    def extra_spaces(self) -> dict[str, spaces.Space]:
        return {}

    def extra_observation(self) -> dict[str, np.ndarray]:
        return {}

    def reset(self, scene: Scene | None, pose: torch.Tensor, rng: np.random.Generator, options: dict) -> None:
        pass


class NoReward(_NoExtras):
    def __call__(self, step: Transition) -> tuple[float, bool]:
        return 0.0, False


class ExplorationReward(_NoExtras):
    def __call__(self, step: Transition) -> tuple[float, bool]:
        return max(step.voxels - step.voxels_before, 0) / step.cells, False


@dataclass
class GoalViewReward:
    position_tol_m: float = 0.25
    angle_tol_deg: float = 15.0
    metres_per_radian: float = 0.5
    success_bonus: float = 1.0
    goal: torch.Tensor = field(default_factory=lambda: torch.eye(4, dtype=torch.float64))

    def extra_spaces(self) -> dict[str, spaces.Space]:
        return {"goal_pose": pose_space()}

    def extra_observation(self) -> dict[str, np.ndarray]:
        return {"goal_pose": pose_value(self.goal)}

    def reset(self, scene: Scene | None, pose: torch.Tensor, rng: np.random.Generator, options: dict) -> None:
        if "goal_pose" in options:
            goal = torch.as_tensor(options["goal_pose"], dtype=torch.float64)
            check_poses(goal, "goal_pose")
            self.goal = goal
        else:
            self.goal = nearby_pose(scene, pose, rng)

    def errors(self, pose: torch.Tensor) -> tuple[float, float]:
        """(position error in metres, angle error in radians) of ``pose`` against the goal."""
        position = float((pose[:3, 3] - self.goal[:3, 3]).norm())
        cos = (float(torch.trace(pose[:3, :3].T @ self.goal[:3, :3])) - 1.0) / 2.0
        return position, math.acos(min(max(cos, -1.0), 1.0))

    def _distance(self, pose: torch.Tensor) -> float:
        position, angle = self.errors(pose)
        return position + self.metres_per_radian * angle

    def __call__(self, step: Transition) -> tuple[float, bool]:
        position, angle = self.errors(step.pose)
        reached = position <= self.position_tol_m and angle <= math.radians(self.angle_tol_deg)
        progress = self._distance(step.pose_before) - self._distance(step.pose)
        return progress + (self.success_bonus if reached else 0.0), reached


def nearby_pose(scene: Scene | None, pose: torch.Tensor, rng: np.random.Generator, radius: float = 0.2) -> torch.Tensor:
    """A level pose turned up to 60 deg from ``pose`` and 0.3-1.5 m ahead along the new heading, free in ``scene``."""
    yaw, _, _ = euler_from_rotation(pose[:3, :3])
    yaw = yaw + math.radians(rng.uniform(-60.0, 60.0))
    distance = rng.uniform(0.3, 1.5)
    heading = torch.stack([torch.sin(yaw), torch.zeros_like(yaw), torch.cos(yaw)])
    start = pose[:3, 3]
    for _ in range(4):
        target = start + distance * heading
        if scene is None or scene.segment_is_free(start.numpy(), target.numpy(), radius):
            break
        distance /= 2
    else:
        target = start
    zero = torch.zeros((), dtype=torch.float64)
    return pose_from_euler(target.to(torch.float64), yaw.to(torch.float64), zero, zero)


REWARDS: dict[str, Callable[[], Reward]] = {"exploration": ExplorationReward, "goal": GoalViewReward,
                                            "none": NoReward}


def make_reward(spec: str | Callable[[], Reward]) -> Reward:
    """A reward from a name in :data:`REWARDS` or a zero-argument factory (e.g. a class)."""
    if callable(spec):
        return spec()
    if spec not in REWARDS:
        raise ValueError(f"unknown reward {spec!r}; choose one of {sorted(REWARDS)} or pass a factory")
    return REWARDS[spec]()
