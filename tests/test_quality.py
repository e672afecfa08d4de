import json

import pytest
import torch

from mirage_env.metrics import psnr
from mirage_env.models import from_preset
from mirage_env.quality import ORACLE_RUNG, RUNGS, camera_path, ladder_episode, oracle_request, probe_rung
from mirage_env.sim import scene_by_seed, start_pose
from mirage_env.world import World, WorldConfig
from benchmarks import quality as quality_benchmark  # the repository root is on sys.path (conftest)


@pytest.fixture(scope="module")
def worlds():
    model = from_preset("tiny", random_weights=True)
    return World(model, WorldConfig()), World(model, WorldConfig(zero_memory=True))


@pytest.mark.parametrize("path", ["walk", "loop"])
def test_paths_start_at_the_start_pose_and_move(path):
    scene = scene_by_seed(300_000)
    start = start_pose(scene, 300_000)
    poses = camera_path(path, scene, start, 8)
    assert poses.shape == (9, 4, 4) and torch.equal(poses[0], start.double())
    assert not torch.allclose(poses[-1], poses[0])


def test_ladder_scores_every_rung_at_every_step(worlds):
    episode = ladder_episode(*worlds, 300_001, "walk", steps=2)
    for rung in RUNGS:
        assert all(len(episode.metrics[rung][name]) == 2 for name in ("psnr", "ssim", "energy"))
    assert len(episode.truth_energy) == 2
    assert all(frames.shape == (3, 64, 64, 3) for frames in episode.frames.values())
    truth = episode.frames["truth"]
    assert episode.metrics["first_frame"]["psnr"][0] == pytest.approx(psnr(truth[0], truth[1]))
    box = episode.metrics["box_blur"]
    assert all(e < t for e, t in zip(box["energy"], episode.truth_energy))  # the blur loses detail ...
    assert min(box["psnr"]) > max(episode.metrics["first_frame"]["psnr"])  # ... and PSNR still prefers it


def test_probe_rungs_leave_the_other_rungs_unchanged(worlds):
    plain = ladder_episode(*worlds, 300_002, "walk", steps=2)
    probed = ladder_episode(*worlds, 300_002, "walk", steps=2, probe_sigmas=(0.0, 1.0), probe_oracle=True)
    assert all(probed.metrics[rung] == plain.metrics[rung] for rung in RUNGS)
    assert list(probed.metrics) == [*RUNGS, probe_rung(0.0), probe_rung(1.0), ORACLE_RUNG]
    # at sigma 0 the estimate is the true latent itself: the step's true frames through the VAE
    assert probed.metrics["denoised_0"]["psnr"][0] == pytest.approx(probed.metrics["vae"]["psnr"][0], abs=0.05)
    assert probed.metrics["denoised_1"]["psnr"][0] != pytest.approx(probed.metrics["vae"]["psnr"][0], abs=0.05)


def test_the_oracle_read_shows_the_true_latents_of_the_new_frames_everywhere(worlds):
    from mirage_env.world.world import segment_request

    world = worlds[0]
    scene = scene_by_seed(300_003)
    poses = camera_path("walk", scene, start_pose(scene, 300_003), world.frames_per_step)
    world.reset_in_scene(0, scene, poses[0], seed=0)
    request = segment_request(world.state(0).first_latent[None], [world.step_condition(0, poses[1:])])
    truth = torch.randn_like(request.memory_features)
    oracle = oracle_request(request, truth)
    assert torch.equal(oracle.memory_features[:, :, 1:], truth[:, :, 1:]) and bool(oracle.memory_mask[:, :, 1:].all())
    assert torch.equal(oracle.memory_features[:, :, :1], request.memory_features[:, :, :1])  # the current view's read
    assert torch.equal(oracle.memory_mask[:, :, :1], request.memory_mask[:, :, :1])
    assert not bool(request.memory_mask.all())  # the request itself is left as it was


def test_the_ladder_needs_a_zeroed_second_world(worlds):
    with pytest.raises(ValueError, match="zero_memory"):
        ladder_episode(worlds[0], worlds[0], 300_000)


def test_the_benchmark_writes_its_json_and_contact_sheet(tmp_path):
    out = tmp_path / "quality.json"
    report = quality_benchmark.main(["--scenes", "2", "--steps", "2", "--paths", "walk", "--sheet-scenes", "1",
                                     "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["results"] == report["results"]
    row = saved["results"]["walk"]["1-2"]["generated"]
    assert set(row) == {"psnr", "ssim", "sharpness"}
    assert row["psnr"]["ci95"][0] <= row["psnr"]["mean"] <= row["psnr"]["ci95"][1]
    assert out.with_suffix(".png").stat().st_size > 0


def test_the_benchmark_adds_probe_rungs_on_request(tmp_path):
    report = quality_benchmark.main(["--scenes", "2", "--steps", "1", "--paths", "walk", "--sheet-scenes", "0",
                                     "--threads", "1", "--probe-sigmas", "0.5", "--probe-oracle",
                                     "--out", str(tmp_path / "q.json")])
    assert list(report["results"]["walk"]["1-1"]) == [*RUNGS, "denoised_0.5", ORACLE_RUNG]
    assert report["probe_sigmas"] == [0.5] and report["probe_oracle"]
