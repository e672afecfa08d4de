"""Frame metrics: PSNR, SSIM and the sharpness ratio that keeps PSNR honest about blur.

PSNR rewards a blurred frame over a sharp one with slightly misplaced detail, so every quality figure of the
project carries :func:`sharpness_ratio` beside it: the gradient energy of the frames over that of the true frames
(1 for equally detailed frames, near 0 for a smear, above 1 for added noise or ringing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each pair of uint8 images [..., H, W, 3]: a tensor of shape [...]."""
    mse = (a.float() - b.float()).pow(2).mean(dim=(-3, -2, -1)) / 255.0**2
    return -10 * torch.log10(mse.clamp_min(1e-10))


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of uint8 images [..., H, W, 3] pooled over all of them, over the ``mask`` [..., H, W] pixels when
    given."""
    error = (a.float() - b.float()).pow(2).mean(dim=-1) / 255.0**2
    mse = error.mean() if mask is None else error[mask].mean()
    return float(-10 * torch.log10(mse.clamp_min(1e-10)))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of uint8 images [..., H, W, 3] (Wang et al. 2004: 7x7 Gaussian window, sigma 1.5, on [0, 1])."""
    x, y = (t.float().reshape(-1, *t.shape[-3:]).permute(0, 3, 1, 2) / 255.0 for t in (a, b))
    coords = torch.arange(7, dtype=torch.float32) - 3
    g = torch.exp(-coords**2 / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 7, 7)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(value.mean())


def gradient_energy(images: torch.Tensor) -> torch.Tensor:
    """Mean squared horizontal and vertical finite difference of uint8 images [..., H, W, 3] (on [0, 1], all
    channels): a tensor of shape [...]."""
    x = images.float() / 255.0
    dx = (x[..., :, 1:, :] - x[..., :, :-1, :]).pow(2).mean(dim=(-3, -2, -1))
    dy = (x[..., 1:, :, :] - x[..., :-1, :, :]).pow(2).mean(dim=(-3, -2, -1))
    return dx + dy


def sharpness_ratio(frames: torch.Tensor, truth: torch.Tensor) -> float:
    """Gradient energy of uint8 ``frames`` [..., H, W, 3] over that of the true frames of the same shape, each
    summed over all frames."""
    if frames.shape != truth.shape:
        raise ValueError(f"frames {list(frames.shape)} and truth {list(truth.shape)} differ in shape")
    return float(gradient_energy(frames).sum() / gradient_energy(truth).sum().clamp_min(1e-12))


def box_blur(images: torch.Tensor, size: int = 5) -> torch.Tensor:
    """uint8 images [..., H, W, 3] blurred with a ``size`` x ``size`` box (borders replicated): a baseline that
    scores high PSNR with a low sharpness ratio."""
    x = images.float().reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2)
    pad = size // 2
    x = F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), size, stride=1)
    return x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).reshape(images.shape)
