"""The :class:`Scene`: static primitives, moving objects, sky and light, with JSON I/O and collision queries.

Object ids (as rendered in ``RenderOutput.object_id``) are stable: boxes, then capsules, then planes, then one id per
mover. World y points down (up is -y); floors sit at ``y = 0``. Random scenes come from :mod:`mirage_env.sim.generate`,
camera start poses from :mod:`mirage_env.sim.placement`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from mirage_env.sim.motion import Mover
from mirage_env.sim.primitives import Box, Capsule, Plane, aabb
from mirage_env.sim.swept_box import segment_free
from mirage_env.sim.textures import TEXTURES, Vec3, seed_offset

KINDS = ("indoor", "outdoor")
Area = tuple[float, float, float, float]


@dataclass(frozen=True)
class Tables:
    """Array form of a scene: static boxes (planes appended as half-space boxes) and capsules as numpy float64 with
    their object ids, and per-object materials (statics, then movers) as torch tensors."""

    box_lo: np.ndarray  # [N, 3]
    box_hi: np.ndarray
    box_object: np.ndarray  # [N] int64
    cap_center: np.ndarray  # [M, 3]
    cap_half_height: np.ndarray  # [M]
    cap_radius: np.ndarray
    cap_object: np.ndarray  # [M] int64
    texture: torch.Tensor  # [O] int64 index into TEXTURES
    scale: torch.Tensor  # [O] float64
    color_a: torch.Tensor  # [3, O] float32
    color_b: torch.Tensor
    seed: torch.Tensor  # [O] float32 hash offsets


@dataclass(frozen=True)
class Scene:
    """A procedural 3D scene.

    ``sky``: the scene is open to the sky (rays that hit nothing get infinite depth; enclosed scenes have none);
    ``light_dir``: unit vector towards the light; ``ambient``: light reaching surfaces facing away from it;
    ``sky_zenith``/``sky_horizon``: RGB in [0, 1] of the sky gradient; ``areas``: walkable floor rectangles
    ``(x0, z0, x1, z1)`` used to place cameras and movers.
    """

    kind: str
    boxes: tuple[Box, ...]
    capsules: tuple[Capsule, ...]
    planes: tuple[Plane, ...]
    movers: tuple[Mover, ...]
    sky: bool
    light_dir: Vec3
    ambient: float
    sky_zenith: Vec3
    sky_horizon: Vec3
    areas: tuple[Area, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown scene kind {self.kind!r}; expected one of {KINDS}")
        if abs(math.hypot(*self.light_dir) - 1.0) > 1e-6:
            raise ValueError(f"light_dir must be a unit vector, got {self.light_dir}")
        if not self.areas:
            raise ValueError("a scene needs at least one walkable area")

    def to_json(self) -> str:
        """JSON text; :meth:`from_json` restores an equal scene (floats round-trip exactly)."""
        return json.dumps(dataclasses.asdict(self))

    @staticmethod
    def from_json(text: str) -> Scene:
        return _decode(Scene, json.loads(text))

    @property
    def n_static(self) -> int:
        """Number of static primitives (= id of the first mover)."""
        return len(self.boxes) + len(self.capsules) + len(self.planes)

    @cached_property
    def tables(self) -> Tables:
        """Static geometry and per-object materials as arrays."""
        n_box, n_cap = len(self.boxes), len(self.capsules)
        corners = np.array([aabb(p) for p in (*self.boxes, *self.planes)], dtype=np.float64).reshape(-1, 2, 3)
        materials = [p.material for p in (*self.boxes, *self.capsules, *self.planes, *self.movers)]
        colors = torch.tensor([(m.color_a, m.color_b) for m in materials], dtype=torch.float32).permute(1, 2, 0)
        return Tables(
            box_lo=corners[:, 0],
            box_hi=corners[:, 1],
            box_object=np.r_[np.arange(n_box), np.arange(n_box + n_cap, self.n_static)],
            cap_center=np.array([c.center for c in self.capsules], dtype=np.float64).reshape(-1, 3),
            cap_half_height=np.array([c.half_height for c in self.capsules], dtype=np.float64),
            cap_radius=np.array([c.radius for c in self.capsules], dtype=np.float64),
            cap_object=np.arange(n_box, n_box + n_cap),
            texture=torch.tensor([TEXTURES.index(m.texture) for m in materials], dtype=torch.int64),
            scale=torch.tensor([m.scale for m in materials], dtype=torch.float64),
            color_a=colors[0].contiguous(),
            color_b=colors[1].contiguous(),
            seed=seed_offset(torch.tensor([m.seed for m in materials], dtype=torch.int64)),
        )

    @cached_property
    def obstacles(self) -> tuple[np.ndarray, np.ndarray]:
        """Static collision boxes ``(lo, hi)`` [N, 3]: boxes, capsule bounds, and planes as half-spaces."""
        corners = np.array([aabb(p) for p in (*self.boxes, *self.capsules, *self.planes)], dtype=np.float64)
        return corners.reshape(-1, 2, 3)[:, 0], corners.reshape(-1, 2, 3)[:, 1]

    @cached_property
    def bounds(self) -> tuple[Vec3, Vec3]:
        """``(min xyz, max xyz)`` of the finite geometry, walkable areas and mover paths (planes bound y only)."""
        corners = [aabb(p) for p in (*self.boxes, *self.capsules)]
        corners += [((a[0], 0.0, a[1]), (a[2], 0.0, a[3])) for a in self.areas]
        corners += [((0.0, p.height, 0.0),) * 2 for p in self.planes]
        for m in self.movers:
            centres = m.path.position(np.linspace(0.0, m.path.period, 65))
            lo_off, hi_off = m.offsets()
            corners.append((tuple(centres.min(0) + lo_off), tuple(centres.max(0) + hi_off)))
        lo, hi = zip(*corners)
        return tuple(float(v) for v in np.min(lo, 0)), tuple(float(v) for v in np.max(hi, 0))

    def segment_is_free(self, p0, p1, radius: float = 0.1) -> bool:
        """Whether a ball of ``radius`` (as a cube) can move straight from ``p0`` to ``p1`` inside the bounds.

        Static geometry only; movers are ignored. Capsules count as their bounding boxes.
        """
        lo, hi = np.asarray(self.bounds[0]), np.asarray(self.bounds[1])
        for p in (p0, p1):
            p = np.asarray(p, dtype=np.float64)
            if p.shape != (3,) or not np.isfinite(p).all():
                raise ValueError(f"positions must be 3 finite numbers, got {p}")
            if (p < lo).any() or (p > hi).any():
                return False
        return segment_free(*self.obstacles, p0, p1, (-radius,) * 3, (radius,) * 3)

    def is_free(self, position, radius: float = 0.1) -> bool:
        """Whether a ball of ``radius`` (as a cube) at ``position`` is inside the bounds, clear of static geometry."""
        return self.segment_is_free(position, position, radius)


def sample_area(rng: np.random.Generator, areas: tuple[Area, ...] | list[Area]) -> Area:
    """One of ``areas``, chosen with probability proportional to its size."""
    sizes = np.array([(a[2] - a[0]) * (a[3] - a[1]) for a in areas])
    return areas[rng.choice(len(areas), p=sizes / sizes.sum())]


def _decode(tp, value):
    """Rebuild a (nested) dataclass / tuple / scalar of type ``tp`` from JSON data."""
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _decode(hints[f.name], value[f.name]) for f in dataclasses.fields(tp)})
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value, strict=True))
    return tp(value)
