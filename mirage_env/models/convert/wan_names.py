"""Original Wan2.2 key names -> diffusers names, one key at a time (``None``: no place for it).

The DiT (and the Wan block inside a VACE block) goes through diffusers' own
``convert_wan_transformer_to_diffusers``. diffusers' ``convert_wan_vae_to_diffusers`` covers only the Wan2.1 VAE
layout (``encoder.downsamples.{i}`` a flat list of residual blocks and resamples); the Wan2.2 VAE (z 48, residual
down / up stages ``encoder.downsamples.{i}.downsamples.{j}`` with parameter-free average shortcuts) is mapped by
:func:`vae_name` here, after the rules of diffusers' ``scripts/convert_wan_to_diffusers.py`` (``convert_vae_22``,
which is not part of the installed package).
"""

from __future__ import annotations

import re

import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

_PLACEHOLDER_SHAPE = (1, 1, 1, 1)  # any tensor diffusers' special-key handlers can index


def dit_name(key: str) -> str | None:
    """diffusers name of an original Wan DiT key (``blocks.0.self_attn.q.weight`` -> ``blocks.0.attn1.to_q.weight``);
    None where diffusers turns it into several tensors."""
    converted = convert_wan_transformer_to_diffusers({key: torch.empty(_PLACEHOLDER_SHAPE, device="meta")})
    return next(iter(converted)) if len(converted) == 1 else None


# Parameters of a Wan2.2 VAE ResidualBlock: residual = (RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, Dropout,
# CausalConv3d), plus a 1x1x1 shortcut convolution where the width changes.
_RESNET = {"residual.0.gamma": "norm1.gamma", "residual.2.weight": "conv1.weight", "residual.2.bias": "conv1.bias",
           "residual.3.gamma": "norm2.gamma", "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
           "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias"}
_RESAMPLE = re.compile(r"(resample\.1|time_conv)\.(weight|bias)")
_STAGE = re.compile(r"(encoder|decoder)\.(down|up)samples\.(\d+)\.\2samples\.(\d+)\.(.+)")
_MIDDLE = re.compile(r"(encoder|decoder)\.middle\.([012])\.(.+)")
_ATTENTION = ("norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias")
_FIXED = {"conv1.weight": "quant_conv.weight", "conv1.bias": "quant_conv.bias",
          "conv2.weight": "post_quant_conv.weight", "conv2.bias": "post_quant_conv.bias",
          **{f"{side}.{old}": f"{side}.{new}" for side in ("encoder", "decoder")
             for old, new in (("conv1.weight", "conv_in.weight"), ("conv1.bias", "conv_in.bias"),
                              ("head.0.gamma", "norm_out.gamma"), ("head.2.weight", "conv_out.weight"),
                              ("head.2.bias", "conv_out.bias"))}}


def vae_name(key: str) -> str | None:
    """diffusers ``AutoencoderKLWan`` name of an original Wan2.2 VAE key (``Wan2.2_VAE.pth``), e.g.
    ``encoder.downsamples.1.downsamples.2.resample.1.weight`` -> ``encoder.down_blocks.1.downsampler.resample.1.weight``
    and ``decoder.upsamples.0.upsamples.1.residual.3.gamma`` -> ``decoder.up_blocks.0.resnets.1.norm2.gamma``."""
    if key in _FIXED:
        return _FIXED[key]
    if match := _MIDDLE.fullmatch(key):
        side, index, rest = match.groups()
        if index == "1":
            return f"{side}.mid_block.attentions.0.{rest}" if rest in _ATTENTION else None
        return f"{side}.mid_block.resnets.{int(index) // 2}.{_RESNET[rest]}" if rest in _RESNET else None
    if match := _STAGE.fullmatch(key):
        side, kind, stage, index, rest = match.groups()
        if rest in _RESNET:
            return f"{side}.{kind}_blocks.{stage}.resnets.{index}.{_RESNET[rest]}"
        if _RESAMPLE.fullmatch(rest):
            return f"{side}.{kind}_blocks.{stage}.{kind}sampler.{rest}"
    return None
