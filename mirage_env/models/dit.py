"""The denoiser: diffusers' ``WanTransformer3DModel`` run block by block with the memory branch's hints.

Why not ``WanVACETransformer3DModel``: its forward takes one timestep per sample, while Mirage needs one per latent
frame (clean references, preceding latents and first target latent at t = 0 beside noisy target frames). The plain
DiT already supports per-token timesteps (the Wan2.2 TI2V path: ``temb`` of shape [B, S, 6, dim] in its blocks),
and it loads the Wan2.2 weights unchanged, so we keep it and add our branch. The time embedding is computed once per
frame and repeated over the frame's tokens (the DiT's own TI2V path embeds every token).
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from torch import nn

from mirage_env.models.addon import MemoryBranch


def onload(module: nn.Module) -> None:
    """Run the accelerate hook that diffusers' ``enable_model_cpu_offload`` puts on ``module`` (it moves the module to
    the execution device and offloads the model before it in the pipeline's sequence). The hook wraps ``forward``,
    which :class:`MirageTransformer` does not call on the DiT, so it runs it itself, as diffusers'
    ``apply_forward_hook`` does for ``vae.encode`` / ``vae.decode``. Without a hook, nothing happens."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(module)


class MirageTransformer(nn.Module):
    """Wan DiT (``dit``, where LoRA goes) + memory branch (``branch``): velocity from latents and frame timesteps."""

    def __init__(self, dit: WanTransformer3DModel, branch: MemoryBranch) -> None:
        super().__init__()
        if dit.config.patch_size[0] != 1:
            raise ValueError("per-frame timesteps need a temporal patch size of 1")
        self.dit = dit
        self.branch = branch

    def forward(self, latents: torch.Tensor, frame_timesteps: torch.Tensor, context: torch.Tensor,
                control: torch.Tensor | None) -> torch.Tensor:
        """Velocity [B, C, T, h, w] for ``latents`` [B, C, T, h, w] at ``frame_timesteps`` [B, T] (0..1000).

        ``context`` [B, L, text_dim]; ``control`` [B, 2C, T, h, w] is the branch input, None skips the branch.
        """
        dit = self.dit
        onload(dit)
        b, _, t, h, w = latents.shape
        _, p_h, p_w = dit.config.patch_size
        if h % p_h or w % p_w:
            raise ValueError(f"latent grid {h}x{w} is not divisible by the DiT patch {p_h}x{p_w}")
        tokens_per_frame = (h // p_h) * (w // p_w)
        dtype = dit.patch_embedding.weight.dtype

        rotary = dit.rope(latents)
        x = dit.patch_embedding(latents.to(dtype)).flatten(2).transpose(1, 2).contiguous()
        temb, modulation, context, _ = dit.condition_embedder(
            frame_timesteps.reshape(-1), context.to(dtype), None, timestep_seq_len=t)
        temb = temb.repeat_interleave(tokens_per_frame, dim=1)  # [B, S, dim]
        modulation = modulation.unflatten(2, (6, -1)).repeat_interleave(tokens_per_frame, dim=1)  # [B, S, 6, dim]

        hints = {} if control is None else self.branch(control, x, context, modulation, rotary)
        checkpointing = torch.is_grad_enabled() and dit.gradient_checkpointing  # dit.enable_gradient_checkpointing()
        for i, block in enumerate(dit.blocks):
            if checkpointing:
                x = dit._gradient_checkpointing_func(block, x, context, modulation, rotary)
            else:
                x = block(x, context, modulation, rotary)
            if i in hints:
                x = x + hints[i].to(x.dtype)

        shift, scale = (dit.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        x = (dit.norm_out(x.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)).type_as(x)
        x = dit.proj_out(x)
        x = x.reshape(b, t, h // p_h, w // p_w, p_h, p_w, -1).permute(0, 6, 1, 2, 4, 3, 5)
        return x.reshape(b, -1, t, h, w)
