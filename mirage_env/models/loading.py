"""Weights from a local directory (never the network), with errors that say what is missing and where it goes.

Layout of ``weights_dir`` (the diffusers layout of Wan2.2-TI2V-5B plus our own parts)::

    transformer/   config.json + diffusion_pytorch_model.safetensors (or .safetensors.index.json + shards)
    vae/           config.json + diffusion_pytorch_model.safetensors
    text_encoder/  optional: umT5 for prompts, config.json + model.safetensors (or index + shards)
    tokenizer/     optional, with text_encoder: tokenizer_config.json (+ its vocabulary files)
    addon/         optional: the Mirage memory branch, config.json + diffusion_pytorch_model.safetensors
    lora/          optional: adapter_config.json + adapter_model.safetensors (peft)

Missing optional parts are fine (a missing add-on is created zero-initialised: the memory has no effect until it is
trained); a part that is present but incomplete is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


class MissingWeightsError(FileNotFoundError):
    """Required weight files are missing from the weights directory."""


@dataclass(frozen=True)
class Part:
    """One sub-directory of the weights directory: its files and what it is for."""

    name: str
    config: str
    weights: str | None  # a safetensors file that may also come sharded (``<weights>.index.json`` + shards)
    required: bool
    purpose: str

    def problems(self, root: Path) -> list[str]:
        """Missing files of this part under ``root`` (empty when complete)."""
        folder = root / self.name
        missing = [] if (folder / self.config).is_file() else [f"{self.name}/{self.config}"]
        if self.weights is not None:
            missing += _missing_weights(folder, self.weights, self.name)
        return missing

    def exists(self, root: Path) -> bool:
        return (root / self.name).is_dir()


def _missing_weights(folder: Path, weights: str, name: str) -> list[str]:
    if (folder / weights).is_file():
        return []
    index = folder / f"{weights}.index.json"
    if not index.is_file():
        return [f"{name}/{weights} (or {weights}.index.json + shards)"]
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return [f"{name}/{shard}" for shard in shards if not (folder / shard).is_file()]


PARTS = (
    Part("transformer", "config.json", DIFFUSERS_WEIGHTS, True, "Wan2.2 DiT (diffusers layout)"),
    Part("vae", "config.json", DIFFUSERS_WEIGHTS, True, "Wan2.2 VAE (diffusers layout)"),
    Part("text_encoder", "config.json", "model.safetensors", False, "umT5 text encoder, for prompts"),
    Part("tokenizer", "tokenizer_config.json", None, False, "umT5 tokenizer, needed with text_encoder"),
    Part("addon", "config.json", DIFFUSERS_WEIGHTS, False, "Mirage memory branch (zero effect when absent)"),
    Part("lora", "adapter_config.json", "adapter_model.safetensors", False, "Mirage LoRA (peft)"),
)


def expected_files(root: Path | None, preset_name: str) -> str:
    """A readable list of the files ``from_preset`` looks for, with what is missing under ``root``."""
    lines = [f"Weights for preset {preset_name!r} are read from a local directory only (nothing is downloaded).",
             "Pass weights_dir=DIR holding the diffusers layout of Wan2.2-TI2V-5B plus the Mirage parts:"]
    for part in PARTS:
        files = f"{part.name}/{part.config}" + (f", {part.name}/{part.weights}" if part.weights else "")
        status = ""
        if root is not None:
            problems = part.problems(root)
            status = "ok" if not problems else ("MISSING " + ", ".join(problems) if part.required
                                                or part.exists(root) else "absent (optional)")
        kind = "required" if part.required else "optional"
        lines.append(f"  {files:<64} {kind:<8} {part.purpose}" + (f"  [{status}]" if status else ""))
    lines.append("For example: huggingface-cli download Wan-AI/Wan2.2-TI2V-5B-Diffusers --local-dir DIR "
                 "(run it yourself), then put the Mirage addon/ and lora/ folders beside transformer/ and vae/.")
    return "\n".join(lines)


def shipped_weights_dir(preset_name: str) -> Path:
    """The trained weights a preset ships inside the package (``mirage_env/data/<preset>/``, tiny only)."""
    root = Path(str(resources.files("mirage_env").joinpath("data", preset_name)))
    if not root.is_dir():
        raise MissingWeightsError(f"the package has no shipped weights for preset {preset_name!r} (looked in "
                                  f"{root}); reinstall mirage-env, or pass random_weights=True for random weights, or "
                                  "train them with `mirage-env train tiny`.")
    return root


def check_weights_dir(root: Path, preset_name: str) -> set[str]:
    """Names of the parts present under ``root``; raise MissingWeightsError if anything needed is missing."""
    if not root.is_dir():
        raise MissingWeightsError(f"weights directory {root} does not exist.\n" + expected_files(None, preset_name))
    present, broken = set(), False
    for part in PARTS:
        if part.required or part.exists(root):
            broken |= bool(part.problems(root))
            present.add(part.name)
    if ("text_encoder" in present) != ("tokenizer" in present):
        broken = True
    if broken:
        raise MissingWeightsError(f"incomplete weights directory {root}.\n" + expected_files(root, preset_name))
    return present
