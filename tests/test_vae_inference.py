"""The VAE's fast-inference layers (oneDNN convolutions, RMS norm) compute what diffusers' own layers compute."""

import copy
import pickle

import pytest
import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm
from torch import nn

from mirage_env.models.vae_inference import FastRmsNorm, OneDnnCausalConv3d, OneDnnConv2d, speed_up_vae_inference

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def _layers() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict({"causal": WanCausalConv3d(4, 6, 3, padding=1), "image": nn.Conv2d(4, 6, 3, padding=1),
                          "linear": nn.Linear(4, 4), "norm": WanRMS_norm(4, images=False)})


def test_swapping_routes_only_convolutions_and_norms_and_keeps_weights():
    layers = _layers()
    state = copy.deepcopy(layers.state_dict())
    assert speed_up_vae_inference(layers) == 3
    assert type(layers["causal"]) is OneDnnCausalConv3d and type(layers["image"]) is OneDnnConv2d
    assert type(layers["norm"]) is FastRmsNorm
    assert type(layers["linear"]) is nn.Linear
    assert all(torch.equal(state[k], v) for k, v in layers.state_dict().items())
    again = pickle.loads(pickle.dumps(layers))
    assert type(again["causal"]) is OneDnnCausalConv3d


@pytest.mark.parametrize("batch", [1, 3])
def test_routed_inference_matches_pytorch_dispatch_and_training_is_untouched(batch):
    reference, routed = _layers(), _layers()
    speed_up_vae_inference(routed)
    video, image = torch.randn(batch, 4, 3, 5, 7), torch.randn(batch, 4, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(routed["causal"](video), reference["causal"](video), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(routed["image"](image), reference["image"](image), rtol=1e-5, atol=1e-5)
        for cache in (video[:, :, -1:], video[:, :, -2:]):  # a short and a full causal cache from the last chunk
            torch.testing.assert_close(routed["causal"](video, cache), reference["causal"](video, cache),
                                       rtol=1e-5, atol=1e-5)
    for layers in (routed, reference):  # with autograd the routed layers take PyTorch's own path: equal gradients
        layers["causal"](video).square().sum().backward()
    assert torch.equal(routed["causal"].weight.grad, reference["causal"].weight.grad)


def test_fast_rms_norm_matches_diffusers_and_keeps_autograd():
    reference, fast = _layers(), _layers()
    speed_up_vae_inference(fast)
    with torch.no_grad():
        reference["norm"].gamma.uniform_(0.5, 1.5)
        fast["norm"].gamma.copy_(reference["norm"].gamma)
    video = torch.randn(3, 4, 2, 5, 7)
    video[0, :, 0, 0, 0] = 0.0  # an all-zero channel vector: both give zeros, not NaN
    with torch.no_grad():
        torch.testing.assert_close(fast["norm"](video), reference["norm"](video), rtol=1e-6, atol=1e-6)
    for layers in (fast, reference):
        layers["norm"](video).square().sum().backward()
    assert torch.equal(fast["norm"].gamma.grad, reference["norm"].gamma.grad)
