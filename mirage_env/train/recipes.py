"""The documented training recipes, one command each: ``mirage-env train vae|tiny|decoder`` (``python -m mirage_env.train``).

``vae``: train the tiny preset's VAE on simulator clips, set its latent statistics, report held-out PSNR and
save it (diffusers layout) under ``OUT/vae``.
``tiny``: the whole tiny world model: the VAE (or ``--vae DIR``), then the DiT (stage ``dit``, the tiny model's
pre-training), the memory branch (Mirage stage 1) and LoRA (stage 2), saved under ``OUT/weights`` in the layout
``from_preset("tiny", weights_dir=...)`` reads. With ``--data DIR`` the DiT, add-on and LoRA stages train on the
real sequences under DIR (:mod:`mirage_env.train.real_data`) instead of the simulator; the VAE (when not given
with ``--vae``) still trains on simulator clips.
``decoder``: fine-tune the decoder of a trained world model (``--weights DIR``) on the latents it generates
(:mod:`mirage_env.train.decoder`), saved under ``OUT/weights``; ``tiny --decoder-steps N`` ends with that stage
(the world model stages then save under ``OUT/world_model``).

Under ``accelerate launch`` every process runs the recipe (and its own ``--workers``) on its own device, trains its
shard of each batch (:mod:`mirage_env.train.trainer`), and the main process evaluates and writes the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from accelerate import PartialState

from mirage_env.atomic import atomic_dir, write_text
from mirage_env.models.presets import build_vae, load_preset
from mirage_env.train.clips import ClipSource, SimulatorClips
from mirage_env.train.decoder import DecoderData, train_decoder
from mirage_env.train.discriminator import PatchDiscriminator
from mirage_env.train.parallel import WorkerPool
from mirage_env.train.real_data import RealClips
from mirage_env.train.segments import SegmentData, SegmentPool, flow_loss_fn, model_on_vae, simulator_clips
from mirage_env.train.sharding import fsdp_launched
from mirage_env.train.stages import enable_gradient_checkpointing, prepare_stage
from mirage_env.train.trainer import PRECISIONS, TrainConfig, Trainer, log, log_summary
from mirage_env.train.vae import (
    VaeData,
    VaeWithCritic,
    held_out_video,
    reconstruction_scores,
    set_latent_statistics,
    vae_loss_fn,
    vae_pools,
)
from mirage_env.world import WorldConfig


def train_vae(out: Path, steps: int, seed: int = 0, resume: bool = False, progress: bool = True,
              data: VaeData = VaeData(), lr: float = 1e-3, held_out: int = 100, held_out_clips: int = 16,
              device: str = "cpu", workers: WorkerPool | None = None, max_seconds: float | None = None,
              prefetch: tuple[SimulatorClips, int] | None = None, gradient_accumulation: int = 1) -> dict:
    """Train, evaluate and save the tiny VAE; returns the summary written to ``OUT/vae_summary.json`` (PSNR and
    sharpness of ``held_out`` single frames, and of the frames after the first of ``held_out_clips`` moving clips).
    ``workers`` render the training clips first, then, while the VAE trains, the first ``count`` clips of the
    cached source of ``prefetch = (source, count)`` (the world model's, for later); ``max_seconds`` caps the
    training time. Returns {} on the processes other than the main one (which alone evaluates and saves)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = build_vae(load_preset("tiny"))
        critic = PatchDiscriminator() if data.adversarial_weight > 0 else None
    pool, images = vae_pools(data, seed)
    if workers is not None:
        pool.fill(workers)
        images.fill(workers)
        log(f"VAE data: {pool.size} clips and {images.size} frames rendered")
        if prefetch is not None:
            workers.run_async(prefetch[0], range(prefetch[1]))
    model = VaeWithCritic(vae, critic).to(device)
    config = TrainConfig(steps=steps, lr=lr, seed=seed, warmup=min(100, steps // 10 + 1), max_seconds=max_seconds,
                         gradient_accumulation=gradient_accumulation)
    loss = vae_loss_fn(model, pool, data, images)
    Trainer(model, loss, config, out / "vae_run").run(resume=resume, progress=progress)
    log("VAE trained")
    if not PartialState().is_main_process:
        PartialState().wait_for_everyone()  # until the main process has saved the VAE
        return {}
    vae.eval()
    set_latent_statistics(vae, pool)
    psnr, sharpness = reconstruction_scores(vae, held_out_video(held_out, seed=seed + 1))
    clips = held_out_video(held_out_clips, data.frames, seed + 1)
    clip_psnr, clip_sharpness = reconstruction_scores(vae, clips, first=1)  # the frames of 4-frame latents
    with atomic_dir(out / "vae") as folder:
        vae.to("cpu").save_pretrained(folder)
    summary = {**log_summary(out / "vae_run"), "held_out_frames": held_out, "psnr_mean": psnr.mean().item(),
               "psnr_min": psnr.min().item(), "sharpness": sharpness,
               "held_out_clips": held_out_clips, "clip_psnr_later_frames": clip_psnr.mean().item(),
               "clip_sharpness_later_frames": clip_sharpness}
    write_text(out / "vae_summary.json", json.dumps(summary, indent=2))
    PartialState().wait_for_everyone()
    return summary


def train_world_model(out: Path, vae_dir: Path, steps: dict[str, int], seed: int = 0, resume: bool = False,
                      progress: bool = True, data: SegmentData = SegmentData(), lr: float = 3e-4,
                      clips: ClipSource | None = None, device: str = "cpu", workers: WorkerPool | None = None,
                      max_seconds: dict[str, float] | None = None, precision: str = "fp32",
                      gradient_accumulation: int = 1, gradient_checkpointing: bool = False,
                      weights_dir: Path | None = None) -> dict:
    """Stages ``dit``, ``addon`` and ``lora`` of the tiny world model on top of a trained VAE, on ``clips``
    (default: the simulator), saved under ``weights_dir`` (default ``OUT/weights``). ``workers`` make the
    teacher-forced pool; ``max_seconds`` caps each stage's time. Returns {} on the processes other than the main
    one (which alone saves)."""
    model = model_on_vae(vae_dir, "tiny", seed).to(device)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    main = PartialState().is_main_process
    pool = SegmentPool(model, data, WorldConfig(), seed, clips)
    if workers is not None:
        pool.fill(workers, vae_dir)
        log(f"segment pool: {data.pool} teacher-forced samples")
    summary = {}
    for stage, count in steps.items():
        if count <= 0:
            continue
        prepare_stage(model, stage)
        config = TrainConfig(steps=count, lr=lr, seed=seed, warmup=min(100, count // 10 + 1), precision=precision,
                             max_seconds=(max_seconds or {}).get(stage), gradient_accumulation=gradient_accumulation)
        Trainer(model, flow_loss_fn(model, pool), config, out / f"{stage}_run").run(resume, progress)
        log(f"stage {stage} trained")
        if main:
            summary[stage] = log_summary(out / f"{stage}_run")
            model.save_pretrained(out / "stages" / stage)  # what a later stage's failure cannot take away
    model.requires_grad_(False)
    if main:
        model.to("cpu").save_pretrained(weights_dir or out / "weights")
        write_text(out / "world_model_summary.json", json.dumps(summary, indent=2))
    PartialState().wait_for_everyone()
    return summary


def run_recipe(args: argparse.Namespace) -> dict:
    """Run the recipe named by ``mirage-env train`` arguments; prints and returns the summary."""
    summary = {}
    clips = None
    if args.vae is not None and not (args.vae / "config.json").is_file():  # a local folder, never a Hub id
        raise FileNotFoundError(f"--vae {args.vae}: no trained VAE there (expected {args.vae / 'config.json'})")
    if args.data is not None:  # checked before any training
        if args.recipe != "tiny":
            raise ValueError("--data trains the DiT, add-on and LoRA stages (recipe tiny); the VAE uses the simulator")
        frames = SegmentData().clip_frames(load_preset("tiny").temporal_stride)
        clips = RealClips(args.data, frames, WorldConfig().image_hw, stride=args.data_stride, seed=args.seed)
    segments = SegmentData(**_given(context_noise=args.context_noise, context_swap=args.context_swap, pool=args.pool,
                                    batch_size=args.batch_size, scenes=args.scenes))
    if args.gradient_accumulation < 1:
        raise ValueError(f"--gradient-accumulation must be >= 1, got {args.gradient_accumulation}")
    if fsdp_launched():
        raise ValueError("the recipes evaluate and save whole models between stages, which FSDP's sharded parameters "
                         "are not: launch them with one process or DDP (accelerate_configs/ddp.yaml); FSDP is for "
                         "Trainer on models too big for one device")
    processes = PartialState(cpu=torch.device(args.device).type == "cpu").num_processes  # accelerate launch's
    device = process_device(args.device)
    precision = args.precision or launcher_precision()
    shards = processes * args.gradient_accumulation
    vae_data = VaeData(image_steps=min(args.vae_image_steps, args.vae_steps),
                       adversarial_weight=args.adversarial_weight,
                       adversarial_start=int(args.adversarial_start * args.vae_steps),
                       **_given(batch_size=args.vae_batch_size, pool=args.vae_pool, scenes=args.scenes,
                                image_batch_size=args.vae_batch_size and 2 * args.vae_batch_size,
                                image_pool=args.vae_pool and 2 * args.vae_pool))
    decoder = DecoderData(**_given(rollouts=args.decoder_rollouts))
    runs_decoder = args.recipe == "decoder" or (args.recipe == "tiny" and args.decoder_steps > 0)
    if args.recipe == "decoder" and (args.weights is None or not (args.weights / "transformer").is_dir()):
        raise FileNotFoundError(f"recipe decoder fine-tunes a trained world model: --weights {args.weights} holds no "
                                "transformer/ (a folder `mirage-env train tiny` writes)")
    batches = {"the world model's batch (--batch-size)": segments.batch_size} if args.recipe == "tiny" else {}
    if runs_decoder:
        batches["the decoder's batch"] = decoder.batch_size
    if args.vae is None and args.recipe != "decoder":
        batches.update({"the VAE's batch (--vae-batch-size)": vae_data.batch_size,
                        "the VAE's image batch (2 x --vae-batch-size)": vae_data.image_batch_size})
    for name, size in batches.items():
        if size % shards:
            raise ValueError(f"{name} of {size} does not split into processes x --gradient-accumulation = {shards} "
                             "equal shards")
    minutes = {stage: getattr(args, f"{stage}_minutes") for stage in ("vae", "dit", "addon", "lora", "decoder")}
    with WorkerPool(args.workers) as pool:
        workers = pool if args.workers else None  # without workers, data is made lazily in this process
        world_dir = args.weights  # the world model whose decoder the decoder stage fine-tunes
        if clips is None and args.recipe == "tiny" and workers is not None:  # rendered ahead on the workers
            clips = simulator_clips(segments, WorldConfig(), load_preset("tiny").temporal_stride, args.seed,
                                    cache_dir=args.out / "clip_cache")
        vae_dir = args.vae
        if vae_dir is None and args.recipe != "decoder":
            summary["vae"] = train_vae(args.out, args.vae_steps, args.seed, args.resume, data=vae_data,
                                       device=device, workers=workers,
                                       max_seconds=_seconds(minutes["vae"]),
                                       prefetch=None if clips is None else (clips, segments.pool),
                                       gradient_accumulation=args.gradient_accumulation)
            vae_dir = args.out / "vae"
        if args.recipe == "tiny":
            steps = {"dit": args.dit_steps, "addon": args.addon_steps, "lora": args.lora_steps}
            limits = {stage: _seconds(minutes[stage]) for stage in steps}
            world_dir = args.out / ("world_model" if runs_decoder else "weights")
            summary.update(train_world_model(args.out, vae_dir, steps, args.seed, args.resume, data=segments,
                                             clips=clips, device=device,
                                             workers=workers, max_seconds=limits, precision=precision,
                                             gradient_accumulation=args.gradient_accumulation,
                                             gradient_checkpointing=args.gradient_checkpointing,
                                             weights_dir=world_dir))
        if runs_decoder:
            summary["decoder"] = train_decoder(args.out, world_dir, args.decoder_steps, decoder, args.seed,
                                               args.resume, device=device, workers=workers,
                                               max_seconds=_seconds(minutes["decoder"]))
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2))
    return summary


def process_device(device: str) -> torch.device:
    """Where this process trains: ``--device cuda`` is this process's GPU under ``accelerate launch``."""
    requested = torch.device(device)
    if requested.type != "cuda" or requested.index is not None:
        return requested
    return PartialState().device


def launcher_precision() -> str:
    """The ``--mixed_precision`` of ``accelerate launch`` (or its config file) as a ``TrainConfig.precision``;
    fp32 when the recipe was not launched with one."""
    mixed = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    return {accelerate: ours for ours, accelerate in PRECISIONS.items()}.get(mixed, mixed)


def _given(**options) -> dict:
    """The options that were given (not None)."""
    return {k: v for k, v in options.items() if v is not None}


def _seconds(minutes: float | None) -> float | None:
    return None if minutes is None else 60.0 * minutes
