"""The trained tiny weights shipped in the package load and generate frames that use the memory.

A broken checkpoint, loader or memory path fails here. The thresholds sit below what the shipped weights give on
these seeds and far above what random weights give (the shipped weights' figures: README, *The shipped tiny
weights*).
"""

from dataclasses import replace

import pytest
import torch

from mirage_env.evaluation import HELD_OUT_FIRST_SCENE, psnr, revisit_episode
from mirage_env.geometry.trajectories import from_velocities
from mirage_env.models import from_preset
from mirage_env.models.loading import shipped_weights_dir
from mirage_env.models.manifest import manifest_problems, verify_manifest
from mirage_env.sim import render, scene_by_seed, start_pose
from mirage_env.train.segments import SegmentData, SegmentPool
from mirage_env.train.vae import held_out_video, reconstruction_psnr
from mirage_env.world import World, WorldConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return from_preset("tiny")


def test_shipped_parts_are_complete():
    root = shipped_weights_dir("tiny")
    for part in ("transformer", "vae", "addon", "lora"):
        assert any((root / part).glob("*.safetensors")), part


def test_shipped_manifest_matches_the_shipped_files():
    """A stale manifest (weights replaced without the exporter, which writes it) fails here."""
    root = shipped_weights_dir("tiny")
    assert manifest_problems(root) == []
    assert verify_manifest(root)


def test_shipped_branch_and_lora_are_trained(model):
    assert all(block.proj_out.weight.abs().max() > 0 for block in model.branch.blocks)
    assert any("lora_B" in n and p.abs().max() > 0 for n, p in model.dit.named_parameters())


def test_shipped_vae_reconstructs_held_out_frames(model):
    std = torch.tensor(model.vae.config.latents_std)
    assert not torch.equal(std, torch.ones_like(std))  # latent statistics were set from data
    psnr = reconstruction_psnr(model.vae, held_out_video(8, seed=1))
    assert psnr.mean() > 24.0, psnr  # dB; random weights fall far below


def test_the_memory_lowers_the_teacher_forced_loss(model):
    pool = SegmentPool(model, SegmentData(), WorldConfig(), seed=7)
    with_memory, zeroed = [], []
    for i in range(4):
        request, target = pool[i]
        blind = replace(request, memory_features=torch.zeros_like(request.memory_features),
                        memory_mask=torch.zeros_like(request.memory_mask))
        with torch.no_grad():
            with_memory.append(model.training_loss(request, target, torch.Generator().manual_seed(i)).item())
            zeroed.append(model.training_loss(blind, target, torch.Generator().manual_seed(i)).item())
    assert sum(with_memory) < 0.6 * sum(zeroed), (with_memory, zeroed)  # random weights: about equal losses


def test_revisit_returns_to_the_first_frame_thanks_to_the_memory(model):
    row = revisit_episode(World(model, WorldConfig()), HELD_OUT_FIRST_SCENE, out_steps=2)
    assert row["revisit_psnr"] > 16.0 and row["revisit_ssim"] > 0.3, row  # random weights fall far below both
    blind = revisit_episode(World(model, WorldConfig(zero_memory=True)), HELD_OUT_FIRST_SCENE, out_steps=2)
    assert row["revisit_psnr"] > blind["revisit_psnr"] + 1.5, (row, blind)  # dB the memory is worth


def test_frames_follow_the_camera(model):
    """Two steps turning right or left (23 degrees) from the same start end on frames closer to their own true
    view than to the other turn's, and the two turns' frames differ (a VAE that decodes a segment mostly from its
    first frame fails both)."""
    own, other, apart = [], [], []
    for scene_seed in range(HELD_OUT_FIRST_SCENE, HELD_OUT_FIRST_SCENE + 3):
        scene = scene_by_seed(scene_seed)
        start = start_pose(scene, scene_seed).double()
        frames, truth = {}, {}
        for yaw in (0.1, -0.1):
            world = World(model, WorldConfig())
            world.reset_in_scene(0, scene, start, seed=scene_seed)
            path = from_velocities(start, torch.tensor([[0, 0, 0, yaw, 0, 0]] * (2 * world.frames_per_step)))[1:]
            for k in range(2):
                segment = world.step(path[None, k * world.frames_per_step:(k + 1) * world.frames_per_step])
            frames[yaw] = segment.frames[0, -1]
            truth[yaw] = render(scene, world.default_intrinsics(), path[-1], world.config.image_hw).rgb[0]
        for yaw in frames:
            own.append(psnr(frames[yaw], truth[yaw]))
            other.append(psnr(frames[yaw], truth[-yaw]))
        apart.append((frames[0.1].float() - frames[-0.1].float()).abs().mean().item())
    own, other, apart = (sum(x) / len(x) for x in (own, other, apart))
    assert own > other + 1.0, (own, other)  # dB
    assert apart > 6.0, apart  # mean absolute difference in grey levels
