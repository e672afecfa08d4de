"""Presets as data (``mirage_env/data/<name>.json``) and builders of the diffusers modules they describe.

A preset holds the configs of the DiT (``WanTransformer3DModel``), the VAE (``AutoencoderKLWan``), the scheduler,
the Mirage add-on (memory branch layers, input channels, LoRA settings) and sampling defaults. Keys starting with
``_`` are notes and never reach a constructor. Builders create modules on the current default device, so
``with torch.device("meta"):`` builds the real 5B configuration without allocating memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from diffusers import AutoencoderKLWan, WanTransformer3DModel

PRESETS = ("tiny", "wan2.2-ti2v-5b")

# Fields of the DiT / VAE configs that must match a preset for weights to be usable with it.
CORE_TRANSFORMER_FIELDS = ("patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
                           "text_dim", "ffn_dim", "num_layers", "added_kv_proj_dim")
CORE_VAE_FIELDS = ("z_dim", "patch_size", "scale_factor_temporal", "scale_factor_spatial", "temperal_downsample",
                   "dim_mult", "is_residual")


def _config(section: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if not k.startswith("_")}


@dataclass(frozen=True)
class Preset:
    """Configs of one world-model size (see the module docstring)."""

    name: str
    transformer: dict[str, Any]
    vae: dict[str, Any]
    scheduler: dict[str, Any]
    addon_layers: tuple[int, ...]
    addon_in_channels: int
    lora: dict[str, Any]
    defaults: dict[str, Any]

    @property
    def temporal_stride(self) -> int:
        return int(self.vae["scale_factor_temporal"])

    @property
    def spatial_stride(self) -> int:
        return int(self.vae["scale_factor_spatial"])

    @property
    def latent_channels(self) -> int:
        return int(self.vae["z_dim"])


def load_preset(name: str) -> Preset:
    """Read ``mirage_env/data/<name>.json`` (package data; never ``/work/shared`` or the network)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    raw = json.loads(resources.files("mirage_env").joinpath("data", f"{name}.json").read_text())
    addon = raw["mirage_addon"]
    preset = Preset(name=name, transformer=_config(raw["transformer"]), vae=_config(raw["vae"]),
                    scheduler=_config(raw["scheduler"]), addon_layers=tuple(addon["vace_layers"]),
                    addon_in_channels=int(addon["vace_in_channels"]), lora=dict(addon["lora"]),
                    defaults=dict(raw["defaults"]))
    check_vae_strides(preset.vae)
    if preset.addon_in_channels != 2 * preset.latent_channels:
        raise ValueError(f"preset {name}: add-on input must be memory + visibility = {2 * preset.latent_channels} "
                         f"channels, got {preset.addon_in_channels}")
    return preset


def check_vae_strides(vae: dict[str, Any]) -> None:
    """The strides a VAE config declares must be the ones its layers produce (the encoder chunks time by 4)."""
    temporal = 2 ** sum(bool(d) for d in vae["temperal_downsample"])
    spatial = 2 ** (len(vae["dim_mult"]) - 1) * (vae.get("patch_size") or 1)
    if (temporal, spatial) != (vae["scale_factor_temporal"], vae["scale_factor_spatial"]) or temporal != 4:
        raise ValueError(f"VAE layers give strides (t={temporal}, s={spatial}) but the config declares "
                         f"(t={vae['scale_factor_temporal']}, s={vae['scale_factor_spatial']}); "
                         "AutoencoderKLWan needs a temporal stride of 4")


def check_compatible(kind: str, config: dict[str, Any], preset: Preset) -> None:
    """Raise if a loaded config differs from the preset in a field that changes shapes or strides."""
    expected, fields = (preset.transformer, CORE_TRANSFORMER_FIELDS) if kind == "transformer" else \
        (preset.vae, CORE_VAE_FIELDS)
    wrong = {f: (config.get(f), expected.get(f)) for f in fields
             if _normalise(config.get(f)) != _normalise(expected.get(f))}
    if wrong:
        details = ", ".join(f"{f}: got {got}, preset has {want}" for f, (got, want) in wrong.items())
        raise ValueError(f"{kind} weights do not match preset {preset.name!r} ({details})")


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def build_transformer(preset: Preset) -> WanTransformer3DModel:
    """The Wan DiT of a preset with fresh (random) weights."""
    return WanTransformer3DModel(**preset.transformer)


def build_vae(preset: Preset) -> AutoencoderKLWan:
    """The Wan VAE of a preset with fresh (random) weights."""
    return AutoencoderKLWan(**preset.vae)
