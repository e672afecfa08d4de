"""Milliseconds per rendered frame of the scene simulator on one CPU thread, at 64x64 and 256x256, with one ray
per pixel (``supersample=1``: geometry only needs this) and with the default anti-aliased colour (2 x 2 rays).

    python benchmarks/sim_speed.py [--seeds 0 1 2] [--repeats 10]

Prints the median over repeats for each scene (indoor and outdoor seeds, camera at ``start_pose(scene, seed)``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


from mirage_env.geometry import intrinsics_from_fov  # noqa: E402
from mirage_env.sim import render, sample_scene, start_pose  # noqa: E402

SIZES = ((64, 64), (256, 256))
SUPERSAMPLE = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'scene':<12} {'prims':>5} " + " ".join(f"{f'{h}x{w} ss{s} ms':>15}" for h, w in SIZES for s in SUPERSAMPLE))
    for kind in ("indoor", "outdoor"):
        for seed in args.seeds:
            scene = sample_scene(seed, kind)
            pose = start_pose(scene, seed)
            cells = []
            for hw in SIZES:
                K = intrinsics_from_fov(70.0, hw)
                for supersample in SUPERSAMPLE:
                    render(scene, K, pose, hw, time=0.5, supersample=supersample)  # warm-up
                    times = []
                    for r in range(args.repeats):
                        start = time.perf_counter()
                        render(scene, K, pose, hw, time=0.1 * r, supersample=supersample)
                        times.append(time.perf_counter() - start)
                    cells.append(f"{statistics.median(times) * 1e3:15.2f}")
            n_prims = scene.n_static + len(scene.movers)
            print(f"{kind + ' ' + str(seed):<12} {n_prims:>5} " + " ".join(cells))


if __name__ == "__main__":
    main()
