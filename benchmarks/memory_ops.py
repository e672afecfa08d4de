"""Memory kernels: compiled extension vs PyTorch reference, in one run, with an exactness check.

    python benchmarks/memory_ops.py                      # N = 1,000,000 points, C = 48, 4 cameras at 44x80
    python benchmarks/memory_ops.py --points 200000 --repeat 3

Prints a Markdown table and writes benchmarks/results/memory_ops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
from measure import best_of, synthetic_memory

from mirage_env.atomic import write_text
from mirage_env.geometry import intrinsics_from_fov, pack_cameras
from mirage_env.geometry.trajectories import orbit
from mirage_env.ops import extension, reference


def timed(fn, repeat: int) -> tuple[float, object]:
    """Fastest wall time in milliseconds over ``repeat`` runs after one warm-up, and the last result."""
    stats, result = best_of(fn, repeat, torch.device("cpu"))
    return stats["ms"], result


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b))
    return bool(torch.equal(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--channels", type=int, default=48)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--hw", type=int, nargs=2, default=(44, 80))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory_ops.json")
    args = parser.parse_args()
    module = extension.load_module("cpu")
    if module is None:
        raise SystemExit("mirage_env._C is not built: run `pip install .` first")

    h, w = args.hw
    g = torch.Generator().manual_seed(0)
    points = (torch.rand(args.points, 3, generator=g) * 8 - 4) + torch.tensor([0.0, 0.0, 6.0])
    poses = orbit((0.0, 0.0, 6.0), radius=6.0, n=args.cameras, sweep_deg=60.0, start_deg=-30.0)
    cameras = pack_cameras(intrinsics_from_fov(70.0, (h, w)).expand(args.cameras, 3, 3), poses)
    t = 8
    depths = (torch.rand(t, h, w, generator=g) * 6 + 2).contiguous()
    source = torch.full((args.points,), -1, dtype=torch.int32)
    depth_cameras = pack_cameras(intrinsics_from_fov(70.0, (h, w)).expand(t, 3, 3),
                                 orbit((0.0, 0.0, 6.0), 6.0, t, sweep_deg=60.0, start_deg=-30.0))
    m = min(args.points, 200_000)
    keys = torch.randint(0, m // 4, (m,), generator=g)
    sorted_keys, order = torch.sort(keys, stable=True)
    store_keys = torch.unique(torch.randint(0, m // 2, (m // 4,), generator=g))
    fuse_args = (sorted_keys, order, points[:m].contiguous(), torch.randn(m, args.channels, generator=g),
                 torch.ones(m), store_keys, torch.arange(store_keys.numel()))

    cases = [
        (f"project_zbuffer N={args.points:,} B={args.cameras} {h}x{w}", "project_zbuffer",
         (points, cameras, h, w, 0.01), True),
        (f"depth_consistency N={args.points:,} T={t} r=1", "depth_consistency",
         (points, source, *reference.window_depth_range(depths, 1), depth_cameras, 0.05, 0.01), True),
        (f"segment_fuse M={m:,} C={args.channels}", "segment_fuse", fuse_args, False),
    ]
    rows = []
    for label, name, op_args, exact in cases:
        ref_ms, ref_out = timed(lambda: getattr(reference, name)(*op_args), args.repeat)
        ext_ms, ext_out = timed(lambda: getattr(extension, name)(module, *op_args), args.repeat)
        equal = same(ext_out, ref_out) if exact else (torch.equal(ext_out[0], ref_out[0])
                                                       and torch.equal(ext_out[4], ref_out[4]))
        rows.append({"op": label, "reference_ms": ref_ms, "extension_ms": ext_ms, "speedup": ref_ms / ext_ms,
                     "equal": equal, "compared": "bitwise" if exact else "keys and slots bitwise"})

    memory = synthetic_memory(args.channels, 0.002, points, g)  # 2 mm voxels: nearly one voxel per point
    K = intrinsics_from_fov(70.0, (h, w)).expand(args.cameras, 3, 3)
    timings = {}
    for backend in ("reference", "extension"):
        os.environ["MIRAGE_ENV_BACKEND"] = backend
        timings[backend] = timed(lambda: memory.read(K, poses, (h, w)), args.repeat)
    equal = same(tuple(timings["reference"][1]), tuple(timings["extension"][1]))
    rows.append({"op": f"LatentSpatialMemory.read N={args.points:,} C={args.channels} B={args.cameras} {h}x{w}",
                 "reference_ms": timings["reference"][0], "extension_ms": timings["extension"][0],
                 "speedup": timings["reference"][0] / timings["extension"][0], "equal": equal,
                 "compared": "bitwise"})

    print(f"threads: {torch.get_num_threads()}, machine: {platform.processor() or platform.machine()}, "
          f"OpenMP: {module.has_openmp()}")
    print("| op | reference ms | extension ms | speedup | equal |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['op']} | {r['reference_ms']:.1f} | {r['extension_ms']:.1f} | {r['speedup']:.1f}x | "
              f"{r['equal']} ({r['compared']}) |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2))
    if not all(r["equal"] for r in rows):
        raise SystemExit("extension and reference disagree")


if __name__ == "__main__":
    main()
