"""Training data made on worker processes equals the data one process makes."""

import torch

from mirage_env.models import from_preset
from mirage_env.train.clips import ClipConfig, SimulatorClips
from mirage_env.train.parallel import WorkerPool
from mirage_env.train.segments import SegmentData, SegmentPool
from mirage_env.train.vae import ClipPool
from mirage_env.world import WorldConfig


def test_pools_filled_on_workers_equal_the_lazy_pools(tmp_path):
    model = from_preset("tiny", model_seed=0, random_weights=True)
    model.vae.save_pretrained(tmp_path / "vae")
    data = SegmentData(latents=2, max_target=1, pool=2)
    with WorkerPool(2) as workers:
        clips = ClipPool(ClipConfig(frames=5, scenes=3), 3, seed=0)
        clips.fill(workers)
        segments = SegmentPool(model, data, WorldConfig(), seed=0)
        segments.fill(workers, tmp_path / "vae")
    lazy_clips = ClipPool(ClipConfig(frames=5, scenes=3), 3, seed=0)
    assert all(torch.equal(clips[i], lazy_clips[i]) for i in range(3))
    lazy = SegmentPool(model, data, WorldConfig(), seed=0)
    for i in range(2):
        (request, target), (want_request, want_target) = segments[i], lazy[i]
        torch.testing.assert_close(target, want_target)
        torch.testing.assert_close(request.memory_features, want_request.memory_features)
        assert torch.equal(request.memory_mask, want_request.memory_mask)


def test_cached_clips_load_what_was_rendered(tmp_path):
    source = SimulatorClips(ClipConfig(frames=1, scenes=2), seed=0, cache_dir=tmp_path)
    first = source(1)
    assert source.cache_path(1).exists()
    again = source(1)
    assert torch.equal(first.frames, again.frames) and torch.equal(first.poses, again.poses)
    assert WorkerPool(0).map(abs, [-1, 2]) == [1, 2]
