"""Scenes of the dynamic-discard benchmark: a static procedural scene, a walking and turning camera, and two
movers of one shape placed against the camera path, one near and one far, each with a labelled motion.

Seed ``s`` fixes everything: the scene kind (even indoor, odd outdoor), the movers' shape (``(s // 2) % 3``), the
near mover's motion (``(s // 6) % 5``) and the far mover's (``(s // 6 + 2) % 5``), so any 30 consecutive seeds
hold every kind x shape x motion once. Motions, relative to the camera at the start of a randomly chosen segment
of the episode (the camera keeps walking and turning, so the labels describe that segment):

* ``crossing``: passes the view axis mid-segment, perpendicular to the view, at 0.8-1.6 m/s (indoors 0.6-1.2);
* ``entering``: starts outside the view (42 degrees off the axis) and walks in;
* ``leaving``: starts near the axis and walks out;
* ``along_ray``: walks towards or away from the camera along the view axis;
* ``slow``: a random direction at 0.25-0.5 m/s (it moves about its own size in a segment).

A mover oscillates along a line (``Path("line")``) whose quarter period is the segment, so it is nearly uniform
through its segment and keeps moving over the whole episode (turning round at the ends of its line). Movers are
kept clear of static geometry and 0.3 m from every camera position, and start in the camera's line of sight; one
that cannot be placed after 200 tries is left out (the JSON says so).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
import torch

from mirage_env.geometry import intrinsics_from_fov
from mirage_env.geometry.trajectories import walk_path
from mirage_env.sim import Mover, Path, Scene, render, sample_scene, start_pose
from mirage_env.sim.generate import LIFT
from mirage_env.sim.motion import SHAPES
from mirage_env.sim.renderer import RenderOutput
from mirage_env.sim.scene import KINDS
from mirage_env.sim.swept_box import segment_free
from mirage_env.sim.textures import Material

SIZE, STRIDE, FOV, FPS, FRAME_STEP = 128, 4, 70.0, 16.0, 4
WALK_M, YAW_DEG = 0.05, 3.0  # camera step forward and turn (right or left) per latent frame
MOTIONS = ("crossing", "entering", "leaving", "along_ray", "slow")
DISTANCES = {"near": (1.0, 2.5), "far": (3.0, 8.0)}  # metres from the camera along its view
SPEEDS = {"indoor": (0.6, 1.2), "outdoor": (0.8, 1.6)}  # m/s of every motion but "slow" (rooms are small)
PAINT = [(0.80, 0.22, 0.20), (0.22, 0.42, 0.80), (0.22, 0.62, 0.32), (0.92, 0.72, 0.20), (0.55, 0.36, 0.20)]


class MoverLabel(NamedTuple):
    shape: str
    distance: str
    motion: str
    segment: int


class Episode(NamedTuple):
    seed: int
    scene: Scene
    labels: tuple[MoverLabel, ...]  # one per mover of scene.movers
    K: torch.Tensor  # [3, 3] of the SIZE x SIZE frames
    poses: torch.Tensor  # [segments * frames, 4, 4]
    times: torch.Tensor  # [segments * frames] seconds
    view: RenderOutput


def plan(seed: int) -> tuple[str, str, str, str]:
    """Kind, mover shape, near motion and far motion of seed ``seed``."""
    return KINDS[seed % 2], SHAPES[(seed // 2) % 3], MOTIONS[(seed // 6) % 5], MOTIONS[(seed // 6 + 2) % 5]


def _size(rng: np.random.Generator, shape: str) -> tuple[float, float, float]:
    size = {"ball": (rng.uniform(0.15, 0.35), 0.0, 0.0), "box": tuple(rng.uniform(0.2, 0.4, 3)),
            "walker": (rng.uniform(0.18, 0.24), rng.uniform(0.45, 0.55), rng.uniform(0.11, 0.13))}[shape]
    return tuple(float(v) for v in size)


def _ground_axes(pose: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Unit forward and right directions of a camera in the ground plane (x, 0, z)."""
    forward = np.array([float(pose[0, 2]), 0.0, float(pose[2, 2])])
    forward /= np.linalg.norm(forward)
    return forward, np.array([-forward[2], 0.0, forward[0]])  # right of forward with y down


def _place(rng: np.random.Generator, scene: Scene, shape: str, distance: str, motion: str, poses: torch.Tensor,
           times: torch.Tensor, frames: int, segments: int) -> tuple[Mover, int] | None:
    material = Material(str(rng.choice(["noise", "stripes", "checker"])), PAINT[rng.integers(len(PAINT))],
                        (0.3, 0.3, 0.32), float(rng.uniform(0.1, 0.4)), int(rng.integers(2**31)))
    size = _size(rng, shape)
    mover = Mover(shape, size, material, Path("line", (0.0,) * 3, (0.0,) * 3, 1.0))
    lo_off, hi_off = mover.offsets()
    radius = max(abs(v) for v in (lo_off[0], lo_off[2], hi_off[0], hi_off[2]))
    cameras = poses[:, :3, 3].numpy()[:, [0, 2]]
    span = frames * FRAME_STEP / FPS  # seconds of one segment
    for _ in range(200):
        segment = int(rng.integers(segments))
        pose = poses[segment * frames]
        forward, right = _ground_axes(pose)
        eye = pose[:3, 3].numpy() * np.array([1.0, 0.0, 1.0])
        lo_d, hi_d = DISTANCES[distance]
        hi_d = min(hi_d, _free_ahead(scene, eye + np.array([0.0, -0.5, 0.0]), forward, hi_d + 1.0) - radius - 0.3)
        if hi_d <= lo_d:
            continue
        d = rng.uniform(lo_d, hi_d)
        side = float(rng.choice([-1.0, 1.0]))
        speed = rng.uniform(0.25, 0.5) if motion == "slow" else rng.uniform(*SPEEDS[scene.kind])
        travel = speed * span
        if motion == "crossing":
            start, heading = eye + d * forward - side * right * travel / 2, side * right
        elif motion == "entering":
            start, heading = eye + d * forward + side * right * d * math.tan(math.radians(42.0)), -side * right
        elif motion == "leaving":
            start, heading = eye + d * forward + right * rng.uniform(-0.3, 0.3), side * right
        elif motion == "along_ray":
            start, heading = eye + d * forward + right * rng.uniform(-0.3, 0.3), side * forward
        else:
            angle = rng.uniform(0.0, 2.0 * math.pi)
            start = eye + d * forward + right * rng.uniform(-0.5, 0.5)
            heading = math.cos(angle) * forward + math.sin(angle) * right
        # p(t) = centre + extent sin(2 pi (t / period + phase)), at -45 degrees when the segment starts and
        # +45 degrees when it ends: nearly uniform speed, `travel` metres through the segment
        amplitude = travel / math.sqrt(2.0)
        centre = start + heading * amplitude / math.sqrt(2.0)
        centre[1] = -hi_off[1] - LIFT
        extent = heading * amplitude
        lo_end, hi_end = centre - extent, centre + extent
        if not segment_free(*scene.obstacles, lo_end, hi_end, lo_off, hi_off):
            continue
        eye_to_start = (pose[:3, 3].numpy(), start + np.array([0.0, centre[1], 0.0]))  # line of sight
        if not segment_free(*scene.obstacles, *eye_to_start, (0.0,) * 3, (0.0,) * 3):
            continue
        if _distance_to_segment(cameras, lo_end[[0, 2]], hi_end[[0, 2]]).min() < radius + 0.3:
            continue
        period = 4.0 * span
        phase = -0.125 - float(times[segment * frames]) / period
        bounce = float(rng.uniform(0.1, 0.3)) if shape == "ball" else 0.0
        path = Path("line", tuple(float(v) for v in centre), tuple(float(v) for v in extent), period, phase, bounce)
        return dataclasses.replace(mover, path=path), segment
    return None


def _free_ahead(scene: Scene, origin: np.ndarray, direction: np.ndarray, limit: float) -> float:
    """How far (in 0.25 m steps, up to ``limit``) a point can move from ``origin`` along ``direction``."""
    steps = np.arange(0.25, limit + 0.25, 0.25)
    for d in steps:
        if not segment_free(*scene.obstacles, origin, origin + direction * d, (0.0,) * 3, (0.0,) * 3):
            return float(d - 0.25)
    return float(limit)


def _distance_to_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def episode(seed: int, frames: int, segments: int) -> Episode:
    """The benchmark episode of ``seed``: ``segments`` segments of ``frames`` latent frames, rendered."""
    kind, shape, near_motion, far_motion = plan(seed)
    rng = np.random.default_rng(seed)
    static = sample_scene(seed, kind, n_movers=0)
    yaw = float(rng.choice([-YAW_DEG, YAW_DEG]))
    poses = walk_path(static, start_pose(static, seed), frames * segments - 1, WALK_M, yaw)
    times = torch.arange(frames * segments, dtype=torch.float64) * FRAME_STEP / FPS
    movers, labels = [], []
    for distance, motion in (("near", near_motion), ("far", far_motion)):
        placed = _place(rng, static, shape, distance, motion, poses, times, frames, segments)
        if placed is not None:
            movers.append(placed[0])
            labels.append(MoverLabel(shape, distance, motion, placed[1]))
    scene = dataclasses.replace(static, movers=tuple(movers))
    K = intrinsics_from_fov(FOV, (SIZE, SIZE))
    view = render(scene, K, poses, (SIZE, SIZE), time=times, supersample=1)
    return Episode(seed, scene, tuple(labels), K, poses, times, view)
