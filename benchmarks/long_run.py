"""Long runs: per-segment time and memory size over 300+ segments for the bounded latent memory, the append-only
latent memory (the public release's behaviour) and the RGB point-cloud cache, on one seeded scene and loop.

    python benchmarks/long_run.py                       # 300 segments, 3 laps of a loop in a seeded courtyard
    python benchmarks/long_run.py --segments 600 --laps 6 --threads 1

The World runs the tiny preset (random weights; timing does not depend on them) in RL segments (4 frames, one
latent) with exact simulator depth, so the scene is covered during the first lap and only revisited afterwards.
The three worlds advance in lockstep (segment i of each, then segment i + 1), so load from other processes hits
them alike. Per segment it records the step's wall time, the memory stages (read + discard + write), the points
held and the bytes allocated. Slopes are least-squares fits over the last half of the run; "first -> last" compares
the 10th percentiles (robust to other processes' bursts) of the first and the last 50 segments. The model stages
(denoise + decode) do the same work in every segment, so their "last / first" measures the drift of the machine's
load; "step / drift" divides it out.
Writes results/long_run.{json,png}.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from measure import machine, pyplot, save

from mirage_env.geometry.trajectories import orbit
from mirage_env.models import from_preset
from mirage_env.sim import Scene, sample_scene
from mirage_env.world import World, WorldConfig

KINDS = {"latent": "bounded latent memory", "append": "append-only latent memory", "rgb": "RGB point-cloud cache"}
MEMORY_STAGES = ("read", "discard", "write")
EDGE = 50  # segments compared at the start and the end of a run


def loop(scene: Scene, poses_per_lap: int, laps: int) -> torch.Tensor:
    """Poses of ``laps`` laps of the widest free circle (looking outwards) around the first walkable area's centre."""
    x0, z0, x1, z1 = scene.areas[0]
    centre = ((x0 + x1) / 2, -1.5, (z0 + z1) / 2)
    for radius in torch.linspace(0.4, 0.1, 7).tolist():
        poses = orbit(centre, radius * min(x1 - x0, z1 - z0), poses_per_lap + 1, look_at_center=False)[:-1]
        if all(scene.is_free(p[:3, 3].tolist(), 0.3) for p in poses):
            return torch.cat([poses.repeat(laps, 1, 1), poses[:1]])
    raise RuntimeError("no free loop in this scene; try another --seed")


def start(model, config: WorldConfig, scene: Scene, pose: torch.Tensor) -> World:
    world = World(model, config, batch_size=1)
    world.reset_in_scene(0, scene, pose, seed=0)
    return world


def segment(world: World, poses: torch.Tensor) -> dict:
    """Step ``world`` along ``poses`` [F, 4, 4]; what the step cost and what the memory holds after it."""
    begin = time.perf_counter()
    timings = world.step(poses[None]).timings
    wall = (time.perf_counter() - begin) * 1e3
    stats = world.memory(0).stats()
    return {"step_ms": wall, "memory_ms": sum(getattr(timings, s) for s in MEMORY_STAGES), "read_ms": timings.read,
            "model_ms": timings.denoise + timings.decode, "points": stats.points, "bytes": stats.bytes}


def slope(values: list[float]) -> float:
    """Least-squares slope per segment of the last half of ``values``."""
    y = torch.tensor(values[len(values) // 2:], dtype=torch.float64)
    x = torch.arange(len(y), dtype=torch.float64)
    x -= x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def low(values: list[float]) -> float:
    """10th percentile."""
    return statistics.quantiles(values, n=10)[0]


def summary(records: list[dict]) -> dict:
    out = {}
    for key in ("step_ms", "memory_ms", "model_ms", "bytes", "points"):
        values = [r[key] for r in records]
        first, last = low(values[:EDGE]), low(values[-EDGE:])
        out[key] = {"first": first, "last": last, "last_over_first": last / first if first else math.inf,
                    "slope_last_half": slope(values)}
    return out


def plot(results: dict[str, list[dict]], laps: int):
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    panels = (("points held", lambda r: r["points"]),
              ("memory allocated (MiB)", lambda r: r["bytes"] / 2**20),
              ("memory stages per segment (ms)", lambda r: r["memory_ms"]),
              ("whole step per segment (ms)", lambda r: r["step_ms"]))
    for ax, (title, value) in zip(axes, panels):
        for kind, records in results.items():
            ax.plot([value(r) for r in records], label=KINDS[kind], lw=1)
        ax.set_title(title)
        ax.set_xlabel("segment")
        ax.set_yscale("log")
        segments = len(next(iter(results.values())))
        for lap in range(1, laps):
            ax.axvline(lap * segments / laps, color="grey", lw=0.5, ls=":")
    axes[0].legend()
    fig.suptitle("Long run on a loop (dotted: lap boundaries): bounded latent memory vs append-only vs RGB cache")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=300)
    parser.add_argument("--laps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the courtyard scene")
    parser.add_argument("--hw", type=int, nargs=2, default=(64, 64), help="image size (a multiple of 8)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.segments < 2 * EDGE or args.segments % args.laps:
        raise SystemExit(f"--segments must be at least {2 * EDGE} and a multiple of --laps")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = from_preset("tiny")
    scene = sample_scene(args.seed, "outdoor")
    poses = loop(scene, model.temporal_stride * args.segments // args.laps, args.laps)
    f = model.temporal_stride
    with torch.no_grad():
        worlds = {kind: start(model, WorldConfig(image_hw=tuple(args.hw), memory=kind), scene, poses[0])
                  for kind in args.kinds}
        results = {kind: [] for kind in args.kinds}
        for i in range(args.segments):
            for kind, world in worlds.items():
                results[kind].append(segment(world, poses[1 + f * i: 1 + f * (i + 1)]))
    summaries = {kind: summary(records) for kind, records in results.items()}

    info = machine(torch.device("cpu"))
    print(f"{args.segments} segments ({args.laps} laps), tiny preset {args.hw[0]}x{args.hw[1]}, "
          f"{info['threads']} threads; 10th percentiles of the first and last {EDGE} segments, "
          "slopes over the last half")
    print("| memory | points first -> last | points / segment | MiB allocated first -> last | KiB / segment | "
          "memory stages ms first -> last | step ms first -> last | load drift | step / drift |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, s in summaries.items():
        points, held, stages, step = s["points"], s["bytes"], s["memory_ms"], s["step_ms"]
        drift = s["model_ms"]["last_over_first"]
        print(f"| {KINDS[kind]} | {points['first']:,.0f} -> {points['last']:,.0f} | {points['slope_last_half']:.1f} | "
              f"{held['first'] / 2**20:.2f} -> {held['last'] / 2**20:.2f} | {held['slope_last_half'] / 1024:.2f} | "
              f"{stages['first']:.1f} -> {stages['last']:.1f} ({stages['last_over_first']:.2f}x) | "
              f"{step['first']:.0f} -> {step['last']:.0f} ({step['last_over_first']:.2f}x) | {drift:.2f}x | "
              f"{step['last_over_first'] / drift:.2f}x |")
    payload = {"machine": info, "args": vars(args), "summary": summaries, "records": results}
    json_path, png_path = save("long_run", payload, plot(results, args.laps))
    print(f"\nwrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
