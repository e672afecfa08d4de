"""The RGB point-cloud cache and the append-only latent memory (baselines), and the World with every memory kind."""

import math

import pytest
import torch

from mirage_env.geometry import intrinsics_from_fov, scale_intrinsics
from mirage_env.geometry.trajectories import from_velocities
from mirage_env.memory import LatentSpatialMemory, MemoryConfig
from mirage_env.memory.append_only import AppendOnlyLatentMemory
from mirage_env.memory.rgb_cache import POINT_BYTES, RgbCacheConfig, RgbPointCache
from mirage_env.models import from_preset
from mirage_env.sim import render, sample_scene, start_pose
from mirage_env.world import World, WorldConfig

HW = (64, 64)


@pytest.fixture(scope="module")
def model():
    return from_preset("tiny", model_seed=0, random_weights=True)


@pytest.fixture(scope="module")
def view():
    """A simulated frame: image [1, 3, H, W] in [-1, 1], depth [1, H, W] (sky -> 0), K [3, 3], pose [4, 4]."""
    scene = sample_scene(3, "outdoor")
    pose = start_pose(scene, 3)
    K = intrinsics_from_fov(70.0, HW)
    out = render(scene, K, pose, HW)
    image = out.rgb.permute(0, 3, 1, 2).float() / 127.5 - 1
    return image, out.depth.nan_to_num(posinf=0.0), K, pose


def test_a_lifted_view_renders_back_exactly_at_its_camera(model, view):
    image, depth, K, pose = view
    cache = RgbPointCache(RgbCacheConfig(), model)
    assert cache.write(image, depth, K, pose) == int((depth > 0).sum())
    packed, rgb = cache.render(K[None], pose[None], HW)
    drawn = packed[0] != torch.iinfo(torch.int64).max
    assert torch.equal(drawn, depth[0] > 0)  # every pixel with depth, and only those, is drawn
    assert torch.equal(rgb[0][:, drawn], image[0][:, drawn])  # with its own colour, bit for bit
    assert torch.equal((packed[0][drawn] & 0xFFFFFFFF).sort().values, torch.arange(len(cache)))  # each point once


def test_read_shapes_and_coverage(model, view):
    image, depth, K, pose = view
    cache = RgbPointCache(RgbCacheConfig(), model)
    cache.write(image, depth, K, pose)
    frames = 1 + model.temporal_stride  # two latent frames
    read = cache.read(K.expand(frames, 3, 3), pose.expand(frames, 4, 4), HW)
    h, w = HW[0] // model.spatial_stride, HW[1] // model.spatial_stride
    assert read.features.shape == (2, model.latent_channels, h, w)
    assert read.mask.shape == read.depth.shape == read.index.shape == (2, h, w) and read.mask.dtype == torch.bool
    cell_depth = depth[0].reshape(h, 8, w, 8)
    full = (cell_depth > 0).all(dim=3).all(dim=1)
    assert bool(read.mask[0][full].all())  # fully seen cells are covered
    nearest = torch.where(cell_depth > 0, cell_depth, torch.inf).amin(dim=(1, 3))
    torch.testing.assert_close(read.depth[0][full], nearest[full], rtol=1e-5, atol=0)
    assert bool((read.index[read.mask] >= 0).all()) and bool((read.index[~read.mask] == -1).all())
    empty = RgbPointCache(RgbCacheConfig(), model).read(K.expand(frames, 3, 3), pose.expand(frames, 4, 4), HW)
    assert not bool(empty.mask.any()) and bool((empty.index == -1).all())
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        cache.read(K.expand(3, 3, 3), pose.expand(3, 4, 4), HW)


def test_memory_grows_per_write_as_designed(model, view):
    image, depth, K, pose = view
    pixels = int((depth > 0).sum())
    per_pixel = RgbPointCache(RgbCacheConfig(), model)
    keep = torch.zeros(1, 8, 8, dtype=torch.bool)
    keep[:, :4] = True  # the top half of the latent cells
    assert per_pixel.write(image, depth, K, pose, keep_mask=keep) == int((depth[:, :32] > 0).sum())
    per_pixel.write(image, depth, K, pose)
    per_pixel.write(image, depth, K, pose)
    assert len(per_pixel) == int((depth[:, :32] > 0).sum()) + 2 * pixels  # every write appends all its pixels
    assert per_pixel.stats().bytes >= len(per_pixel) * POINT_BYTES

    voxels = RgbPointCache(RgbCacheConfig(voxel_size=0.1, downsample=True), model)
    first = voxels.write(image, depth, K, pose)
    assert 0 < first < pixels
    assert voxels.write(image, depth, K, pose) == 0  # the same view again: no new voxel
    keys = voxels.keys[:]
    assert torch.equal(keys.unique(), keys.sort().values)  # one point per voxel


def test_append_only_grows_where_the_bounded_memory_does_not(view):
    _, depth, K, pose = view
    latents = torch.randn(1, 4, 8, 8)
    config = MemoryConfig(feature_dim=4, voxel_size=0.05)
    bounded, append = LatentSpatialMemory(config), AppendOnlyLatentMemory(config)
    sizes = []
    for _ in range(3):
        written = append.write(latents, depth, K, pose).written
        bounded.write(latents, depth, K, pose)
        sizes.append((len(bounded), bounded.stats().bytes, len(append)))
    assert sizes[0][:2] == sizes[1][:2] == sizes[2][:2]
    assert [s[2] for s in sizes] == [written, 2 * written, 3 * written]
    read = append.read(scale_intrinsics(K, HW, (8, 8))[None], pose[None], (8, 8))
    assert bool(read.mask.any()) and append.keys[read.index[read.mask]].numel() == int(read.mask.sum())
    with pytest.raises(ValueError, match="append-only memory full"):
        AppendOnlyLatentMemory(MemoryConfig(feature_dim=4, capacity=8)).write(latents, depth, K, pose)


@pytest.mark.parametrize("kind", ["latent", "append", "rgb"])
def test_the_world_runs_with_every_memory_kind(model, kind):
    world = World(model, WorldConfig(memory=kind, num_steps=1), batch_size=1)
    scene = sample_scene(1, "indoor")
    world.reset_in_scene(0, scene, start_pose(scene, 1), seed=0)
    size = len(world.memory(0))
    velocity = torch.tensor([[0.0, 0.0, 0.05, math.radians(5.0), 0.0, 0.0]] * world.frames_per_step)
    for _ in range(2):
        segment = world.step(from_velocities(world.poses[0], velocity)[1:][None])
        assert segment.frames.shape == (1, 4, 64, 64, 3) and bool((segment.coverage > 0).all())
        assert segment.timings.read > 0 and segment.timings.write > 0
    assert len(world.memory(0)) > size
    if kind == "rgb":
        with pytest.raises(ValueError, match="frame_poses"):
            world.condition(0, world.poses)
    with pytest.raises(ValueError, match="memory must be one of"):
        WorldConfig(memory="voxels")
