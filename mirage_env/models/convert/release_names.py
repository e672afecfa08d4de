"""Key names of the public Mirage release's checkpoints -> ours, one key at a time (``None``: no place for it).

``step_NNNNNNN_vace.safetensors`` holds the memory branch as a Wan VACE model: ``vace_patch_embedding`` (Conv3d,
memory then visibility channels) and ``vace_blocks.{n}`` (original Wan block names plus ``before_proj`` on block 0
and ``after_proj`` on every block). Our :class:`~mirage_env.models.addon.MemoryBranch` computes the same thing
under diffusers' names (``patch_embedding``, ``blocks.{n}`` with ``proj_in`` / ``proj_out``).

``step_NNNNNNN_lora.safetensors`` holds peft LoRA factors on the DiT under original Wan names
(``blocks.{i}.self_attn.q.lora_A.weight``); ours are peft's under diffusers' names
(``blocks.{i}.attn1.to_q.lora_A.weight``). Prefixes are stripped before (:mod:`.reading`).
"""

from __future__ import annotations

import re

from mirage_env.models.convert.wan_names import dit_name

_VACE_BLOCK = re.compile(r"vace_blocks\.(\d+)\.(.+)")
_LORA = re.compile(r"(blocks\.\d+\.(?:(?:self|cross)_attn\.[qkvo]|ffn\.[02]))\.(lora_[AB]\.weight)")


def vace_name(key: str) -> str | None:
    """Our add-on's name of a release VACE key (``vace_blocks.0.before_proj.weight`` -> ``blocks.0.proj_in.weight``,
    ``vace_blocks.3.norm3.bias`` -> ``blocks.3.norm2.bias``, the affine cross-attention norm)."""
    if key.startswith("vace_patch_embedding."):
        return key.removeprefix("vace_")
    if match := _VACE_BLOCK.fullmatch(key):
        return dit_name(f"blocks.{match.group(1)}.{match.group(2)}")
    return None


def lora_name(key: str) -> str | None:
    """Our peft name of a release LoRA key (``blocks.2.ffn.0.lora_A.weight`` -> ``blocks.2.ffn.net.0.proj.lora_A
    .weight``); None for anything but the factors of the attention q/k/v/o and FFN linears."""
    if match := _LORA.fullmatch(key):
        module = dit_name(f"{match.group(1)}.weight")
        return None if module is None else f"{module.removesuffix('.weight')}.{match.group(2)}"
    return None
