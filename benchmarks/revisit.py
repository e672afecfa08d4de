"""Revisit consistency of the tiny world model: go out and come back, compare the returned frame with the first.

    python benchmarks/revisit.py --weights runs/tiny/weights      # 20 held-out scenes

For each held-out scene the camera turns away for ``--out-steps`` RL steps (4 frames each) and comes back along
the same path, so the last frame is taken at the first frame's pose. Reported per memory mode (the latent
memory; the same model with the memory read zeroed, an ablation; others when selectable in ``WorldConfig``):

* revisit PSNR: returned frame vs the initial frame;
* ground-truth PSNR: every generated frame vs the simulator's render at the same pose and time, on the latent
  cells the memory covered before the frame was generated.

Prints a Markdown table and writes benchmarks/results/revisit.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from mirage_env.geometry.trajectories import from_velocities, loop_and_return
from mirage_env.models import from_preset
from mirage_env.sim import Scene, render
from mirage_env.world import World, WorldConfig

HELD_OUT_FIRST_SCENE = 200_000


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of uint8 images [..., H, W, 3], over ``mask`` [..., H, W] pixels when given."""
    error = (a.float() - b.float()).pow(2).mean(dim=-1) / 255.0**2
    mse = error.mean() if mask is None else error[mask].mean()
    return float(-10 * torch.log10(mse.clamp_min(1e-10)))


def episode(world: World, scene_seed: int, out_steps: int, yaw_deg: float) -> dict:
    scene = Scene.sample(scene_seed, ("indoor", "outdoor")[scene_seed % 2])
    pose = scene.start_pose(scene_seed)
    K, hw = world.default_intrinsics(), world.config.image_hw
    first = world.reset_in_scene(0, scene, pose, seed=scene_seed)
    velocity = torch.tensor([[0.0, 0.0, 0.0, math.radians(yaw_deg), 0.0, 0.0]] * world.frames_per_step * out_steps)
    path = loop_and_return(from_velocities(pose, velocity))[1:]
    gt_psnr, frame, stride = [], 0, world.model.temporal_stride
    for poses in path.split(world.frames_per_step):
        latent_poses = poses[stride - 1::stride]
        covered = world.condition(0, latent_poses).read.mask  # what the memory shows before generating
        segment = world.step(poses[None])
        frame += world.frames_per_step
        times = (frame - world.frames_per_step + torch.arange(stride, world.frames_per_step + 1, stride))
        truth = render(scene, K.expand(len(latent_poses), 3, 3), latent_poses, hw, time=times / world.config.fps)
        mask = F.interpolate(covered[:, None].float(), size=hw, mode="nearest")[:, 0] > 0
        if mask.any():
            gt_psnr.append(psnr(segment.frames[0, stride - 1::stride], truth.rgb, mask))
    return {"scene": scene_seed, "revisit_psnr": psnr(segment.frames[0, -1], first.image),
            "gt_psnr_covered": sum(gt_psnr) / max(1, len(gt_psnr))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="weights folder (default: the shipped tiny weights)")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--out-steps", type=int, default=4)
    parser.add_argument("--yaw-deg", type=float, default=6.0, help="degrees per frame on the way out")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "revisit.json")
    args = parser.parse_args()
    model = from_preset("tiny", weights_dir=args.weights)
    modes = {"latent memory": WorldConfig(), "memory read zeroed": WorldConfig(zero_memory=True)}
    results = {}
    for name, config in modes.items():
        world = World(model, config)
        rows = [episode(world, HELD_OUT_FIRST_SCENE + i, args.out_steps, args.yaw_deg) for i in range(args.scenes)]
        results[name] = {"revisit_psnr": sum(r["revisit_psnr"] for r in rows) / len(rows),
                         "gt_psnr_covered": sum(r["gt_psnr_covered"] for r in rows) / len(rows),
                         "scenes": rows, "config": dataclasses.asdict(config)}
    print(f"{args.scenes} held-out scenes, out {args.out_steps} steps of 4 frames at {args.yaw_deg} deg/frame and back")
    print("| memory | revisit PSNR (dB) | PSNR vs ground truth on covered cells (dB) |")
    print("|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['revisit_psnr']:.2f} | {r['gt_psnr_covered']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
