"""The documented training recipes (one command each), used by ``mirage-env train`` and ``python -m mirage_env.train``.

``vae``: train the tiny preset's VAE on simulator clips, set its latent statistics, report held-out PSNR and
save it (diffusers layout) under ``OUT/vae``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mirage_env.models.presets import build_vae, load_preset
from mirage_env.train.clips import ClipConfig
from mirage_env.train.trainer import TrainConfig, Trainer
from mirage_env.train.vae import ClipPool, VaeData, held_out_video, reconstruction_psnr, set_latent_statistics, vae_loss_fn


def train_vae(out: Path, steps: int, seed: int = 0, resume: bool = False, progress: bool = True,
              data: VaeData = VaeData(), lr: float = 1e-3, held_out: int = 100) -> dict:
    """Train, evaluate and save the tiny VAE; returns the summary written to ``OUT/vae_summary.json``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = build_vae(load_preset("tiny"))
    pool = ClipPool(ClipConfig(frames=data.frames, scenes=data.scenes), data.pool, seed)
    config = TrainConfig(steps=steps, lr=lr, seed=seed, warmup=min(100, steps // 10 + 1),
                         checkpoint_every=max(1, min(500, steps)))
    rows = Trainer(vae, vae_loss_fn(vae, pool, data), config, out / "vae_run").run(resume=resume, progress=progress)
    vae.eval()
    set_latent_statistics(vae, pool)
    psnr = reconstruction_psnr(vae, held_out_video(held_out, seed=seed + 1))
    vae.save_pretrained(out / "vae")
    summary = {"steps": steps, "final_loss": rows[-1]["loss"] if rows else None,
               "seconds": rows[-1]["seconds"] if rows else None, "held_out_frames": held_out,
               "psnr_mean": psnr.mean().item(), "psnr_min": psnr.min().item()}
    (out / "vae_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mirage_env.train", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("vae",))
    parser.add_argument("--out", type=Path, default=Path("runs/tiny"))
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    summary = train_vae(args.out, args.steps, args.seed, args.resume)
    print(json.dumps(summary, indent=2))
