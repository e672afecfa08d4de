"""The documented training recipes, one command each: ``mirage-env train vae|tiny`` (``python -m mirage_env.train``).

``vae``: train the tiny preset's VAE on simulator clips, set its latent statistics, report held-out PSNR and
save it (diffusers layout) under ``OUT/vae``.
``tiny``: the whole tiny world model: the VAE (or ``--vae DIR``), then the DiT (stage ``dit``, the tiny model's
pre-training), the memory branch (Mirage stage 1) and LoRA (stage 2), saved under ``OUT/weights`` in the layout
``from_preset("tiny", weights_dir=...)`` reads. With ``--data DIR`` the DiT, add-on and LoRA stages train on the
real sequences under DIR (:mod:`mirage_env.train.real_data`) instead of the simulator; the VAE (when not given
with ``--vae``) still trains on simulator clips.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan

from mirage_env.atomic import atomic_dir, write_text
from mirage_env.models import from_preset
from mirage_env.models.presets import build_vae, load_preset
from mirage_env.models.wan import WanWorldModel
from mirage_env.train.clips import ClipConfig, ClipSource
from mirage_env.train.real_data import RealClips
from mirage_env.train.segments import SegmentData, SegmentPool, flow_loss_fn
from mirage_env.train.stages import prepare_stage
from mirage_env.train.trainer import TrainConfig, Trainer, log_summary
from mirage_env.train.vae import (
    ClipPool,
    VaeData,
    held_out_video,
    reconstruction_psnr,
    set_latent_statistics,
    vae_loss_fn,
)
from mirage_env.world import WorldConfig


def train_vae(out: Path, steps: int, seed: int = 0, resume: bool = False, progress: bool = True,
              data: VaeData = VaeData(), lr: float = 1e-3, held_out: int = 100, held_out_clips: int = 16) -> dict:
    """Train, evaluate and save the tiny VAE; returns the summary written to ``OUT/vae_summary.json`` (PSNR of
    ``held_out`` single frames and of the frames after the first of ``held_out_clips`` moving clips)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = build_vae(load_preset("tiny"))
    pool = ClipPool(ClipConfig(frames=data.frames, scenes=data.scenes, returning=False), data.pool, seed)
    images = ClipPool(ClipConfig(frames=1, scenes=data.scenes), data.image_pool, seed + 1)
    config = TrainConfig(steps=steps, lr=lr, seed=seed, warmup=min(100, steps // 10 + 1))
    loss = vae_loss_fn(vae, pool, data, images)
    Trainer(vae, loss, config, out / "vae_run").run(resume=resume, progress=progress)
    vae.eval()
    set_latent_statistics(vae, pool)
    psnr = reconstruction_psnr(vae, held_out_video(held_out, seed=seed + 1))
    clip_psnr = reconstruction_psnr(vae, held_out_video(held_out_clips, data.frames, seed + 1)).view(held_out_clips, -1)
    with atomic_dir(out / "vae") as folder:
        vae.save_pretrained(folder)
    summary = {**log_summary(out / "vae_run"), "held_out_frames": held_out, "psnr_mean": psnr.mean().item(),
               "psnr_min": psnr.min().item(), "held_out_clips": held_out_clips,
               "clip_psnr_later_frames": clip_psnr[:, 1:].mean().item()}
    write_text(out / "vae_summary.json", json.dumps(summary, indent=2))
    return summary


def train_world_model(out: Path, vae_dir: Path, steps: dict[str, int], seed: int = 0, resume: bool = False,
                      progress: bool = True, data: SegmentData = SegmentData(), lr: float = 3e-4,
                      clips: ClipSource | None = None) -> dict:
    """Stages ``dit``, ``addon`` and ``lora`` of the tiny world model on top of a trained VAE, on ``clips``
    (default: the simulator)."""
    vae = AutoencoderKLWan.from_pretrained(vae_dir, local_files_only=True)
    base = from_preset("tiny", seed=seed, random_init=True)
    model = WanWorldModel(base.preset, vae, base.transformer)
    pool = SegmentPool(model, data, WorldConfig(), seed, clips)
    summary = {}
    for stage, count in steps.items():
        if count <= 0:
            continue
        prepare_stage(model, stage)
        config = TrainConfig(steps=count, lr=lr, seed=seed, warmup=min(100, count // 10 + 1))
        Trainer(model, flow_loss_fn(model, pool), config, out / f"{stage}_run").run(resume, progress)
        summary[stage] = log_summary(out / f"{stage}_run")
    model.requires_grad_(False)
    model.save_pretrained(out / "weights")
    write_text(out / "world_model_summary.json", json.dumps(summary, indent=2))
    return summary


def run_recipe(args: argparse.Namespace) -> dict:
    """Run the recipe named by ``mirage-env train`` arguments; prints and returns the summary."""
    summary = {}
    clips = None
    if args.data is not None:  # checked before any training
        if args.recipe != "tiny":
            raise ValueError("--data trains the DiT, add-on and LoRA stages (recipe tiny); the VAE uses the simulator")
        frames = SegmentData().clip_frames(load_preset("tiny").temporal_stride)
        clips = RealClips(args.data, frames, WorldConfig().image_hw, stride=args.data_stride, seed=args.seed)
    vae_dir = args.vae
    if vae_dir is None:
        data = VaeData(image_steps=min(args.vae_image_steps, args.vae_steps))
        summary["vae"] = train_vae(args.out, args.vae_steps, args.seed, args.resume, data=data)
        vae_dir = args.out / "vae"
    if args.recipe == "tiny":
        steps = {"dit": args.dit_steps, "addon": args.addon_steps, "lora": args.lora_steps}
        options = {"context_noise": args.context_noise, "context_swap": args.context_swap}
        data = SegmentData(**{k: v for k, v in options.items() if v is not None})
        summary.update(train_world_model(args.out, vae_dir, steps, args.seed, args.resume, data=data, clips=clips))
    print(json.dumps(summary, indent=2))
    return summary
