"""Per-step time breakdown of the segment loop (read / denoise / decode / depth / discard / write).

    python benchmarks/world_step.py                 # tiny preset, 64x64, RL segments and Mirage chunks
    python benchmarks/world_step.py --steps 20 --batch 4

The tiny preset's weights are random here (timing does not depend on them). Depth comes from the simulator.
Prints a Markdown table (mean ms per step after one warm-up step) and writes benchmarks/results/world_step.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import torch

from mirage_env.atomic import write_text
from mirage_env.geometry.trajectories import from_velocities
from mirage_env.models import from_preset
from mirage_env.sim import sample_scene, start_pose
from mirage_env.world import World, WorldConfig

STAGES = ("read", "denoise", "decode", "depth", "discard", "write")


def run(world: World, steps: int) -> dict:
    for i in range(world.batch_size):
        scene = sample_scene(i, "indoor")
        world.reset_in_scene(i, scene, start_pose(scene, i), seed=i)
    velocity = torch.tensor([[0.0, 0.0, 0.03, math.radians(3.0), 0.0, 0.0]] * world.frames_per_step)
    totals = dict.fromkeys(STAGES, 0.0)
    for step in range(steps + 1):
        poses = torch.stack([from_velocities(p, velocity)[1:] for p in world.poses])
        timings = world.step(poses).timings
        if step:  # the first step warms up
            for stage in STAGES:
                totals[stage] += getattr(timings, stage) / steps
    totals["total"] = sum(totals[s] for s in STAGES)
    totals["frames_per_s"] = world.batch_size * world.frames_per_step / (totals["total"] / 1e3)
    totals["voxels"] = len(world.memory(0))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "world_step.json")
    args = parser.parse_args()
    model = from_preset("tiny")
    modes = {"RL segment (1 latent, 4 frames, 4 steps)": WorldConfig(),
             "Mirage chunk (8 latents, 32 frames, 20 steps)": WorldConfig.mirage_chunks()}
    rows = {}
    for name, config in modes.items():
        rows[name] = run(World(model, config, batch_size=args.batch), args.steps)
    print(f"tiny preset, 64x64, batch {args.batch}, {torch.get_num_threads()} threads, mean ms per step")
    print("| mode | " + " | ".join(STAGES) + " | total | frames/s |")
    print("|---|" + "---:|" * (len(STAGES) + 2))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[s]:.1f}" for s in STAGES) + f" | {r['total']:.1f} | "
              f"{r['frames_per_s']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps({"batch": args.batch, "configs": {n: dataclasses.asdict(c) for n, c in
                                                                     modes.items()}, "rows": rows}, indent=2,
                                   default=str))


if __name__ == "__main__":
    main()
