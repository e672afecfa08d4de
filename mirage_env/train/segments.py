"""Teacher-forced training segments with the conditioning the world sees at inference.

For a clip of ``1 + 4 L`` frames, the first ``m`` latent frames are *observed* by a :class:`~mirage_env.world.World`
as generated frames are during a rollout (dynamic discard from depth, memory write, keyframes, preceding history),
with the clip's dynamic-object masks also kept out of the memory (as the first frame's are at inference); then
:meth:`World.condition` gives the memory read at the target poses, the preceding latents and the retrieved
references. The target is the clip's next ``k`` latent frames, encoded as the world would produce them: a segment
starting at frame ``4 m`` whose first latent is that frame alone. Clips come from any :data:`ClipSource`: the
simulator by default, or real sequences (:mod:`mirage_env.train.real_data`), all through :func:`teacher_forced`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mirage_env.models.interface import SegmentRequest
from mirage_env.models.sampler import gaussian
from mirage_env.models.wan import WanWorldModel
from mirage_env.train.clips import Clip, ClipConfig, ClipSource, SimulatorClips
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


def teacher_forced(model: WanWorldModel, clip: Clip, context: int, target: int,
                   config: WorldConfig) -> tuple[SegmentRequest, torch.Tensor]:
    """(request with batch 1, target latents [1, C, 1 + target, h, w]) for ``context`` observed latent frames."""
    stride = model.temporal_stride
    video = to_unit(clip.frames)  # [T, 3, H, W]
    world = World(model, config, batch_size=1)
    world.reset(0, InitialView(clip.frames[0], clip.depth[0], clip.K, clip.poses[0], clip.dynamic[0]), seed=0)
    if context:
        observed = model.encode(video[None, : 1 + stride * context])[0, :, 1:]
        frames = slice(stride, stride * context + 1, stride)
        depth = clip.depth[frames].nan_to_num(posinf=0.0)
        world.observe(0, observed, depth, clip.poses[frames].double(), clip.dynamic[frames])
    start = stride * context
    latents = model.encode(video[None, start: start + stride * target + 1])
    condition = world.condition(0, clip.poses[start: start + stride * target + 1: stride].double())
    return segment_request(latents[:, :, :1], [condition]), latents


class SegmentPool:
    """A fixed pool of teacher-forced segments (the VAE and the world are frozen, so they can be cached).

    Entry ``i`` is cut from ``clips(i)``: simulator clips by default, or any :data:`ClipSource` whose clips have
    ``data.clip_frames(...)`` frames of the world's ``image_hw``.
    """

    def __init__(self, model: WanWorldModel, data: SegmentData, world: WorldConfig, seed: int,
                 clips: ClipSource | None = None) -> None:
        self.model, self.data, self.world, self.seed = model, data, world, seed
        self.frames = data.clip_frames(model.temporal_stride)
        if clips is None:
            clips = SimulatorClips(ClipConfig(world.image_hw, self.frames, scenes=data.scenes), seed)
        self.clips = clips
        self.samples: dict[int, tuple[SegmentRequest, torch.Tensor]] = {}

    def __getitem__(self, index: int) -> tuple[SegmentRequest, torch.Tensor]:
        index %= self.data.pool
        if index not in self.samples:
            clip = self.clips(index)
            if tuple(clip.frames.shape) != (self.frames, *self.world.image_hw, 3):
                raise ValueError(f"clip {index} has frames {list(clip.frames.shape)}; this pool needs "
                                 f"[{self.frames}, {self.world.image_hw[0]}, {self.world.image_hw[1]}, 3]")
            rng = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            target = int(torch.randint(1, self.data.max_target + 1, (1,), generator=rng))
            context = int(torch.randint(0, self.data.latents - target + 1, (1,), generator=rng))
            with torch.no_grad():
                self.samples[index] = teacher_forced(self.model, clip, context, target, self.world)
        return self.samples[index]


def corrupt_context(request: SegmentRequest, sigma: float, generator: torch.Generator) -> SegmentRequest:
    """The request with its clean context (first latent, preceding, references) moved to noise level ``sigma``
    along the flow, ``(1 - sigma) x + sigma noise``; the memory read is left as it is."""
    def noised(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or sigma == 0:
            return x
        return (1 - sigma) * x + sigma * gaussian(tuple(x.shape), generator, x.device).to(x.dtype)

    return replace(request, first_latent=noised(request.first_latent), preceding=noised(request.preceding),
                   references=noised(request.references))


def flow_loss_fn(model: WanWorldModel, pool: SegmentPool):
    """A :data:`~mirage_env.train.trainer.LossFn`: mean flow-matching loss over a batch of pool segments, with
    reference dropout and context corruption as :class:`SegmentData` sets them."""
    data = pool.data

    def loss(step: int, generator: torch.Generator) -> torch.Tensor:
        picks = torch.randint(data.pool, (data.batch_size,), generator=generator)
        drops = torch.rand(data.batch_size, generator=generator) < data.reference_dropout
        sigmas = torch.rand(data.batch_size, generator=generator) * data.context_noise
        swaps = torch.rand(data.batch_size, generator=generator) < data.context_swap
        donors = (picks + torch.randint(1, max(2, data.pool), (data.batch_size,), generator=generator)) % data.pool
        losses = []
        for i, drop, sigma, swap, donor in zip(picks.tolist(), drops.tolist(), sigmas.tolist(), swaps.tolist(),
                                               donors.tolist()):
            request, target = pool[i]
            if drop:
                request = replace(request, references=None)
            if swap:
                other = pool[donor][0]
                request = replace(request, first_latent=other.first_latent, preceding=other.preceding)
            request = corrupt_context(request, sigma, generator)
            losses.append(model.training_loss(request, target, generator))
        return torch.stack(losses).mean()

    return loss
