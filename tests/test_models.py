"""World-model backends: real-size layout on the meta device, the tiny preset end to end, LoRA, loading, depth."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mirage_env.envs import clear_model_cache, shared_model
from mirage_env.models import (
    MissingWeightsError,
    SegmentRequest,
    WorldModel,
    from_preset,
    load_preset,
)
from mirage_env.models.addon import build_addon
from mirage_env.models.loading import shipped_weights_dir
from mirage_env.models.manifest import verify_manifest, write_manifest
from mirage_env.models.depth import (
    Cameras,
    MemoryDepth,
    MonocularDepth,
    SimulatorDepth,
    align_scale_shift,
    fill_far,
)
from mirage_env.models.lora import (
    LoraSettings,
    add_lora,
    load_lora,
    merge_lora,
    save_lora,
    set_lora_enabled,
)
from mirage_env.models.presets import build_transformer, build_vae

H = W = 64


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- real configuration, no memory allocated
def test_real_dit_matches_diffusers_layout_on_meta():
    preset = load_preset("wan2.2-ti2v-5b")
    with torch.device("meta"):
        dit = build_transformer(preset)
    assert all(p.is_meta for p in dit.parameters())
    s = shapes(dit)
    assert s["patch_embedding.weight"] == (3072, 48, 1, 2, 2)
    assert s["condition_embedder.text_embedder.linear_1.weight"] == (3072, 4096)
    assert s["condition_embedder.time_proj.weight"] == (6 * 3072, 3072)
    for layer in (0, 29):
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                assert s[f"blocks.{layer}.{attn}.{proj}.weight"] == (3072, 3072)
        assert s[f"blocks.{layer}.ffn.net.0.proj.weight"] == (14336, 3072)
        assert s[f"blocks.{layer}.ffn.net.2.weight"] == (3072, 14336)
        assert s[f"blocks.{layer}.scale_shift_table"] == (1, 6, 3072)
    assert "blocks.30.attn1.to_q.weight" not in s
    assert s["proj_out.weight"] == (48 * 4, 3072)
    assert abs(sum(p.numel() for p in dit.parameters()) - 5.0e9) < 0.01e9


def test_real_vae_and_addon_layout_on_meta():
    preset = load_preset("wan2.2-ti2v-5b")
    assert (preset.latent_channels, preset.temporal_stride, preset.spatial_stride) == (48, 4, 16)
    with torch.device("meta"):
        vae, addon = build_vae(preset), build_addon(preset)
    assert all(p.is_meta for p in [*vae.parameters(), *addon.parameters()])
    v = shapes(vae)
    assert v["encoder.conv_in.weight"] == (160, 12, 3, 3, 3)  # patch 2: 3 x 2 x 2 input channels
    assert v["encoder.conv_out.weight"][0] == 96 and v["quant_conv.weight"][:2] == (96, 96)  # mean + logvar of z 48
    assert v["decoder.conv_in.weight"] == (1024, 48, 3, 3, 3)
    assert v["decoder.conv_out.weight"] == (12, 256, 3, 3, 3)
    a = shapes(addon)
    assert len(addon.blocks) == 15 and addon.config.layers == list(range(0, 30, 2))
    assert a["patch_embedding.weight"] == (3072, 96, 1, 2, 2)
    assert a["blocks.0.proj_in.weight"] == (3072, 3072) and "blocks.1.proj_in.weight" not in a
    assert a["blocks.14.proj_out.weight"] == (3072, 3072) and "blocks.15.proj_out.weight" not in a
    assert a["blocks.7.attn1.to_q.weight"] == (3072, 3072) and a["null_context"] == (1, 4096)


# ---------------------------------------------------------------- tiny preset
@pytest.fixture(scope="module")
def model():
    return from_preset("tiny", random_weights=True)


def request(model, batch=1, t=3, refs=0, preceding=0, seed=0, memory_scale=1.0) -> SegmentRequest:
    g = torch.Generator().manual_seed(seed)
    c, h, w = model.latent_channels, H // model.spatial_stride, W // model.spatial_stride

    def latents(n):
        return torch.randn(batch, c, n, h, w, generator=g) if n else None

    return SegmentRequest(first_latent=latents(1), memory_features=memory_scale * latents(t),
                          memory_mask=torch.rand(batch, 1, t, h, w, generator=g) > 0.3,
                          preceding=latents(preceding), references=latents(refs))


def denoiser_inputs(model, t=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    c, h = model.latent_channels, H // model.spatial_stride
    x = torch.randn(1, c, t, h, h, generator=g)
    times = torch.tensor([[0.0] + [700.0] * (t - 1)])
    context = model.branch.null_context[None]
    control = torch.randn(1, 2 * c, t, h, h, generator=g)
    return x, times, context, control


def test_tiny_satisfies_the_interface(model):
    assert isinstance(model, WorldModel)
    preset = load_preset("tiny")
    assert (model.latent_channels, model.temporal_stride, model.spatial_stride) == \
        (preset.latent_channels, 4, preset.spatial_stride)


@pytest.mark.parametrize("frames,latent_frames", [(1, 1), (5, 2), (9, 3)])
def test_encode_decode_shapes(model, frames, latent_frames):
    video = torch.rand(2, frames, 3, H, W) * 2 - 1
    z = model.encode(video)
    grid = H // model.spatial_stride
    assert z.shape == (2, model.latent_channels, latent_frames, grid, grid) and z.dtype == torch.float32
    out = model.decode(z)
    assert out.shape == video.shape and out.abs().max() <= 1


def test_encode_rejects_non_causal_lengths(model):
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        model.encode(torch.zeros(1, 4, 3, H, W))


@pytest.mark.parametrize("refs,preceding", [(0, 0), (0, 2), (2, 0), (1, 2)])
def test_generate_shapes_and_clean_first_latent(model, refs, preceding):
    req = request(model, batch=2, refs=refs, preceding=preceding)
    out = model.generate(req, torch.Generator().manual_seed(0), num_steps=2)
    grid = H // model.spatial_stride
    assert out.shape == (2, model.latent_channels, 3, grid, grid) and torch.isfinite(out).all()
    assert torch.equal(out[:, :, :1], req.first_latent)


def test_generate_is_deterministic_per_seed(model):
    req = request(model, refs=1, preceding=1)
    a, b, c = (model.generate(req, torch.Generator().manual_seed(s), num_steps=2) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_request_shapes_are_checked(model):
    req = request(model)
    req.memory_mask = req.memory_mask[:, :, :2]
    with pytest.raises(ValueError, match="memory_mask"):
        model.generate(req, torch.Generator(), num_steps=1)


def test_per_frame_timesteps_match_diffusers_per_token_forward(model):
    x, times, context, _ = denoiser_inputs(model)
    ours = model.transformer(x, times, context, None)
    tokens = times.repeat_interleave((x.shape[3] // 2) * (x.shape[4] // 2), dim=1)
    reference = model.dit(x, tokens, context).sample
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_visibility_latent_is_encoded_once_per_shape(model, monkeypatch):
    calls = []
    encode = model.vae.encode
    monkeypatch.setattr(model.vae, "encode", lambda x: calls.append(x.shape) or encode(x))
    first = model.visibility_latent((4, 6), 2)
    again = model.visibility_latent((4, 6), 2)
    other = model.visibility_latent((4, 6), 3)
    c, pixels = model.latent_channels, (4 * model.spatial_stride, 6 * model.spatial_stride)
    assert first.shape == (c, 2, 4, 6) and other.shape == (c, 3, 4, 6)
    assert torch.equal(first, again) and calls == [(1, 3, 5, *pixels), (1, 3, 9, *pixels)]


def test_memory_branch_has_no_effect_at_init_and_some_after_one_step():
    model = from_preset("tiny", model_seed=1, random_weights=True)
    x, times, context, control = denoiser_inputs(model)
    assert torch.equal(model.transformer(x, times, context, control), model.transformer(x, times, context, None))
    with_memory, without_memory = request(model, seed=2), request(model, seed=2, memory_scale=0.0)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(model.generate(with_memory, generator.manual_seed(0), 2),
                       model.generate(without_memory, generator.manual_seed(0), 2))

    optimizer = torch.optim.AdamW(model.branch.parameters(), lr=1e-3)
    target = torch.cat([with_memory.first_latent, torch.randn_like(with_memory.memory_features[:, :, 1:])], dim=2)
    loss = model.training_loss(with_memory, target, torch.Generator().manual_seed(1))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(model.generate(with_memory, generator.manual_seed(0), 2),
                           model.generate(without_memory, generator.manual_seed(0), 2))


def test_predict_clean_is_the_target_at_sigma_zero_and_a_model_guess_above(model):
    segment = request(model, seed=3)
    target = torch.randn(segment.memory_features.shape, generator=torch.Generator().manual_seed(4))
    exact = model.predict_clean(segment, target, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(exact[:, :, 1:], target[:, :, 1:]) and torch.equal(exact[:, :, :1], segment.first_latent)
    guess = model.predict_clean(segment, target, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(guess, model.predict_clean(segment, target, 1.0, torch.Generator().manual_seed(0)))
    assert torch.equal(guess[:, :, :1], segment.first_latent) and not torch.allclose(guess[:, :, 1:], target[:, :, 1:])
    with pytest.raises(ValueError, match="sigma"):
        model.predict_clean(segment, target, 1.5, torch.Generator())
    with pytest.raises(ValueError, match="shaped like"):
        model.predict_clean(segment, target[:, :, 1:], 0.5, torch.Generator())


def test_lora_changes_outputs_only_when_enabled_and_merges(tmp_path):
    model = from_preset("tiny", model_seed=2, random_weights=True)
    inputs = denoiser_inputs(model)
    base = model.transformer(*inputs)
    add_lora(model.dit, LoraSettings.from_dict(model.preset.lora))
    assert torch.equal(model.transformer(*inputs), base)  # B = 0 at init
    with torch.no_grad():
        for name, param in model.dit.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    enabled = model.transformer(*inputs)
    assert not torch.allclose(enabled, base, atol=1e-4)
    set_lora_enabled(model.dit, False)
    assert torch.equal(model.transformer(*inputs), base)
    set_lora_enabled(model.dit, True)
    save_lora(model.dit, tmp_path)
    merge_lora(model.dit)
    torch.testing.assert_close(model.transformer(*inputs), enabled, rtol=1e-5, atol=1e-5)

    fresh = from_preset("tiny", model_seed=2, random_weights=True)
    load_lora(fresh.dit, tmp_path)
    assert torch.equal(fresh.transformer(*inputs), enabled)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == model.preset.lora["rank"]


def test_fused_lora_computes_what_the_adapter_computes():
    separate, fused = from_preset("tiny"), from_preset("tiny", fuse_lora=True)
    assert all(layer.merged for layer in fused.dit.modules() if hasattr(layer, "merged"))
    assert not any(layer.merged for layer in separate.dit.modules() if hasattr(layer, "merged"))
    inputs = denoiser_inputs(separate)
    with torch.no_grad():
        torch.testing.assert_close(fused.transformer(*inputs), separate.transformer(*inputs), rtol=1e-4, atol=1e-4)
    clear_model_cache()
    assert all(layer.merged for layer in shared_model().dit.modules() if hasattr(layer, "merged"))
    clear_model_cache()


def test_save_and_load_tiny_weights(tmp_path):
    model = from_preset("tiny", model_seed=4, random_weights=True)
    add_lora(model.dit, LoraSettings(rank=4, alpha=4))
    with torch.no_grad():
        model.branch.blocks[0].proj_out.weight.normal_(std=0.01)
        next(p for n, p in model.dit.named_parameters() if "lora_B" in n).normal_()
    model.save_pretrained(tmp_path)
    save_tiny_text_encoder(tmp_path, width=model.preset.transformer["text_dim"])
    loaded = from_preset("tiny", weights_dir=tmp_path)
    req = request(model, refs=1)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), loaded.parameters()))
    # equal weights, but loaded tensors may sit at other alignments: CPU kernels may then round differently
    torch.testing.assert_close(loaded.generate(req, torch.Generator().manual_seed(3), 2),
                               model.generate(req, torch.Generator().manual_seed(3), 2), rtol=1e-5, atol=1e-5)
    prompts = loaded.text_encoder(["a red room"])
    assert prompts.shape == (1, 512, 64) and prompts[0, 3:].abs().max() == 0  # zeros beyond the prompt
    null_context = loaded.generate(req, torch.Generator().manual_seed(3), 2)
    req.context = prompts
    assert not torch.equal(loaded.generate(req, torch.Generator().manual_seed(3), 2), null_context)
    with pytest.raises(ValueError, match="do not match preset"):
        from_preset("wan2.2-ti2v-5b", weights_dir=tmp_path)


@pytest.mark.parametrize("build", [from_preset, shared_model], ids=["from_preset", "shared_model"])
@pytest.mark.parametrize("old, new", [("random_init", "random_weights"), ("seed", "model_seed")])
def test_old_model_keywords_raise_naming_the_new_ones(build, old, new):
    args = ("tiny",) if build is from_preset else ()
    with pytest.raises(TypeError, match=f"'{old}' is now called '{new}'"):
        build(*args, **{old: 1})


@pytest.fixture
def weights_copy(tmp_path):
    """A copy of the shipped tiny weights without their manifest (a user's folder)."""
    root = tmp_path / "weights"
    shutil.copytree(shipped_weights_dir("tiny"), root)
    (root / "manifest.json").unlink()
    return root


def _edit_tensors(file, change) -> None:
    tensors = load_file(str(file))
    change(tensors)
    save_file(tensors, str(file))


DIT_FILE = "transformer/diffusion_pytorch_model.safetensors"


@pytest.mark.parametrize("file, change, message", [
    (DIT_FILE, lambda t: t.pop("blocks.0.attn1.to_k.weight"), "1 missing \\(blocks.0.attn1.to_k.weight\\)"),
    (DIT_FILE, lambda t: t.update(stray=torch.zeros(2)), "1 unexpected \\(stray\\)"),
    (DIT_FILE, lambda t: t.update({"blocks.0.attn1.to_k.weight": torch.zeros(3, 3)}),
     "1 misshaped \\(blocks.0.attn1.to_k.weight \\[3, 3\\] instead of"),
    ("vae/diffusion_pytorch_model.safetensors", lambda t: t.pop(sorted(t)[0]), "1 missing"),
    ("addon/diffusion_pytorch_model.safetensors", lambda t: t.pop("null_context"), "1 missing \\(null_context\\)"),
    ("lora/adapter_model.safetensors", lambda t: t.pop(sorted(t)[0]), "1 missing \\(blocks"),
])
def test_weight_files_that_do_not_fit_the_model_raise_naming_the_file_and_tensors(weights_copy, file, change,
                                                                                  message):
    _edit_tensors(weights_copy / file, change)
    with pytest.raises(ValueError, match=message) as error:
        from_preset("tiny", weights_dir=weights_copy)
    assert str(weights_copy / file) in str(error.value)


@pytest.mark.parametrize("file", [DIT_FILE, "lora/adapter_model.safetensors"])
def test_truncated_weight_files_raise_naming_the_file(weights_copy, file):
    data = (weights_copy / file).read_bytes()
    (weights_copy / file).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file") as error:
        from_preset("tiny", weights_dir=weights_copy)
    assert str(weights_copy / file) in str(error.value)


def test_load_lora_names_a_truncated_adapter_file(weights_copy):
    file = weights_copy / "lora" / "adapter_model.safetensors"
    file.write_bytes(file.read_bytes()[:1000])
    model = from_preset("tiny", random_weights=True)
    with pytest.raises(ValueError, match="adapter_model.safetensors: not a readable safetensors file"):
        load_lora(model.dit, weights_copy / "lora")


def test_sharded_weights_are_checked_across_their_shards(tmp_path):
    model = from_preset("tiny", model_seed=5, random_weights=True)
    model.save_pretrained(tmp_path)
    model.dit.save_pretrained(tmp_path / "transformer", max_shard_size="1MB")
    (tmp_path / DIT_FILE).unlink()
    shards = sorted((tmp_path / "transformer").glob("*-of-*.safetensors"))
    assert len(shards) > 1
    loaded = from_preset("tiny", weights_dir=tmp_path)
    assert all(torch.equal(p, q) for p, q in zip(model.dit.parameters(), loaded.dit.parameters()))
    _edit_tensors(shards[-1], lambda t: t.pop(sorted(t)[0]))
    with pytest.raises(ValueError, match="holds other tensors than"):
        from_preset("tiny", weights_dir=tmp_path)


def test_a_weights_manifest_catches_flipped_bytes_and_stray_or_missing_files(weights_copy):
    write_manifest(weights_copy)
    from_preset("tiny", weights_dir=weights_copy)
    file = weights_copy / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(file.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside a tensor: the header is fine, the weights are not
    file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="another SHA-256") as error:
        from_preset("tiny", weights_dir=weights_copy)
    assert str(file) in str(error.value)
    (weights_copy / "manifest.json").unlink()
    from_preset("tiny", weights_dir=weights_copy)  # without a manifest nothing can tell: it loads
    write_manifest(weights_copy)
    (weights_copy / "lora" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="extra.bin is not in the manifest"):
        from_preset("tiny", weights_dir=weights_copy)
    (weights_copy / "lora" / "extra.bin").unlink()
    (weights_copy / "lora" / "adapter_config.json").unlink()
    with pytest.raises(ValueError, match="adapter_config.json is missing"):
        verify_manifest(weights_copy)


def save_tiny_text_encoder(root, width: int) -> None:
    """A random one-layer umT5 and a word-level tokenizer in ``root/text_encoder`` and ``root/tokenizer``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    words = Tokenizer(models.WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "red": 4, "room": 5},
                                       unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    UMT5EncoderModel(UMT5Config(vocab_size=6, d_model=width, d_kv=8, d_ff=64, num_layers=1,
                                num_heads=2)).save_pretrained(root / "text_encoder")


def test_real_preset_without_weights_lists_expected_files(tmp_path):
    with pytest.raises(MissingWeightsError) as error:
        from_preset("wan2.2-ti2v-5b", weights_dir=tmp_path)
    message = str(error.value)
    for expected in ("transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
                     "vae/diffusion_pytorch_model.safetensors", "addon/config.json", "lora/adapter_model.safetensors",
                     "text_encoder/", "tokenizer/", "MISSING", "weights_dir"):
        assert expected in message
    with pytest.raises(MissingWeightsError, match="needs weights_dir"):
        from_preset("wan2.2-ti2v-5b")
    transformer = tmp_path / "transformer"
    transformer.mkdir()
    (transformer / "config.json").write_text("{}")
    shards = {"weight_map": {"a": "part-1.safetensors", "b": "part-2.safetensors"}}
    (transformer / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(shards))
    (transformer / "part-1.safetensors").write_bytes(b"")
    with pytest.raises(MissingWeightsError, match="MISSING transformer/part-2.safetensors"):
        from_preset("wan2.2-ti2v-5b", weights_dir=tmp_path)


# ---------------------------------------------------------------- depth providers
def test_fill_far_takes_the_farthest_depth_of_the_smallest_covered_block():
    depth = torch.zeros(2, 8, 8)
    depth[0, :2, :2] = torch.tensor([[1.0, 2.0], [3.0, 1.0]])
    depth[0, 7, 7] = 5.0
    covered = depth > 0
    filled = fill_far(depth, covered)
    assert torch.equal(filled[0][covered[0]], depth[0][covered[0]])
    assert torch.equal(filled[0, :4, :4][~covered[0, :4, :4]], torch.full((12,), 3.0))  # own quadrant has 1..3
    assert torch.equal(filled[0, :4, 4:], torch.full((4, 4), 5.0))  # empty quadrant: the whole image's farthest
    assert torch.equal(filled[0, 4:, 4:], torch.full((4, 4), 5.0))
    assert torch.equal(filled[1], torch.zeros(8, 8))  # no coverage at all: unknown


def test_align_scale_shift_recovers_an_affine_map():
    pred = torch.rand(2, 3, 8, 8) + 0.1
    mask = torch.rand(2, 3, 8, 8) > 0.4
    mask[1, 2] = False
    scale, shift = align_scale_shift(pred, 2.5 * pred + 0.7, mask)
    torch.testing.assert_close(scale[0], torch.full((3,), 2.5))
    torch.testing.assert_close(shift[0], torch.full((3,), 0.7))
    assert (scale[1, 2], shift[1, 2]) == (1.0, 0.0)


def test_memory_depth_keeps_covered_pixels_and_fills_holes():
    frames = torch.zeros(1, 2, 3, 16, 16)
    memory = torch.full((1, 2, 4, 4), 2.0)
    mask = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    mask[0, 0, :2] = True
    out = MemoryDepth()(frames, memory, mask)
    assert out.shape == (1, 2, 16, 16)
    assert torch.equal(out[0, 0], torch.full((16, 16), 2.0)) and torch.equal(out[0, 1], torch.zeros(16, 16))
    constant = MemoryDepth(fallback=lambda f, d, m, c: torch.full(f.shape[:2] + f.shape[3:], 9.0))
    out = constant(frames, memory, mask)
    assert torch.equal(out[0, 0, :8], torch.full((8, 16), 2.0)) and torch.equal(out[0, 0, 8:], torch.full((8, 16), 9.0))


@pytest.fixture(scope="module")
def monocular_dir(tmp_path_factory):
    from transformers import (
        AutoModelForDepthEstimation,
        DepthAnythingConfig,
        Dinov2Config,
    )

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=8, image_size=32, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, patch_size=8)
    torch.manual_seed(0)
    estimator = AutoModelForDepthEstimation.from_config(config)
    with torch.no_grad():  # a random head is nearly flat; give it a visible, positive range
        estimator.head.conv3.weight.mul_(1e6)
        estimator.head.conv3.bias.fill_(0.5)
    path = tmp_path_factory.mktemp("depth_model")
    estimator.save_pretrained(path)
    return path


def test_monocular_depth_from_a_local_random_model(monocular_dir):
    provider = MonocularDepth(monocular_dir)
    frames = torch.rand(1, 2, 3, 32, 32) * 2 - 1
    raw = provider.estimate(frames)
    assert raw.shape == (1, 2, 32, 32) and raw.std() > 0
    positive = raw > 0
    torch.testing.assert_close(provider(frames), torch.where(positive, 1 / raw, torch.zeros(())))  # unaligned
    memory = 1 / (3.0 * raw + 0.25)  # what an exact disparity model at another scale / shift would read
    mask = torch.rand(1, 2, 32, 32) > 0.5
    aligned = provider(frames, torch.where(mask, memory, torch.zeros(())), mask)
    torch.testing.assert_close(aligned, memory, rtol=1e-3, atol=1e-4)
    filled = MemoryDepth(fallback=provider)(frames, memory, mask)
    torch.testing.assert_close(filled, memory, rtol=1e-3, atol=1e-4)


def test_simulator_depth_renders_the_scene():
    from mirage_env.geometry.camera import intrinsics_from_fov
    from mirage_env.sim import render, sample_scene, start_pose

    scene = sample_scene(0)
    c2w = start_pose(scene, 0)
    K = intrinsics_from_fov(90.0, (12, 16))
    cameras = Cameras(K.expand(1, 2, 3, 3), c2w.expand(1, 2, 4, 4), torch.tensor([[0.0, 0.5]]))
    depth = SimulatorDepth(scene)(torch.zeros(1, 2, 3, 12, 16), cameras=cameras)
    expected = render(scene, K, c2w, (12, 16), torch.tensor([0.0, 0.5])).depth
    assert torch.equal(depth[0], torch.where(torch.isfinite(expected), expected, torch.zeros(())))
    with pytest.raises(ValueError, match="cameras"):
        SimulatorDepth(scene)(torch.zeros(1, 2, 3, 12, 16))
