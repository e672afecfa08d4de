"""Train the tiny preset's ``AutoencoderKLWan`` on simulator clips, measure its PSNR, set its latent statistics.

Two phases, as Wan trains its VAE (images first, then video): the first ``image_steps`` steps reconstruct single
frames (the causal VAE's first-frame path, cheap, many scenes per step), the rest short causal clips (1 + 4k
frames) along one-way camera walks. (The walks must not return: a 5-frame clip that goes out and back ends where
it started, and the VAE then learns to decode a latent's frames from the first frame instead of from the latent.)
Loss: L1 + MSE on the reconstruction, L1 on its spatial gradients (edges), a small KL term and, from step
``adversarial_start`` on, a PatchGAN critic's hinge loss with the adaptive weight of latent-diffusion autoencoders
(:mod:`mirage_env.train.discriminator`). Training and held-out clips come from disjoint scene seeds. After
training, ``latents_mean`` / ``latents_std`` are measured on training clips and written into the VAE config, so the
world model sees normalised latents as with Wan2.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from torch import nn

from mirage_env.train.clips import ClipConfig, SimulatorClips, frames_to_unit
from mirage_env.train.discriminator import (
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)
from mirage_env.metrics import psnr_per_image, sharpness_ratio
from mirage_env.train.parallel import WorkerPool
from mirage_env.train.trainer import Shard
from mirage_env.video import to_uint8

HELD_OUT_FIRST_SCENE = 100_000


@dataclass(frozen=True)
class VaeData:
    """VAE training data: ``image_steps`` steps of ``image_batch_size`` single frames (a pool of ``image_pool``),
    then batches of ``batch_size`` clips of ``frames`` frames (1 + 4k, a pool of ``pool``)."""

    frames: int = 5
    pool: int = 512
    batch_size: int = 8
    image_steps: int = 0
    image_pool: int = 2048
    image_batch_size: int = 16
    scenes: int = 400
    kl_weight: float = 1e-6
    gradient_weight: float = 1.0
    adversarial_weight: float = 0.0  # 0: no critic
    adversarial_start: int = 0


class ClipPool:
    """Pre-rendered clips (uint8) so that training does not wait for the renderer; filled lazily, or all at once
    by :meth:`fill` on worker processes (the same clips: each is a function of its index)."""

    def __init__(self, config: ClipConfig, size: int, seed: int) -> None:
        self.config, self.size, self.seed = config, size, seed
        self.clips: dict[int, torch.Tensor] = {}

    def __getitem__(self, index: int) -> torch.Tensor:
        index %= self.size
        if index not in self.clips:
            self.clips[index] = SimulatorClips(self.config, self.seed)(index).frames
        return self.clips[index]

    def fill(self, workers: WorkerPool) -> None:
        """Render every clip of the pool now, on ``workers``."""
        missing = [i for i in range(self.size) if i not in self.clips]
        clips = workers.map(SimulatorClips(self.config, self.seed), missing)
        self.clips.update((i, clip.frames) for i, clip in zip(missing, clips))

    def batch(self, generator: torch.Generator, batch_size: int, rows: slice = slice(None)) -> torch.Tensor:
        """Video [B, 3, T, H, W] in [-1, 1] of randomly chosen pool clips: the ``rows`` of a batch of
        ``batch_size`` (all of them by default; the picks are drawn for the whole batch)."""
        picks = torch.randint(self.size, (batch_size,), generator=generator)
        return frames_to_unit(torch.stack([self[int(i)] for i in picks[rows]]))


class VaeWithCritic(nn.Module):
    """What the VAE recipe trains: the VAE and, when the adversarial loss is on, its patch critic."""

    def __init__(self, vae: AutoencoderKLWan, critic: PatchDiscriminator | None = None) -> None:
        super().__init__()
        self.vae, self.critic = vae, critic


def vae_pools(data: VaeData, seed: int) -> tuple[ClipPool, ClipPool]:
    """The training pools of the VAE recipe: (one-way clips of ``data.frames`` frames, single frames)."""
    return (ClipPool(ClipConfig(frames=data.frames, scenes=data.scenes, returning=False), data.pool, seed),
            ClipPool(ClipConfig(frames=1, scenes=data.scenes), data.image_pool, seed + 1))


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance between the horizontal and vertical finite differences of two videos [..., H, W]."""
    return (F.l1_loss(a.diff(dim=-1), b.diff(dim=-1)) + F.l1_loss(a.diff(dim=-2), b.diff(dim=-2))) / 2


def vae_loss_fn(model: VaeWithCritic, pool: ClipPool, data: VaeData, images: ClipPool | None = None):
    """A :data:`~mirage_env.train.trainer.LossFn` for the VAE (``images``: the single-frame pool of the first
    ``data.image_steps`` steps). With a critic, the critic's hinge loss is added too: it sees only detached
    reconstructions, and the decoder's adversarial term sees the critic's weights detached, so one optimizer
    step updates each on its own objective (its adaptive weight is measured on each shard's own gradients)."""
    if data.image_steps and images is None:
        raise ValueError("image_steps > 0 needs a pool of single frames")
    if (data.adversarial_weight > 0) != (model.critic is not None):
        raise ValueError("adversarial_weight > 0 needs a critic, and a critic needs adversarial_weight > 0")
    vae, critic = model.vae, model.critic
    device = next(vae.parameters()).device

    def loss(step: int, generator: torch.Generator, shard: Shard) -> torch.Tensor:
        batch_size = data.image_batch_size if step < data.image_steps else data.batch_size
        rows = shard.rows(batch_size)
        video = (images if step < data.image_steps else pool).batch(generator, batch_size, rows).to(device)
        posterior = vae.encode(video).latent_dist
        noise = torch.randn((batch_size, *posterior.mean.shape[1:]), generator=generator)[rows]
        z = posterior.mean + posterior.std * noise.to(device)
        reconstruction = vae.decode(z).sample
        adversarial = critic is not None and step >= data.adversarial_start
        return (decoder_objective(model, reconstruction, video, data.adversarial_weight, adversarial,
                                  data.gradient_weight) + data.kl_weight * posterior.kl().mean())

    return loss


def decoder_objective(model: VaeWithCritic, reconstruction: torch.Tensor, video: torch.Tensor,
                      adversarial_weight: float, adversarial: bool, gradient_weight: float = 1.0) -> torch.Tensor:
    """What the decoder is trained on, for videos [B, 3, T, H, W]: L1 + MSE + ``gradient_weight`` x L1 on edges and,
    when ``adversarial``, the critic's adaptively weighted term plus the critic's own hinge loss (the decoder's
    term sees the critic's weights detached, the critic only detached reconstructions)."""
    rec = (F.l1_loss(reconstruction, video) + F.mse_loss(reconstruction, video)
           + gradient_weight * gradient_l1(reconstruction, video))
    if not adversarial:
        return rec
    critic = model.critic
    frozen = {name: p.detach() for name, p in critic.named_parameters()}
    fooled = generator_loss(lambda x: torch.func.functional_call(critic, frozen, (x,)), reconstruction)
    weight = adaptive_weight(rec, fooled, model.vae.decoder.conv_out.weight, adversarial_weight)
    return rec + weight * fooled + discriminator_loss(critic, video, reconstruction)


@torch.no_grad()
def reconstruct(vae: AutoencoderKLWan, video: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """``video`` [N, 3, T, H, W] in [-1, 1] through the VAE (posterior mode), as uint8 frames [N, T, H, W, 3]."""
    device = next(vae.parameters()).device
    out = [vae.decode(vae.encode(chunk.to(device)).latent_dist.mode()).sample.cpu()
           for chunk in video.split(batch_size)]
    return to_uint8(torch.cat(out).transpose(1, 2))


def reconstruction_scores(vae: AutoencoderKLWan, video: torch.Tensor, first: int = 0,
                          batch_size: int = 8) -> tuple[torch.Tensor, float]:
    """Scores of the VAE's reconstructions of ``video`` [N, 3, T, H, W] in [-1, 1] from frame ``first`` on (1: the
    frames of 4-frame latents, the path the env decodes): the PSNR (dB) of every frame [N (T - first)] and the
    sharpness ratio (:func:`~mirage_env.metrics.sharpness_ratio`) over them. The video is reconstructed once."""
    rebuilt, truth = reconstruct(vae, video, batch_size)[:, first:], to_uint8(video.transpose(1, 2))[:, first:]
    return psnr_per_image(rebuilt, truth).flatten(), sharpness_ratio(rebuilt, truth)


def reconstruction_psnr(vae: AutoencoderKLWan, video: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """PSNR (dB) of every frame of ``video`` [N, 3, T, H, W] in [-1, 1] reconstructed by the VAE: [N T]."""
    return reconstruction_scores(vae, video, batch_size=batch_size)[0]


def held_out_video(count: int, frames: int = 1, seed: int = 1, hw: tuple[int, int] = (64, 64)) -> torch.Tensor:
    """``count`` clips of ``frames`` frames (one-way camera walks) from scenes never used in training:
    [count, 3, frames, H, W]."""
    config = ClipConfig(hw=hw, frames=frames, first_scene=HELD_OUT_FIRST_SCENE, scenes=10_000, returning=False)
    clips = SimulatorClips(config, seed)
    return frames_to_unit(torch.stack([clips(i).frames for i in range(count)]))


@torch.no_grad()
def set_latent_statistics(vae: AutoencoderKLWan, pool: ClipPool, clips: int = 64) -> None:
    """Measure the per-channel mean and std of posterior means on ``clips`` pool clips and store them in the
    config (``latents_mean`` / ``latents_std``, as in Wan2.2's VAE config)."""
    device = next(vae.parameters()).device
    latents = torch.cat([vae.encode(frames_to_unit(pool[i])[None].to(device)).latent_dist.mode().cpu()
                         for i in range(clips)])
    dims = (0, 2, 3, 4)
    vae.register_to_config(latents_mean=latents.mean(dim=dims).tolist(), latents_std=latents.std(dim=dims).tolist())
