"""Does the world model generalise? Its flow loss on its own training pool against the same recipe on unseen scenes.

    python benchmarks/generalisation.py                                   # the shipped tiny weights
    python benchmarks/generalisation.py --weights runs/v4/weights --scenes 2000

The first ``--samples`` entries of the training pool (the teacher-forced segments ``mirage-env train tiny`` makes
with ``--scenes`` and ``--seed``: every entry is a function of its index, so these are entries the model trained
on) and as many entries made the same way from scene seeds 100,000 and up (never used by the world model's
training) are scored with the flow-matching loss (no context corruption), each averaged over ``--draws`` noise
draws. A model that learned the task scores both alike; a model that memorised its pool scores the unseen ones
far worse. Writes ``benchmarks/results/generalisation.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mirage_env.atomic import write_text
from mirage_env.models import from_preset
from mirage_env.models.wan import WanWorldModel
from mirage_env.train.clips import ClipConfig, SimulatorClips
from mirage_env.train.segments import SegmentData, SegmentPool
from mirage_env.world import WorldConfig

RESULTS = Path(__file__).parent / "results"
UNSEEN_FIRST_SCENE = 100_000


@torch.no_grad()
def pool_losses(model: WanWorldModel, pool: SegmentPool, samples: int, draws: int) -> np.ndarray:
    """Mean flow loss of pool entries ``0 .. samples - 1`` over ``draws`` noise draws each (seeded by the index)."""
    losses = []
    for index in range(samples):
        request, target = pool[index]
        generator = torch.Generator().manual_seed(index)
        losses.append(np.mean([model.training_loss(request, target, generator).item() for _ in range(draws)]))
    return np.array(losses)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="weights folder (default: the shipped tiny weights)")
    parser.add_argument("--scenes", type=int, default=SegmentData.scenes, help="the recipe's --scenes")
    parser.add_argument("--seed", type=int, default=0, help="the recipe's --seed")
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "generalisation.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = from_preset("tiny", args.weights)
    data, world = SegmentData(scenes=args.scenes, pool=args.samples), WorldConfig()
    frames = data.clip_frames(model.temporal_stride)
    unseen = SimulatorClips(ClipConfig(world.image_hw, frames, scenes=args.scenes, first_scene=UNSEEN_FIRST_SCENE),
                            args.seed)
    pools = {"training pool": SegmentPool(model, data, world, args.seed),
             "unseen scenes": SegmentPool(model, data, world, args.seed, unseen)}
    start, results = time.perf_counter(), {}
    for name, pool in pools.items():
        losses = pool_losses(model, pool, args.samples, args.draws)
        results[name] = {"mean": float(losses.mean()), "sem": float(losses.std(ddof=1) / np.sqrt(len(losses)))}
        print(f"{name}: flow loss {losses.mean():.3f} +/- {results[name]['sem']:.3f} (s.e.m.)")
    ratio = results["unseen scenes"]["mean"] / results["training pool"]["mean"]
    print(f"unseen / training: {ratio:.2f}x")
    report = {"weights": str(args.weights or "shipped tiny"), "scenes": args.scenes, "seed": args.seed,
              "samples": args.samples, "draws": args.draws, "unseen_first_scene": UNSEEN_FIRST_SCENE,
              "seconds": round(time.perf_counter() - start, 1), "results": results, "unseen_over_training": ratio}
    write_text(args.out, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
