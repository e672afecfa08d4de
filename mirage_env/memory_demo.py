"""Memory demo: keep a latent spatial memory of a simulator scene along a camera path and show what it sees.

At every pose the memory is read first (what a world model would be conditioned on), then the simulator's view
of that pose is written back after dynamic discard. The "latents" are the frame's colours average-pooled to
the latent grid, so the read can be looked at directly. Frames: ground truth | memory read | coverage.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mirage_env.geometry import intrinsics_from_fov, scale_intrinsics
from mirage_env.geometry.trajectories import pan_path
from mirage_env.memory import LatentSpatialMemory, MemoryConfig
from mirage_env.memory.discard import discard_dynamic
from mirage_env.atomic import write_text
from mirage_env.sim import render, sample_scene, start_pose
from mirage_env.video import check_video_outputs, contact_sheet, write_png, write_video


@dataclass
class DemoConfig:
    seed: int = 0
    kind: str = "indoor"
    steps: int = 24
    size: int = 128
    stride: int = 4
    fov_deg: float = 70.0
    fps: float = 8.0
    voxel_size: float = 0.05


def _pool_colours(rgb: torch.Tensor, stride: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float latents [T, 3, H / stride, W / stride] in [0, 1]."""
    x = rgb.permute(0, 3, 1, 2).float() / 255.0
    return torch.nn.functional.avg_pool2d(x, stride)


def _to_image(latents: torch.Tensor, size: int) -> np.ndarray:
    up = torch.nn.functional.interpolate(latents[None].float(), size=(size, size), mode="nearest")[0]
    return (up.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def run_memory_demo(config: DemoConfig, out: Path) -> dict:
    """Run the demo, write ``out`` (mp4 or gif), a contact sheet PNG and a metrics JSON beside it."""
    out = check_video_outputs(out)  # before the demo runs, not after
    scene = sample_scene(config.seed, config.kind)
    hw, latent = (config.size, config.size), config.size // config.stride
    K = intrinsics_from_fov(config.fov_deg, hw)
    K_lat = scale_intrinsics(K, hw, (latent, latent))
    memory = LatentSpatialMemory(MemoryConfig(feature_dim=3, voxel_size=config.voxel_size))
    poses = pan_path(scene, start_pose(scene, config.seed), config.steps)
    frames, metrics = [], []
    for i, pose in enumerate(poses):
        view = render(scene, K, pose, hw, time=i / config.fps)
        start = time.perf_counter()
        read = memory.read(K_lat[None], pose[None], (latent, latent))
        read_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        kept = discard_dynamic(view.depth, K[None], pose[None], (latent, latent), dynamic_mask=view.dynamic_mask,
                               sky_mask=view.sky_mask, memory=memory)
        memory.write(_pool_colours(view.rgb, config.stride), kept.cell_depth, K_lat, pose, keep_mask=kept.keep_mask)
        write_ms = (time.perf_counter() - start) * 1e3
        coverage = read.mask[0].float()
        frames.append(np.concatenate([view.rgb[0].numpy(), _to_image(read.features[0], config.size),
                                      _to_image(coverage.expand(3, -1, -1), config.size)], axis=1))
        stats = memory.stats()
        metrics.append({"step": i, "coverage": float(coverage.mean()), "voxels": stats.points,
                        "bytes": stats.bytes, "read_ms": read_ms, "write_ms": write_ms,
                        "discard": kept.stats._asdict()})
    video = write_video(out, np.stack(frames), fps=config.fps)
    sheet = write_png(out.with_suffix(".png"), contact_sheet(np.stack(frames[:: max(1, len(frames) // 8)]), 2))
    summary = {"video": str(video), "contact_sheet": str(sheet), "frames": len(frames),
               "return_coverage": metrics[-1]["coverage"], "voxels": metrics[-1]["voxels"],
               "bytes": metrics[-1]["bytes"], "steps": metrics}
    write_text(out.with_suffix(".json"), json.dumps(summary, indent=2))
    return summary
