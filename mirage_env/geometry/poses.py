"""Camera orientation as yaw / pitch / roll, look-at poses and SE(3) integration of velocity actions.

The world frame follows OpenCV too: y points down, so "up" is -y. With all angles zero the camera looks along +z.
Orientation is ``R = R_y(yaw) @ R_x(pitch) @ R_z(roll)``: positive yaw turns right, positive pitch looks up,
positive roll banks the camera to the right (its x axis dips towards +y). Angles are in radians.
"""

from __future__ import annotations

import math

import torch

WORLD_UP = (0.0, -1.0, 0.0)


def _rot_x(a: torch.Tensor) -> torch.Tensor:
    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([i, o, o, o, c, -s, o, s, c], dim=-1).reshape(*a.shape, 3, 3)


def _rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, o, s, o, i, o, -s, o, c], dim=-1).reshape(*a.shape, 3, 3)


def _rot_z(a: torch.Tensor) -> torch.Tensor:
    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, -s, o, s, c, o, o, o, i], dim=-1).reshape(*a.shape, 3, 3)


def rotation_from_euler(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from yaw, pitch, roll tensors of the same shape."""
    return _rot_y(yaw) @ _rot_x(pitch) @ _rot_z(roll)


def euler_from_rotation(rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`rotation_from_euler` (pitch in [-pi/2, pi/2])."""
    forward = rot[..., :, 2]
    pitch = torch.asin((-forward[..., 1]).clamp(-1.0, 1.0))
    yaw = torch.atan2(forward[..., 0], forward[..., 2])
    rest = _rot_x(pitch).transpose(-1, -2) @ _rot_y(yaw).transpose(-1, -2) @ rot
    roll = torch.atan2(rest[..., 1, 0], rest[..., 0, 0])
    return yaw, pitch, roll


def pose_from_euler(position: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Camera-to-world matrices [..., 4, 4] from positions [..., 3] and angles."""
    out = torch.zeros(*position.shape[:-1], 4, 4, dtype=position.dtype, device=position.device)
    out[..., :3, :3] = rotation_from_euler(yaw, pitch, roll).to(position.dtype)
    out[..., :3, 3] = position
    out[..., 3, 3] = 1.0
    return out


def look_at(eye, target, up=WORLD_UP, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Camera-to-world pose [4, 4] at ``eye`` looking at ``target`` with the image's up along ``up``."""
    eye_t = torch.as_tensor(eye, dtype=dtype)
    forward = torch.as_tensor(target, dtype=dtype) - eye_t
    if forward.norm() < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, torch.as_tensor(up, dtype=dtype))
    if right.norm() < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    pose = torch.eye(4, dtype=dtype)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye_t
    return pose


def integrate_velocity(c2w: torch.Tensor, velocity: torch.Tensor, dt: float = 1.0,
                       max_pitch: float = math.radians(85.0)) -> torch.Tensor:
    """Advance poses [..., 4, 4] by a 6-DoF velocity [..., 6] for ``dt``.

    ``velocity = (vx, vy, vz, yaw_rate, pitch_rate, roll_rate)``: translation in the current camera frame
    (x right, y down, z forward) and angular rates in radians. The camera first moves along its current axes,
    then turns; pitch is clamped to ``[-max_pitch, max_pitch]`` so the camera never flips over the pole.
    """
    pose = c2w.to(torch.float64)
    vel = velocity.to(torch.float64)
    rot = pose[..., :3, :3]
    position = pose[..., :3, 3] + (rot @ (vel[..., :3, None] * dt))[..., 0]
    yaw, pitch, roll = euler_from_rotation(rot)
    yaw = torch.remainder(yaw + vel[..., 3] * dt + math.pi, 2 * math.pi) - math.pi
    pitch = (pitch + vel[..., 4] * dt).clamp(-max_pitch, max_pitch)
    roll = torch.remainder(roll + vel[..., 5] * dt + math.pi, 2 * math.pi) - math.pi
    return pose_from_euler(position, yaw, pitch, roll).to(c2w.dtype)
