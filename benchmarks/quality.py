"""The quality ladder of the tiny world model on held-out scenes: PSNR, SSIM and sharpness ratio per rung.

    python benchmarks/quality.py                        # the shipped tiny weights, 32 held-out scenes, both paths
    python benchmarks/quality.py --weights runs/tiny/weights --scenes 8
    python benchmarks/quality.py --probe-sigmas 0.2 0.5 1    # plus the denoiser's one-shot estimates at 3 sigmas
    python benchmarks/quality.py --probe-oracle             # plus the generator with a perfect memory read

The protocol is :func:`mirage_env.quality.ladder_episode` (scene seeds from ``QUALITY_FIRST_SCENE``, never used in
training). For each path and step range (1-4, 5-12, 13-24) every rung gets the mean PSNR and SSIM over scenes and
the sharpness ratio (gradient energy of the rung's frames over that of the true frames), each with a bootstrap 95 %
interval over scenes. Prints Markdown tables and writes ``benchmarks/results/quality.json`` and a contact sheet
``quality.png`` (per scene of the walk: true / generated / read-zeroed rows, steps 0-24 left to right).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from mirage_env.atomic import write_text
from mirage_env.models import from_preset
from mirage_env.quality import PATHS, QUALITY_FIRST_SCENE, LadderEpisode, ladder_episode
from mirage_env.video import contact_sheet, write_png
from mirage_env.world import World, WorldConfig

RESULTS = Path(__file__).parent / "results"
RANGES = ((1, 4), (5, 12), (13, 24))


def bootstrap(values: np.ndarray, statistic, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``statistic`` over resamples of the rows of ``values``."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(values), size=(draws, len(values)))
    stats = np.array([statistic(values[p]) for p in picks])
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def summarise(episodes: list[LadderEpisode], first: int, last: int) -> dict:
    """Per rung: mean PSNR / SSIM over scenes and the sharpness ratio of steps ``first..last``, with intervals."""
    steps = slice(first - 1, last)
    truth = np.array([e.truth_energy[steps] for e in episodes])  # [scenes, steps]
    out = {}
    for rung in episodes[0].metrics:
        row = {}
        for name in ("psnr", "ssim"):
            values = np.array([np.mean(e.metrics[rung][name][steps]) for e in episodes])
            low, high = bootstrap(values, np.mean)
            row[name] = {"mean": float(values.mean()), "ci95": [low, high]}
        energy = np.array([e.metrics[rung]["energy"][steps] for e in episodes])
        pairs = np.stack([energy.sum(1), truth.sum(1)], axis=1)  # per scene: rung energy, true energy
        ratio = lambda p: p[:, 0].sum() / p[:, 1].sum()  # noqa: E731
        low, high = bootstrap(pairs, ratio)
        row["sharpness"] = {"mean": float(ratio(pairs)), "ci95": [low, high]}
        out[rung] = row
    return out


def markdown(results: dict) -> str:
    lines = []
    for path, ranges in results.items():
        rungs = next(iter(ranges.values()))
        lines += [f"\n{path}: PSNR dB / SSIM / sharpness ratio (mean over scenes, [95 % interval])", "",
                  "| rung | " + " | ".join(f"steps {r}" for r in ranges) + " |",
                  "|---|" + "---:|" * len(ranges)]
        for rung in rungs:
            cells = []
            for r in ranges.values():
                p, s, g = (r[rung][k] for k in ("psnr", "ssim", "sharpness"))
                cells.append(f"{p['mean']:.2f} [{p['ci95'][0]:.1f}, {p['ci95'][1]:.1f}] / {s['mean']:.3f} / "
                             f"{g['mean']:.2f} [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]")
            lines.append(f"| {rung} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="weights folder (default: the shipped tiny weights)")
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--first-scene", type=int, default=QUALITY_FIRST_SCENE)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--sheet-scenes", type=int, default=4, help="scenes of the walk on the contact sheet")
    parser.add_argument("--denoise-steps", type=int, default=WorldConfig.num_steps,
                        help="denoising steps per segment (default: the env's)")
    parser.add_argument("--probe-sigmas", type=float, nargs="*", default=[],
                        help="add a denoised_<sigma> rung per noise level (mirage_env.quality)")
    parser.add_argument("--probe-oracle", action="store_true",
                        help="add the oracle_read rung: the generator with the true latents as its memory read")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = from_preset("tiny", args.weights, fuse_lora=True)
    config = WorldConfig(num_steps=args.denoise_steps)
    world, zeroed = World(model, config), World(model, dataclasses.replace(config, zero_memory=True))
    seeds = range(args.first_scene, args.first_scene + args.scenes)
    ranges = [(a, min(b, args.steps)) for a, b in RANGES if a <= args.steps]
    results, sheet, start = {}, [], time.perf_counter()
    for path in args.paths:
        episodes = [ladder_episode(world, zeroed, seed, path, args.steps, args.probe_sigmas, args.probe_oracle)
                    for seed in seeds]
        results[path] = {f"{a}-{b}": summarise(episodes, a, b) for a, b in ranges}
        if path == "walk":
            for e in episodes[: args.sheet_scenes]:
                sheet += [e.frames["truth"], e.frames["generated"], e.frames["zeroed"]]
    report = {"weights": str(args.weights or "shipped tiny"), "scenes": list(seeds), "steps": args.steps,
              "denoise_steps": args.denoise_steps, "probe_sigmas": args.probe_sigmas,
              "probe_oracle": args.probe_oracle,
              "threads": args.threads, "seconds": round(time.perf_counter() - start, 1), "results": results}
    write_text(args.out, json.dumps(report, indent=2))
    if sheet:
        write_png(args.out.with_suffix(".png"), contact_sheet(torch.cat(sheet), columns=args.steps + 1))
    print(markdown(results))
    return report


if __name__ == "__main__":
    main()
