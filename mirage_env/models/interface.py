"""The interface between the segment loop (``World``) and a world-model backend.

Latents are normalised VAE latents ``[B, C, t, h, w]``; ``t`` latent frames stand for ``1 + temporal_stride * (t-1)``
pixel frames (causal VAE: latent 0 is pixel frame 0 alone, latent i >= 1 covers frames 4i-3 .. 4i and is placed at
the pose of frame 4i). ``h, w`` are the pixel size divided by ``spatial_stride``.

A segment is denoised in the time layout ``[references | target | preceding]``: references and preceding latents
are clean context (timestep 0), the target frames are noised, except the first target latent, which is given and
kept clean. The memory read conditions the target frames only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class SegmentRequest:
    """Everything a backend needs to generate the ``t`` target latents of one segment (batch B, C channels).

    first_latent:    [B, C, 1, h, w] clean first target latent (e.g. the last latent of the previous segment).
    memory_features: [B, C, t, h, w] memory read at each target camera (zeros where nothing is visible).
    memory_mask:     [B, 1, t, h, w] coverage of that read (bool or 0/1 float).
    preceding:       [B, C, p, h, w] or None, clean latents that came just before (placed after the target).
    references:      [B, C, r, h, w] or None, clean retrieved keyframe latents (placed before the target).
    context:         [B, L, text_dim] text embeddings, or None for the model's learned null context.
    """

    first_latent: torch.Tensor
    memory_features: torch.Tensor
    memory_mask: torch.Tensor
    preceding: torch.Tensor | None = None
    references: torch.Tensor | None = None
    context: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        """Number of target latent frames t (first latent included)."""
        return self.memory_features.shape[2]

    def check(self, channels: int) -> None:
        """Raise ValueError unless the shapes agree with each other and with ``channels``."""
        if self.first_latent.dim() != 5 or self.first_latent.shape[1:3] != (channels, 1):
            raise ValueError(f"first_latent must be [B, {channels}, 1, h, w], got {list(self.first_latent.shape)}")
        b, _, _, h, w = self.first_latent.shape
        t = self.num_frames
        if t < 1 or tuple(self.memory_features.shape) != (b, channels, t, h, w):
            raise ValueError(f"memory_features must be [B={b}, {channels}, t >= 1, {h}, {w}], "
                             f"got {list(self.memory_features.shape)}")
        if tuple(self.memory_mask.shape) != (b, 1, t, h, w):
            raise ValueError(f"memory_mask must be [{b}, 1, {t}, {h}, {w}], got {list(self.memory_mask.shape)}")
        for name in ("preceding", "references"):
            x = getattr(self, name)
            if x is not None and (x.dim() != 5 or x.shape[:2] != (b, channels) or x.shape[3:] != (h, w)):
                raise ValueError(f"{name} must be [B={b}, {channels}, n, {h}, {w}], got {list(x.shape)}")
        if self.context is not None and (self.context.dim() != 3 or self.context.shape[0] != b):
            raise ValueError(f"context must be [B={b}, L, text_dim], got {list(self.context.shape)}")


@runtime_checkable
class WorldModel(Protocol):
    """A video world model as the segment loop sees it (see the module docstring for the latent layout)."""

    latent_channels: int  # C
    temporal_stride: int  # 4: T = 1 + 4k pixel frames <-> 1 + k latent frames
    spatial_stride: int  # pixels per latent cell along each axis

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] float in [-1, 1] -> normalised latents [B, C, t, h, w] (float32, deterministic)."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, C, t, h, w] -> frames [B, T, 3, H, W] in [-1, 1] (float32)."""
        ...

    def visibility_latent(self, hw_latent: tuple[int, int], t: int) -> torch.Tensor:
        """The "score" latent [C, t, h, w] (encoding of an all-ones video), computed once per shape and cached."""
        ...

    def generate(self, request: SegmentRequest, generator: torch.Generator, num_steps: int) -> torch.Tensor:
        """Denoise the target latents [B, C, t, h, w] of a segment; frame 0 equals ``request.first_latent``."""
        ...
