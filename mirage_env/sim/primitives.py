"""Scene primitives (axis-aligned boxes, vertical capsules, horizontal planes) and their vectorised ray tests.

Planes are rendered and collided as the boxes of their solid half-spaces (see :func:`aabb`), so only boxes and
capsules have ray tests.

Ray tests take the primitive relative to the ray origin and the ray directions (or their reciprocals, for boxes)
as 3-sequences whose entries are floats or broadcastable tensors, and return ``(t, miss)``: the ray parameter of the
first hit at ``t >= NEAR`` and a non-negative miss measure that is 0 exactly when the ray hits. With unit camera-z
directions ``t`` is z-depth. Keeping ``miss`` separate lets the renderer rank candidates without boolean masks
(``t + HUGE * miss``) and then recompute the winner's ``t`` exactly. Directions must have no zero component (see
:func:`safe_directions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mirage_env.sim.textures import Material, Vec3

NEAR = 1e-3  # hits closer than this (metres of z-depth) are ignored
HUGE = 1e30  # miss penalty scale: t + HUGE * miss is beyond any real hit when miss > 0
MIN_DIR = 1e-12  # smallest direction component magnitude (see safe_directions)
PLANE_EXTENT = 1e6  # planes are rendered and collided as half-space boxes this large

Vector = Sequence  # three floats or three broadcastable tensors


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``lo <= p <= hi``."""

    lo: Vec3
    hi: Vec3
    material: Material

    def __post_init__(self) -> None:
        if not all(a < b for a, b in zip(self.lo, self.hi)):
            raise ValueError(f"box needs lo < hi on every axis, got {self.lo}, {self.hi}")


@dataclass(frozen=True)
class Capsule:
    """Vertical capsule: points within ``radius`` of the segment ``center +- (0, half_height, 0)`` (a sphere at 0)."""

    center: Vec3
    half_height: float
    radius: float
    material: Material

    def __post_init__(self) -> None:
        if not (self.radius > 0 and self.half_height >= 0):
            raise ValueError(f"capsule needs radius > 0 and half_height >= 0, got {self.radius}, {self.half_height}")


@dataclass(frozen=True)
class Plane:
    """Infinite horizontal plane ``y = height``; ``floor`` says the solid side is below it (``y > height``)."""

    height: float
    floor: bool
    material: Material


def aabb(prim: Box | Capsule | Plane) -> tuple[Vec3, Vec3]:
    """Axis-aligned bounds; a plane becomes its solid half-space, ``PLANE_EXTENT`` deep and wide."""
    if isinstance(prim, Box):
        return prim.lo, prim.hi
    if isinstance(prim, Plane):
        y0, y1 = (prim.height, prim.height + PLANE_EXTENT) if prim.floor else (prim.height - PLANE_EXTENT, prim.height)
        return (-PLANE_EXTENT, y0, -PLANE_EXTENT), (PLANE_EXTENT, y1, PLANE_EXTENT)
    half = (prim.radius, prim.half_height + prim.radius, prim.radius)
    return (tuple(c - h for c, h in zip(prim.center, half)), tuple(c + h for c, h in zip(prim.center, half)))


def safe_directions(d: torch.Tensor) -> torch.Tensor:
    """Replace direction components smaller than ``MIN_DIR`` in magnitude by ``+-MIN_DIR`` (keeps tests finite)."""
    return torch.where(d.abs() < MIN_DIR, torch.copysign(torch.full_like(d, MIN_DIR), d), d)


def _slabs(lo: Vector, hi: Vector, inv_d: Vector) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    near, far = [], []
    for a in range(3):
        t1, t2 = lo[a] * inv_d[a], hi[a] * inv_d[a]
        near.append(torch.minimum(t1, t2))
        far.append(torch.maximum(t1, t2))
    return near, far


def box_hit(lo: Vector, hi: Vector, inv_d: Vector) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test with reciprocal directions; ``lo``/``hi`` are the box corners minus the ray origin."""
    near, far = _slabs(lo, hi, inv_d)
    t = torch.maximum(torch.maximum(near[0], near[1]), near[2])
    exit_ = torch.minimum(torch.minimum(far[0], far[1]), far[2])
    return t, torch.maximum(t - exit_, NEAR - t).clamp_min(0.0)


def box_entry(lo: Vector, hi: Vector, inv_d: Vector) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry parameter [P] and outward unit normal [3, P] of rays [P] known to hit the box (last slab entered)."""
    near, _ = _slabs(lo, hi, inv_d)
    t, axis = torch.stack(near).max(0, keepdim=True)
    sign = -torch.sign(torch.stack(list(inv_d)).gather(0, axis))
    return t[0], torch.zeros(3, axis.shape[1], dtype=sign.dtype).scatter(0, axis, sign)


def sphere_hit(rel: Vector, radius, d: Vector, dd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray-sphere test; ``rel`` is the ray origin minus the centre, ``dd = |d|^2``."""
    b = d[0] * rel[0] + d[1] * rel[1] + d[2] * rel[2]
    c = rel[0] * rel[0] + rel[1] * rel[1] + rel[2] * rel[2] - radius * radius
    disc = b * b - dd * c
    t = (-b - disc.clamp_min(0.0).sqrt()) / dd
    return t, torch.maximum(-disc, NEAR - t).clamp_min(0.0)


def capsule_hit(rel: Vector, half_height, radius, d: Vector, dd: torch.Tensor,
                dxz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray-capsule test: the nearer of the cylinder side and the two end spheres; ``dxz = dx^2 + dz^2 > 0``."""
    b = d[0] * rel[0] + d[2] * rel[2]
    c = rel[0] * rel[0] + rel[2] * rel[2] - radius * radius
    disc = b * b - dxz * c
    t = (-b - disc.clamp_min(0.0).sqrt()) / dxz
    y = rel[1] + t * d[1]
    miss = torch.maximum(torch.maximum(-disc, NEAR - t), y.abs() - half_height).clamp_min(0.0)
    for end in (-half_height, half_height):
        t_end, miss_end = sphere_hit((rel[0], rel[1] - end, rel[2]), radius, d, dd)
        better = t_end + HUGE * miss_end < t + HUGE * miss
        t, miss = torch.where(better, t_end, t), torch.where(better, miss_end, miss)
    return t, miss


def capsule_normal(rel: torch.Tensor, half_height: torch.Tensor, t: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Outward unit normals [3, P] at ``rel + t d`` (``rel`` [3, P] is the ray origin minus the centre)."""
    q = rel + t * d
    q[1] = q[1] - torch.minimum(torch.maximum(q[1], -half_height), half_height)
    return q / (q * q).sum(0).sqrt()
