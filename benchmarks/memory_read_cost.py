"""Memory-read cost per segment: latent memory (project at latent resolution) vs RGB point-cloud cache (splat at
pixel resolution + VAE-encode the render), in one run, at the same scene coverage.

    python benchmarks/memory_read_cost.py                 # Wan2.2 VAE at 176x320 and tiny at 64x64, 33-frame segment
    python benchmarks/memory_read_cost.py --frames 5 --wan-hw 352 640 --device cuda

Both memories are written with the same simulated frames and depth (a full turn in a seeded room, the same latent
cells kept), then read along a 33-frame segment (9 latent frames) that turns through the covered part. The Wan2.2
VAE is the real architecture with random weights (timing and memory do not depend on the weights); the latent
memory's features are random for the same reason. The latent memory fuses into 1 cm voxels (``--voxel``): with the
World's 5 cm, near surfaces collapse several latent cells into one voxel and the read leaves holes, so the two
memories would not cover the segment alike. Time is the best of ``--repeat`` calls; peak memory the peak RSS growth
during the call (CUDA: max allocated). Writes results/memory_read_cost.{json,png}.
"""

from __future__ import annotations

import argparse
import math

import torch
from measure import best_of, machine, pyplot, save

from mirage_env.geometry import intrinsics_from_fov, scale_intrinsics
from mirage_env.geometry.trajectories import from_velocities
from mirage_env.memory import LatentSpatialMemory, MemoryConfig, downsample_depth
from mirage_env.memory.rgb_cache import RgbCacheConfig, RgbPointCache
from mirage_env.models import from_preset, load_preset
from mirage_env.models.presets import build_vae
from mirage_env.models.wan import WanWorldModel
from mirage_env.sim import render, sample_scene, start_pose

MIB = 1 << 20


def wan_vae(seed: int) -> WanWorldModel:
    """The Wan2.2-TI2V-5B VAE (random weights) behind the model interface; a memory read needs no DiT."""
    preset = load_preset("wan2.2-ti2v-5b")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanWorldModel(preset, build_vae(preset), transformer=None).eval()


def turn(start: torch.Tensor, n: int, degrees: float) -> torch.Tensor:
    """``n`` poses turning in place from ``start`` by ``degrees`` in total."""
    step = math.radians(degrees) / max(n - 1, 1)
    return from_velocities(start, torch.tensor([[0.0, 0.0, 0.0, step, 0.0, 0.0]] * (n - 1)))


def scene_frames(seed: int, hw: tuple[int, int], written: int, segment: int):
    """Frames [T, 3, H, W], depth [T, H, W] (sky 0) and poses of a full turn; K; the poses of the read segment."""
    scene = sample_scene(seed, "indoor")
    start = start_pose(scene, seed)
    K = intrinsics_from_fov(70.0, hw)
    poses = turn(start, written + 1, 360.0)[:-1]
    out = render(scene, K, poses, hw)
    frames = out.rgb.permute(0, 3, 1, 2).float() / 127.5 - 1
    return frames, out.depth.nan_to_num(posinf=0.0), K, poses, turn(start, segment, 90.0)


def run_case(name: str, model, hw: tuple[int, int], args, device: torch.device) -> dict:
    s, stride = model.spatial_stride, model.temporal_stride
    latent_hw = (hw[0] // s, hw[1] // s)
    frames, depth, K, poses, segment = scene_frames(args.seed, hw, args.written, args.frames)
    frames, depth, poses, segment = (x.to(device) for x in (frames, depth, poses, segment))
    cells = downsample_depth(depth, latent_hw) > 0  # the same latent cells go into every memory
    g = torch.Generator().manual_seed(args.seed)
    latents = torch.randn(len(poses), model.latent_channels, *latent_hw, generator=g).to(device)

    memories = {}
    for dtype in ("float32", "bfloat16"):
        memory = LatentSpatialMemory(MemoryConfig(model.latent_channels, args.voxel, dtype=dtype), device)
        memory.write(latents, depth, K.to(device), poses)
        memories[f"latent {dtype}"] = memory
    spatia = RgbCacheConfig(voxel_size=args.rgb_voxel, downsample=True)
    for label, config in (("rgb per pixel", RgbCacheConfig()), (f"rgb voxel {args.rgb_voxel:g}", spatia)):
        cache = RgbPointCache(config, model, device)
        cache.write(frames, depth, K.to(device), poses, keep_mask=cells)
        memories[label] = cache
    sizes = {label: {"points": m.stats().points, "bytes": m.stats().bytes} for label, m in memories.items()}

    latent, rgb = memories["latent float32"], memories["rgb per pixel"]
    K_latent = scale_intrinsics(K, hw, latent_hw).to(device)
    t = 1 + (args.frames - 1) // stride
    latent_poses, K_frames = segment[::stride], K.to(device).expand(args.frames, 3, 3)
    read_latent, latent_out = best_of(lambda: latent.read(K_latent.expand(t, 3, 3), latent_poses, latent_hw),
                                      args.repeat_latent, device)
    render_rgb, _ = best_of(lambda: rgb.render(K_frames, segment, hw), args.repeat_latent, device)
    repeat = args.repeat if name == "tiny" else args.wan_repeat
    read_rgb, rgb_out = best_of(lambda: rgb.read(K_frames, segment, hw), repeat, device, warmup=name == "tiny")
    coverage = {"latent": float(latent_out.mask.float().mean()), "rgb": float(rgb_out.mask.float().mean())}
    return {
        "model": name, "image_hw": list(hw), "latent_hw": list(latent_hw), "channels": model.latent_channels,
        "segment_frames": args.frames, "latent_frames": t, "written_frames": len(poses),
        "latent_read": read_latent, "rgb_render": render_rgb, "rgb_read": read_rgb,
        "speedup": read_rgb["ms"] / read_latent["ms"],
        "peak_ratio": read_rgb["peak_bytes"] / max(read_latent["peak_bytes"], 1),
        "bytes_ratio": sizes["rgb per pixel"]["bytes"] / sizes["latent float32"]["bytes"],
        "coverage": coverage, "memory": sizes,
    }


def print_tables(rows: list[dict], info: dict) -> None:
    print(f"{info['threads']} threads, {info['device']}; best-of times, peak = growth during the read")
    print("| model | image | segment | latent read ms | RGB read ms | of which render ms | speedup | "
          "latent peak MiB | RGB peak MiB | peak ratio | coverage latent / RGB |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['model']} | {r['image_hw'][0]}x{r['image_hw'][1]} | {r['segment_frames']} frames "
              f"({r['latent_frames']} latents) | {r['latent_read']['ms']:.2f} | {r['rgb_read']['ms']:.0f} | "
              f"{r['rgb_render']['ms']:.1f} | {r['speedup']:,.0f}x | {r['latent_read']['peak_bytes'] / MIB:.2f} | "
              f"{r['rgb_read']['peak_bytes'] / MIB:,.0f} | {r['peak_ratio']:,.0f}x | "
              f"{r['coverage']['latent']:.2f} / {r['coverage']['rgb']:.2f} |")
    print("\n| model | memory | points | MiB | x latent float32 |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        base = r["memory"]["latent float32"]["bytes"]
        for label, m in r["memory"].items():
            print(f"| {r['model']} | {label} | {m['points']:,} | {m['bytes'] / MIB:.2f} | {m['bytes'] / base:.1f} |")


def plot(rows: list[dict]):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    names = [r["model"] for r in rows]
    x = torch.arange(len(rows)).numpy()
    panels = (("read time per segment (ms)", lambda r, k: r[f"{k}_read"]["ms"]),
              ("peak memory of the read (MiB)", lambda r, k: r[f"{k}_read"]["peak_bytes"] / MIB),
              ("memory held (MiB)", lambda r, k: r["memory"]["latent float32" if k == "latent" else
                                                          "rgb per pixel"]["bytes"] / MIB))
    for ax, (title, value) in zip(axes, panels):
        for offset, kind, label in ((-0.2, "latent", "latent memory"), (0.2, "rgb", "RGB cache")):
            bars = ax.bar(x + offset, [max(value(r, kind), 1e-3) for r in rows], width=0.4, label=label)
            ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_xticks(x, names)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend()
    fig.suptitle("Memory read per segment: latent memory vs RGB point-cloud cache (same run, same coverage)")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=33, help="pixel frames per segment (1 + 4k)")
    parser.add_argument("--written", type=int, default=16, help="frames written over a full turn")
    parser.add_argument("--wan-hw", type=int, nargs=2, default=(176, 320))
    parser.add_argument("--repeat", type=int, default=5, help="timed reads per memory (tiny)")
    parser.add_argument("--wan-repeat", type=int, default=2, help="timed RGB reads with the Wan2.2 VAE")
    parser.add_argument("--repeat-latent", type=int, default=50, help="timed latent reads and renders")
    parser.add_argument("--voxel", type=float, default=0.01,
                        help="latent memory voxel (0.01: its read covers the segment as fully as the RGB render)")
    parser.add_argument("--rgb-voxel", type=float, default=0.02, help="voxel of the downsampled (Spatia) cache")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-wan", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if (args.frames - 1) % 4:
        raise SystemExit("--frames must be 1 + 4k")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [("tiny", from_preset("tiny", device=device), (64, 64))]
    if not args.skip_wan:
        cases.insert(0, ("wan2.2 VAE", wan_vae(args.seed).to(device), tuple(args.wan_hw)))
    with torch.no_grad():
        rows = [run_case(name, model, hw, args, device) for name, model, hw in cases]
    info = machine(device)
    print_tables(rows, info)
    json_path, png_path = save("memory_read_cost", {"machine": info, "args": vars(args), "rows": rows}, plot(rows))
    print(f"\nwrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
