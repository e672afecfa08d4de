"""Dynamic discard from depth alone, against the simulator's ground-truth dynamic masks, on episodes.

    python benchmarks/dynamic_discard.py                  # the report range: 120 episodes, seeds 2000-2119
    python benchmarks/dynamic_discard.py --range tune     # the tuning range: seeds 1000-1119 (settings chosen here)
    python benchmarks/dynamic_discard.py --small          # 6 episodes, 2 segments each (the test runs this)

Each episode (:mod:`discard_scenes`): 4 segments of 8 latent frames (pixel frames every 4 at 16 fps, so 2 s a
segment) rendered at 128x128 and pooled to a 32x32 latent grid, while the camera walks and turns, with two movers
of one shape (near and far, each with a labelled motion). Depth comes from the simulator; no external mask is
given. Each method runs segment after segment as the world runs it: the discard (with free-space eviction) and
then the write of the kept cells into a :class:`LatentSpatialMemory` (5 cm voxels).

Per segment only cells with depth (not sky, not far) are scored. A cell is *dynamic* in the ground truth when
most of its pixels show a mover; a discarded cell counts as correct when any of its pixels does (a cell on an
object's outline may be discarded). Recall by mover shape, distance and motion attributes each dynamic cell to
the mover covering most of it. *Ghost voxels*: memory voxels after the whole episode whose fused content is
mostly mover (each cell is written with its mover share as its feature). Intervals: 95 % percentile bootstrap
over episodes. ``today`` is the method before issue 19 (:func:`todays_discard`), run on the same episodes.

Prints Markdown tables and writes benchmarks/results/dynamic_discard.json (docs/formats.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from discard_scenes import FRAME_STEP, FPS, MOTIONS, SIZE, STRIDE, Episode, episode, plan
from mirage_env import ops
from mirage_env.atomic import write_text
from mirage_env.geometry import backproject_depth, intrinsics_from_fov, scale_intrinsics
from mirage_env.geometry.trajectories import straight
from mirage_env.memory import LatentSpatialMemory, MemoryConfig
from mirage_env.memory.discard import DiscardConfig, DiscardResult, discard_dynamic, segment_cameras
from mirage_env.memory.lifting import downsample_depth
from mirage_env.sim.motion import SHAPES
from mirage_env.sim.scene import KINDS

FRAMES = 8
RANGES = {"tune": (1000, 120), "report": (2000, 120)}
HW = (SIZE // STRIDE, SIZE // STRIDE)
BOOTSTRAP = 2000
COST_GRIDS = {"64x64 (4x4 latents)": (64, 64), "704x1280 (44x80 latents)": (704, 1280)}


def todays_discard(depth, K, c2w, hw, sky_mask, memory) -> DiscardResult:
    """The discard before issue 19, kept for comparison: cells lifted at their mean depth from the cell centre,
    a 5 % margin against the window's nearest mean depth, the segment's frames only, free-space eviction against
    mean depth (sky at 100 m) in 2 frames."""
    t = depth.shape[0]
    far = ~torch.isfinite(depth) | (depth > 100.0) | sky_mask
    cell_depth = downsample_depth(torch.where(far, torch.zeros_like(depth), depth), hw)
    K_lat, cameras = segment_cameras(K, c2w, tuple(depth.shape[1:]), hw, depth.device)
    candidates = cell_depth > 0
    points = backproject_depth(cell_depth, K_lat, c2w)[candidates].contiguous()
    frame = torch.arange(t, dtype=torch.int32)[:, None, None].expand_as(candidates)[candidates].contiguous()
    votes = ops.depth_consistency(points, frame, cell_depth.contiguous(), cameras, 0.05, 1, 0.0)
    dynamic = torch.zeros_like(candidates)
    dynamic[candidates] = votes[:, 1] >= 1
    if len(memory):
        observed = downsample_depth(torch.where(torch.isfinite(depth), depth, torch.full_like(depth, 100.0)),
                                    hw).clamp(max=100.0)
        source = torch.full((len(memory),), -1, dtype=torch.int32)
        seen = ops.depth_consistency(memory.positions.contiguous(), source, observed.contiguous(), cameras, 0.1, 1,
                                     memory.config.near)
        memory.remove(torch.nonzero(seen[:, 1] >= 2).flatten())
    return DiscardResult(candidates & ~dynamic, cell_depth, dynamic, None, None)


def cell_truth(ep: Episode) -> tuple[torch.Tensor, torch.Tensor]:
    """Mover share [T, h, w] of every cell and the index of the mover covering most of it (-1: none)."""
    mover = ep.view.object_id.long() - ep.scene.n_static  # < 0 off movers
    t = mover.shape[0]
    blocks = mover.reshape(t, HW[0], STRIDE, HW[1], STRIDE).permute(0, 1, 3, 2, 4).reshape(t, *HW, STRIDE ** 2)
    share = (blocks >= 0).float().mean(dim=-1)
    counts = torch.stack([(blocks == k).sum(dim=-1) for k in range(max(len(ep.scene.movers), 1))], dim=-1)
    owner = torch.where(share > 0, counts.argmax(dim=-1), torch.full_like(share, -1, dtype=torch.long))
    return share, owner


def run_discard(method: str, config: DiscardConfig, depth, K, poses, hw, sky, memory, history) -> DiscardResult:
    """One segment of ``method`` ("today" or "new")."""
    if method == "today":
        return todays_discard(depth, K, poses, hw, sky, memory)
    return discard_dynamic(depth, K, poses, hw, config, sky_mask=sky, memory=memory, history=history)


def run_episode(ep: Episode, method: str, config: DiscardConfig) -> Counter:
    """Counts of one method over one episode: per-segment scores, recall per mover label, ghost voxels."""
    share, owner = cell_truth(ep)
    memory = LatentSpatialMemory(MemoryConfig(feature_dim=1, voxel_size=0.05))
    history, c, seconds = None, Counter(), []
    K = ep.K.expand(FRAMES, 3, 3)
    K_lat = scale_intrinsics(K, (SIZE, SIZE), HW)
    for segment in range(ep.poses.shape[0] // FRAMES):
        at = slice(segment * FRAMES, (segment + 1) * FRAMES)
        depth, poses, sky = ep.view.depth[at], ep.poses[at], ep.view.sky_mask[at]
        start = time.perf_counter()
        result = run_discard(method, config, depth, K, poses, HW, sky, memory, history)
        history = result.history
        seconds.append(time.perf_counter() - start)
        scored = result.cell_depth > 0
        flagged = result.dynamic & scored
        most, touched, static = (share[at] >= 0.5) & scored, (share[at] > 0) & scored, (share[at] == 0) & scored
        c["flagged"] += int(flagged.sum())
        c["hit_any"] += int((flagged & touched).sum())
        c["dynamic_cells"] += int(most.sum())
        c["found_most"] += int((flagged & most).sum())
        c["static"] += int(static.sum())
        c["static_kept"] += int((result.keep_mask & static).sum())
        for k, label in enumerate(ep.labels):
            mine = most & (owner[at] == k)
            for key in (f"shape={label.shape}", f"distance={label.distance}", f"motion={label.motion}"):
                c[f"dynamic_cells|{key}"] += int(mine.sum())
                c[f"found_most|{key}"] += int((mine & flagged).sum())
        memory.write(share[at][:, None], result.cell_depth, K_lat, poses, keep_mask=result.keep_mask)
    c["ghost_voxels"] = int((memory.features[:, 0].float() >= 0.5).sum())
    c["voxels"] = len(memory)
    c["ms"] = statistics.median(seconds) * 1e3
    return c


FIGURES = {"precision": ("hit_any", "flagged"), "recall": ("found_most", "dynamic_cells"),
           "static_kept": ("static_kept", "static")}


def ratio(counts: list[Counter], num: str, den: str) -> float:
    total = sum(c[den] for c in counts)
    return sum(c[num] for c in counts) / total if total else float("nan")


def with_interval(counts: list[Counter], num: str, den: str, rng: np.random.Generator) -> dict:
    """Ratio of sums over episodes with a 95 % percentile bootstrap interval (episodes resampled)."""
    nums = np.array([c[num] for c in counts], dtype=np.float64)
    dens = np.array([c[den] for c in counts], dtype=np.float64)
    value = nums.sum() / dens.sum() if dens.sum() else float("nan")
    if not dens.sum():
        return {"value": value, "low": value, "high": value, "denominator": 0}
    picks = rng.integers(len(counts), size=(BOOTSTRAP, len(counts)))
    ratios = nums[picks].sum(1) / np.maximum(dens[picks].sum(1), 1e-12)
    ratios = ratios[dens[picks].sum(1) > 0]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return {"value": value, "low": float(low), "high": float(high), "denominator": int(dens.sum())}


def summarise(rows: list[dict], method: str, seed: int) -> dict:
    """Overall, per-kind and per-shape figures, recall per mover label, ghost voxels."""
    rng = np.random.default_rng(seed)
    counts = [r[method] for r in rows]
    groups = {"all": list(range(len(rows)))}
    for kind in KINDS:
        groups[f"kind={kind}"] = [i for i, r in enumerate(rows) if r["kind"] == kind]
    for shape in SHAPES:
        groups[f"shape={shape}"] = [i for i, r in enumerate(rows) if r["shape"] == shape]
    out = {name: {f: with_interval([counts[i] for i in members], *FIGURES[f], rng) for f in FIGURES}
           for name, members in groups.items()}
    labels = [f"distance={d}" for d in ("near", "far")] + [f"motion={m}" for m in MOTIONS]
    out["recall_by_mover"] = {key: with_interval(counts, f"found_most|{key}", f"dynamic_cells|{key}", rng)
                              for key in labels}
    out["ghost_voxels"] = sum(c["ghost_voxels"] for c in counts)
    out["voxels"] = sum(c["voxels"] for c in counts)
    out["median_ms_per_segment"] = statistics.median(c["ms"] for c in counts)
    return out


def discard_cost(method: str, config: DiscardConfig, repeats: int) -> dict:
    """Median ms of one discard call in the world's segment loop: 8 new frames (Mirage chunks) or 1 (RL), pixel
    depth at the image size (latent stride 16), the previous call's history, and eviction from a memory of
    100,000 voxels in front of the camera (the memory is copied before each call, outside the timing)."""
    out = {}
    g = torch.Generator().manual_seed(0)
    filled = LatentSpatialMemory(MemoryConfig(feature_dim=1, voxel_size=0.05))
    K_fill = intrinsics_from_fov(70.0, (250, 400))[None]
    filled.write(torch.zeros(1, 1, 250, 400), 2.0 + 3.0 * torch.rand(1, 250, 400, generator=g), K_fill,
                 torch.eye(4, dtype=torch.float64)[None])
    for name, (h, w) in COST_GRIDS.items():
        latent_hw = (h // 16, w // 16)
        for frames in (8, 1):
            K = intrinsics_from_fov(70.0, (h, w)).expand(frames, 3, 3)
            poses = straight(torch.eye(4, dtype=torch.float64), frames, (0.0, 0.0, 0.05))
            depth = 2.0 + 3.0 * torch.rand(frames, h, w, generator=g)
            sky = torch.zeros(depth.shape, dtype=torch.bool)
            history = run_discard(method, config, depth, K, poses, latent_hw, sky, filled, None).history
            times = []
            for _ in range(repeats):
                memory = LatentSpatialMemory(filled.config)
                memory.load_state_dict(filled.state_dict())
                start = time.perf_counter()
                run_discard(method, config, depth, K, poses, latent_hw, sky, memory, history)
                times.append((time.perf_counter() - start) * 1e3)
            out[f"{name}, {frames} frame{'s' if frames > 1 else ''}"] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range", choices=sorted(RANGES), default="report")
    parser.add_argument("--first-seed", type=int, default=None, help="default: the start of --range")
    parser.add_argument("--scenes", type=int, default=None, help="default: 120 (6 with --small)")
    parser.add_argument("--small", action="store_true", help="6 episodes of 2 segments, no cost measurement")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dynamic_discard.json")
    args = parser.parse_args(argv)
    segments = 2 if args.small else 4
    first = args.first_seed if args.first_seed is not None else RANGES[args.range][0]
    n = args.scenes if args.scenes is not None else (6 if args.small else RANGES[args.range][1])
    if n < 1:
        raise ValueError(f"--scenes must be >= 1, got {n}")
    config = DiscardConfig()
    start = time.perf_counter()
    rows = []
    for seed in range(first, first + n):
        ep = episode(seed, FRAMES, segments)
        rows.append({"seed": seed, "kind": ep.scene.kind, "shape": plan(seed)[1],
                     "movers": [label._asdict() for label in ep.labels],
                     "today": run_episode(ep, "today", config), "new": run_episode(ep, "new", config)})
    summary = {method: summarise(rows, method, seed=first) for method in ("today", "new")}
    cost = {} if args.small else {method: discard_cost(method, config, 5) for method in ("today", "new")}
    report = {
        "range": args.range if args.first_seed is None else "custom", "seeds": [first, first + n - 1],
        "tune_seeds": [RANGES["tune"][0], sum(RANGES["tune"]) - 1],
        "report_seeds": [RANGES["report"][0], sum(RANGES["report"]) - 1],
        "episode": {"segments": segments, "frames_per_segment": FRAMES, "image": [SIZE, SIZE], "latent": list(HW),
                    "fps": FPS, "frame_step": FRAME_STEP},
        "config": config.__dict__, "summary": summary, "cost_ms_per_segment": cost,
        "seconds": time.perf_counter() - start,
        "episodes": [{**{k: v for k, v in r.items() if k not in ("today", "new")},
                      "today": dict(r["today"]), "new": dict(r["new"])} for r in rows],
    }
    print_tables(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(report, indent=1))
    return report


def print_tables(report: dict) -> None:
    first, last = report["seeds"]
    print(f"{last - first + 1} episodes (seeds {first}-{last}), {report['episode']['segments']} segments of "
          f"{FRAMES} frames, {SIZE}x{SIZE} -> {HW[0]}x{HW[1]} cells; 95 % bootstrap intervals")
    print("| method | group | precision | recall | static kept |")
    print("|---|---|---:|---:|---:|")
    fmt = lambda f: f"{f['value']:.3f} [{f['low']:.3f}, {f['high']:.3f}]"  # noqa: E731
    for method, summary in report["summary"].items():
        for group, figures in summary.items():
            if isinstance(figures, dict) and "precision" in figures:
                print(f"| {method} | {group} | {fmt(figures['precision'])} | {fmt(figures['recall'])} | "
                      f"{fmt(figures['static_kept'])} |")
    print("\n| method | " + " | ".join(report["summary"]["new"]["recall_by_mover"]) + " |")
    print("|---|" + "---:|" * len(report["summary"]["new"]["recall_by_mover"]))
    for method, summary in report["summary"].items():
        print(f"| {method} | " + " | ".join(f"{f['value']:.3f}" for f in summary["recall_by_mover"].values()) + " |")
    print("\n| method | ghost voxels after the episodes | memory voxels | median ms / segment (32x32) |")
    print("|---|---:|---:|---:|")
    for method, summary in report["summary"].items():
        print(f"| {method} | {summary['ghost_voxels']} | {summary['voxels']} | "
              f"{summary['median_ms_per_segment']:.1f} |")
    for method, cost in report["cost_ms_per_segment"].items():
        print(f"\ncost of discard_dynamic ({method}), median ms per segment:")
        for name, ms in cost.items():
            print(f"  {name}: {ms:.1f}")


if __name__ == "__main__":
    main()
