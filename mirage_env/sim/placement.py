"""Camera placement in a scene: free start poses that look at something."""

from __future__ import annotations

import math

import numpy as np
import torch

from mirage_env.geometry.camera import intrinsics_from_fov
from mirage_env.geometry.poses import pose_from_euler
from mirage_env.sim.renderer import render
from mirage_env.sim.scene import Scene, sample_area


def start_pose(scene: Scene, rng: int | np.random.Generator | None = None, clearance: float = 0.3) -> torch.Tensor:
    """A free camera-to-world pose [4, 4] (float64) at eye height in a walkable area of ``scene``, facing across the
    area towards geometry at least 2 m away (checked with a small probe render); deterministic for an int ``rng``."""
    rng = np.random.default_rng(rng)
    probe_hw = (12, 16)
    K = intrinsics_from_fov(70.0, probe_hw)
    for _ in range(200):
        x0, z0, x1, z1 = sample_area(rng, scene.areas)
        (x, tx), (z, tz) = rng.uniform(x0, x1, 2), rng.uniform(z0, z1, 2)
        position = (x, -rng.uniform(1.2, 1.8), z)
        if math.hypot(tx - x, tz - z) < 1.0 or not scene.is_free(position, clearance):
            continue
        angles = torch.tensor([math.atan2(tx - x, tz - z), rng.uniform(-0.3, 0.05), 0.0], dtype=torch.float64)
        pose = pose_from_euler(torch.tensor(position, dtype=torch.float64), *angles)
        depth = render(scene, K, pose, probe_hw, supersample=1).depth[0]
        if depth[3:9, 4:12].median() >= 2.0 and depth.isinf().float().mean() <= (0.5 if scene.sky else 0.0):
            return pose
    raise RuntimeError("start_pose: found no free camera pose with a view after 200 tries")
