"""Revisit consistency of the tiny world model: go out and come back, compare the returned frame with the first.

    python benchmarks/revisit.py                 # the shipped tiny weights, 20 held-out scenes
    python benchmarks/revisit.py --weights runs/tiny/weights

The protocol is :func:`mirage_env.evaluation.revisit_episode` (held-out scene seeds from
``HELD_OUT_FIRST_SCENE``). The same model runs with three memories: the latent memory; the same model with the
memory read zeroed (ablation: the memory still runs, the model sees nothing of it); and the RGB point-cloud cache
(render the coloured points at pixel resolution, VAE-encode the render). Prints a Markdown table and writes
benchmarks/results/revisit.json and revisit.png (first frame, then the returned frame of each memory, per scene).
The last row is what a perfect generator would score: the true frames of the last segment through the VAE.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from mirage_env.atomic import write_text
from mirage_env.evaluation import HELD_OUT_FIRST_SCENE, revisit_episode
from mirage_env.models import from_preset
from mirage_env.video import contact_sheet, write_png
from mirage_env.world import World, WorldConfig

MODES = {"latent memory": WorldConfig(), "memory read zeroed": WorldConfig(zero_memory=True),
         "RGB point cache": WorldConfig(memory="rgb")}
METRICS = ("revisit_psnr", "revisit_ssim", "gt_psnr_covered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="weights folder (default: the shipped tiny weights)")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--out-steps", type=int, default=4)
    parser.add_argument("--yaw-deg", type=float, default=6.0, help="degrees per frame on the way out")
    parser.add_argument("--rest-steps", type=int, default=1, help="steps resting at the start pose after the return")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "revisit.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = from_preset("tiny", weights_dir=args.weights)
    results, rows_by_mode = {}, {}
    for name, config in MODES.items():
        world = World(model, config)
        rows = [revisit_episode(world, HELD_OUT_FIRST_SCENE + i, args.out_steps, args.yaw_deg, args.rest_steps)
                for i in range(args.scenes)]
        rows_by_mode[name] = rows
        results[name] = {m: {"mean": statistics.mean(r[m] for r in rows), "std": statistics.pstdev(r[m] for r in rows)}
                         for m in METRICS}
        results[name]["scenes"] = [{k: r[k] for k in ("scene", *METRICS)} for r in rows]
        results[name]["config"] = dataclasses.asdict(config)
    print(f"{args.scenes} held-out scenes, out {args.out_steps} steps of 4 frames at {args.yaw_deg} deg/frame, back, "
          f"{args.rest_steps} steps at rest")
    print("| memory | revisit PSNR (dB) | revisit SSIM | PSNR vs ground truth on covered cells (dB) |")
    print("|---|---:|---:|---:|")
    bound = [r["vae_bound_psnr"] for r in rows_by_mode["latent memory"]]
    results["vae_bound_psnr"] = {"mean": statistics.mean(bound), "std": statistics.pstdev(bound)}
    for name in MODES:
        r = results[name]
        cells = " | ".join(f"{r[m]['mean']:.3f} +/- {r[m]['std']:.3f}" if m == "revisit_ssim"
                           else f"{r[m]['mean']:.2f} +/- {r[m]['std']:.2f}" for m in METRICS)
        print(f"| {name} | {cells} |")
    print(f"| the true frames through the VAE (a perfect generator) | {results['vae_bound_psnr']['mean']:.2f} +/- "
          f"{results['vae_bound_psnr']['std']:.2f} | | |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(results, indent=2, default=str))
    shown = range(min(8, args.scenes))
    columns = [torch.stack([rows_by_mode["latent memory"][i]["first"] for i in shown])]
    columns += [torch.stack([rows[i]["returned"] for i in shown]) for rows in rows_by_mode.values()]
    sheet = contact_sheet(torch.stack(columns, dim=1).flatten(0, 1).numpy(), columns=len(columns))
    write_png(args.out.with_suffix(".png"), sheet.repeat(2, axis=0).repeat(2, axis=1))


if __name__ == "__main__":
    main()
