"""``mirage-env convert``: checkpoints in the original Wan2.2 and Mirage release formats, built here at the tiny
preset's shapes, convert into the layout ``from_preset`` reads, compute what the release computes, and bad input is
refused before anything is written."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file, save_file

from mirage_env.cli import main
from mirage_env.models import from_preset, load_preset
from mirage_env.models.addon import MemoryBranch
from mirage_env.models.convert import (
    MissingTensorsError,
    PickleRefusedError,
    TensorShapeError,
    UnplacedTensorsError,
    convert_weights,
)
from mirage_env.models.convert import layout
from mirage_env.models.convert.placing import place
from mirage_env.models.convert.reading import TensorFile, strip_prefixes
from mirage_env.models.convert.wan_names import dit_name, vae_name
from mirage_env.models.loading import shipped_weights_dir
from mirage_env.models.manifest import MANIFEST_FILE, verify_manifest
from mirage_env.models.presets import build_transformer
from mirage_env.models.weight_files import module_shapes

TINY = load_preset("tiny")
DIM = TINY.transformer["num_attention_heads"] * TINY.transformer["attention_head_dim"]
HEADS = TINY.transformer["num_attention_heads"]
FFN = TINY.transformer["ffn_dim"]
EPS = TINY.transformer["eps"]


def _random(shape: tuple[int, ...], generator: torch.Generator, around: float = 0.0) -> torch.Tensor:
    return around + 0.1 * torch.randn(shape, generator=generator)


# ---------------------------------------------------------------- the release's formats, written from its description
def _wan_block_shapes(cross: bool = True) -> dict[str, tuple[int, ...]]:
    """A Wan DiT block under its original names (self/cross attention, affine cross-attention norm3, FFN)."""
    shapes = {"modulation": (1, 6, DIM), "norm3.weight": (DIM,), "norm3.bias": (DIM,), "ffn.0.weight": (FFN, DIM),
              "ffn.0.bias": (FFN,), "ffn.2.weight": (DIM, FFN), "ffn.2.bias": (DIM,)}
    for attn in ("self_attn", "cross_attn") if cross else ("self_attn",):
        for proj in "qkvo":
            shapes |= {f"{attn}.{proj}.weight": (DIM, DIM), f"{attn}.{proj}.bias": (DIM,)}
        shapes |= {f"{attn}.norm_q.weight": (DIM,), f"{attn}.norm_k.weight": (DIM,)}
    return shapes


def release_vace(seed: int = 0, prefix: str = "pipe.vace.") -> dict[str, torch.Tensor]:
    """A ``step_NNNNNNN_vace.safetensors`` state dict for the tiny preset: patch embedding (memory + visibility
    channels) and one VACE block per branch layer, before_proj on block 0, after_proj on all (non-zero)."""
    g = torch.Generator().manual_seed(seed)
    state = {"vace_patch_embedding.weight": _random((DIM, TINY.addon_in_channels, 1, 2, 2), g),
             "vace_patch_embedding.bias": _random((DIM,), g)}
    for n in range(len(TINY.addon_layers)):
        shapes = _wan_block_shapes() | {"after_proj.weight": (DIM, DIM), "after_proj.bias": (DIM,)}
        if n == 0:
            shapes |= {"before_proj.weight": (DIM, DIM), "before_proj.bias": (DIM,)}
        for name, shape in shapes.items():
            norm = name.startswith("norm3.weight") or ".norm_" in name
            state[f"vace_blocks.{n}.{name}"] = _random(shape, g, 1.0 if norm else 0.0)
    return {prefix + k: v for k, v in state.items()}


def release_lora(rank: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    """A ``step_NNNNNNN_lora.safetensors`` state dict: A and B (both non-zero) on q/k/v/o and ffn.0/2 of every
    block, under the release's names."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(TINY.transformer["num_layers"]):
        modules = {f"{a}.{p}": (DIM, DIM) for a in ("self_attn", "cross_attn") for p in "qkvo"}
        modules |= {"ffn.0": (DIM, FFN), "ffn.2": (FFN, DIM)}
        for module, (d_in, d_out) in modules.items():
            state[f"pipe.dit.blocks.{i}.{module}.lora_A.weight"] = _random((rank, d_in), g)
            state[f"pipe.dit.blocks.{i}.{module}.lora_B.weight"] = _random((d_out, rank), g)
    return state


_TO_ORIGINAL = (("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
                ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
                ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
                ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
                ("condition_embedder.time_proj.", "time_projection.1."), (".attn1.", ".self_attn."),
                (".attn2.", ".cross_attn."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
                (".to_out.0.", ".o."), (".norm2.", ".norm3."), (".ffn.net.0.proj.", ".ffn.0."),
                (".ffn.net.2.", ".ffn.2."), (".scale_shift_table", ".modulation"), ("proj_out.", "head.head."))


def original_name(diffusers_name: str) -> str:
    """The original Wan DiT name of a diffusers name (written from Wan's ``WanModel``, not from the converter)."""
    if diffusers_name == "scale_shift_table":
        return "head.modulation"
    for ours, theirs in _TO_ORIGINAL:
        diffusers_name = diffusers_name.replace(ours, theirs)
    return diffusers_name


def original_vae_shapes(vae: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a Wan2.2 VAE (``wan/modules/vae2_2.py``: ``WanVAE_`` with ``Down_ResidualBlock`` /
    ``Up_ResidualBlock`` stages) for a diffusers VAE config."""
    shapes: dict[str, tuple[int, ...]] = {}
    z, mult, blocks = vae["z_dim"], vae["dim_mult"], vae["num_res_blocks"]

    def resnet(prefix: str, d_in: int, d_out: int) -> None:
        shapes.update({f"{prefix}.residual.0.gamma": (d_in, 1, 1, 1), f"{prefix}.residual.2.weight":
                       (d_out, d_in, 3, 3, 3), f"{prefix}.residual.2.bias": (d_out,), f"{prefix}.residual.3.gamma":
                       (d_out, 1, 1, 1), f"{prefix}.residual.6.weight": (d_out, d_out, 3, 3, 3),
                       f"{prefix}.residual.6.bias": (d_out,)})
        if d_in != d_out:
            shapes.update({f"{prefix}.shortcut.weight": (d_out, d_in, 1, 1, 1), f"{prefix}.shortcut.bias": (d_out,)})

    def middle(side: str, d: int) -> None:
        resnet(f"{side}.middle.0", d, d)
        shapes.update({f"{side}.middle.1.norm.gamma": (d, 1, 1), f"{side}.middle.1.to_qkv.weight": (3 * d, d, 1, 1),
                       f"{side}.middle.1.to_qkv.bias": (3 * d,), f"{side}.middle.1.proj.weight": (d, d, 1, 1),
                       f"{side}.middle.1.proj.bias": (d,)})
        resnet(f"{side}.middle.2", d, d)

    def stages(side: str, kind: str, dims: list[int], repeats: int, temporal: list[bool], time_out: int) -> None:
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            for j in range(repeats):
                resnet(f"{side}.{kind}.{i}.{kind}.{j}", d_in if j == 0 else d_out, d_out)
            if i != len(mult) - 1:
                sampler = f"{side}.{kind}.{i}.{kind}.{repeats}"
                shapes.update({f"{sampler}.resample.1.weight": (d_out, d_out, 3, 3),
                               f"{sampler}.resample.1.bias": (d_out,)})
                if i < len(temporal) and temporal[i]:
                    shapes.update({f"{sampler}.time_conv.weight": (time_out * d_out, d_out, 3, 1, 1),
                                   f"{sampler}.time_conv.bias": (time_out * d_out,)})

    dims = [vae["base_dim"] * u for u in [1, *mult]]
    shapes.update({"encoder.conv1.weight": (dims[0], 12, 3, 3, 3), "encoder.conv1.bias": (dims[0],)})
    stages("encoder", "downsamples", dims, blocks, vae["temperal_downsample"], 1)
    middle("encoder", dims[-1])
    shapes.update({"encoder.head.0.gamma": (dims[-1], 1, 1, 1), "encoder.head.2.weight": (2 * z, dims[-1], 3, 3, 3),
                   "encoder.head.2.bias": (2 * z,), "conv1.weight": (2 * z, 2 * z, 1, 1, 1), "conv1.bias": (2 * z,),
                   "conv2.weight": (z, z, 1, 1, 1), "conv2.bias": (z,)})
    dims = [vae["decoder_base_dim"] * u for u in [mult[-1], *mult[::-1]]]
    shapes.update({"decoder.conv1.weight": (dims[0], z, 3, 3, 3), "decoder.conv1.bias": (dims[0],)})
    middle("decoder", dims[0])
    stages("decoder", "upsamples", dims, blocks + 1, vae["temperal_downsample"][::-1], 2)
    shapes.update({"decoder.head.0.gamma": (dims[-1], 1, 1, 1), "decoder.head.2.weight": (12, dims[-1], 3, 3, 3),
                   "decoder.head.2.bias": (12,)})
    return shapes


def write_original_wan(folder: Path, seed: int = 2, shards: int = 2) -> dict[str, torch.Tensor]:
    """An original-format Wan2.2 folder at tiny shapes: the DiT in ``shards`` files (+ index when more than one),
    its WanModel config.json, the VAE
    as ``Wan2.2_VAE.pth``, and the text-encoder files the converter leaves alone. Returns the DiT's diffusers
    state dict (the truth the conversion must give back)."""
    folder.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dit = build_transformer(TINY).state_dict()
    original = {original_name(k): v for k, v in dit.items()}
    names = sorted(original)
    files = {f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors": names[i::shards]
             for i in range(shards)} if shards > 1 else {"diffusion_pytorch_model.safetensors": names}
    for file, keys in files.items():
        save_file({k: original[k].contiguous() for k in keys}, str(folder / file))
    if shards > 1:
        index = {"metadata": {}, "weight_map": {k: file for file, keys in files.items() for k in keys}}
        (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    t = TINY.transformer
    (folder / "config.json").write_text(json.dumps(
        {"_class_name": "WanModel", "dim": DIM, "num_heads": HEADS, "ffn_dim": FFN, "num_layers": t["num_layers"],
         "in_dim": t["in_channels"], "out_dim": t["out_channels"], "freq_dim": t["freq_dim"], "text_len": 512}))
    g = torch.Generator().manual_seed(seed)
    torch.save({k: _random(s, g, 1.0 if "gamma" in k else 0.0) for k, s in original_vae_shapes(TINY.vae).items()},
               folder / "Wan2.2_VAE.pth")
    (folder / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(b"not read")
    (folder / "google" / "umt5-xxl").mkdir(parents=True)
    return dit


def tiny_weights_copy(folder: Path) -> Path:
    """The shipped tiny weights (DiT, VAE, add-on, LoRA, manifest) copied to ``folder``."""
    shutil.copytree(shipped_weights_dir("tiny"), folder)
    return folder


# ---------------------------------------------------------------- the release's VACE semantics, re-implemented
def _rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight


def _rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Wan's rope_apply: channel pairs of every head as complex numbers, turned by the token's angles."""
    b, s, _ = x.shape
    pairs = torch.view_as_complex(x.double().reshape(b, s, HEADS, -1, 2))
    turned = pairs * torch.polar(torch.ones_like(angles), angles)[None, :, None]
    return torch.view_as_real(turned).reshape(b, s, -1).float()


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    b, s, _ = q.shape
    q, k, v = (t.reshape(b, t.shape[1], HEADS, -1).transpose(1, 2) for t in (q, k, v))
    weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
    return (weights @ v).transpose(1, 2).reshape(b, s, -1)


def release_block(p: dict, c: torch.Tensor, context: torch.Tensor, e: torch.Tensor, angles: torch.Tensor):
    """One Wan block of the release (per-token modulation e [B, S, 6, dim], Wan2.2 TI2V)."""
    def lin(name, x):
        return F.linear(x, p[f"{name}.weight"], p[f"{name}.bias"])

    shift, scale, gate, c_shift, c_scale, c_gate = (t.squeeze(2) for t in (p["modulation"][None] + e).chunk(6, 2))
    y = F.layer_norm(c, (DIM,), eps=EPS) * (1 + scale) + shift
    q = _rope(_rms(lin("self_attn.q", y), p["self_attn.norm_q.weight"]), angles)
    k = _rope(_rms(lin("self_attn.k", y), p["self_attn.norm_k.weight"]), angles)
    c = c + lin("self_attn.o", _attention(q, k, lin("self_attn.v", y))) * gate
    y = F.layer_norm(c, (DIM,), p["norm3.weight"], p["norm3.bias"], EPS)
    q = _rms(lin("cross_attn.q", y), p["cross_attn.norm_q.weight"])
    k = _rms(lin("cross_attn.k", context), p["cross_attn.norm_k.weight"])
    c = c + lin("cross_attn.o", _attention(q, k, lin("cross_attn.v", context)))
    y = F.layer_norm(c, (DIM,), eps=EPS) * (1 + c_scale) + c_shift
    return c + lin("ffn.2", F.gelu(lin("ffn.0", y), approximate="tanh")) * c_gate


def release_hints(state: dict, control, x, context, e, angles) -> dict[int, torch.Tensor]:
    """VACE: c = patch_embed(control); block 0: c = before_proj(c) + x; each block: c = block(c), hint =
    after_proj(c), added after DiT layer ``vace_layers[n]``."""
    state = {strip_prefixes(k): v for k, v in state.items()}
    c = F.conv3d(control, state["vace_patch_embedding.weight"], state["vace_patch_embedding.bias"], stride=(1, 2, 2))
    c = c.flatten(2).transpose(1, 2)
    hints = {}
    for n, layer in enumerate(TINY.addon_layers):
        p = {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"vace_blocks.{n}.")}
        if n == 0:
            c = F.linear(c, p["before_proj.weight"], p["before_proj.bias"]) + x
        c = release_block(p, c, context, e, angles)
        hints[layer] = F.linear(c, p["after_proj.weight"], p["after_proj.bias"])
    return hints


# ---------------------------------------------------------------- tests
def test_prefixes_are_stripped_in_any_nesting():
    assert strip_prefixes("module.pipe.vace.vace_blocks.0.after_proj.weight") == "vace_blocks.0.after_proj.weight"
    assert strip_prefixes("pipe.dit.blocks.1.ffn.0.lora_A.weight") == "blocks.1.ffn.0.lora_A.weight"
    assert strip_prefixes("model.diffusion_model.blocks.0.norm3.bias") == "blocks.0.norm3.bias"
    assert strip_prefixes("vace.vace_patch_embedding.bias") == "vace_patch_embedding.bias"


@pytest.mark.parametrize("shards", [1, 2])
def test_every_key_of_an_original_wan_folder_converts_and_loads(tmp_path, shards):
    dit = write_original_wan(tmp_path / "Wan2.2-TI2V-5B", shards=shards)
    report = convert_weights(tmp_path / "w", "tiny", wan=tmp_path / "Wan2.2-TI2V-5B")
    vae = AutoencoderKLWan(**TINY.vae).state_dict()
    assert report.tensors == {"transformer": len(dit), "vae": len(vae)}
    assert report.not_converted == ["Wan2.2-TI2V-5B/google", "Wan2.2-TI2V-5B/models_t5_umt5-xxl-enc-bf16.pth"]
    converted = {}
    for file in sorted((tmp_path / "w/transformer").glob("*.safetensors")):
        converted |= load_file(str(file))
    assert len(list((tmp_path / "w/transformer").glob("*.index.json"))) == (shards > 1)
    assert converted.keys() == dit.keys() and all(torch.equal(converted[k], dit[k]) for k in dit)
    # every VAE tensor lands once, unchanged, at a place of its shape
    original_vae = torch.load(tmp_path / "Wan2.2-TI2V-5B/Wan2.2_VAE.pth", weights_only=True)
    converted_vae = load_file(str(tmp_path / "w/vae/diffusion_pytorch_model.safetensors"))
    assert converted_vae.keys() == vae.keys()
    assert all(torch.equal(converted_vae[vae_name(k)], v) for k, v in original_vae.items())
    assert verify_manifest(tmp_path / "w")
    model = from_preset("tiny", weights_dir=tmp_path / "w")  # no add-on yet: a fresh one
    assert torch.equal(model.dit.blocks[1].attn2.to_k.weight, dit["blocks.1.attn2.to_k.weight"])


def test_the_real_presets_original_names_all_have_a_place():
    """At the real preset's structure, from shapes alone (meta device): the original DiT names and the Wan2.2 VAE
    names (diffusers' installed VAE converter covers the Wan2.1 layout only) fill the diffusers modules."""
    real = load_preset("wan2.2-ti2v-5b")
    with torch.device("meta"):
        dit, vae = module_shapes(build_transformer(real)), module_shapes(AutoencoderKLWan(**real.vae))
    assert sorted(place("DiT", {original_name(k): s for k, s in dit.items()}, dit_name, dit).values()) == sorted(dit)
    assert sorted(place("VAE", original_vae_shapes(real.vae), vae_name, vae).values()) == sorted(vae)


def test_diffusers_installed_vae_converter_does_not_cover_the_wan22_layout():
    """Why ``vae_name`` exists: diffusers' ``convert_wan_vae_to_diffusers`` (Wan2.1 layout) leaves Wan2.2 VAE
    tensors without a place. Should diffusers learn the Wan2.2 layout, this fails and ``vae_name`` can go."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    with torch.device("meta"):
        expected = module_shapes(AutoencoderKLWan(**TINY.vae))
    with pytest.raises(UnplacedTensorsError, match=r"encoder\.downsamples\.0\.downsamples\.0\.residual"):
        place("VAE", original_vae_shapes(TINY.vae), lambda k: next(iter(convert_wan_vae_to_diffusers({k: None}))),
              expected)


def test_converted_vace_branch_computes_the_release_hints(tmp_path):
    state = release_vace()
    save_file(state, str(tmp_path / "step_0001000_vace.safetensors"))
    target = tiny_weights_copy(tmp_path / "w")
    report = convert_weights(target, "tiny", vace=tmp_path / "step_0001000_vace.safetensors")
    assert report.tensors == {"addon": len(state) + 1}
    assert [f.split()[0] for f in report.filled] == ["addon/null_context"]
    branch = from_preset("tiny", weights_dir=target).transformer.branch
    assert torch.equal(branch.null_context, torch.zeros_like(branch.null_context))

    g = torch.Generator().manual_seed(3)
    t, h, w = 2, 4, 6
    tokens = t * (h // 2) * (w // 2)
    control = torch.randn(1, TINY.addon_in_channels, t, h, w, generator=g)
    x, context = torch.randn(1, tokens, DIM, generator=g), torch.randn(1, 5, DIM, generator=g)
    e = 0.1 * torch.randn(1, tokens, 6, DIM, generator=g)
    angles = torch.rand(tokens, DIM // HEADS // 2, generator=g, dtype=torch.float64) * 6.3
    cos, sin = (f(angles).float().repeat_interleave(2, -1).repeat(1, HEADS)[None, :, None] for f in
                (torch.cos, torch.sin))
    rotary = (cos[..., :DIM // HEADS], sin[..., :DIM // HEADS])
    with torch.no_grad():
        ours = branch(control, x, context, e, rotary)
        theirs = release_hints(state, control, x, context, e, angles)
    assert ours.keys() == theirs.keys() == set(TINY.addon_layers)
    for layer in ours:
        assert theirs[layer].abs().max() > 0.1
        torch.testing.assert_close(ours[layer], theirs[layer], rtol=1e-4, atol=1e-5)


def test_converted_lora_adds_b_a_times_alpha_over_rank(tmp_path):
    rank, alpha = 4, 6.0
    state = release_lora(rank)
    save_file(state, str(tmp_path / "step_0001000_lora.safetensors"))
    target = tiny_weights_copy(tmp_path / "w")
    convert_weights(target, "tiny", lora=tmp_path / "step_0001000_lora.safetensors", lora_alpha=alpha)
    config = json.loads((target / "lora/adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (rank, alpha)
    dit = from_preset("tiny", weights_dir=target).dit
    g = torch.Generator().manual_seed(4)
    checked = 0
    for name, module in dit.named_modules():
        if not hasattr(module, "base_layer"):
            continue
        release = "pipe.dit." + original_name(f"{name}.weight").removesuffix(".weight")
        a, b = state[f"{release}.lora_A.weight"], state[f"{release}.lora_B.weight"]
        x = torch.randn(3, module.in_features, generator=g)
        with torch.no_grad():
            change = module(x) - module.base_layer(x)
        torch.testing.assert_close(change, x @ a.T @ b.T * (alpha / rank), rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked == len(state) // 2


def test_cli_converts_everything_into_one_loadable_folder(tmp_path, capsys):
    write_original_wan(tmp_path / "wan")
    save_file(release_vace(prefix="module.vace."), str(tmp_path / "vace.safetensors"))
    save_file(release_lora(), str(tmp_path / "lora.safetensors"))
    main(["convert", str(tmp_path / "w"), "--preset", "tiny", "--wan", str(tmp_path / "wan"), "--vace",
          str(tmp_path / "vace.safetensors"), "--lora", str(tmp_path / "lora.safetensors"), "--lora-rank", "4"])
    report = json.loads(capsys.readouterr().out)
    assert set(report["tensors"]) == {"transformer", "vae", "addon", "lora"}
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["addon", "lora", MANIFEST_FILE, "transformer",
                                                                   "vae"]
    model = from_preset("tiny", weights_dir=tmp_path / "w")
    assert isinstance(model.transformer.branch, MemoryBranch)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(tmp_path / "w2"), "--preset", "tiny"])
    assert exit_info.value.code == 2 and "nothing to convert" in capsys.readouterr().err


def _refused(tmp_path: Path, error: type[Exception], match: str, **inputs) -> None:
    """Converting ``inputs`` into a new folder and into a copy of the tiny weights raises ``error``; the new folder
    does not appear and the copy is unchanged."""
    existing = tiny_weights_copy(tmp_path / "existing")
    before = {p.relative_to(existing): p.read_bytes() for p in existing.rglob("*") if p.is_file()}
    for target in (tmp_path / "new", existing):
        with pytest.raises(error, match=match):
            convert_weights(target, "tiny", **inputs)
    assert not (tmp_path / "new").exists()
    assert {p.relative_to(existing): p.read_bytes() for p in existing.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_unplaced_tensors_are_refused_by_name(tmp_path):
    state = release_vace() | {"pipe.vace.vace_blocks.1.extra_gate": torch.ones(3),
                              "pipe.vace.vace_blocks.1.before_proj.weight": torch.ones(DIM, DIM)}
    save_file(state, str(tmp_path / "vace.safetensors"))
    _refused(tmp_path, UnplacedTensorsError, r"2 tensors have no place.*vace_blocks\.1\.before_proj\.weight \(as "
             r"blocks\.1\.proj_in\.weight\), vace_blocks\.1\.extra_gate", vace=tmp_path / "vace.safetensors")


def test_missing_and_misshaped_tensors_are_refused_by_name(tmp_path):
    state = release_vace()
    del state["pipe.vace.vace_blocks.1.ffn.2.bias"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    _refused(tmp_path, MissingTensorsError, r"blocks\.1\.ffn\.net\.2\.bias", vace=tmp_path / "missing.safetensors")
    state = release_vace() | {"pipe.vace.vace_patch_embedding.weight": torch.ones(DIM, 48, 1, 2, 2)}
    save_file(state, str(tmp_path / "misshaped.safetensors"))
    _refused(tmp_path / "b", TensorShapeError, r"vace_patch_embedding\.weight \[128, 48, 1, 2, 2\]",
             vace=tmp_path / "misshaped.safetensors")


def test_pickles_that_need_full_unpickling_are_refused(tmp_path):
    state = release_vace()
    torch.save(state | {"args": argparse.Namespace(lr=1e-4)}, tmp_path / "vace.pth")
    _refused(tmp_path, PickleRefusedError, "refusing to unpickle", vace=tmp_path / "vace.pth")
    torch.save(state, tmp_path / "plain.pth", _use_new_zipfile_serialization=False)  # weights-only, no mmap
    assert TensorFile.open(tmp_path / "plain.pth").shapes["vace_patch_embedding.bias"] == (DIM,)


def test_lora_rank_and_wan_config_must_fit(tmp_path):
    save_file(release_lora(rank=4), str(tmp_path / "lora.safetensors"))
    _refused(tmp_path, ValueError, "lora_rank=8 but the factors", lora=tmp_path / "lora.safetensors", lora_rank=8)
    save_file({"pipe.dit.blocks.0.norm3.lora_A.weight": torch.ones(4, DIM)}, str(tmp_path / "odd.safetensors"))
    _refused(tmp_path / "c", UnplacedTensorsError, r"blocks\.0\.norm3\.lora_A\.weight",
             lora=tmp_path / "odd.safetensors")
    write_original_wan(tmp_path / "wan")
    config = json.loads((tmp_path / "wan/config.json").read_text())
    (tmp_path / "wan/config.json").write_text(json.dumps(config | {"num_heads": 8}))
    _refused(tmp_path / "b", ValueError, "num_heads: 8, preset has 4", wan=tmp_path / "wan")


def test_a_failure_while_writing_leaves_the_target_as_it_was(tmp_path, monkeypatch):
    save_file(release_vace(), str(tmp_path / "vace.safetensors"))
    save_file(release_lora(), str(tmp_path / "lora.safetensors"))
    calls = []

    def failing_save(tensors, path):
        calls.append(path)
        if len(calls) % 2 == 0:  # the second file of each conversion
            raise OSError("disk full")
        save_file(tensors, path)

    monkeypatch.setattr(layout, "save_file", failing_save)
    _refused(tmp_path, OSError, "disk full", vace=tmp_path / "vace.safetensors", lora=tmp_path / "lora.safetensors")
