"""Camera trajectory generators. Each returns camera-to-world poses [N, 4, 4] in float64."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch

from mirage_env.geometry.poses import WORLD_UP, integrate_velocity, look_at


def orbit(center: Sequence[float], radius: float, n: int, height: float = 0.0, sweep_deg: float = 360.0,
          start_deg: float = 0.0, look_at_center: bool = True) -> torch.Tensor:
    """``n`` poses on a horizontal circle around ``center``, ``height`` above it (world up is -y).

    The cameras look at ``center`` or, with ``look_at_center=False``, outwards along the radius.
    """
    if n < 1 or radius <= 0:
        raise ValueError("orbit needs n >= 1 and radius > 0")
    c = torch.as_tensor(center, dtype=torch.float64)
    angles = torch.deg2rad(torch.tensor(start_deg, dtype=torch.float64)
                           + torch.arange(n, dtype=torch.float64) * (sweep_deg / max(n - 1, 1)))
    up = torch.as_tensor(WORLD_UP, dtype=torch.float64)
    poses = []
    for a in angles:
        eye = c + height * up + radius * torch.stack([torch.sin(a), torch.zeros_like(a), -torch.cos(a)])
        target = c if look_at_center else 2 * eye - c
        poses.append(look_at(eye, target))
    return torch.stack(poses)


def straight(start: torch.Tensor, n: int, step: Sequence[float] = (0.0, 0.0, 0.1)) -> torch.Tensor:
    """``n`` poses moving from ``start`` by ``step`` (metres, in the start camera's frame) per pose."""
    if n < 1:
        raise ValueError("straight needs n >= 1")
    offsets = torch.arange(n, dtype=torch.float64)[:, None] * torch.as_tensor(step, dtype=torch.float64)
    poses = start.to(torch.float64).expand(n, 4, 4).clone()
    poses[:, :3, 3] += offsets @ start[:3, :3].to(torch.float64).T
    return poses


def from_velocities(start: torch.Tensor, velocities: torch.Tensor, dt: float = 1.0,
                    max_pitch: float = math.radians(85.0)) -> torch.Tensor:
    """Integrate a sequence of 6-DoF velocities [N, 6] from ``start``; returns N + 1 poses (start included)."""
    poses = [start.to(torch.float64)]
    for v in velocities.to(torch.float64):
        poses.append(integrate_velocity(poses[-1], v, dt, max_pitch))
    return torch.stack(poses)


class Obstacles(Protocol):
    """What :func:`pan_path` needs of a scene (e.g. :class:`mirage_env.sim.Scene`): a collision query for moves."""

    def segment_is_free(self, p0, p1, radius: float) -> bool: ...


def walk_path(scene: Obstacles, start: torch.Tensor, steps: int, forward_m: float, yaw_deg: float,
              radius: float = 0.2) -> torch.Tensor:
    """``steps`` poses after ``start`` (``steps + 1`` in all), each ``forward_m`` forward and ``yaw_deg`` right of
    the last, or only the turn where a ``radius`` ball could not make the move in ``scene``."""
    turn = math.radians(yaw_deg)
    poses = [start.to(torch.float64)]
    for _ in range(steps):
        forward = from_velocities(poses[-1], torch.tensor([[0.0, 0.0, forward_m, turn, 0.0, 0.0]]))[-1]
        if not scene.segment_is_free(poses[-1][:3, 3].numpy(), forward[:3, 3].numpy(), radius):
            forward = from_velocities(poses[-1], torch.tensor([[0.0, 0.0, 0.0, turn, 0.0, 0.0]]))[-1]
        poses.append(forward)
    return torch.stack(poses)


def pan_path(scene: Obstacles, start: torch.Tensor, steps: int) -> torch.Tensor:
    """Turn right while walking forward where ``scene`` allows it, then come back the same way: ``steps // 2``
    poses of :func:`walk_path` (0.08 m and 6 degrees each, a 0.2 m ball), then :func:`loop_and_return`."""
    return loop_and_return(walk_path(scene, start, steps // 2, 0.08, 6.0))


def loop_and_return(outbound: torch.Tensor) -> torch.Tensor:
    """The outbound poses followed by the same path backwards, ending exactly at the first pose (2N - 1 poses)."""
    if outbound.dim() != 3 or outbound.shape[0] < 1:
        raise ValueError("loop_and_return needs poses [N, 4, 4] with N >= 1")
    return torch.cat([outbound, outbound.flip(0)[1:]])
