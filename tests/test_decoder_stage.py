"""The decoder stage: pairs are what the world decodes, and fine-tuning changes the decoder alone."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mirage_env.cli import main as cli_main
from mirage_env.models import from_preset
from mirage_env.models.loading import shipped_weights_dir
from mirage_env.sim import scene_by_seed
from mirage_env.train.decoder import DecoderData, collect_pairs, rollout_pairs, rollout_poses, train_decoder
from mirage_env.video import to_uint8, to_unit
from mirage_env.world import World, WorldConfig


@pytest.fixture(scope="module")
def shipped(one_thread):
    return from_preset("tiny", fuse_lora=True)


@pytest.mark.parametrize("path", ["walk", "random"])
def test_pairs_hold_what_the_world_decoded_and_the_true_frames_under_it(shipped, path):
    seed, steps = 40_001, 3
    pairs = rollout_pairs(shipped, seed, path, steps)
    world = World(shipped, WorldConfig())
    scene = scene_by_seed(seed)
    poses = rollout_poses(path, scene, seed, steps * world.frames_per_step)
    first = world.reset_in_scene(0, scene, poses[0], seed=seed)
    f = world.frames_per_step
    for k in range(steps):
        segment = world.step(poses[None, k * f + 1: (k + 1) * f + 1])
        decoded = to_uint8(shipped.decode(pairs.generated[k: k + 1]))[0, 1:]
        assert torch.equal(decoded, segment.frames[0])
    grid = 64 // shipped.spatial_stride
    assert pairs.generated.shape == pairs.encoded.shape == (steps, shipped.latent_channels, 2, grid, grid)
    assert pairs.frames.shape == (steps, 1 + f, 64, 64, 3)
    assert torch.equal(pairs.frames[0, 0], first.image)
    assert torch.equal(pairs.frames[1:, 0], pairs.frames[:-1, -1])  # each step starts where the last one ended
    assert torch.allclose(pairs.encoded[1], shipped.encode(to_unit(pairs.frames[1])[None]), atol=1e-5)


def test_pairs_need_one_latent_per_step(shipped):
    with pytest.raises(ValueError, match="latents_per_step=1"):
        rollout_pairs(shipped, 1, "walk", 1, WorldConfig(latents_per_step=2))


def test_the_stage_trains_the_decoder_alone_and_keeps_its_source(tmp_path, one_thread):
    source = shipped_weights_dir("tiny")
    data = DecoderData(rollouts=2, steps=2, batch_size=4, adversarial_start=1)
    summary = train_decoder(tmp_path, source, steps=3, data=data, held_out=1, progress=False)
    assert summary["steps"] == 3 and summary["pairs"] == 4
    for when in ("before", "after"):
        assert set(summary[when]) == {"generated", "encoded"}
    assert json.loads((tmp_path / "decoder_summary.json").read_text()) == summary
    before = load_file(str(source / "vae" / "diffusion_pytorch_model.safetensors"))
    after = load_file(str(tmp_path / "weights" / "vae" / "diffusion_pytorch_model.safetensors"))
    for name, tensor in before.items():
        same = torch.equal(tensor.float(), after[name].float())
        assert same == (name.startswith(("encoder.", "quant_conv."))), name
    for part in ("transformer/diffusion_pytorch_model.safetensors", "addon/diffusion_pytorch_model.safetensors",
                 "lora/adapter_model.safetensors"):
        old, new = load_file(str(source / part)), load_file(str(tmp_path / "weights" / part))
        assert all(torch.equal(old[k].float(), new[k].float()) for k in old), part
    from_preset("tiny", tmp_path / "weights")  # loads as a whole model
    with pytest.raises(ValueError, match="give another --out"):
        train_decoder(tmp_path, tmp_path / "weights", steps=1, data=data, held_out=1, progress=False)


def test_workers_make_the_same_pairs(one_thread):
    from mirage_env.train.parallel import WorkerPool

    source = shipped_weights_dir("tiny")
    with WorkerPool(2) as workers:
        parallel = collect_pairs(source, 40_010, 2, 2, workers)
    serial = collect_pairs(source, 40_010, 2, 2)
    for name in ("generated", "encoded", "frames"):
        assert torch.equal(getattr(parallel, name), getattr(serial, name)), name


def test_the_decoder_recipe_needs_a_trained_world_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "decoder", "--weights", str(tmp_path / "nothing"), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "holds no transformer/" in capsys.readouterr().err


def test_the_tiny_recipe_ends_with_the_decoder_stage_when_asked(tmp_path, capsys):
    vae = shipped_weights_dir("tiny") / "vae"
    cli_main(["train", "tiny", "--vae", str(vae), "--out", str(tmp_path), "--dit-steps", "0", "--addon-steps", "1",
              "--lora-steps", "0", "--pool", "2", "--batch-size", "2", "--decoder-steps", "1",
              "--decoder-rollouts", "1"])
    summary = json.loads((tmp_path / "decoder_summary.json").read_text())
    assert summary["steps"] == 1 and summary["held_out_rollouts"] == 1
    assert (tmp_path / "world_model" / "addon").is_dir() and (tmp_path / "weights" / "addon").is_dir()
    assert '"decoder"' in capsys.readouterr().out
