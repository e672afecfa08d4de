"""Real data in the Mirage layout: loading, resizing, teacher forcing like the simulator, training, bad folders."""

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from mirage_env.models import from_preset
from mirage_env.train import ClipConfig, TrainConfig, Trainer, sample_clip
from mirage_env.train.real_data import RealClips
from mirage_env.train.segments import SegmentData, SegmentPool, flow_loss_fn, teacher_forced
from mirage_env.train.stages import prepare_stage
from mirage_env.video import write_video
from mirage_env.world import WorldConfig

SEED = 1  # simulator clip 0 of seed 1 has dynamic objects


def write_sequence(folder, clip, rgb="npz", masks=True):
    """Write a clip in the Mirage layout: geometry.npz (float64 cameras) and its RGB as npz frames, PNGs or mp4."""
    (folder / "frames").mkdir(parents=True)
    arrays = {"depths": clip.depth.numpy(), "intrinsics": clip.K.numpy(), "poses_c2w": clip.poses.numpy()}
    if masks:
        arrays["masks"] = clip.dynamic.numpy()
    if rgb == "npz":
        arrays["frames"] = clip.frames.numpy()
    elif rgb == "png":
        for i, frame in enumerate(clip.frames.numpy()):
            Image.fromarray(frame).save(folder / "frames" / f"{i:06d}.png")
    else:
        write_video(folder / "video.mp4", clip.frames.numpy())
    np.savez(folder / "geometry.npz", **arrays)


@pytest.fixture(scope="module")
def large_clip():
    """13 frames at 128x192: cropped to 128x128 (32 columns off each side), then halved."""
    clip = sample_clip(0, ClipConfig(hw=(128, 192), frames=13, scenes=4), SEED)
    assert clip.dynamic.any() and torch.isinf(clip.depth).any()  # the resize sees dynamic objects and sky
    return clip


@pytest.fixture(scope="module")
def small_clip():
    """The same scene and path at the training size (64x64), as the simulator training source renders it."""
    return sample_clip(0, ClipConfig(frames=13, scenes=4), SEED)


@pytest.fixture(scope="module")
def model():
    return from_preset("tiny", model_seed=0, random_weights=True)


def expected_window(clip, indices):
    """The 128x192 clip's frames at ``indices`` in 64x64, computed directly: 2x2 means, depth at pixel (2i+1,
    2j+1) (the source pixel nearest the output pixel centre), masks set where any of the 2x2 is dynamic."""
    crop = (indices, slice(None), slice(32, 160))
    frames = clip.frames[crop].double().reshape(len(indices), 64, 2, 64, 2, 3).mean(dim=(2, 4))
    dynamic = clip.dynamic[crop].reshape(len(indices), 64, 2, 64, 2).any(dim=4).any(dim=2)
    return frames.round().to(torch.uint8), clip.depth[crop][:, 1::2, 1::2], dynamic


@pytest.mark.parametrize("rgb", ["npz", "png"])
def test_windows_are_cropped_and_resized_like_an_independent_reference(tmp_path, large_clip, rgb):
    write_sequence(tmp_path / "seq", large_clip, rgb)
    clips = RealClips(tmp_path, frames=5, hw=(64, 64), stride=3, fps=10.0)
    assert len(clips) == 1  # frames 0, 3, ..., 12
    clip = clips(0)
    indices = [0, 3, 6, 9, 12]
    frames, depth, dynamic = expected_window(large_clip, indices)
    assert clip.frames.dtype == torch.uint8 and torch.equal(clip.frames, frames)
    assert torch.equal(clip.depth, depth) and torch.equal(clip.dynamic, dynamic) and dynamic.any()
    f = large_clip.K[0, 0].item() / 2  # pixel centres: (63.5 + 0.5) / 2 - 0.5 = 31.5 after the crop
    assert torch.allclose(clip.K, torch.tensor([[f, 0, 31.5], [0, f, 31.5], [0, 0, 1]], dtype=torch.float64))
    assert clip.poses.dtype == torch.float64 and torch.equal(clip.poses, large_clip.poses[indices])
    assert torch.allclose(clip.times, torch.tensor(indices, dtype=torch.float64) / 10.0)


def test_window_order_is_deterministic_and_spans_all_sequences(tmp_path, small_clip):
    write_sequence(tmp_path / "a", small_clip, "npz")
    write_sequence(tmp_path / "b", small_clip, "png", masks=False)
    clips = RealClips(tmp_path, frames=9, hw=(64, 64), hop=4)
    assert sorted((p.name, s) for p, s in clips.windows) == [("a", 0), ("a", 4), ("b", 0), ("b", 4)]
    assert clips.windows == RealClips(tmp_path, frames=9, hw=(64, 64), hop=4).windows
    for i, (folder, start) in enumerate(clips.windows):
        clip = clips(i)
        assert torch.equal(clip.frames, small_clip.frames[start: start + 9])
        assert torch.equal(clip.poses, small_clip.poses[start: start + 9])
        assert torch.equal(clip.dynamic, small_clip.dynamic[start: start + 9] if folder.name == "a"
                           else torch.zeros(9, 64, 64, dtype=torch.bool))
        assert torch.equal(clips(i + len(clips)).frames, clip.frames)  # indices wrap around


def test_mp4_frames_are_read_in_order(tmp_path, small_clip):
    write_sequence(tmp_path / "seq", small_clip, "mp4")
    clip = RealClips(tmp_path, frames=5, hw=(64, 64), stride=2)(0)
    error = (clip.frames.float() - small_clip.frames[0:9:2].float()).abs().mean(dim=(1, 2, 3))
    assert error.max() < 4  # lossy, but the right frames
    assert torch.equal(clip.depth, small_clip.depth[0:9:2])


def assert_same_segment(a, b):
    (request_a, target_a), (request_b, target_b) = a, b
    assert torch.equal(target_a, target_b)
    for field in dataclasses.fields(request_a):
        x, y = getattr(request_a, field.name), getattr(request_b, field.name)
        assert (x is None and y is None) or torch.equal(x, y), field.name


def test_real_data_is_teacher_forced_exactly_like_the_simulator_clip_it_came_from(tmp_path, small_clip, model):
    write_sequence(tmp_path / "seq", small_clip, "png")
    clips = RealClips(tmp_path, frames=13, hw=(64, 64))
    clip = clips(0)
    for name in ("frames", "depth", "dynamic", "K", "poses"):
        assert torch.equal(getattr(clip, name), getattr(small_clip, name)), name
    world = WorldConfig()
    real = teacher_forced(model, clip, 2, 1, world)
    assert real[0].references is not None and real[0].preceding is not None and real[0].memory_mask.any()
    assert_same_segment(real, teacher_forced(model, small_clip, 2, 1, world))
    # the dynamic masks reach the memory: without them the read differs
    unmasked = teacher_forced(model, dataclasses.replace(clip, dynamic=torch.zeros_like(clip.dynamic)), 2, 1, world)
    assert not torch.equal(unmasked[0].memory_features, real[0].memory_features)
    # and the pool draws the same segment whichever source the clip comes from
    data = SegmentData(latents=3, max_target=1, pool=1, batch_size=1, scenes=4)
    assert_same_segment(SegmentPool(model, data, world, SEED, clips)[0], SegmentPool(model, data, world, SEED)[0])


def test_a_few_training_steps_on_real_data(tmp_path, small_clip, model):
    write_sequence(tmp_path / "data" / "seq", small_clip, "png")
    clips = RealClips(tmp_path / "data", frames=9, hw=(64, 64), hop=4)
    pool = SegmentPool(model, SegmentData(latents=2, max_target=1, pool=2, batch_size=2), WorldConfig(), 0, clips)
    trainee = from_preset("tiny", model_seed=0, random_weights=True)
    prepare_stage(trainee, "addon")
    rows = Trainer(trainee, flow_loss_fn(trainee, pool), TrainConfig(steps=2, warmup=1, log_every=1),
                   tmp_path / "run").run(progress=False)
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)


def test_pool_rejects_clips_of_the_wrong_length(tmp_path, small_clip, model):
    write_sequence(tmp_path / "seq", small_clip, "npz")
    pool = SegmentPool(model, SegmentData(latents=2, pool=1), WorldConfig(), 0, RealClips(tmp_path, 13, (64, 64)))
    with pytest.raises(ValueError, match=re.escape("this pool needs [9, 64, 64, 3]")):
        pool[0]


def test_cli_trains_on_a_data_folder(tmp_path, model, capsys):
    from mirage_env.cli import main

    clip = sample_clip(0, ClipConfig(frames=SegmentData().clip_frames(4), scenes=4), SEED)
    write_sequence(tmp_path / "data" / "seq", clip, "png")
    model.vae.save_pretrained(tmp_path / "vae")
    main(["train", "tiny", "--data", str(tmp_path / "data"), "--vae", str(tmp_path / "vae"), "--out",
          str(tmp_path / "out"), "--dit-steps", "0", "--addon-steps", "1", "--lora-steps", "0"])
    assert (tmp_path / "out" / "weights").is_dir() and '"addon"' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "vae", "--data", str(tmp_path / "data")])
    assert "--data trains the DiT" in capsys.readouterr().err


def damage(folder, problem):
    """Break a written sequence folder in one way."""
    geometry = dict(np.load(folder / "geometry.npz"))
    if problem == "no geometry":
        (folder / "geometry.npz").unlink()
    elif problem == "no rgb":
        np.savez(folder / "geometry.npz", **{k: v for k, v in geometry.items() if k != "frames"})
    elif problem == "depth count":
        np.savez(folder / "geometry.npz", **{**geometry, "depths": geometry["depths"][:-1]})
    elif problem == "intrinsics":
        intrinsics = np.repeat(geometry["intrinsics"][None], 13, axis=0)
        intrinsics[5, 0, 0] *= 1.1
        np.savez(folder / "geometry.npz", **{**geometry, "intrinsics": intrinsics})
    elif problem == "image count":
        (folder / "frames" / "000012.png").unlink()
    elif problem == "image size":
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(folder / "frames" / "000003.png")


@pytest.mark.parametrize("rgb, problem, file, message", [
    ("npz", "no geometry", "seq/geometry.npz", "missing"),
    ("npz", "no rgb", "seq", "no RGB frames"),
    ("npz", "depth count", "seq/geometry.npz", "expected poses_c2w [12, 4, 4]"),
    ("npz", "intrinsics", "seq/geometry.npz", "intrinsics change within frames 0..8"),
    ("png", "image count", "seq/frames", "12 images for 13 depth maps"),
    ("png", "image size", "seq/frames/000003.png", "32x48 pixels, the depth maps are 64x64"),
])
def test_malformed_sequences_raise_naming_the_file(tmp_path, small_clip, rgb, problem, file, message):
    write_sequence(tmp_path / "seq", small_clip, rgb)
    damage(tmp_path / "seq", problem)
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path / file))}: .*{re.escape(message)}"):
        RealClips(tmp_path, frames=9, hw=(64, 64), hop=4)


def test_unusable_roots_raise(tmp_path, small_clip):
    with pytest.raises(ValueError, match="no sequence folders"):
        RealClips(tmp_path, frames=9, hw=(64, 64))
    write_sequence(tmp_path / "seq", small_clip, "npz")
    with pytest.raises(ValueError, match="is a sequence folder"):
        RealClips(tmp_path / "seq", frames=9, hw=(64, 64))
    with pytest.raises(ValueError, match="no sequence has the 17 frames"):
        RealClips(tmp_path, frames=17, hw=(64, 64))
