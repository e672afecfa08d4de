"""Faster CPU inference for the Wan VAE: oneDNN convolutions whatever the batch, and a cheaper RMS norm.

* Convolutions: PyTorch's CPU dispatch sends a float32 convolution with batch 1 and a small ``N * C * T * H`` (it
  multiplies the first four sizes only) to its reference im2col kernel (``slow_conv3d_forward`` /
  ``slow_conv2d_forward``) instead of oneDNN. For the tiny VAE that is every 3-D convolution of a batch-1 decode,
  and that kernel is slower than oneDNN's; here every batch size goes to oneDNN.
* Causal padding: diffusers' ``WanCausalConv3d`` zero-pads every input in time and space with ``F.pad`` (a copy of
  the whole activation) before convolving; here only the causal time padding is materialised and oneDNN pads the
  borders inside the convolution (the same zeros, the same sums).
* RMS norm: diffusers' ``WanRMS_norm`` calls ``F.normalize`` over the channel dimension, a strided
  ``linalg_vector_norm``; here a sum of squares and ``rsqrt`` compute the same normalisation, scaled in place (one
  new tensor instead of three).

:func:`speed_up_vae_inference` swaps the class of those layers for subclasses that take the fast path when it
applies (CPU, float32, no autograd); everything else, training included, keeps the parent's code. What it saves in
a world step: README, *Benchmarks*, *Environment throughput*.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm
from torch import nn


def _fast_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and not torch.is_grad_enabled()


class OneDnnCausalConv3d(WanCausalConv3d):
    """``WanCausalConv3d`` computed by oneDNN at inference on CPU, its spatial zero padding done by the convolution."""

    def forward(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        if not _fast_path(x, self.weight):
            return super().forward(x, cache_x)
        front = self._padding[4]  # causal: 2 * padding[0] frames before, none after; the cache fills them first
        if cache_x is not None and front > 0:
            x = torch.cat([cache_x.to(x.device), x], dim=2)
            front -= cache_x.shape[2]
        if front:
            x = F.pad(x, (0, 0, 0, 0, front, 0))
        spatial = (0, self._padding[2], self._padding[0])
        return torch.ops.aten.mkldnn_convolution(x.contiguous(), self.weight, self.bias, spatial, self.stride,
                                                 self.dilation, self.groups)


class OneDnnConv2d(nn.Conv2d):
    """``nn.Conv2d`` computed by oneDNN at inference on CPU."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if _fast_path(x, weight) and self.padding_mode == "zeros" and not isinstance(self.padding, str):
            return torch.ops.aten.mkldnn_convolution(x.contiguous(), weight, bias, self.padding, self.stride,
                                                     self.dilation, self.groups)
        return super()._conv_forward(x, weight, bias)


class FastRmsNorm(WanRMS_norm):
    """``WanRMS_norm`` as ``x * rsqrt(max(sum(x^2), eps^2))`` at inference on CPU (``F.normalize``'s eps 1e-12)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _fast_path(x, self.gamma):
            return super().forward(x)
        inverse_norm = x.square().sum(dim=1 if self.channel_first else -1, keepdim=True).clamp_min_(1e-24).rsqrt_()
        out = (x * inverse_norm).mul_(self.scale * self.gamma)
        return out if isinstance(self.bias, float) and self.bias == 0.0 else out.add_(self.bias)


_CONVOLUTIONS = {WanCausalConv3d: OneDnnCausalConv3d, nn.Conv2d: OneDnnConv2d}
_NORMS = {WanRMS_norm: FastRmsNorm}


def speed_up_vae_inference(module: nn.Module) -> int:
    """Swap the class of every ``WanCausalConv3d``, ``nn.Conv2d`` (when PyTorch has oneDNN) and ``WanRMS_norm`` in
    ``module`` for its fast-inference subclass (weights, state dict and pickling are unchanged); returns how many
    layers were swapped."""
    routed = {**_NORMS, **(_CONVOLUTIONS if torch.backends.mkldnn.is_available() else {})}
    swapped = 0
    for layer in module.modules():
        subclass = routed.get(type(layer))
        if subclass is not None:
            layer.__class__ = subclass
            swapped += 1
    return swapped
