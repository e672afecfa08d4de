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
    """

    latents: int = 8
    max_target: int = 2
    pool: int = 256
    batch_size: int = 4
    scenes: int = 400
    reference_dropout: float = 0.5

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


def flow_loss_fn(model: WanWorldModel, pool: SegmentPool):
    """A :data:`~mirage_env.train.trainer.LossFn`: mean flow-matching loss over a batch of pool segments."""

    def loss(step: int, generator: torch.Generator) -> torch.Tensor:
        picks = torch.randint(pool.data.pool, (pool.data.batch_size,), generator=generator)
        drops = torch.rand(pool.data.batch_size, generator=generator) < pool.data.reference_dropout
        losses = []
        for i, drop in zip(picks.tolist(), drops.tolist()):
            request, target = pool[i]
            losses.append(model.training_loss(replace(request, references=None) if drop else request, target,
                                              generator))
        return torch.stack(losses).mean()

    return loss
