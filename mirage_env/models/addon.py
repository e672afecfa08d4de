"""The Mirage add-on: a VACE-style memory branch beside the Wan DiT, plus the learned null text context.

The branch embeds its input (projected memory features + visibility latent, ``2 C`` channels) with its own patch
embedding and runs a chain of DiT-shaped blocks on that token stream; block ``i`` emits a hint that is added to the
DiT hidden states after DiT block ``layers[i]`` (0, 2, ..., 28 for Wan2.2-TI2V-5B). As in VACE, the first block adds
the DiT's patch-embedded tokens to the projected branch tokens (``proj_in``), and every output projection
(``proj_out``) starts at zero, so the branch has exactly zero effect until it is trained. ``proj_in`` keeps its
default init: were it zero as well, no gradient would reach the memory input during the first updates.

Saved and loaded with diffusers' ``save_pretrained`` / ``from_pretrained``: ``config.json`` beside
``diffusion_pytorch_model.safetensors``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from diffusers import ConfigMixin, ModelMixin, WanTransformer3DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import nn

from mirage_env.models.lora import base_state_dict
from mirage_env.models.presets import Preset


class MemoryBranchBlock(WanTransformerBlock):
    """A Wan DiT block on the branch's token stream, with an optional input projection and a zero output projection.

    Parameter names match diffusers' ``WanVACETransformerBlock`` (``proj_in``, ``proj_out``, ``attn1`` ...).
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, cross_attn_norm: bool, eps: float,
                 input_projection: bool) -> None:
        super().__init__(dim, ffn_dim, num_heads, "rms_norm_across_heads", cross_attn_norm, eps)
        self.proj_in = nn.Linear(dim, dim) if input_projection else None
        self.proj_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, control: torch.Tensor, hidden_states: torch.Tensor, context: torch.Tensor, temb: torch.Tensor,
                rotary_emb: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (hint for the DiT, branch tokens for the next block); all tokens are [B, S, dim]."""
        if self.proj_in is not None:
            control = self.proj_in(control) + hidden_states
        control = super().forward(control, context, temb, rotary_emb)
        return self.proj_out(control), control


class MemoryBranch(ModelMixin, ConfigMixin):
    """Memory branch (``layers``: DiT blocks followed by a hint) and the learned null context [tokens, text_dim]."""

    _keep_in_fp32_modules: ClassVar[list[str]] = ["scale_shift_table", "norm1", "norm2", "norm3"]
    _supports_gradient_checkpointing = True  # enable_gradient_checkpointing() recomputes each block in backward

    @register_to_config
    def __init__(self, layers: list[int], in_channels: int, num_attention_heads: int, attention_head_dim: int,
                 ffn_dim: int, text_dim: int, patch_size: tuple[int, int, int] = (1, 2, 2),
                 cross_attn_norm: bool = True, eps: float = 1e-6, null_context_tokens: int = 1) -> None:
        super().__init__()
        if list(layers) != sorted(set(layers)) or not layers:
            raise ValueError(f"branch layers must be distinct and increasing, got {layers}")
        dim = num_attention_heads * attention_head_dim
        self.patch_embedding = nn.Conv3d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(
            MemoryBranchBlock(dim, ffn_dim, num_attention_heads, cross_attn_norm, eps, input_projection=i == 0)
            for i in range(len(layers)))
        self.null_context = nn.Parameter(torch.zeros(null_context_tokens, text_dim))
        self.gradient_checkpointing = False

    def forward(self, control: torch.Tensor, hidden_states: torch.Tensor, context: torch.Tensor, temb: torch.Tensor,
                rotary_emb: tuple[torch.Tensor, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Hints keyed by DiT layer. ``control`` [B, in_channels, T, h, w]; the rest as the DiT blocks take them."""
        tokens = self.patch_embedding(control.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        hints = {}
        checkpointing = torch.is_grad_enabled() and self.gradient_checkpointing
        for layer, block in zip(self.config.layers, self.blocks):
            if checkpointing:
                hints[layer], tokens = self._gradient_checkpointing_func(block, tokens, hidden_states, context, temb,
                                                                         rotary_emb)
            else:
                hints[layer], tokens = block(tokens, hidden_states, context, temb, rotary_emb)
        return hints

    @torch.no_grad()
    def init_from_dit(self, dit: WanTransformer3DModel) -> None:
        """VACE practice: start each branch block as a copy of the DiT block it follows (projections untouched)."""
        for layer, block in zip(self.config.layers, self.blocks):
            result = block.load_state_dict(base_state_dict(dit.blocks[layer]), strict=False)
            if result.unexpected_keys or any(not k.startswith(("proj_in.", "proj_out.")) for k in result.missing_keys):
                raise ValueError(f"DiT block {layer} does not fit the branch: {result}")


def addon_config(preset: Preset) -> dict[str, Any]:
    """Branch config for a preset: after DiT blocks ``preset.addon_layers``, as wide as the DiT."""
    t = preset.transformer
    keys = ("num_attention_heads", "attention_head_dim", "ffn_dim", "text_dim", "cross_attn_norm", "eps")
    return {"layers": list(preset.addon_layers), "in_channels": preset.addon_in_channels,
            "patch_size": list(t["patch_size"]), **{k: t[k] for k in keys}}


def build_addon(preset: Preset) -> MemoryBranch:
    """A fresh branch (random blocks, zero output projections, zero null context) for a preset."""
    return MemoryBranch(**addon_config(preset))


def check_addon(branch: MemoryBranch, preset: Preset) -> None:
    """Raise if loaded branch weights were made for another preset."""
    want = addon_config(preset)
    got = {k: list(branch.config[k]) if isinstance(branch.config[k], tuple) else branch.config[k] for k in want}
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    if wrong:
        raise ValueError(f"add-on weights do not match preset {preset.name!r}: "
                         + ", ".join(f"{k}: got {g}, preset has {w}" for k, (g, w) in wrong.items()))
