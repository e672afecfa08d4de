"""Convert the weights users have into the layout :func:`~mirage_env.models.wan.from_preset` reads.

Inputs (any of them): the original Wan2.2 release folder (``wan``: the DiT as
``diffusion_pytorch_model.safetensors`` or ``diffusion_pytorch_model.safetensors.index.json`` + shards, original key
names; the VAE as ``Wan2.2_VAE.pth``), and the Mirage release's ``step_NNNNNNN_vace.safetensors`` (``vace``) and
``step_NNNNNNN_lora.safetensors`` (``lora``). Each becomes one part of ``target``: transformer/ + vae/, addon/,
lora/. Everything is read and checked before anything is written: every input tensor must have a place of the
same shape in the preset's modules (built on the meta device) and every tensor of those modules must be filled
(:mod:`.placing`); the one exception is the add-on's learned null context, which the release lacks: it is set to
zeros and the report says so. The converted parts then replace those of ``target`` atomically (its other entries,
such as text_encoder/, stay), and ``target``'s ``manifest.json`` is written anew over the result.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mirage_env.atomic import atomic_dir, check_writable
from mirage_env.models import lora as lora_ops
from mirage_env.models.addon import build_addon
from mirage_env.models.convert.placing import place
from mirage_env.models.convert.reading import TensorFile
from mirage_env.models.convert.release_names import lora_name, vace_name
from mirage_env.models.convert.wan_names import dit_name, vae_name
from mirage_env.models.loading import DIFFUSERS_WEIGHTS
from mirage_env.models.manifest import MANIFEST_FILE, write_manifest
from mirage_env.models.presets import Preset, build_transformer, build_vae, load_preset
from mirage_env.models.weight_files import Shapes, module_shapes

WAN_VAE_FILE = "Wan2.2_VAE.pth"
WAN_INDEX_FILE = f"{DIFFUSERS_WEIGHTS}.index.json"
NULL_CONTEXT = "null_context"
# Fields of the original Wan ``config.json`` (``WanModel``) and what the preset says for each.
_WAN_CONFIG_FIELDS = {"dim": lambda t: t["num_attention_heads"] * t["attention_head_dim"],
                      "num_heads": lambda t: t["num_attention_heads"], "ffn_dim": lambda t: t["ffn_dim"],
                      "num_layers": lambda t: t["num_layers"], "in_dim": lambda t: t["in_channels"],
                      "out_dim": lambda t: t["out_channels"], "freq_dim": lambda t: t["freq_dim"],
                      "text_dim": lambda t: t["text_dim"]}


@dataclass
class ConversionReport:
    """What :func:`convert_weights` wrote: tensors per part, tensors it had to make up, input files left out."""

    target: str
    tensors: dict[str, int] = field(default_factory=dict)
    filled: list[str] = field(default_factory=list)
    not_converted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Part:
    """One output folder: its config, and for every output file the input file and its placed names."""

    name: str
    config: Any  # a diffusers ConfigMixin (save_config) or a peft LoraConfig (save_pretrained)
    files: dict[str, tuple[TensorFile, dict[str, str]]]
    zeros: dict[str, tuple[int, ...]] = field(default_factory=dict)  # made-up tensors, in the first file
    index: str | None = None  # the shard index to write when there are several files

    def write(self, root: Path) -> int:
        """Write the part under ``root``, one input file in memory at a time; returns the tensors written."""
        folder = root / self.name
        folder.mkdir()
        if hasattr(self.config, "save_config"):
            self.config.save_config(folder)
        else:
            self.config.save_pretrained(str(folder))
        weight_map: dict[str, str] = {}
        for output, (source, placed) in self.files.items():
            loaded = source.tensors()
            tensors = {target: loaded[name].contiguous() for name, target in placed.items()}
            if not weight_map:
                dtype = next(iter(tensors.values())).dtype
                tensors.update({name: torch.zeros(shape, dtype=dtype) for name, shape in self.zeros.items()})
            save_file(tensors, str(folder / output))
            weight_map.update(dict.fromkeys(tensors, output))
        if self.index is not None:
            index = {"metadata": {"total_size": sum((folder / f).stat().st_size for f in self.files)},
                     "weight_map": dict(sorted(weight_map.items()))}
            (folder / self.index).write_text(json.dumps(index, indent=1) + "\n")
        return len(weight_map)


def _on_meta(build):
    with torch.device("meta"):
        return build()


def _wan_parts(folder: Path, preset: Preset, report: ConversionReport) -> list[_Part]:
    """transformer/ and vae/ from the original Wan2.2 release folder."""
    if not folder.is_dir():
        raise FileNotFoundError(f"Wan folder {folder} does not exist")
    _check_wan_config(folder, preset)
    shards, read = _dit_files(folder)
    dit = _on_meta(lambda: build_transformer(preset))
    found: Shapes = {}
    for shard in shards:
        if shared := found.keys() & shard.shapes.keys():
            raise ValueError(f"{shard.path}: holds {sorted(shared)[:5]} once more (prefixes stripped)")
        found.update(shard.shapes)
    placed = place(f"DiT in {folder}", found, dit_name, module_shapes(dit))
    names = [DIFFUSERS_WEIGHTS] if len(shards) == 1 else \
        [f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    dit_files = {name: (shard, {k: placed[k] for k in shard.shapes}) for name, shard in zip(names, shards)}
    if not (folder / WAN_VAE_FILE).is_file():
        raise FileNotFoundError(f"Wan folder {folder} has no {WAN_VAE_FILE} (the Wan2.2 VAE)")
    vae_file = TensorFile.open(folder / WAN_VAE_FILE)
    vae = _on_meta(lambda: build_vae(preset))
    vae_placed = place(f"VAE {vae_file.path}", vae_file.shapes, vae_name, module_shapes(vae))
    read |= {WAN_VAE_FILE, "config.json"}
    report.not_converted += [f"{folder.name}/{entry.name}" for entry in sorted(folder.iterdir())
                             if entry.name not in read and not entry.name.startswith(".")]
    index = None if len(shards) == 1 else WAN_INDEX_FILE
    return [_Part("transformer", dit, dit_files, index=index),
            _Part("vae", vae, {DIFFUSERS_WEIGHTS: (vae_file, vae_placed)})]


def _dit_files(folder: Path) -> tuple[list[TensorFile], set[str]]:
    """The DiT's checkpoint files of a Wan folder (one file, or the shards its index lists, each holding exactly
    the tensors the index gives it), with the names of the files read."""
    if (folder / DIFFUSERS_WEIGHTS).is_file():
        return [TensorFile.open(folder / DIFFUSERS_WEIGHTS)], {DIFFUSERS_WEIGHTS}
    index = folder / WAN_INDEX_FILE
    if not index.is_file():
        raise FileNotFoundError(f"Wan folder {folder} has neither {DIFFUSERS_WEIGHTS} nor {WAN_INDEX_FILE}")
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{index}: not a readable shard index ({error!r})") from None
    shards = []
    for shard_name in sorted(set(weight_map.values())):
        shard = TensorFile.open(folder / shard_name)
        if set(shard.stored.values()) != {k for k, v in weight_map.items() if v == shard_name}:
            raise ValueError(f"{shard.path}: holds other tensors than {index.name} lists for it")
        shards.append(shard)
    return shards, {WAN_INDEX_FILE, *weight_map.values()}


def _check_wan_config(folder: Path, preset: Preset) -> None:
    """The original ``config.json`` (when there is one) must describe the preset's DiT (the head count, for one,
    does not show in the tensor shapes)."""
    path = folder / "config.json"
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable JSON config ({error})") from None
    wrong = {k: (config[k], want(preset.transformer)) for k, want in _WAN_CONFIG_FIELDS.items()
             if k in config and config[k] != want(preset.transformer)}
    if wrong:
        raise ValueError(f"{path} describes another model than preset {preset.name!r}: "
                         + ", ".join(f"{k}: {got}, preset has {want}" for k, (got, want) in wrong.items()))


def _addon_part(path: Path, preset: Preset, report: ConversionReport) -> _Part:
    """addon/ from the release's VACE checkpoint; the null context it lacks is zero."""
    source = TensorFile.open(path)
    branch = _on_meta(lambda: build_addon(preset))
    expected = module_shapes(branch)
    placed = place(f"VACE checkpoint {path}", source.shapes, vace_name, expected, may_miss=(NULL_CONTEXT,))
    zeros = {}
    if NULL_CONTEXT not in placed.values():
        zeros[NULL_CONTEXT] = expected[NULL_CONTEXT]
        report.filled.append(f"addon/{NULL_CONTEXT} {list(expected[NULL_CONTEXT])}: zeros (the release has no "
                             "learned null context; without text_encoder/ the context is this one zero token)")
    return _Part("addon", branch, {DIFFUSERS_WEIGHTS: (source, placed)}, zeros)


def _lora_part(path: Path, preset: Preset, alpha: float, rank: int | None) -> _Part:
    """lora/ from the release's LoRA checkpoint: rank from its factors, alpha given (the file does not hold it)."""
    source = TensorFile.open(path)
    ranks = {shape[0] for name, shape in source.shapes.items() if name.endswith("lora_A.weight")}
    if len(ranks) != 1:
        raise ValueError(f"LoRA checkpoint {path}: expected lora_A factors of one rank, found ranks {sorted(ranks)}")
    (found_rank,) = ranks
    if rank is not None and rank != found_rank:
        raise ValueError(f"lora_rank={rank} but the factors in {path} have rank {found_rank}")
    targets = sorted({name.split(".", 2)[2].rsplit(".lora_", 1)[0] for name in map(lora_name, source.shapes)
                      if name is not None})  # blocks.{i}.<target>.lora_{A,B}.weight
    settings = lora_ops.LoraSettings(rank=found_rank, alpha=alpha, dropout=preset.lora["dropout"],
                                     targets=tuple(targets))
    expected: Shapes = {}
    if targets:  # none: every tensor is unplaced, which place() reports
        dit = _on_meta(lambda: build_transformer(preset))
        _on_meta(lambda: lora_ops.add_lora(dit, settings))
        expected = lora_ops.adapter_shapes(dit)
    placed = place(f"LoRA checkpoint {path}", source.shapes, lora_name, expected)
    return _Part("lora", settings.config(), {lora_ops.WEIGHTS_FILE: (source, placed)})


def convert_weights(target: str | Path, preset: str = "wan2.2-ti2v-5b", wan: str | Path | None = None,
                    vace: str | Path | None = None, lora: str | Path | None = None, lora_alpha: float = 32.0,
                    lora_rank: int | None = None) -> ConversionReport:
    """Convert the original Wan2.2 folder ``wan`` and/or the release's ``vace`` / ``lora`` checkpoints into the
    weights folder ``target`` of preset ``preset`` (see the module docstring); returns what was done.

    ``lora_alpha`` is the LoRA's alpha (the release's default 32; its files do not hold it); ``lora_rank``, when
    given, must be the rank of the factors. Raises before writing anything: ``UnplacedTensorsError``,
    ``MissingTensorsError``, ``TensorShapeError`` (:mod:`.placing`), ``PickleRefusedError`` (:mod:`.reading`),
    ``FileNotFoundError`` or ``ValueError`` naming the file.
    """
    if wan is None and vace is None and lora is None:
        raise ValueError("nothing to convert: pass wan (a Wan2.2 folder), vace and/or lora (release checkpoints)")
    if not lora_alpha > 0:
        raise ValueError(f"lora_alpha must be > 0, got {lora_alpha}")
    target = check_writable(target, folder=True)
    spec = load_preset(preset)
    report = ConversionReport(target=str(target))
    parts = [] if wan is None else _wan_parts(Path(wan), spec, report)
    if vace is not None:
        parts.append(_addon_part(Path(vace), spec, report))
    if lora is not None:
        parts.append(_lora_part(Path(lora), spec, lora_alpha, lora_rank))
    with atomic_dir(target, parts=[part.name for part in parts] + [MANIFEST_FILE]) as temp:
        for part in parts:
            report.tensors[part.name] = part.write(temp)
    write_manifest(target)
    return report
