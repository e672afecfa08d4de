"""LoRA on the DiT through peft: attention q/k/v/o (self and cross) and the two FFN linears.

Files (peft's own format): ``adapter_config.json`` (a ``LoraConfig``) and ``adapter_model.safetensors`` (keys like
``blocks.0.attn1.to_q.lora_A.weight``). Disabled adapters leave the DiT exactly as loaded; ``merge_lora`` folds the
adapters into the base weights for inference (disabling a merged adapter unmerges it first, peft's behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import (
    LoraConfig,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mirage_env.atomic import atomic_dir

ADAPTER = "mirage"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class LoraSettings:
    """Rank, alpha, dropout and target module suffixes (defaults: Mirage's 32 / 32 / 0.05)."""

    rank: int = 32
    alpha: float = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                                "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
                                "ffn.net.0.proj", "ffn.net.2")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoraSettings:
        """From a preset's ``lora`` section."""
        return cls(rank=values["rank"], alpha=values["alpha"], dropout=values["dropout"],
                   targets=tuple(values["targets"]))

    def config(self) -> LoraConfig:
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.targets))


def _layers(model: nn.Module) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def has_lora(model: nn.Module) -> bool:
    return bool(_layers(model))


def add_lora(model: nn.Module, settings: LoraSettings | LoraConfig) -> None:
    """Inject a fresh adapter (B = 0: no effect until trained) into the target linears of ``model``."""
    if has_lora(model):
        raise ValueError("the model already has a LoRA adapter")
    config = settings.config() if isinstance(settings, LoraSettings) else settings
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    model.train(model.training)  # new dropout layers follow the model's train / eval mode
    if not has_lora(model):
        raise ValueError(f"no module of the model matches the LoRA targets {config.target_modules}")


def set_lora_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch the adapter on or off (off: the base model exactly)."""
    for layer in _require(model):
        layer.enable_adapters(enabled)


def merge_lora(model: nn.Module) -> None:
    """Fold the adapter into the base weights (faster inference; same outputs up to rounding)."""
    for layer in _require(model):
        layer.merge(adapter_names=[ADAPTER])


def save_lora(model: nn.Module, directory: str | Path) -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` to ``directory`` (replaced atomically)."""
    _require(model)
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    with atomic_dir(directory) as folder:
        model.peft_config[ADAPTER].save_pretrained(str(folder))
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / WEIGHTS_FILE))


def load_lora(model: nn.Module, directory: str | Path) -> None:
    """Inject the adapter saved in ``directory`` (if the model has none yet) and load its weights."""
    directory = Path(directory)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
    if missing:  # checked here: peft would otherwise look for the config on the Hugging Face Hub
        raise FileNotFoundError(f"LoRA directory {directory} lacks {', '.join(missing)}")
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{directory / WEIGHTS_FILE}: not a readable safetensors file, truncated or corrupt? "
                         f"({error})") from None
    if not has_lora(model):
        add_lora(model, LoraConfig.from_pretrained(str(directory)))
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise ValueError(f"LoRA weights in {directory} do not fit the model: "
                         f"unexpected {result.unexpected_keys[:5]}, missing {missing[:5]}")


def adapter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the adapter's tensors as :func:`save_lora` writes them (works on the meta device)."""
    _require(model)
    return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's own weights without adapters, under their original names (for saving the base model)."""
    if any(layer.merged for layer in _layers(model)):
        raise ValueError("the LoRA adapter is merged into the base weights; save before merging")
    return {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}


def _require(model: nn.Module) -> list[BaseTunerLayer]:
    layers = _layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapter (add_lora or load_lora first)")
    return layers
