"""Fine-tune the VAE decoder on the latents the world model generates (the tiny recipe's last stage).

At every step the world decodes ``[first latent | new latents]`` to frames, and those latents come from the
generator, not from the encoder: a decoder trained only on encoder latents turns what the generator is unsure of
into a smear. This stage rolls the trained world out in training scenes (walks, the rollout's loop and the random
walk-and-return paths of the training clips), keeps what the world decoded at each step with the simulator's true
frames at the same poses and times, and trains the decoder (and ``post_quant_conv``) to map both those generated
latents and the encoder's latents of the same true frames to the true frames: L1 + MSE, L1 on edges and, from
``adversarial_start`` on, the patch critic of :mod:`mirage_env.train.discriminator`. The encoder stays frozen, so
the memory's latents and everything the world model was trained on keep their meaning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState

from mirage_env.atomic import write_text
from mirage_env.metrics import psnr_per_image, sharpness_ratio
from mirage_env.models.wan import WanWorldModel, from_preset
from mirage_env.quality import camera_path
from mirage_env.sim import render, scene_by_seed, start_pose
from mirage_env.train.clips import ClipConfig, frames_to_unit
from mirage_env.train.clips import camera_path as clip_path
from mirage_env.train.discriminator import PatchDiscriminator
from mirage_env.train.parallel import WorkerPool
from mirage_env.train.trainer import Shard, TrainConfig, Trainer, log, log_summary
from mirage_env.train.vae import VaeWithCritic, decoder_objective
from mirage_env.video import to_uint8
from mirage_env.world import World, WorldConfig

ROLLOUT_PATHS = ("walk", "loop", "random")
HELD_OUT_FIRST_SCENE = 120_000  # held-out rollouts of the stage's summary (training scenes are below 100_000)


@dataclass(frozen=True)
class DecoderData:
    """``rollouts`` episodes of ``steps`` RL steps in scene seeds ``first_scene ..`` (one scene each, paths in turn
    from :data:`ROLLOUT_PATHS`); batches of ``batch_size`` pairs, the first ``generated_fraction`` of them with the
    world's generated latents, the rest with the encoder's latents of the same true frames."""

    rollouts: int = 240
    steps: int = 16
    first_scene: int = 50_000
    batch_size: int = 8
    generated_fraction: float = 0.5
    adversarial_weight: float = 0.5
    adversarial_start: int = 100


@dataclass
class DecodePairs:
    """What the world decoded at each step and the truth: ``generated`` and ``encoded`` (the encoder's latents of
    ``frames``) normalised latents [N, C, 2, h, w]; ``frames`` uint8 [N, 1 + f, H, W, 3] (the true frame under the
    first latent, then the step's ``f`` frames)."""

    generated: torch.Tensor
    encoded: torch.Tensor
    frames: torch.Tensor

    @classmethod
    def cat(cls, parts: list[DecodePairs]) -> DecodePairs:
        return cls(*(torch.cat([getattr(p, name) for p in parts]) for name in ("generated", "encoded", "frames")))


def rollout_poses(path: str, scene, scene_seed: int, frames: int) -> torch.Tensor:
    """The ``frames + 1`` poses of rollout path ``path`` in ``scene``."""
    if path == "random":
        rng = np.random.default_rng(scene_seed)
        return clip_path(scene, start_pose(scene, rng), frames + 1, rng, ClipConfig())
    return camera_path(path, scene, start_pose(scene, scene_seed), frames)


@torch.no_grad()
def rollout_pairs(model: WanWorldModel, scene_seed: int, path: str, steps: int,
                  config: WorldConfig = WorldConfig()) -> DecodePairs:
    """Roll a one-world :class:`World` of ``model`` along ``path`` in scene ``scene_seed`` for ``steps`` RL steps
    (with ``config.latents_per_step == 1``) and return what it decoded at each step with the true frames."""
    if config.latents_per_step != 1:
        raise ValueError("decoder pairs are made with one new latent per step (latents_per_step=1)")
    world = World(model, config)
    f = world.frames_per_step
    scene = scene_by_seed(scene_seed)
    poses = rollout_poses(path, scene, scene_seed, steps * f)
    world.reset_in_scene(0, scene, poses[0], seed=scene_seed)
    K = world.default_intrinsics()
    truth = render(scene, K.expand(len(poses), 3, 3), poses, config.image_hw,
                   time=torch.arange(len(poses)) / config.fps).rgb  # [1 + steps f, H, W, 3]
    generated = []
    for k in range(steps):
        first = world.state(0).first_latent
        segment = world.step(poses[None, k * f + 1: (k + 1) * f + 1])
        generated.append(torch.cat([first[None], segment.latents.to(first.device)], dim=2))
    frames = torch.stack([truth[k * f: (k + 1) * f + 1] for k in range(steps)])
    encoded = model.encode(frames_to_unit(frames).transpose(1, 2))
    return DecodePairs(torch.cat(generated).cpu(), encoded.cpu(), frames)


_worker_models: dict[str, WanWorldModel] = {}


def _pairs_on_worker(job: tuple) -> DecodePairs:
    """:func:`rollout_pairs` in a worker process, on the world model saved in ``weights_dir`` (kept between jobs)."""
    weights_dir, scene_seed, path, steps = job
    if weights_dir not in _worker_models:
        _worker_models[weights_dir] = from_preset("tiny", weights_dir, fuse_lora=True)
    return rollout_pairs(_worker_models[weights_dir], scene_seed, path, steps)


def collect_pairs(weights_dir: str | Path, first_scene: int, rollouts: int, steps: int,
                  workers: WorkerPool | None = None) -> DecodePairs:
    """Decode pairs of ``rollouts`` episodes (scene ``first_scene + i``, path ``ROLLOUT_PATHS[i % 3]``) of the world
    model saved in ``weights_dir``, on ``workers`` when given."""
    jobs = [(str(weights_dir), first_scene + i, ROLLOUT_PATHS[i % len(ROLLOUT_PATHS)], steps) for i in range(rollouts)]
    return DecodePairs.cat(workers.map(_pairs_on_worker, jobs) if workers else [_pairs_on_worker(j) for j in jobs])


def decoder_loss_fn(model: WanWorldModel, trained: VaeWithCritic, pairs: DecodePairs, data: DecoderData):
    """A :data:`~mirage_env.train.trainer.LossFn` for the decoder stage (``trained``: ``model.vae`` with its patch
    critic, the module the trainer updates)."""
    generated_rows = round(data.generated_fraction * data.batch_size)
    device = model.device

    def loss(step: int, generator: torch.Generator, shard: Shard) -> torch.Tensor:
        rows = shard.rows(data.batch_size)
        picks = torch.randint(len(pairs.frames), (data.batch_size,), generator=generator)
        source = torch.arange(data.batch_size) < generated_rows
        latents = torch.where(source.view(-1, 1, 1, 1, 1), pairs.generated[picks], pairs.encoded[picks])[rows]
        video = frames_to_unit(pairs.frames[picks[rows]]).to(device)
        reconstruction = model.decode_video(latents)
        return decoder_objective(trained, reconstruction, video, data.adversarial_weight,
                                 trained.critic is not None and step >= data.adversarial_start)

    return loss


@torch.no_grad()
def decoded_scores(model: WanWorldModel, pairs: DecodePairs, batch_size: int = 32) -> dict:
    """Mean PSNR and sharpness ratio of the last decoded frame of every pair against its true frame, for the
    generated and for the encoded latents."""
    truth = pairs.frames[:, -1]
    scores = {}
    for name in ("generated", "encoded"):
        latents = getattr(pairs, name)
        frames = torch.cat([to_uint8(model.decode(chunk))[:, -1] for chunk in latents.split(batch_size)])
        scores[name] = {"psnr": psnr_per_image(frames, truth).mean().item(), "sharpness": sharpness_ratio(frames, truth)}
    return scores


def train_decoder(out: Path, source: Path, steps: int, data: DecoderData = DecoderData(), seed: int = 0,
                  resume: bool = False, progress: bool = True, lr: float = 2e-4, held_out: int | None = None,
                  device: str | torch.device = "cpu", workers: WorkerPool | None = None,
                  max_seconds: float | None = None) -> dict:
    """Fine-tune the decoder of the tiny world model saved in ``source`` and save the whole model with it under
    ``OUT/weights`` (``source`` is left as it is); returns the summary written to ``OUT/decoder_summary.json``:
    :func:`decoded_scores` of ``held_out`` rollouts (default: a tenth of ``data.rollouts``, at least one) in scenes
    from :data:`HELD_OUT_FIRST_SCENE`, before and after. Returns {} on the processes other than the main one."""
    if Path(source).resolve() == (Path(out) / "weights").resolve():
        raise ValueError(f"the decoder stage reads {source} and writes {Path(out) / 'weights'}: give another --out")
    held_out = held_out or max(1, data.rollouts // 10)
    pairs = collect_pairs(source, data.first_scene, data.rollouts, data.steps, workers)
    evaluation = collect_pairs(source, HELD_OUT_FIRST_SCENE, held_out, data.steps, workers)
    log(f"decoder data: {len(pairs.frames)} steps of {data.rollouts} rollouts")
    model = from_preset("tiny", source, device=device)
    before = decoded_scores(model, evaluation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = PatchDiscriminator() if data.adversarial_weight > 0 else None
    trained = VaeWithCritic(model.vae, critic).to(device)
    model.requires_grad_(False)
    trained.requires_grad_(True)
    model.vae.encoder.requires_grad_(False)
    model.vae.quant_conv.requires_grad_(False)
    config = TrainConfig(steps=steps, lr=lr, betas=(0.5, 0.9), seed=seed, warmup=min(100, steps // 10 + 1),
                         max_seconds=max_seconds)
    Trainer(trained, decoder_loss_fn(model, trained, pairs, data), config, out / "decoder_run").run(resume, progress)
    model.requires_grad_(False)
    if not PartialState().is_main_process:
        PartialState().wait_for_everyone()
        return {}
    summary = {**log_summary(out / "decoder_run"), "pairs": len(pairs.frames), "held_out_rollouts": held_out,
               "held_out_first_scene": HELD_OUT_FIRST_SCENE, "before": before,
               "after": decoded_scores(model, evaluation)}
    model.to("cpu").save_pretrained(out / "weights")
    write_text(out / "decoder_summary.json", json.dumps(summary, indent=2))
    PartialState().wait_for_everyone()
    return summary
