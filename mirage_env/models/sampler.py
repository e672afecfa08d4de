"""Flow-matching sampling (diffusers ``UniPCMultistepScheduler``, flow prediction, shift 5) and training sigmas.

Convention (Wan / rectified flow): ``x_sigma = (1 - sigma) x0 + sigma noise``, the model predicts the velocity
``noise - x0``, the DiT timestep is ``sigma * num_train_timesteps``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import UniPCMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(target latents [B, C, t, h, w], scheduler timestep) -> velocity of the same shape."""


def make_scheduler(config: dict[str, Any]) -> UniPCMultistepScheduler:
    """A fresh scheduler (it keeps multistep state, so one per segment)."""
    return UniPCMultistepScheduler.from_config(config)


def sample_segment(velocity: VelocityFn, first_latent: torch.Tensor, noise: torch.Tensor,
                   scheduler: UniPCMultistepScheduler, num_steps: int) -> torch.Tensor:
    """Integrate from ``noise`` [B, C, t, h, w] to clean latents; frame 0 is ``first_latent``, re-imposed every step."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    scheduler.set_timesteps(num_steps, device=noise.device)
    x = noise.clone()
    x[:, :, :1] = first_latent
    for timestep in scheduler.timesteps:
        x = scheduler.step(velocity(x, timestep).float(), timestep, x, return_dict=False)[0]
        x[:, :, :1] = first_latent
    return x


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Time shift of flow matching (as in ``FlowMatchEulerDiscreteScheduler``): more weight on high noise."""
    return shift * u / (1 + (shift - 1) * u)


def training_sigmas(shape: tuple[int, ...], shift: float, generator: torch.Generator,
                    device: torch.device) -> torch.Tensor:
    """Independent sigma per entry (per latent frame for Mirage training), uniform then shifted."""
    return shift_sigmas(torch.rand(shape, generator=generator, device=generator.device).to(device), shift)


def gaussian(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """float32 noise drawn on the generator's device (reproducible across model devices), then moved."""
    return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=torch.float32)
