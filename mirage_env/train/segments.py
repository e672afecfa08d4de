"""Teacher-forced training segments with the conditioning the world sees at inference.

For a clip of ``1 + 4 L`` frames, the first ``m`` latent frames, encoded step by step in the code the world's own
segments have (:func:`encode_as_stepped`), are *observed* by a :class:`~mirage_env.world.World` as generated frames
are during a rollout (dynamic discard from depth, memory write, keyframes, preceding history),
with the clip's dynamic-object masks also kept out of the memory (as the first frame's are at inference); then
:meth:`World.condition` gives the memory read at the target poses, the preceding latents and the retrieved
references. The target is the clip's next ``k`` latent frames, encoded as the world would produce them: a segment
starting at frame ``4 m`` whose first latent is that frame alone. Clips come from any :data:`ClipSource`: the
simulator by default, or real sequences (:mod:`mirage_env.train.real_data`), all through :func:`teacher_forced`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from diffusers import AutoencoderKLWan

from mirage_env.models.interface import SegmentRequest
from mirage_env.models.sampler import gaussian
from mirage_env.models.wan import WanWorldModel, from_preset
from mirage_env.train.clips import Clip, ClipConfig, ClipSource, SimulatorClips
from mirage_env.train.parallel import WorkerPool
from mirage_env.train.trainer import Shard
from mirage_env.video import to_unit
from mirage_env.world import InitialView, World, WorldConfig
from mirage_env.world.world import segment_request


@dataclass(frozen=True)
class SegmentData:
    """Clip length in latent frames (``1 + latents`` pixel-frame groups), target length and batch size.

    ``reference_dropout``: the probability that a sample is shown without its retrieved references, so that the
    model learns to take what the memory shows from the memory rather than from a reference that happens to
    contain it (references still come with the other samples, as at inference).

    ``context_noise``: the largest sigma of the noise mixed into the clean context (first latent, preceding and
    reference latents) of a sample, drawn uniformly per sample. In teacher forcing that context is the true
    video, at inference it is the model's own output: without the corruption the model learns to copy the first
    latent and to trust it over the memory (exposure bias).

    ``context_swap``: the probability that a sample's recent context (first latent and preceding latents) comes
    from another pool entry (nearly always another scene), while its memory read and target stay its own. Noise
    alone leaves the first latent the best guess of the target; a swapped one is plainly wrong where the memory is
    right, the case of a rollout coming back to what it saw after its own frames drifted, and the model must learn
    to tell them apart by comparing the two.
    """

    latents: int = 8
    max_target: int = 2
    pool: int = 256
    batch_size: int = 4
    scenes: int = 400
    reference_dropout: float = 0.5
    context_noise: float = 0.3
    context_swap: float = 0.25

    def clip_frames(self, temporal_stride: int) -> int:
        """Pixel frames per clip: ``1 + temporal_stride * latents``."""
        return 1 + temporal_stride * self.latents


def encode_as_stepped(model: WanWorldModel, video: torch.Tensor, latents_per_step: int) -> torch.Tensor:
    """Latents [C, L, h, w] of a ``1 + 4 L``-frame video [T, 3, H, W] in the code a :class:`World` stepping
    ``latents_per_step`` latent frames at a time produces: each step's latents are encoded from a segment that starts
    at its first frame alone (the world re-encodes a segment's last frame as the next one's first latent).

    The causal VAE's latents depend on their position after a segment's first frame; encoding the whole video at
    once puts the later latents in another code than the world's (for the tiny VAE the two differ by about as much
    as the latents' own power), and a memory trained on that code is no help at inference.
    """
    stride = model.temporal_stride
    total = (video.shape[0] - 1) // stride
    parts = []
    for start in range(0, total, latents_per_step):
        count = min(latents_per_step, total - start)
        parts.append(model.encode(video[None, stride * start: stride * (start + count) + 1])[0, :, 1:])
    return torch.cat(parts, dim=1)


def teacher_forced(model: WanWorldModel, clip: Clip, context: int, target: int,
                   config: WorldConfig) -> tuple[SegmentRequest, torch.Tensor]:
    """(request with batch 1, target latents [1, C, 1 + target, h, w]) for ``context`` observed latent frames,
    encoded as the world steps (:func:`encode_as_stepped`)."""
    stride = model.temporal_stride
    video = to_unit(clip.frames)  # [T, 3, H, W]
    world = World(model, config, batch_size=1)
    world.reset(0, InitialView(clip.frames[0], clip.depth[0], clip.K, clip.poses[0], clip.dynamic[0]), seed=0)
    if context:
        observed = encode_as_stepped(model, video[: 1 + stride * context], config.latents_per_step)
        frames = slice(stride, stride * context + 1, stride)
        depth = clip.depth[frames].nan_to_num(posinf=0.0)
        world.observe(0, observed, depth, clip.poses[frames].double(), clip.dynamic[frames])
    start = stride * context
    latents = model.encode(video[None, start: start + stride * target + 1])
    condition = world.condition(0, clip.poses[start: start + stride * target + 1: stride].double())
    return segment_request(latents[:, :, :1], [condition]), latents


def simulator_clips(data: SegmentData, world: WorldConfig, temporal_stride: int, seed: int,
                    cache_dir: Path | None = None) -> SimulatorClips:
    """The simulator clips a :class:`SegmentPool` cuts its entries from (optionally cached in ``cache_dir``)."""
    config = ClipConfig(world.image_hw, data.clip_frames(temporal_stride), scenes=data.scenes)
    return SimulatorClips(config, seed, cache_dir)


def make_sample(model: WanWorldModel, clips: ClipSource, data: SegmentData, world: WorldConfig, seed: int,
                index: int) -> tuple[SegmentRequest, torch.Tensor]:
    """Pool entry ``index``: a teacher-forced segment cut from ``clips(index)`` at a context length and target
    length drawn from ``(seed, index)``."""
    frames = data.clip_frames(model.temporal_stride)
    clip = clips(index)
    if tuple(clip.frames.shape) != (frames, *world.image_hw, 3):
        raise ValueError(f"clip {index} has frames {list(clip.frames.shape)}; this pool needs "
                         f"[{frames}, {world.image_hw[0]}, {world.image_hw[1]}, 3]")
    rng = torch.Generator().manual_seed(seed * 1_000_003 + index)
    target = int(torch.randint(1, data.max_target + 1, (1,), generator=rng))
    context = int(torch.randint(0, data.latents - target + 1, (1,), generator=rng))
    with torch.no_grad():
        return teacher_forced(model, clip, context, target, world)


REQUEST_TENSORS = ("first_latent", "memory_features", "memory_mask", "preceding", "references")
"""The fields of a :class:`SegmentRequest` a training sample carries (its ``context`` stays the null context)."""

_worker_models: dict[str, WanWorldModel] = {}


def model_on_vae(vae_dir: str | Path, preset: str = "tiny", model_seed: int = 0) -> WanWorldModel:
    """A world model of ``preset`` with the trained VAE saved in ``vae_dir`` and random DiT and branch weights
    drawn from ``model_seed`` (the start of the world model's training)."""
    vae = AutoencoderKLWan.from_pretrained(vae_dir, local_files_only=True)
    base = from_preset(preset, model_seed=model_seed, random_weights=True)
    return WanWorldModel(base.preset, vae, base.transformer)


def _sample_on_worker(job: tuple) -> tuple[SegmentRequest, torch.Tensor]:
    """:func:`make_sample` in a worker process, on a CPU copy of the world model's VAE (kept between jobs)."""
    vae_dir, preset, clips, data, world, seed, index = job
    if vae_dir not in _worker_models:
        _worker_models[vae_dir] = model_on_vae(vae_dir, preset)
    return make_sample(_worker_models[vae_dir], clips, data, world, seed, index)


class SegmentPool:
    """A fixed pool of teacher-forced segments (the VAE and the world are frozen, so they can be cached).

    Entry ``i`` is cut from ``clips(i)``: simulator clips by default, or any :data:`ClipSource` whose clips have
    ``data.clip_frames(...)`` frames of the world's ``image_hw``. Entries are made lazily, or all at once on
    worker processes by :meth:`fill` (the same entries); they are kept on the model's device.
    """

    def __init__(self, model: WanWorldModel, data: SegmentData, world: WorldConfig, seed: int,
                 clips: ClipSource | None = None) -> None:
        self.model, self.data, self.world, self.seed = model, data, world, seed
        self.frames = data.clip_frames(model.temporal_stride)
        if clips is None:
            clips = simulator_clips(data, world, model.temporal_stride, seed)
        self.clips = clips
        self.samples: dict[int, tuple[SegmentRequest, torch.Tensor]] = {}

    def _keep(self, index: int, sample: tuple[SegmentRequest, torch.Tensor]) -> None:
        request, target = sample
        device = self.model.device
        moved = {name: None if getattr(request, name) is None else getattr(request, name).to(device)
                 for name in REQUEST_TENSORS}
        self.samples[index] = (replace(request, **moved), target.to(device))

    def __getitem__(self, index: int) -> tuple[SegmentRequest, torch.Tensor]:
        index %= self.data.pool
        if index not in self.samples:
            self._keep(index, make_sample(self.model, self.clips, self.data, self.world, self.seed, index))
        return self.samples[index]

    def fill(self, workers: WorkerPool, vae_dir: str | Path) -> None:
        """Make every missing entry on ``workers``; they load the model's VAE from ``vae_dir`` (its saved copy)."""
        missing = [i for i in range(self.data.pool) if i not in self.samples]
        jobs = [(str(vae_dir), self.model.preset.name, self.clips, self.data, self.world, self.seed, i)
                for i in missing]
        for index, sample in zip(missing, workers.map(_sample_on_worker, jobs)):
            self._keep(index, sample)

    def shape_groups(self) -> list[list[int]]:
        """Indices of all entries, grouped by their context and target shapes (the entries that can share a batch)."""
        groups: dict[tuple, list[int]] = {}
        for index in range(self.data.pool):
            request, target = self[index]
            key = tuple(None if x is None else x.shape[2] for x in (request.preceding, request.references))
            groups.setdefault((*key, target.shape[2]), []).append(index)
        return list(groups.values())


def corrupt_context(request: SegmentRequest, sigma: torch.Tensor, generator: torch.Generator,
                    batch_rows: tuple[int, int] | None = None) -> SegmentRequest:
    """The request with its clean context (first latent, preceding, references) moved to noise level ``sigma``
    [B] along the flow, ``(1 - sigma) x + sigma noise``; the memory read is left as it is. ``batch_rows = (first,
    size)``: the request is rows ``first ..`` of a batch of ``size`` rows, and the noise is drawn for all of them."""
    first, size = batch_rows or (0, request.first_latent.shape[0])

    def noised(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return x
        s = sigma.to(x.device, x.dtype).view(-1, 1, 1, 1, 1)
        noise = gaussian((size, *x.shape[1:]), generator, x.device)[first:first + x.shape[0]]
        return (1 - s) * x + s * noise.to(x.dtype)

    return replace(request, first_latent=noised(request.first_latent), preceding=noised(request.preceding),
                   references=noised(request.references))


def batch_requests(requests: Sequence[SegmentRequest]) -> SegmentRequest:
    """Concatenate requests of equal shapes along the batch."""
    def cat(name: str) -> torch.Tensor | None:
        parts = [getattr(r, name) for r in requests]
        return None if parts[0] is None else torch.cat(parts)

    return SegmentRequest(**{name: cat(name) for name in REQUEST_TENSORS})


def flow_loss_fn(model: WanWorldModel, pool: SegmentPool):
    """A :data:`~mirage_env.train.trainer.LossFn`: the flow-matching loss of one batch of pool segments.

    A batch is drawn from one group of equal shapes (:meth:`SegmentPool.shape_groups`; a group is chosen with
    probability proportional to its size, so every entry is equally likely), and a shard's rows of it are forwarded
    at once. Reference dropout drops the references of the whole batch; context corruption draws one sigma per
    sample, and a context swap takes a sample's first and preceding latents from another entry of the same group.
    """
    data = pool.data
    groups = pool.shape_groups()
    sizes = torch.tensor([len(g) for g in groups], dtype=torch.float64)

    def loss(step: int, generator: torch.Generator, shard: Shard) -> torch.Tensor:
        rows = shard.rows(data.batch_size)
        group = groups[int(torch.multinomial(sizes, 1, generator=generator))]
        picks = torch.randint(len(group), (data.batch_size,), generator=generator)
        drop = bool(torch.rand(1, generator=generator) < data.reference_dropout)
        sigmas = torch.rand(data.batch_size, generator=generator) * data.context_noise
        swaps = torch.rand(data.batch_size, generator=generator) < data.context_swap
        donors = (picks + torch.randint(1, max(2, len(group)), (data.batch_size,), generator=generator)) % len(group)
        requests, targets = [], []
        for pick, swap, donor in zip(picks[rows].tolist(), swaps[rows].tolist(), donors[rows].tolist()):
            request, target = pool[group[pick]]
            if swap and len(group) > 1:
                other = pool[group[donor]][0]
                request = replace(request, first_latent=other.first_latent, preceding=other.preceding)
            requests.append(request)
            targets.append(target)
        request = batch_requests(requests)
        if drop:
            request = replace(request, references=None)
        batch_rows = (rows.start, data.batch_size)
        request = corrupt_context(request, sigmas[rows], generator, batch_rows)
        return model.training_loss(request, torch.cat(targets), generator, batch_rows)

    return loss
