"""Adversarial patch loss for the VAE decoder, trained from scratch (no pretrained network is needed).

A PatchGAN discriminator (Isola et al. 2017) scores overlapping patches of single frames as real or decoded; the
hinge loss and the adaptive weight follow the VQGAN / latent-diffusion autoencoders (Esser et al. 2021): the
generator's adversarial term is scaled so that its gradient at the decoder's last layer is as large as the
reconstruction loss's, times ``weight``. Reconstruction losses alone average over what the latent cannot pin down
and so blur; the patch critic makes the decoder commit to sharp edges and texture instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """Scores [N, 3, H, W] frames in [-1, 1] per patch: [N, 1, H / 4 - 1, W / 4 - 1] logits (receptive field 22 px)."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.GroupNorm(8, 2 * channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 2 * channels, 3, padding=1), nn.GroupNorm(8, 2 * channels), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 1, 3),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


def video_frames(video: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] -> [B T, 3, H, W]."""
    return video.transpose(1, 2).flatten(0, 1)


def discriminator_loss(discriminator: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the critic on real and decoded videos [B, 3, T, H, W] (``fake`` is detached here)."""
    real_logits = discriminator(video_frames(real))
    fake_logits = discriminator(video_frames(fake.detach()))
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def generator_loss(discriminator: PatchDiscriminator, fake: torch.Tensor) -> torch.Tensor:
    """The decoder's adversarial term: raise the critic's score of the decoded video."""
    return -discriminator(video_frames(fake)).mean()


def adaptive_weight(reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor,
                    weight: float, limit: float = 1e4) -> torch.Tensor:
    """``weight * |grad rec| / |grad adv|`` at ``last_layer`` (a decoder weight), detached and clamped."""
    rec_grad = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    return (weight * rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0, limit).detach()
