"""Depth for newly generated frames, before their latents are lifted into the memory.

A provider is any callable ``provider(frames, memory_depth, memory_mask, cameras) -> depth``:

- ``frames`` [B, T, 3, H, W] in [-1, 1] (the decoded frames),
- ``memory_depth`` [B, T, h, w] z-depth of the memory read at those cameras and ``memory_mask`` [B, T, h, w] its
  coverage (any resolution that divides into H x W, e.g. the latent grid; both may be None),
- ``cameras`` (:class:`Cameras`, optional) for providers that need the poses (the simulator),
- result [B, T, H, W] float32 z-depth in the memory's convention: 0 where depth is unknown (sky, holes that
  nothing fills); such pixels are not written.

Providers: :class:`MemoryDepth` (z-buffer where covered, holes filled), :class:`MonocularDepth` (a transformers
depth-estimation model from a local directory, aligned to the memory by least squares), :class:`SimulatorDepth`
(exact depth when the world is the simulator). Any function with this signature works as a provider too.

Hole fallback of :class:`MemoryDepth` without a fallback provider ("far fill"): a hole takes the largest (farthest)
covered depth of the smallest enclosing block of a 2x2 quadtree over the image that contains any coverage. Newly
revealed content is mostly background uncovered behind a foreground edge, so the far side is the better guess, and
the quadtree makes it O(HW) per frame. Frames with no coverage at all stay 0 (unknown).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import torch
import torch.nn.functional as F

from mirage_env.sim import Scene, render_depth

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Cameras(NamedTuple):
    """Cameras of the frames: K [B, T, 3, 3] at the frames' pixel size, c2w [B, T, 4, 4] (OpenCV), time [B, T] s."""

    K: torch.Tensor
    c2w: torch.Tensor
    time: torch.Tensor


class DepthProvider(Protocol):
    def __call__(self, frames: torch.Tensor, memory_depth: torch.Tensor | None = None,
                 memory_mask: torch.Tensor | None = None, cameras: Cameras | None = None) -> torch.Tensor: ...


def memory_at_frames(frames: torch.Tensor, memory_depth: torch.Tensor,
                     memory_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory depth and coverage (mask and depth > 0) at the frames' pixel size [B, T, H, W] (nearest)."""
    b, t, _, h, w = frames.shape
    if memory_depth.shape[:2] != (b, t) or memory_mask.shape != memory_depth.shape:
        raise ValueError(f"memory depth {list(memory_depth.shape)} and mask {list(memory_mask.shape)} must be "
                         f"[B={b}, T={t}, h, w]")
    mh, mw = memory_depth.shape[2:]
    if h % mh or w % mw:
        raise ValueError(f"memory grid {mh}x{mw} does not divide the frames {h}x{w}")
    depth = memory_depth.to(frames.device, torch.float32)
    covered = memory_mask.to(frames.device, torch.bool) & (depth > 0)
    depth = depth.repeat_interleave(h // mh, dim=2).repeat_interleave(w // mw, dim=3)
    covered = covered.repeat_interleave(h // mh, dim=2).repeat_interleave(w // mw, dim=3)
    return depth, covered


def fill_far(depth: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """Fill holes of ``depth`` [..., H, W] by the quadtree far fill (module docstring); uncovered frames -> 0."""
    shape = depth.shape
    depth = torch.where(covered, depth, torch.zeros((), dtype=depth.dtype, device=depth.device))
    flat_depth, flat_covered = depth.reshape(-1, *shape[-2:]), covered.reshape(-1, *shape[-2:])
    return _fill_far(flat_depth, flat_covered).reshape(shape)


def _fill_far(depth: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    h, w = depth.shape[-2:]
    if bool(covered.all()) or (h == 1 and w == 1):
        return depth
    pad = (0, w % 2, 0, h % 2)
    coarse_depth = F.max_pool2d(F.pad(depth, pad)[:, None], 2)[:, 0]
    coarse_covered = F.max_pool2d(F.pad(covered.float(), pad)[:, None], 2)[:, 0] > 0
    coarse = _fill_far(coarse_depth, coarse_covered)
    up = coarse.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[:, :h, :w]
    return torch.where(covered, depth, up)


def align_scale_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      min_pixels: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame (last two dims) least-squares ``scale, shift`` with ``scale * pred + shift ~ target`` on ``mask``.

    Fewer than ``min_pixels`` masked pixels or a flat ``pred``: scale only (shift 0); no masked pixel: (1, 0).
    Returns tensors of the leading shape.
    """
    m = mask.to(torch.float64)
    x, y = pred.to(torch.float64) * m, target.to(torch.float64) * m
    n, sx, sy = m.sum((-2, -1)), x.sum((-2, -1)), y.sum((-2, -1))
    sxx, sxy = (x * x).sum((-2, -1)), (x * y).sum((-2, -1))
    det = n * sxx - sx * sx
    full = (n >= min_pixels) & (det > 1e-9 * n * sxx)
    scale_only = torch.where(sxx > 0, sxy / sxx.clamp_min(1e-300), torch.ones_like(sxx))
    scale = torch.where(full, (n * sxy - sx * sy) / torch.where(full, det, torch.ones_like(det)), scale_only)
    shift = torch.where(full, (sy - scale * sx) / n.clamp_min(1), torch.zeros_like(sy))
    scale = torch.where(n > 0, scale, torch.ones_like(scale))
    return scale.to(pred.dtype), shift.to(pred.dtype)


class MemoryDepth:
    """The memory z-buffer where covered; holes from ``fallback`` (e.g. :class:`MonocularDepth`) or the far fill."""

    def __init__(self, fallback: DepthProvider | None = None) -> None:
        self.fallback = fallback

    def __call__(self, frames: torch.Tensor, memory_depth: torch.Tensor | None = None,
                 memory_mask: torch.Tensor | None = None, cameras: Cameras | None = None) -> torch.Tensor:
        if memory_depth is None or memory_mask is None:
            if self.fallback is None:
                raise ValueError("MemoryDepth needs the memory read (or a fallback provider)")
            return self.fallback(frames, None, None, cameras)
        depth, covered = memory_at_frames(frames, memory_depth, memory_mask)
        if self.fallback is None:
            return fill_far(depth, covered)
        return torch.where(covered, depth, self.fallback(frames, memory_depth, memory_mask, cameras))


class MonocularDepth:
    """A transformers ``AutoModelForDepthEstimation`` from a local directory, aligned to the memory.

    ``output`` says what the model predicts: "disparity" (relative inverse depth: DPT, Depth Anything) is aligned
    to ``1 / memory depth``, "depth" (metric models) to the depth itself, by per-frame least-squares scale and
    shift on covered pixels. Without coverage the estimate is returned unaligned (model units). Pixels whose
    aligned value is not positive get 0. Images are resized to ``input_size`` (default: the frame size rounded up
    to the model's patch size) and normalised with ``preprocessor_config.json`` when present, else ImageNet stats.
    """

    def __init__(self, model_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 output: Literal["disparity", "depth"] = "disparity", input_size: tuple[int, int] | None = None,
                 min_pixels: int = 16) -> None:
        from transformers import AutoModelForDepthEstimation

        if output not in ("disparity", "depth"):
            raise ValueError(f"output must be 'disparity' or 'depth', got {output!r}")
        model_dir = Path(model_dir)
        self.model = AutoModelForDepthEstimation.from_pretrained(str(model_dir), dtype=dtype, local_files_only=True)
        self.model.to(device).eval()
        self.output, self.input_size, self.min_pixels = output, input_size, min_pixels
        self.patch = int(getattr(self.model.config, "patch_size", None) or 1)
        stats = model_dir / "preprocessor_config.json"
        processor = json.loads(stats.read_text()) if stats.is_file() else {}
        self.mean = torch.tensor(processor.get("image_mean", IMAGENET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.get("image_std", IMAGENET_STD)).view(1, 3, 1, 1)

    @torch.no_grad()
    def estimate(self, frames: torch.Tensor) -> torch.Tensor:
        """Raw model output resized to the frames: [B, T, H, W]."""
        b, t, _, h, w = frames.shape
        size = self.input_size or (-(-h // self.patch) * self.patch, -(-w // self.patch) * self.patch)
        device = self.model.device
        x = (frames.reshape(b * t, 3, h, w).to(device, torch.float32) + 1) / 2
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = (x - self.mean.to(device)) / self.std.to(device)
        raw = self.model(pixel_values=x.to(self.model.dtype)).predicted_depth.float()
        raw = F.interpolate(raw[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return raw.reshape(b, t, h, w).to(frames.device)

    def __call__(self, frames: torch.Tensor, memory_depth: torch.Tensor | None = None,
                 memory_mask: torch.Tensor | None = None, cameras: Cameras | None = None) -> torch.Tensor:
        raw = self.estimate(frames)
        if memory_depth is None or memory_mask is None:
            reference, covered = torch.zeros_like(raw), torch.zeros_like(raw, dtype=torch.bool)
        else:
            reference, covered = memory_at_frames(frames, memory_depth, memory_mask)
        if self.output == "disparity":
            reference = torch.where(covered, 1 / reference.clamp_min(1e-12), torch.zeros_like(reference))
        scale, shift = align_scale_shift(raw, reference, covered, self.min_pixels)
        fitted = scale[..., None, None] * raw + shift[..., None, None]
        valid = fitted > 0
        if self.output == "disparity":
            fitted = 1 / torch.where(valid, fitted, torch.ones_like(fitted))
        return torch.where(valid, fitted, torch.zeros_like(fitted))


class SimulatorDepth:
    """Exact z-depth from :mod:`mirage_env.sim` when the world is a simulated scene (sky -> 0). Needs ``cameras``."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene

    def __call__(self, frames: torch.Tensor, memory_depth: torch.Tensor | None = None,
                 memory_mask: torch.Tensor | None = None, cameras: Cameras | None = None) -> torch.Tensor:
        if cameras is None:
            raise ValueError("SimulatorDepth needs the cameras of the frames")
        b, t, _, h, w = frames.shape
        depth = render_depth(self.scene, cameras.K.reshape(-1, 3, 3), cameras.c2w.reshape(-1, 4, 4), (h, w),
                             cameras.time.reshape(-1))
        depth = torch.where(torch.isfinite(depth), depth, torch.zeros((), dtype=depth.dtype))
        return depth.reshape(b, t, h, w).to(frames.device)
