"""Fully sharded data parallelism (torch's FSDP2) for the trainer: shard a module's blocks as accelerate's FSDP2
preparation does, where accelerate cannot (it turns FSDP on only for accelerator devices, so CPU processes on gloo
get plain ``MULTI_CPU``), and move whole tensors out of and into sharded parameters for checkpoints.

A sharded parameter is a ``DTensor``: each process holds one slice (``Shard(0)``) of it, and so of its AdamW moments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from accelerate import FullyShardedDataParallelPlugin
from accelerate.utils import parse_flag_from_env
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy, get_module_children_bottom_up
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor


def fsdp_launched() -> bool:
    """Whether ``accelerate launch`` asked for FSDP (an FSDP config file or ``--use_fsdp``)."""
    return parse_flag_from_env("ACCELERATE_USE_FSDP")


def shard_blocks(module: nn.Module) -> None:
    """Shard ``module`` in place with ``fully_shard``, as accelerate's FSDP2 preparation does with the launcher's
    settings: one unit per block its wrap policy selects (``fsdp_transformer_layer_cls_to_wrap``: the DiT's and the
    memory branch's blocks), then the rest as the root unit. Raises ValueError for ``fsdp_version`` 1, or when the
    policy names a block class the module does not have."""
    if isinstance(module, FSDPModule):
        return
    plugin = FullyShardedDataParallelPlugin()  # reads the launcher's FSDP_* settings
    if plugin.fsdp_version != 2:
        raise ValueError(f"fsdp_version {plugin.fsdp_version}: the trainer shards with FSDP2 only; set "
                         "fsdp_version: 2 in the accelerate config")
    plugin.set_auto_wrap_policy(module)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, module)
    for child in get_module_children_bottom_up(module)[:-1]:
        if policy is not None and policy(child):
            fully_shard(child, reshard_after_forward=plugin.reshard_after_forward)
    fully_shard(module, reshard_after_forward=plugin.reshard_after_forward)


@contextlib.contextmanager
def gradient_sync_off(module: FSDPModule) -> Iterator[None]:
    """Accumulate unsharded gradients without reducing them (FSDP2's ``no_sync``)."""
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a sharded tensor (a collective: every process must call it, in the same order); any other
    tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``like``: this process's slice as a DTensor when ``like`` is a sharded tensor of the same
    shape (no communication: every process reads the whole tensor), else ``full`` on ``like``'s device."""
    if isinstance(like, DTensor) and full.shape == like.shape:
        return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
    return full.to(like.device)
