"""A real-size smoke run: the ``wan2.2-ti2v-5b`` preset (random weights, bfloat16) generates Mirage chunks end to end.

    python benchmarks/real_size_smoke.py                                      # CPU, 32x32: the smallest size allowed
    python benchmarks/real_size_smoke.py --device cuda --height 704 --width 1280
    python benchmarks/real_size_smoke.py --steps 4 --chunks 3 --memory rgb    # fewer denoising steps, RGB cache

The preset is built with random weights created directly in ``--dtype`` on the device (DiT and memory branch;
the VAE in ``--vae-dtype``): timing and memory do not depend on the weights, and the 5B model never exists in
float32. A :class:`~mirage_env.world.World` starts from a rendered simulator view and runs ``--chunks`` Mirage chunks
of ``--frames`` frames (33: the first frame is the previous chunk's last, then 32 new frames = 8 latents) with
``--steps`` denoising steps through the whole segment loop (memory read, denoise, decode, depth, dynamic discard,
memory write). Depth for generated frames comes from the memory (``MemoryDepth``), so everything but the first view
runs on the device. The camera turns in place by 3 degrees a frame, so chunks after the first full turn revisit.

Reported per chunk: wall seconds (CUDA synchronised), the world's stage times, points and bytes held by the memory,
and peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the chunk (weights included), on the CPU the
process's peak resident set size (``resource.getrusage``; model build included). Height and width must be multiples
of the VAE's spatial stride times the DiT's patch (16 x 2 = 32 for this preset). Writes ``--out`` (JSON, atomic).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time
from pathlib import Path

import torch
from measure import machine

from mirage_env.atomic import write_text
from mirage_env.geometry.trajectories import from_velocities
from mirage_env.models import from_preset
from mirage_env.models.wan import WanWorldModel
from mirage_env.sim import render, sample_scene, start_pose
from mirage_env.world import InitialView, World, WorldConfig
from mirage_env.world.world import MEMORY_KINDS

PRESET = "wan2.2-ti2v-5b"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
STAGES = ("read", "denoise", "decode", "depth", "discard", "write")
TURN_DEG = 3.0  # per frame


def min_size(model: WanWorldModel) -> int:
    """The pixel size every frame side must be a multiple of: one DiT token per patch of latent cells."""
    return model.spatial_stride * int(model.dit.config.patch_size[-1])


def build_model(preset: str, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
                seed: int = 0) -> tuple[WanWorldModel, float]:
    """The preset with random weights on ``device``, and the seconds it took to build."""
    begin = time.perf_counter()
    model = from_preset(preset, device=device, dtype=dtype, vae_dtype=vae_dtype, random_weights=True,
                        model_seed=seed)
    _sync(device)
    return model, time.perf_counter() - begin


def start_world(model: WanWorldModel, hw: tuple[int, int], frames: int, steps: int, memory: str,
                seed: int = 0) -> World:
    """A one-world :class:`World` of Mirage chunks of ``frames`` frames, started from a simulator view of an indoor
    scene (the first view's depth is the simulator's; later depth comes from the memory)."""
    if (frames - 1) % model.temporal_stride or frames < 1 + model.temporal_stride:
        raise ValueError(f"frames must be 1 + {model.temporal_stride}k with k >= 1, got {frames}")
    side = min_size(model)
    if hw[0] % side or hw[1] % side or min(hw) <= 0:
        raise ValueError(f"height and width must be positive multiples of {side} for this preset, got {hw}")
    config = WorldConfig.mirage_chunks(image_hw=hw, num_steps=steps, memory=memory,
                                       latents_per_step=(frames - 1) // model.temporal_stride)
    world = World(model, config, batch_size=1)
    scene = sample_scene(seed, "indoor")
    pose, K = start_pose(scene, seed), world.default_intrinsics()
    out = render(scene, K, pose, hw)
    world.reset(0, InitialView(out.rgb[0], out.depth[0], K, pose, out.dynamic_mask[0]), seed=seed)
    return world


def next_poses(world: World) -> torch.Tensor:
    """Poses [1, F, 4, 4] of the next chunk: turning in place by ``TURN_DEG`` a frame."""
    turn = torch.tensor([[0.0, 0.0, 0.0, math.radians(TURN_DEG), 0.0, 0.0]] * world.frames_per_step)
    return from_velocities(world.poses[0], turn)[1:][None]


def run_chunk(world: World) -> dict:
    """Generate one chunk; its wall seconds, stage milliseconds, memory held and peak memory."""
    device = torch.device(world.model.device)
    poses = next_poses(world)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    begin = time.perf_counter()
    segment = world.step(poses)
    _sync(device)
    seconds = time.perf_counter() - begin
    stats = world.memory(0).stats()
    row = {"seconds": seconds, "stage_ms": {s: getattr(segment.timings, s) for s in STAGES},
           "memory_points": stats.points, "memory_bytes": stats.bytes,
           "frames": int(segment.frames.shape[1]), "coverage": float(segment.coverage.mean())}
    row.update(peak_memory(device))
    return row


def peak_memory(device: torch.device) -> dict[str, int]:
    """CUDA: the peak allocated since the last reset; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return {"peak_cuda_bytes": torch.cuda.max_memory_allocated(device)}
    return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # Linux reports KiB


def run_memory(model: WanWorldModel, hw: tuple[int, int], frames: int, steps: int, memory: str,
               chunks: int) -> dict:
    """``chunks`` chunks of a fresh world with ``memory``; per-chunk rows and a summary."""
    world = start_world(model, hw, frames, steps, memory)
    rows = [run_chunk(world) for _ in range(chunks)]
    later = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
    return {"memory": memory, "chunks": rows, "first_chunk_seconds": rows[0]["seconds"],
            "median_seconds_per_chunk": statistics.median(later), "memory_bytes": rows[-1]["memory_bytes"]}


def model_bytes(model: WanWorldModel) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def smoke(preset: str, device: torch.device, hw: tuple[int, int], frames: int, steps: int | None, chunks: int,
          memory: str, dtype: torch.dtype, vae_dtype: torch.dtype) -> dict:
    """Build the preset and run ``chunks`` chunks; everything the JSON records."""
    model, build_seconds = build_model(preset, device, dtype, vae_dtype)
    steps = steps or int(model.preset.defaults["mirage_steps"])
    with torch.no_grad():
        result = run_memory(model, hw, frames, steps, memory, chunks)
    s = model.spatial_stride
    return {"preset": preset, "machine": machine(device), "dtype": str(dtype), "vae_dtype": str(vae_dtype),
            "image_hw": list(hw), "latent_hw": [hw[0] // s, hw[1] // s], "frames": frames, "steps": steps,
            "parameters": sum(p.numel() for p in model.parameters()), "model_bytes": model_bytes(model),
            "build_seconds": build_seconds, **result, **peak_memory(device)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--frames", type=int, default=33, help="frames per chunk, 1 + 4k (33: Mirage's chunk)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's, 20)")
    parser.add_argument("--chunks", type=int, default=1)
    parser.add_argument("--memory", default="latent", choices=MEMORY_KINDS)
    parser.add_argument("--dtype", default="bfloat16", choices=list(DTYPES), help="DiT and memory branch")
    parser.add_argument("--vae-dtype", default="bfloat16", choices=list(DTYPES))
    parser.add_argument("--preset", default=PRESET, help="the tests run the same code on 'tiny'")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "real_size_smoke.json")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1 or args.chunks < 1:
        raise SystemExit("--steps and --chunks must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available to torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = smoke(args.preset, device, (args.height, args.width), args.frames, args.steps, args.chunks,
                       args.memory, DTYPES[args.dtype], DTYPES[args.vae_dtype])
    except ValueError as error:
        raise SystemExit(str(error)) from error
    peak = result.get("peak_cuda_bytes", result.get("peak_rss_bytes"))
    print(f"{result['preset']} on {device} ({result['dtype']}, VAE {result['vae_dtype']}), "
          f"{args.height}x{args.width}, {args.frames} frames, {result['steps']} steps, {args.memory} memory: "
          f"build {result['build_seconds']:.1f} s, first chunk {result['first_chunk_seconds']:.1f} s, "
          f"peak {'CUDA allocated' if device.type == 'cuda' else 'RSS'} {peak / 2**30:.2f} GiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"args": vars(args), **result}
    write_text(args.out, json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
