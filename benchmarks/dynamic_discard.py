"""Dynamic discard from depth alone, against the simulator's ground-truth dynamic masks.

    python benchmarks/dynamic_discard.py            # 20 seeded scenes (10 indoor, 10 outdoor), 3 movers each

Each scene: a Mirage-style segment of 9 latent frames (pixel frames 0, 4, ..., 32 at 16 fps, so 2 s) rendered at
128x128 and pooled to a 32x32 latent grid, while the camera walks and turns. Depth comes from the simulator; no
external mask is given. Only cells with depth (not sky, not far) are scored. A cell is *dynamic* in the ground
truth when most of its pixels show a mover; a discarded cell counts as correct when any of its pixels does (a
cell on an object's outline may be discarded). The strict variant scores "any pixel" on both sides.

Prints a Markdown table and writes benchmarks/results/dynamic_discard.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from mirage_env.atomic import write_text
from mirage_env.geometry import intrinsics_from_fov
from mirage_env.geometry.trajectories import from_velocities
from mirage_env.memory.discard import DiscardConfig, discard_dynamic
from mirage_env.sim import Scene, render, scene_by_seed, start_pose

SIZE, STRIDE, FRAMES, FPS, FRAME_STEP = 128, 4, 9, 16.0, 4


def segment_path(scene: Scene, seed: int) -> torch.Tensor:
    """A camera that walks forward (when free) and turns right, one pose per latent frame."""
    poses = [start_pose(scene, seed)]
    for _ in range(FRAMES - 1):
        step = from_velocities(poses[-1], torch.tensor([[0.0, 0.0, 0.1, math.radians(3.0), 0.0, 0.0]]))[-1]
        if not scene.segment_is_free(poses[-1][:3, 3].numpy(), step[:3, 3].numpy(), 0.2):
            step = from_velocities(poses[-1], torch.tensor([[0.0, 0.0, 0.0, math.radians(3.0), 0.0, 0.0]]))[-1]
        poses.append(step)
    return torch.stack(poses)


def score(seed: int, config: DiscardConfig) -> dict:
    scene = scene_by_seed(seed)  # even seeds indoor, odd outdoor, 3 movers
    poses = segment_path(scene, seed)
    K = intrinsics_from_fov(70.0, (SIZE, SIZE))
    times = torch.arange(FRAMES, dtype=torch.float64) * FRAME_STEP / FPS
    view = render(scene, K, poses, (SIZE, SIZE), time=times)
    hw = (SIZE // STRIDE, SIZE // STRIDE)
    start = time.perf_counter()
    result = discard_dynamic(view.depth, K.expand(FRAMES, 3, 3), poses, hw, config, sky_mask=view.sky_mask)
    seconds = time.perf_counter() - start
    share = view.dynamic_mask.float().reshape(FRAMES, hw[0], STRIDE, hw[1], STRIDE).mean(dim=(2, 4))
    scored = result.cell_depth > 0
    flagged = result.dynamic & scored
    any_dynamic, most_dynamic = (share > 0) & scored, (share >= 0.5) & scored
    static = (share == 0) & scored
    return {
        "seed": seed, "kind": scene.kind, "cells": int(scored.sum()), "dynamic_cells": int(most_dynamic.sum()),
        "flagged": int(flagged.sum()), "hit_any": int((flagged & any_dynamic).sum()),
        "found_most": int((flagged & most_dynamic).sum()),
        "any_cells": int(any_dynamic.sum()), "static": int(static.sum()),
        "static_kept": int((result.keep_mask & static).sum()), "ms": seconds * 1e3,
    }


def ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--margin", type=float, default=DiscardConfig.margin)
    parser.add_argument("--min-votes", type=int, default=DiscardConfig.min_votes)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dynamic_discard.json")
    args = parser.parse_args()
    config = DiscardConfig(margin=args.margin, min_votes=args.min_votes)
    rows = [score(i, config) for i in range(args.scenes)]
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k not in ("seed", "kind", "ms")}
    summary = {
        "precision": ratio(total["hit_any"], total["flagged"]),
        "recall": ratio(total["found_most"], total["dynamic_cells"]),
        "static_kept": ratio(total["static_kept"], total["static"]),
        "strict_recall": ratio(total["hit_any"], total["any_cells"]),
        # the median: a slow spell of a shared machine moves the mean
        "median_ms_per_segment": statistics.median(r["ms"] for r in rows),
    }
    print(f"{args.scenes} scenes, {FRAMES} frames of {SIZE}x{SIZE} -> {SIZE // STRIDE}x{SIZE // STRIDE} cells, "
          f"margin {config.margin}, min votes {config.min_votes}")
    print("| precision | recall | static kept | strict recall (any pixel) | median ms / segment |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {summary['precision']:.3f} | {summary['recall']:.3f} | {summary['static_kept']:.3f} | "
          f"{summary['strict_recall']:.3f} | {summary['median_ms_per_segment']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps({"config": config.__dict__, "summary": summary, "scenes": rows}, indent=2))


if __name__ == "__main__":
    main()
