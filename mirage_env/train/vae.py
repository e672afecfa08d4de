"""Train the tiny preset's ``AutoencoderKLWan`` on simulator clips, measure its PSNR, set its latent statistics.

Two phases, as Wan trains its VAE (images first, then video): the first ``image_steps`` steps reconstruct single
frames (the causal VAE's first-frame path, cheap, many scenes per step), the rest short causal clips (1 + 4k
frames) along one-way camera walks. (The walks must not return: a 5-frame clip that goes out and back ends where
it started, and the VAE then learns to decode a latent's frames from the first frame instead of from the latent.)
Loss: L1 + MSE on the reconstruction plus a small KL term. Training and held-out clips come from disjoint
scene seeds. After training, ``latents_mean`` / ``latents_std`` are measured on
training clips and written into the VAE config, so the world model sees normalised latents as with Wan2.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan

from mirage_env.train.clips import ClipConfig, frames_to_unit, sample_clip

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


class ClipPool:
    """Pre-rendered clips (uint8) so that training does not wait for the renderer; filled lazily."""

    def __init__(self, config: ClipConfig, size: int, seed: int) -> None:
        self.config, self.size, self.seed = config, size, seed
        self.clips: dict[int, torch.Tensor] = {}

    def __getitem__(self, index: int) -> torch.Tensor:
        index %= self.size
        if index not in self.clips:
            self.clips[index] = sample_clip(index, self.config, self.seed).frames
        return self.clips[index]

    def batch(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """Video [B, 3, T, H, W] in [-1, 1] of randomly chosen pool clips."""
        picks = torch.randint(self.size, (batch_size,), generator=generator)
        return frames_to_unit(torch.stack([self[int(i)] for i in picks]))


def vae_loss_fn(vae: AutoencoderKLWan, pool: ClipPool, data: VaeData, images: ClipPool | None = None):
    """A :data:`~mirage_env.train.trainer.LossFn` for the VAE (``images``: the single-frame pool of the first
    ``data.image_steps`` steps)."""
    if data.image_steps and images is None:
        raise ValueError("image_steps > 0 needs a pool of single frames")

    def loss(step: int, generator: torch.Generator) -> torch.Tensor:
        if step < data.image_steps:
            video = images.batch(generator, data.image_batch_size)
        else:
            video = pool.batch(generator, data.batch_size)
        posterior = vae.encode(video).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        reconstruction = vae.decode(z).sample
        return (F.l1_loss(reconstruction, video) + F.mse_loss(reconstruction, video)
                + data.kl_weight * posterior.kl().mean())

    return loss


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKLWan, video: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """PSNR (dB) of every frame of ``video`` [N, 3, T, H, W] in [-1, 1], reconstructed from the posterior mode."""
    values = []
    for chunk in video.split(batch_size):
        reconstruction = vae.decode(vae.encode(chunk).latent_dist.mode()).sample.clamp(-1, 1)
        mse = ((reconstruction - chunk) / 2).pow(2).mean(dim=(1, 3, 4))  # [N, T] on the [0, 1] scale
        values.append(-10 * torch.log10(mse.clamp_min(1e-12)))
    return torch.cat(values).flatten()


def held_out_video(count: int, frames: int = 1, seed: int = 1, hw: tuple[int, int] = (64, 64)) -> torch.Tensor:
    """``count`` clips of ``frames`` frames (one-way camera walks) from scenes never used in training:
    [count, 3, frames, H, W]."""
    config = ClipConfig(hw=hw, frames=frames, first_scene=HELD_OUT_FIRST_SCENE, scenes=10_000, returning=False)
    return frames_to_unit(torch.stack([sample_clip(i, config, seed).frames for i in range(count)]))


@torch.no_grad()
def set_latent_statistics(vae: AutoencoderKLWan, pool: ClipPool, clips: int = 64) -> None:
    """Measure the per-channel mean and std of posterior means on ``clips`` pool clips and store them in the
    config (``latents_mean`` / ``latents_std``, as in Wan2.2's VAE config)."""
    latents = torch.cat([vae.encode(frames_to_unit(pool[i])[None]).latent_dist.mode() for i in range(clips)])
    dims = (0, 2, 3, 4)
    vae.register_to_config(latents_mean=latents.mean(dim=dims).tolist(), latents_std=latents.std(dim=dims).tolist())
