"""Procedural solid textures: albedo is a function of the 3D surface point only, so it is the same from every view.

Patterns live on an integer lattice in "texture units" (``point / scale``); per-cell colour variation comes from a
hash of the lattice cell and the material seed. Points are pulled ``INSET`` lattice units inside the surface before
the lattice lookup, so a face lying exactly on a lattice plane never flickers between two cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Vec3 = tuple[float, float, float]
TEXTURES = ("checker", "stripes", "noise", "brick")
INSET = 1e-3


@dataclass(frozen=True)
class Material:
    """A two-colour procedural texture; ``scale`` is the lattice cell size in metres, ``seed`` varies the hash."""

    texture: str
    color_a: Vec3
    color_b: Vec3
    scale: float
    seed: int

    def __post_init__(self) -> None:
        if self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; expected one of {TEXTURES}")
        if not self.scale > 0:
            raise ValueError(f"texture scale must be positive, got {self.scale}")


def _fract(x: torch.Tensor) -> torch.Tensor:
    return x - torch.floor(x)


def lattice_hash(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Uniform-looking [0, 1) float32 values at integer cells (float32 coordinate tensors, broadcastable).

    A multiply-fract hash (after D. Hoskins' "hash without sine"): float arithmetic only, so it is fast and exact to
    reproduce. ``seed`` is a per-point float32 offset in [0, 1).
    """
    px, py, pz = _fract(x * 0.1031 + seed), _fract(y * 0.1030 + seed), _fract(z * 0.0973 + seed)
    s = px * (py + 33.33) + py * (pz + 33.33) + pz * (px + 33.33)
    return _fract((px + py + 2.0 * s) * (pz + s))


def value_noise(q: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Smooth trilinear value noise in [0, 1) at lattice coordinates q [3, P] (seed [P] float32 in [0, 1))."""
    base = torch.floor(q)
    f = (q - base).to(torch.float32)
    f = f * f * (3.0 - 2.0 * f)
    c = base.to(torch.float32)
    x, y, z = (c[a] + torch.tensor([[0.0], [1.0]]) for a in range(3))  # [2, P]: lower and upper cell per axis
    v = lattice_hash(x[:, None, None], y[None, :, None], z[None, None, :], seed)  # [2, 2, 2, P]
    v = torch.lerp(v[:, :, 0], v[:, :, 1], f[2])
    v = torch.lerp(v[:, 0], v[:, 1], f[1])
    return torch.lerp(v[0], v[1], f[0])


def _cell_hash(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    return lattice_hash(*(torch.floor(c).to(torch.float32) for c in (x, y, z)), seed)


def _checker(q: torch.Tensor, seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    parity = torch.remainder(torch.floor(q).sum(0), 2.0).to(torch.float32)
    return parity, 0.85 + 0.3 * _cell_hash(*q, seed)


def _stripes(q: torch.Tensor, seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    band = torch.floor(q[0] + q[2])
    zero = torch.zeros_like(band)
    return torch.remainder(band, 2.0).to(torch.float32), 0.9 + 0.2 * _cell_hash(band, zero, zero, seed)


def _noise(q: torch.Tensor, seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = 0.8 * value_noise(q, seed) + 0.2 * _cell_hash(*(4.0 * q), seed)  # smooth blobs plus fine grain
    return (w - 0.2).clamp(0.0, 0.6) / 0.6, torch.ones_like(w)


def _brick(q: torch.Tensor, seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = 2.0 * q[1]
    row = torch.floor(y)
    u = q[0] + q[2] + 0.5 * torch.remainder(row, 2.0)
    col = torch.floor(u)
    mortar = ((y - row) < 0.12) | ((u - col) < 0.06)
    return mortar.to(torch.float32), 0.8 + 0.4 * _cell_hash(row, col, torch.zeros_like(row), seed)


_PATTERNS = (_checker, _stripes, _noise, _brick)


def seed_offset(seed: torch.Tensor) -> torch.Tensor:
    """Float32 hash offsets in [0, 1) for integer material seeds."""
    return _fract(seed.to(torch.float64) * 0.6180339887).to(torch.float32)


def albedo(points: torch.Tensor, normals: torch.Tensor, texture: torch.Tensor, scale: torch.Tensor,
           color_a: torch.Tensor, color_b: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Albedo [3, P] in [0, 1] of surface points [3, P] with outward normals [3, P] (channel-first).

    ``texture`` [P] indexes :data:`TEXTURES`; ``scale`` [P], ``color_a``/``color_b`` [3, P] and ``seed`` [P] (from
    :func:`seed_offset`) are the per-point material. Colour = ``mix(color_a, color_b, w) * jitter`` for the pattern's
    weight ``w`` and per-cell brightness ``jitter``.
    """
    q = points / scale - INSET * normals
    w = torch.zeros(q.shape[1], dtype=torch.float32)
    jitter = torch.ones_like(w)
    for k, pattern in enumerate(_PATTERNS):
        sel = (texture == k).nonzero()[:, 0]
        if sel.numel():
            w[sel], jitter[sel] = pattern(q[:, sel], seed[sel])
    return (torch.lerp(color_a, color_b, w) * jitter).clamp(0.0, 1.0)
