"""Weight files checked against the modules they are for, from their safetensors headers, before anything loads.

diffusers and peft report a weights file that lacks a tensor, holds a stray one or one of another shape late and
without naming it ("Cannot copy out of meta tensor", a silent no-op copy). Here every part of a weights folder is
compared with the state dict of the module its ``config.json`` describes, built on the meta device (no memory),
and a mismatch raises ``ValueError`` naming the file and the tensors. Unreadable or truncated files raise
``ValueError`` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from peft import LoraConfig, inject_adapter_in_model
from safetensors import SafetensorError, safe_open
from torch import nn

from mirage_env.models import lora as lora_ops
from mirage_env.models.addon import MemoryBranch, check_addon
from mirage_env.models.loading import DIFFUSERS_WEIGHTS
from mirage_env.models.presets import Preset, check_compatible

Shapes = dict[str, tuple[int, ...]]
SHOWN = 5  # tensor names listed per kind of mismatch


def read_shapes(file: Path) -> Shapes:
    """Names and shapes of the tensors in a safetensors file (read from its header)."""
    try:
        with safe_open(str(file), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{file}: not a readable safetensors file, truncated or corrupt? ({error})") from None


def folder_shapes(folder: Path, weights: str) -> tuple[Shapes, str]:
    """Shapes of the weights of one part: ``weights`` itself or the shards of ``weights.index.json``; with the
    name of what was read (for messages)."""
    if (folder / weights).is_file():
        return read_shapes(folder / weights), str(folder / weights)
    index = folder / f"{weights}.index.json"
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{index}: not a readable shard index ({error!r})") from None
    shapes: Shapes = {}
    for shard in sorted(set(weight_map.values())):
        shard_shapes = read_shapes(folder / shard)
        listed = {name for name, file in weight_map.items() if file == shard}
        if set(shard_shapes) != listed:
            raise ValueError(f"{folder / shard}: holds other tensors than {index.name} lists for it")
        shapes.update(shard_shapes)
    return shapes, f"{index} and its shards"


def module_shapes(module: nn.Module) -> Shapes:
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def check_shapes(what: str, found: Shapes, expected: Shapes) -> None:
    """ValueError listing the missing, unexpected and misshaped tensors of ``found`` against ``expected``."""
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    misshaped = [f"{name} {list(found[name])} instead of {list(expected[name])}"
                 for name in sorted(expected.keys() & found.keys()) if found[name] != expected[name]]
    problems = [f"{len(items)} {kind} ({', '.join(items[:SHOWN])}{', ...' if len(items) > SHOWN else ''})"
                for kind, items in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped))
                if items]
    if problems:
        raise ValueError(f"{what} does not fit the model its config describes: {'; '.join(problems)} tensors")


def _on_meta(build):
    with torch.device("meta"):
        return build()


def _read_config(folder: Path, name: str = "config.json") -> dict:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder / name}: not a readable JSON config ({error})") from None


def check_weight_files(root: Path, present: set[str], preset: Preset) -> None:
    """Check the configs (against ``preset``) and the tensors of every diffusers part and the LoRA in ``present``
    under ``root`` before any of them is loaded. The text encoder is left to its own loader."""
    dit_config = _read_config(root / "transformer")
    check_compatible("transformer", dit_config, preset)
    check_compatible("vae", _read_config(root / "vae"), preset)
    dit = _on_meta(lambda: WanTransformer3DModel.from_config(dit_config))
    check_shapes(*_found(root / "transformer", DIFFUSERS_WEIGHTS), module_shapes(dit))
    vae = _on_meta(lambda: AutoencoderKLWan.from_config(_read_config(root / "vae")))
    check_shapes(*_found(root / "vae", DIFFUSERS_WEIGHTS), module_shapes(vae))
    if "addon" in present:
        branch = _on_meta(lambda: MemoryBranch.from_config(_read_config(root / "addon")))
        check_addon(branch, preset)
        check_shapes(*_found(root / "addon", DIFFUSERS_WEIGHTS), module_shapes(branch))
    if "lora" in present:
        adapter = LoraConfig.from_pretrained(str(root / "lora"))
        _on_meta(lambda: inject_adapter_in_model(adapter, dit, adapter_name=lora_ops.ADAPTER))
        check_shapes(*_found(root / "lora", lora_ops.WEIGHTS_FILE), lora_ops.adapter_shapes(dit))


def _found(folder: Path, weights: str) -> tuple[str, Shapes]:
    shapes, what = folder_shapes(folder, weights)
    return what, shapes
