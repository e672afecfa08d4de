"""Moving objects on closed-form, periodic paths evaluated at a float time in seconds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mirage_env.sim.primitives import Box, Capsule
from mirage_env.sim.textures import Material, Vec3

PATHS = ("circle", "line")
SHAPES = ("ball", "box", "walker")
HEAD_GAP = 0.04


@dataclass(frozen=True)
class Path:
    """Periodic path of an object's centre.

    ``circle``: ``center + (extent_x cos a, 0, extent_z sin a)`` (an ellipse in the ground plane);
    ``line``: ``center + extent sin a`` (back and forth between ``center +- extent``); with
    ``a = 2 pi (time / period + phase)``. ``bounce`` lifts the centre by ``bounce |sin 2a|`` (two hops a period).
    """

    kind: str
    center: Vec3
    extent: Vec3
    period: float
    phase: float = 0.0
    bounce: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in PATHS:
            raise ValueError(f"unknown path kind {self.kind!r}; expected one of {PATHS}")
        if not self.period > 0:
            raise ValueError(f"path period must be positive, got {self.period}")

    def position(self, time: float | np.ndarray) -> np.ndarray:
        """Centre positions [..., 3] (float64) at ``time`` (scalar or array, seconds)."""
        a = 2.0 * math.pi * (np.asarray(time, dtype=np.float64) / self.period + self.phase)
        ex, ey, ez = self.extent
        if self.kind == "circle":
            offset = np.stack([ex * np.cos(a), np.zeros_like(a), ez * np.sin(a)], -1)
        else:
            offset = np.stack([ex * np.sin(a), ey * np.sin(a), ez * np.sin(a)], -1)
        offset[..., 1] -= self.bounce * np.abs(np.sin(2.0 * a))
        return np.asarray(self.center) + offset


@dataclass(frozen=True)
class Mover:
    """A moving object; textures move with it (they are evaluated relative to its centre).

    ``size``: ball ``(radius, 0, 0)``; box: half extents; walker ``(body radius, body half height, head radius)``
    (a capsule body with a sphere head above it, centre at the body's centre).
    """

    shape: str
    size: Vec3
    material: Material
    path: Path

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown mover shape {self.shape!r}; expected one of {SHAPES}")

    def offsets(self) -> tuple[Vec3, Vec3]:
        """Corners of the object's axis-aligned bounds relative to its centre (head included)."""
        a, b, c = self.size
        if self.shape == "ball":
            half = (a, a, a)
        elif self.shape == "box":
            half = (a, b, c)
        else:
            m = max(a, c)
            return (-m, -(b + a + HEAD_GAP + 2.0 * c), -m), (m, b + a, m)
        return tuple(-h for h in half), half

    def parts(self, time: float) -> list[Box | Capsule]:
        """The object's primitives at ``time``."""
        x, y, z = (float(v) for v in self.path.position(time))
        a, b, c = self.size
        if self.shape == "ball":
            return [Capsule((x, y, z), 0.0, a, self.material)]
        if self.shape == "box":
            return [Box((x - a, y - b, z - c), (x + a, y + b, z + c), self.material)]
        head_y = y - (b + a + HEAD_GAP + c)
        return [Capsule((x, y, z), b, a, self.material), Capsule((x, head_y, z), 0.0, c, self.material)]
