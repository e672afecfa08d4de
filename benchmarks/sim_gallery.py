"""Write a PNG grid of simulator scenes: one row per scene with RGB, colour-mapped depth and the dynamic mask.

    python benchmarks/sim_gallery.py --out gallery.png

Each camera is placed by ``start_pose`` and turned towards one of the scene's movers.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


from mirage_env.geometry import intrinsics_from_fov, look_at  # noqa: E402
from mirage_env.sim import Scene, render, sample_scene, start_pose  # noqa: E402
from mirage_env.video import write_png  # noqa: E402

# Anchor colours of a viridis-like map, from near (0) to far (1).
ANCHORS = np.array([[0.99, 0.91, 0.14], [0.37, 0.79, 0.38], [0.13, 0.57, 0.55], [0.23, 0.32, 0.55], [0.27, 0.0, 0.33]])


def colorize_depth(depth: np.ndarray, far: float = 30.0) -> np.ndarray:
    """uint8 [h, w, 3] colours for a depth map: log-scaled up to ``far`` metres, black where depth is infinite."""
    x = np.clip(np.log1p(np.nan_to_num(depth, posinf=far)) / np.log1p(far), 0.0, 1.0) * (len(ANCHORS) - 1)
    i = np.minimum(x.astype(int), len(ANCHORS) - 2)
    rgb = ANCHORS[i] + (ANCHORS[i + 1] - ANCHORS[i]) * (x - i)[..., None]
    rgb[np.isinf(depth)] = 0.0
    return (rgb * 255).astype(np.uint8)


def view_with_mover(scene: Scene, seed: int, K: torch.Tensor, hw: tuple[int, int], time: float) -> torch.Tensor:
    """Of start poses turned towards a mover, the one showing the most moving pixels (a start pose if none)."""
    best, best_pose = 0.0, start_pose(scene, seed)
    for k in range(20):
        eye = start_pose(scene, seed * 1000 + k)[:3, 3]
        for mover in scene.movers:
            target = mover.path.position(time)
            if np.linalg.norm(target - eye.numpy()) < 2.0:
                continue
            pose = look_at(eye, target + np.array([0.0, -0.2, 0.0]))
            shown = render(scene, K, pose, hw, time, supersample=1).dynamic_mask.float().mean().item()
            if shown > best:
                best, best_pose = shown, pose
    return best_pose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gallery.png")
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("H", "W"))
    parser.add_argument("--time", type=float, default=0.0, help="scene time in seconds")
    args = parser.parse_args()
    hw = tuple(args.size)
    K = intrinsics_from_fov(75.0, hw)
    probe_hw = (24, 32)
    probe_K = intrinsics_from_fov(75.0, probe_hw)
    rows = []
    for kind, seed in [("indoor", 0), ("indoor", 1), ("indoor", 2), ("outdoor", 0), ("outdoor", 1)]:
        scene = sample_scene(seed, kind)
        pose = view_with_mover(scene, seed, probe_K, probe_hw, args.time)
        out = render(scene, K, pose, hw, time=args.time)
        mask = np.repeat(out.dynamic_mask[0].numpy()[..., None] * np.uint8(255), 3, axis=-1)
        rows.append(np.concatenate([out.rgb[0].numpy(), colorize_depth(out.depth[0].numpy()), mask], axis=1))
    write_png(args.out, np.concatenate(rows, axis=0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
