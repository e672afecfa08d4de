"""Which parameters each training stage updates.

* ``dit``: the DiT and the memory branch together (only for the tiny preset, which has no pretrained base: the
  analogue of Wan's pre-training). The branch trains from the start because the memory read is the only way the
  camera reaches the model: a DiT pre-trained without it learns to continue the first latent and ignore the
  camera, which a frozen-DiT branch fine-tune cannot undo (README, *Training*);
* ``addon``: Mirage stage 1, the memory branch (and its null context) with the DiT frozen;
* ``lora``: Mirage stage 2, LoRA adapters on the DiT (added when missing) with the branch frozen;
* ``both``: the branch and LoRA together.
The VAE is always frozen. :func:`enable_gradient_checkpointing` trades compute for activation memory.
"""

from __future__ import annotations

from mirage_env.models import lora as lora_ops
from mirage_env.models.wan import WanWorldModel

STAGES = ("dit", "addon", "lora", "both")


def prepare_stage(model: WanWorldModel, stage: str, lora: lora_ops.LoraSettings | None = None) -> int:
    """Freeze everything, then unfreeze the parameters of ``stage``; returns how many tensors train."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    if stage in ("lora", "both") and not lora_ops.has_lora(model.dit):
        lora_ops.add_lora(model.dit, lora or lora_ops.LoraSettings.from_dict(model.preset.lora))
    model.requires_grad_(False)
    if stage == "dit":
        for name, param in model.dit.named_parameters():
            param.requires_grad_("lora_" not in name)
    if stage in ("dit", "addon", "both"):
        model.branch.requires_grad_(True)
    if stage in ("lora", "both"):
        for name, param in model.dit.named_parameters():
            param.requires_grad_("lora_" in name)
    return sum(1 for p in model.parameters() if p.requires_grad)


def enable_gradient_checkpointing(model: WanWorldModel) -> None:
    """Recompute the DiT's and the memory branch's blocks in the backward pass instead of keeping their
    activations (diffusers' ``enable_gradient_checkpointing``; the same gradients, less memory, more compute)."""
    model.dit.enable_gradient_checkpointing()
    model.branch.enable_gradient_checkpointing()
