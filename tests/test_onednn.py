"""The VAE's convolutions routed to oneDNN at inference compute what PyTorch's own dispatch computes."""

import copy
import pickle

import pytest
import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from torch import nn

from mirage_env.models.onednn import OneDnnCausalConv3d, OneDnnConv2d, route_convolutions_to_onednn

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def _layers() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict({"causal": WanCausalConv3d(4, 6, 3, padding=1), "image": nn.Conv2d(4, 6, 3, padding=1),
                          "linear": nn.Linear(4, 4)})


def test_routing_swaps_only_the_convolutions_and_keeps_weights():
    layers = _layers()
    state = copy.deepcopy(layers.state_dict())
    assert route_convolutions_to_onednn(layers) == 2
    assert type(layers["causal"]) is OneDnnCausalConv3d and type(layers["image"]) is OneDnnConv2d
    assert type(layers["linear"]) is nn.Linear
    assert all(torch.equal(state[k], v) for k, v in layers.state_dict().items())
    again = pickle.loads(pickle.dumps(layers))
    assert type(again["causal"]) is OneDnnCausalConv3d


@pytest.mark.parametrize("batch", [1, 3])
def test_routed_inference_matches_pytorch_dispatch_and_training_is_untouched(batch):
    reference, routed = _layers(), _layers()
    route_convolutions_to_onednn(routed)
    video, image = torch.randn(batch, 4, 3, 5, 7), torch.randn(batch, 4, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(routed["causal"](video), reference["causal"](video), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(routed["image"](image), reference["image"](image), rtol=1e-5, atol=1e-5)
    for layers in (routed, reference):  # with autograd the routed layers take PyTorch's own path: equal gradients
        layers["causal"](video).square().sum().backward()
    assert torch.equal(routed["causal"].weight.grad, reference["causal"].weight.grad)
