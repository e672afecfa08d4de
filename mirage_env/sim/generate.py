"""Random scenes: indoor (rooms around a corridor, doors, furniture) and outdoor (a courtyard ringed by buildings).

All floors are at ``y = 0`` (world y points down). Every random draw comes from the one numpy Generator passed in,
so a seed fixes the scene.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mirage_env.sim.motion import SHAPES, Mover, Path
from mirage_env.sim.primitives import Box, Capsule, Plane
from mirage_env.sim.scene import KINDS, Area, Scene, sample_area
from mirage_env.sim.swept_box import segment_free
from mirage_env.sim.textures import Material, Vec3

WALL = 0.2  # wall thickness
DOOR_W, DOOR_H = 1.0, 2.1
SLAB = 0.1  # floor slab thickness (below y = 0)
LIFT = 0.005  # movers float this far above the floor so that they never touch it
FURNITURE = {"block": ((0.8, 1.8), (0.4, 0.9), (0.4, 1.6)), "shelf": ((0.8, 1.6), (0.3, 0.45), (1.5, 2.1)),
             "table": ((1.0, 1.6), (0.7, 1.0), (0.7, 0.8))}  # width, depth and height ranges in metres

WALL_COLORS = [((0.86, 0.82, 0.72), (0.74, 0.69, 0.60)), ((0.68, 0.77, 0.86), (0.52, 0.62, 0.74)),
               ((0.73, 0.83, 0.68), (0.58, 0.70, 0.55)), ((0.72, 0.36, 0.26), (0.86, 0.83, 0.78)),
               ((0.82, 0.74, 0.80), (0.66, 0.58, 0.68))]
FLOORS = [("stripes", (0.58, 0.40, 0.23), (0.46, 0.31, 0.17), (0.12, 0.25)),
          ("checker", (0.86, 0.86, 0.83), (0.32, 0.33, 0.36), (0.35, 0.6)),
          ("noise", (0.55, 0.22, 0.22), (0.36, 0.13, 0.15), (0.2, 0.4)),
          ("checker", (0.70, 0.62, 0.48), (0.55, 0.47, 0.36), (0.3, 0.5))]
PAINT = [(0.80, 0.22, 0.20), (0.22, 0.42, 0.80), (0.22, 0.62, 0.32), (0.92, 0.72, 0.20), (0.30, 0.30, 0.32),
         (0.92, 0.92, 0.90), (0.55, 0.36, 0.20), (0.60, 0.30, 0.65)]
BUILDINGS = [("brick", (0.70, 0.33, 0.24), (0.85, 0.82, 0.76), (0.5, 0.8)),
             ("stripes", (0.88, 0.84, 0.74), (0.70, 0.66, 0.58), (0.6, 1.2)),
             ("noise", (0.62, 0.62, 0.60), (0.45, 0.45, 0.44), (0.8, 2.0)),
             ("checker", (0.78, 0.70, 0.52), (0.62, 0.55, 0.40), (1.0, 1.6))]


def _color(rng: np.random.Generator, base: Vec3, jitter: float = 0.06) -> Vec3:
    return tuple(float(v) for v in np.clip(np.asarray(base) + rng.uniform(-jitter, jitter, 3), 0.0, 1.0))


def _material(rng: np.random.Generator, texture: str, a: Vec3, b: Vec3, scale: tuple[float, float]) -> Material:
    return Material(texture, _color(rng, a), _color(rng, b), float(rng.uniform(*scale)), int(rng.integers(2**31)))


def _paint(rng: np.random.Generator) -> Material:
    """A furniture / object material: a random paint colour with a darker or lighter second colour."""
    a = PAINT[rng.integers(len(PAINT))]
    b = tuple(v * f for v, f in zip(a, rng.uniform(0.6, 0.85, 3)))
    return _material(rng, str(rng.choice(["noise", "stripes", "checker"])), a, b, (0.1, 0.4))


def _box(lo, hi, material: Material) -> Box:
    return Box(tuple(float(v) for v in lo), tuple(float(v) for v in hi), material)


def _overlaps(rect: Area, others: list[Area], margin: float) -> bool:
    return any(rect[0] < o[2] + margin and o[0] < rect[2] + margin and rect[1] < o[3] + margin
               and o[1] < rect[3] + margin for o in others)


def _furniture(rng: np.random.Generator, kind: str, rect: Area, height: float, along_x: bool) -> list[Box]:
    """Boxes of a block, table or shelf standing on the floor over the footprint ``rect``."""
    x0, z0, x1, z1 = rect
    material = _paint(rng)
    if kind == "block":
        return [_box((x0, -height, z0), (x1, 0.0, z1), material)]
    if kind == "table":
        leg, top = 0.07, 0.05
        boxes = [_box((x0, -height, z0), (x1, -height + top, z1), material)]
        for lx, lz in ((x0, z0), (x1 - leg, z0), (x0, z1 - leg), (x1 - leg, z1 - leg)):
            boxes.append(_box((lx, -height + top, lz), (lx + leg, 0.0, lz + leg), material))
        return boxes
    side, board = 0.04, 0.03  # shelf: two side panels and evenly spaced boards between them
    if along_x:
        boxes = [_box((x0, -height, z0), (x0 + side, 0.0, z1), material),
                 _box((x1 - side, -height, z0), (x1, 0.0, z1), material)]
        inner = ((x0 + side, z0), (x1 - side, z1))
    else:
        boxes = [_box((x0, -height, z0), (x1, 0.0, z0 + side), material),
                 _box((x0, -height, z1 - side), (x1, 0.0, z1), material)]
        inner = ((x0, z0 + side), (x1, z1 - side))
    for y in np.linspace(-height, -0.1, int(rng.integers(3, 5))):
        boxes.append(_box((inner[0][0], y, inner[0][1]), (inner[1][0], y + board, inner[1][1]), material))
    return boxes


def _furnish(rng: np.random.Generator, room: Area, keep_clear: list[Area]) -> list[Box]:
    """One to three pieces of furniture, mostly against the walls, away from door zones and each other."""
    boxes: list[Box] = []
    taken = list(keep_clear)
    for kind in rng.choice(["block", "block", "shelf", "table"], size=int(rng.integers(1, 4))):
        kind = str(kind)
        for _ in range(20):
            width, depth = (rng.uniform(*r) for r in FURNITURE[kind][:2])
            if kind == "table":
                cx, cz = rng.uniform(room[0] + 1.2, room[2] - 1.2), rng.uniform(room[1] + 1.2, room[3] - 1.2)
                along_x = bool(rng.random() < 0.5)
            else:  # against one of the four walls
                side = int(rng.integers(4))
                along_x = side < 2
                u = rng.uniform(room[0] + width / 2, room[2] - width / 2) if along_x else \
                    rng.uniform(room[1] + width / 2, room[3] - width / 2)
                across = (room[1] + depth / 2, room[3] - depth / 2, room[0] + depth / 2, room[2] - depth / 2)[side]
                cx, cz = (u, across) if along_x else (across, u)
            hx, hz = (width / 2, depth / 2) if along_x else (depth / 2, width / 2)
            rect = (cx - hx, cz - hz, cx + hx, cz + hz)
            inside = room[0] <= rect[0] and rect[2] <= room[2] and room[1] <= rect[1] and rect[3] <= room[3]
            if inside and not _overlaps(rect, taken, 0.4):
                boxes += _furniture(rng, kind, rect, rng.uniform(*FURNITURE[kind][2]), along_x)
                taken.append(rect)
                break
    return boxes


def _indoor(rng: np.random.Generator) -> dict:
    """Two rows of rooms on either side of a corridor; every room has a door to the corridor."""
    height = float(rng.uniform(2.6, 3.2))
    n_cols = int(rng.integers(2, 4))
    xs = np.concatenate([[0.0], np.cumsum(rng.uniform(3.5, 6.0, n_cols))])
    d0, corridor, d1 = rng.uniform(3.5, 5.5), rng.uniform(1.8, 2.4), rng.uniform(3.5, 5.5)
    zs = np.array([0.0, d0, d0 + corridor, d0 + corridor + d1])
    wall_mats = [_material(rng, str(rng.choice(["stripes", "noise", "brick"])), *WALL_COLORS[i], (0.25, 0.6))
                 for i in rng.choice(len(WALL_COLORS), size=3, replace=False)]
    boxes: list[Box] = []
    doors: list[Area] = []  # door zones to keep clear of furniture

    def wall(along: int, at: float, a: float, b: float, door: bool) -> None:
        spans = [(a - WALL / 2, b + WALL / 2, -height, 0.0)]
        if door:
            g = rng.uniform(a + 0.4 + DOOR_W / 2, b - 0.4 - DOOR_W / 2)
            spans = [(a - WALL / 2, g - DOOR_W / 2, -height, 0.0), (g + DOOR_W / 2, b + WALL / 2, -height, 0.0),
                     (g - DOOR_W / 2, g + DOOR_W / 2, -height, -DOOR_H)]
            zone = (g - DOOR_W / 2 - 0.3, at - 1.2, g + DOOR_W / 2 + 0.3, at + 1.2)
            doors.append(zone if along == 0 else (zone[1], zone[0], zone[3], zone[2]))
        material = wall_mats[rng.integers(len(wall_mats))]
        for u0, u1, y0, y1 in spans:
            lo, hi = [0.0, y0, 0.0], [0.0, y1, 0.0]
            lo[along], hi[along] = u0, u1
            lo[2 - along], hi[2 - along] = at - WALL / 2, at + WALL / 2
            boxes.append(_box(lo, hi, material))

    for z in (zs[0], zs[3]):
        wall(0, z, xs[0], xs[-1], False)
    for x in (xs[0], xs[-1]):
        wall(2, x, zs[0], zs[3], False)
    for i in range(n_cols):
        wall(0, zs[1], xs[i], xs[i + 1], True)
        wall(0, zs[2], xs[i], xs[i + 1], True)
    for x in xs[1:-1]:
        wall(2, x, zs[0], zs[1], bool(rng.random() < 0.5))
        wall(2, x, zs[2], zs[3], bool(rng.random() < 0.5))
    rooms = [(xs[i], zs[r], xs[i + 1], zs[r + 1]) for r in (0, 2) for i in range(n_cols)]
    hall = (xs[0], zs[1], xs[-1], zs[2])
    for x0, z0, x1, z1 in [*rooms, hall]:
        texture, a, b, scale = FLOORS[rng.integers(len(FLOORS))]
        boxes.append(_box((x0, 0.0, z0), (x1, SLAB, z1), _material(rng, texture, a, b, scale)))
    areas = [(x0 + WALL / 2, z0 + WALL / 2, x1 - WALL / 2, z1 - WALL / 2) for x0, z0, x1, z1 in [*rooms, hall]]
    for room in areas[:-1]:
        boxes += _furnish(rng, room, doors)
    ceiling = Plane(-height, False, _material(rng, "noise", (0.93, 0.93, 0.90), (0.84, 0.84, 0.82), (0.6, 1.2)))
    light = np.array([rng.uniform(-0.5, 0.5), -1.0, rng.uniform(-0.5, 0.5)])
    return dict(boxes=boxes, capsules=[], planes=[ceiling], sky=False, light=light, ambient=0.45,
                sky_zenith=(0.5, 0.5, 0.5), sky_horizon=(0.5, 0.5, 0.5), areas=areas)


def _outdoor(rng: np.random.Generator) -> dict:
    """A paved courtyard with props, ringed by buildings with gaps, open sky above."""
    wx, wz = rng.uniform(16.0, 26.0, 2) / 2
    boxes = [_box((-wx, 0.0, -wz), (wx, SLAB, wz), _material(rng, str(rng.choice(["checker", "brick"])),
                                                             (0.62, 0.60, 0.56), (0.48, 0.46, 0.43), (0.5, 1.0)))]
    capsules: list[Capsule] = []
    for along, half, across in ((0, wx + 6.0, wz), (0, wx + 6.0, -wz), (2, wz, wx), (2, wz, -wx)):
        u = -half
        while u < half:
            length = min(rng.uniform(4.0, 9.0), half - u)
            if rng.random() < 0.8:
                depth, tall = rng.uniform(5.0, 10.0), rng.uniform(4.0, 14.0)
                lo, hi = [0.0, -tall, 0.0], [0.0, 0.02, 0.0]
                lo[along], hi[along] = u, u + length
                lo[2 - along], hi[2 - along] = (across, across + depth) if across > 0 else (across - depth, across)
                boxes.append(_box(lo, hi, _material(rng, *BUILDINGS[rng.integers(len(BUILDINGS))])))
            u += length
    taken: list[Area] = []
    for _ in range(int(rng.integers(3, 8))):
        kind = str(rng.choice(["bench", "planter", "tree", "column"]))
        r = {"bench": 0.9, "planter": 0.6, "tree": 1.3, "column": 0.3}[kind]
        cx, cz = rng.uniform(-wx + r + 0.5, wx - r - 0.5), rng.uniform(-wz + r + 0.5, wz - r - 0.5)
        if _overlaps((cx - r, cz - r, cx + r, cz + r), taken, 1.0):
            continue
        taken.append((cx - r, cz - r, cx + r, cz + r))
        if kind == "bench":
            hx, hz = (0.8, 0.25) if rng.random() < 0.5 else (0.25, 0.8)
            boxes += _furniture(rng, "block", (cx - hx, cz - hz, cx + hx, cz + hz), 0.45, True)
        elif kind == "planter":
            boxes += _furniture(rng, "block", (cx - r, cz - r, cx + r, cz + r), 0.5, True)
            leaves = _material(rng, "noise", (0.25, 0.55, 0.22), (0.15, 0.38, 0.14), (0.1, 0.2))
            capsules.append(Capsule((float(cx), -0.5 - 0.45, float(cz)), 0.0, 0.5, leaves))
        elif kind == "tree":
            bark = _material(rng, "stripes", (0.42, 0.30, 0.20), (0.32, 0.22, 0.15), (0.05, 0.1))
            leaves = _material(rng, "noise", (0.22, 0.50, 0.20), (0.12, 0.32, 0.12), (0.2, 0.4))
            trunk = float(rng.uniform(1.0, 1.6))
            capsules.append(Capsule((float(cx), -trunk, float(cz)), trunk, 0.15, bark))
            capsules.append(Capsule((float(cx), -2 * trunk - 0.6, float(cz)), 0.0, float(rng.uniform(1.0, r)), leaves))
        else:
            tall = float(rng.uniform(1.5, 2.5))
            capsules.append(Capsule((float(cx), -tall - 0.25, float(cz)), tall, 0.25, _paint(rng)))
    grass = _material(rng, "noise", (0.30, 0.52, 0.22), (0.20, 0.36, 0.15), (0.5, 1.5))
    elevation, azimuth = np.deg2rad(rng.uniform(25.0, 65.0)), rng.uniform(-math.pi, math.pi)
    light = np.array([math.cos(elevation) * math.cos(azimuth), -math.sin(elevation),
                      math.cos(elevation) * math.sin(azimuth)])
    return dict(boxes=boxes, capsules=capsules, planes=[Plane(0.02, True, grass)], sky=True, light=light,
                ambient=0.4, sky_zenith=_color(rng, (0.30, 0.50, 0.88)), sky_horizon=_color(rng, (0.80, 0.87, 0.95)),
                areas=[(-wx + 0.3, -wz + 0.3, wx - 0.3, wz - 0.3)])


def _random_mover(rng: np.random.Generator, areas: tuple[Area, ...]) -> Mover | None:
    """A ball, box or walker on a random ellipse or line that fits inside one walkable area (None if none fits)."""
    shape = str(rng.choice(SHAPES))
    size = {"ball": (rng.uniform(0.15, 0.35), 0.0, 0.0), "box": tuple(rng.uniform(0.2, 0.4, 3)),
            "walker": (rng.uniform(0.18, 0.24), rng.uniform(0.45, 0.55), rng.uniform(0.11, 0.13))}[shape]
    mover = Mover(shape, tuple(float(v) for v in size), _paint(rng), Path("line", (0.0,) * 3, (0.0,) * 3, 1.0))
    lo_off, hi_off = mover.offsets()
    x0, z0, x1, z1 = sample_area(rng, areas)
    x0, z0, x1, z1 = x0 - lo_off[0], z0 - lo_off[2], x1 - hi_off[0], z1 - hi_off[2]  # where the centre may go
    if x0 >= x1 or z0 >= z1:
        return None
    cx, cz = float(rng.uniform(x0, x1)), float(rng.uniform(z0, z1))
    room_x, room_z = min(cx - x0, x1 - cx), min(cz - z0, z1 - cz)
    if rng.random() < 0.5:
        extent = (float(rng.uniform(0.3, 1.0) * room_x), 0.0, float(rng.uniform(0.3, 1.0) * room_z))
        kind, length = "circle", math.pi * (extent[0] + extent[2])
    else:
        heading = rng.uniform(0.0, math.pi)
        dx, dz = math.cos(heading), math.sin(heading)
        half = rng.uniform(0.3, 1.0) * min(room_x / max(abs(dx), 1e-9), room_z / max(abs(dz), 1e-9))
        extent = (float(half * dx), 0.0, float(half * dz))
        kind, length = "line", 4.0 * half
    if length < 1.0:
        return None
    bounce = float(rng.uniform(0.2, 0.6)) if shape == "ball" else 0.0
    centre = (cx, -hi_off[1] - LIFT, cz)  # resting on the floor
    path = Path(kind, centre, extent, float(length / rng.uniform(0.5, 1.5)), float(rng.random()), bounce)
    return dataclasses.replace(mover, path=path)


def _path_is_clear(scene: Scene, mover: Mover) -> bool:
    """The mover never overlaps static geometry over a period."""
    p = mover.path.position(np.linspace(0.0, mover.path.period, 49))
    lo_off, hi_off = mover.offsets()
    return all(segment_free(*scene.obstacles, p[i], p[i + 1], lo_off, hi_off) for i in range(len(p) - 1))


def sample_scene(seed: int, kind: str = "indoor", n_movers: int = 3) -> Scene:
    """A random scene, deterministic for ``seed`` (numpy ``Generator(seed)``)."""
    return generate(np.random.default_rng(seed), kind, n_movers)


def scene_by_seed(seed: int) -> Scene:
    """``sample_scene(seed, kind)`` with the kind alternating with the seed (even indoor, odd outdoor): the scene
    numbering of training clips and evaluations."""
    return sample_scene(seed, KINDS[seed % 2])


def generate(rng: np.random.Generator, kind: str, n_movers: int) -> Scene:
    """A random ``kind`` scene ("indoor" or "outdoor") with up to ``n_movers`` moving objects."""
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {KINDS}")
    if n_movers < 0:
        raise ValueError(f"n_movers must be >= 0, got {n_movers}")
    parts = _indoor(rng) if kind == "indoor" else _outdoor(rng)
    light = parts.pop("light")
    scene = Scene(kind=kind, boxes=tuple(parts.pop("boxes")), capsules=tuple(parts.pop("capsules")),
                  planes=tuple(parts.pop("planes")), movers=(),
                  light_dir=tuple(float(v) for v in light / np.linalg.norm(light)),
                  areas=tuple(tuple(float(v) for v in a) for a in parts.pop("areas")), **parts)
    movers = []
    for _ in range(n_movers):
        for _ in range(30):
            mover = _random_mover(rng, scene.areas)
            if mover is not None and _path_is_clear(scene, mover):
                movers.append(mover)
                break
    return dataclasses.replace(scene, movers=tuple(movers))
