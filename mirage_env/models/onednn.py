"""CPU inference convolutions through oneDNN whatever the batch size.

PyTorch's CPU dispatch sends a float32 convolution with batch 1 and a small ``N * C * T * H`` (it multiplies the
first four sizes only) to its reference im2col kernel (``slow_conv3d_forward`` / ``slow_conv2d_forward``) instead of
oneDNN. For the tiny VAE that is every 3-D convolution of a batch-1 decode, and the reference kernel is slower:
a single environment decoded at about 0.7x the speed of a batch of two. :func:`route_convolutions_to_onednn` swaps
the class of the VAE's convolution layers for subclasses that call oneDNN directly when that applies (CPU, float32,
no autograd, integer zero padding); everything else, training included, keeps PyTorch's own dispatch.
"""

from __future__ import annotations

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from torch import nn


class _OneDnnInference:
    """Mixin for ``nn.Conv2d`` / ``nn.Conv3d`` subclasses: oneDNN for CPU float32 inference, else the parent."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and not torch.is_grad_enabled()
                and self.padding_mode == "zeros" and not isinstance(self.padding, str)):
            return torch.ops.aten.mkldnn_convolution(x.contiguous(), weight, bias, self.padding, self.stride,
                                                     self.dilation, self.groups)
        return super()._conv_forward(x, weight, bias)


class OneDnnCausalConv3d(_OneDnnInference, WanCausalConv3d):
    """``WanCausalConv3d`` computed by oneDNN at inference on CPU."""


class OneDnnConv2d(_OneDnnInference, nn.Conv2d):
    """``nn.Conv2d`` computed by oneDNN at inference on CPU."""


_ROUTED = {WanCausalConv3d: OneDnnCausalConv3d, nn.Conv2d: OneDnnConv2d}


def route_convolutions_to_onednn(module: nn.Module) -> int:
    """Swap the class of every ``WanCausalConv3d`` and ``nn.Conv2d`` in ``module`` for its oneDNN subclass (weights,
    state dict and pickling are unchanged); returns how many layers were swapped. A no-op without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return 0
    swapped = 0
    for layer in module.modules():
        routed = _ROUTED.get(type(layer))
        if routed is not None:
            layer.__class__ = routed
            swapped += 1
    return swapped
