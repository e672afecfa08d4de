"""The PPO actor-critic and the policy that plays a PPO checkpoint.

Inputs by observation kind: ``rgb`` (exploration: the uint8 64x64 frame), ``latent`` (exploration with latent
observations: float32 [C, h, w]) and ``goal`` (the goal task: the frame plus :data:`GOAL_FEATURES` numbers, the
goal view relative to the camera, concatenated to the CNN features). One categorical head per key group of
``MultiDiscrete([3, 3, 3, 3])``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

NVEC = (3, 3, 3, 3)
KINDS = ("rgb", "latent", "goal")
GOAL_FEATURES = 12
HIDDEN = 256


def layer_init(layer: nn.Module, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def frame_encoder() -> nn.Module:
    """A Nature-CNN-like encoder sized for 64x64 frames and a 2-core CPU: uint8 [N, 64, 64, 3] -> [N, 256]."""
    return nn.Sequential(
        layer_init(nn.Conv2d(3, 16, 8, stride=4)), nn.ReLU(),  # 15x15
        layer_init(nn.Conv2d(16, 32, 4, stride=2)), nn.ReLU(),  # 6x6
        layer_init(nn.Conv2d(32, 32, 3, stride=1)), nn.ReLU(),  # 4x4
        nn.Flatten(), layer_init(nn.Linear(32 * 4 * 4, HIDDEN)), nn.ReLU())


def latent_encoder(shape: tuple[int, int, int]) -> nn.Module:
    """Two 3x3 convolutions over the latent grid: float [N, C, h, w] -> [N, 256]."""
    c, h, w = shape
    return nn.Sequential(
        layer_init(nn.Conv2d(c, 32, 3, padding=1)), nn.ReLU(),
        layer_init(nn.Conv2d(32, 32, 3, stride=2, padding=1)), nn.ReLU(),
        nn.Flatten(), layer_init(nn.Linear(32 * ((h + 1) // 2) * ((w + 1) // 2), HIDDEN)), nn.ReLU())


def goal_features(pose: torch.Tensor, goal_pose: torch.Tensor) -> torch.Tensor:
    """Observation poses [N, 12] (rows of ``(R | t)``) -> the goal in the camera frame: its position (3, metres)
    and rotation (9), [N, 12]."""
    pose, goal = pose.reshape(-1, 3, 4), goal_pose.reshape(-1, 3, 4)
    rotation_t = pose[:, :, :3].transpose(1, 2)
    position = (rotation_t @ (goal[:, :, 3] - pose[:, :, 3])[..., None])[..., 0]
    return torch.cat([position, (rotation_t @ goal[:, :, :3]).flatten(1)], dim=1)


def to_tensors(obs: Any, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched observations -> (pixels or latents, extra features [N, 0 or 12]) as the network takes them."""
    if kind == "goal":
        features = goal_features(torch.as_tensor(obs["pose"]), torch.as_tensor(obs["goal_pose"]))
        return torch.as_tensor(obs["rgb"]), features.float()
    x = torch.as_tensor(obs)
    return x, torch.zeros(len(x), 0)


class Agent(nn.Module):
    """Actor-critic over one encoder; ``kind`` in :data:`KINDS`, ``latent_shape`` for ``latent``."""

    def __init__(self, kind: str, latent_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.config = {"kind": kind, "latent_shape": None if latent_shape is None else list(latent_shape)}
        self.kind = kind
        self.encoder = latent_encoder(tuple(latent_shape)) if kind == "latent" else frame_encoder()
        width = HIDDEN + (GOAL_FEATURES if kind == "goal" else 0)
        self.actor = layer_init(nn.Linear(width, sum(NVEC)), std=0.01)
        self.critic = layer_init(nn.Linear(width, 1), std=1.0)

    def features(self, x: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        if self.kind != "latent":
            x = x.permute(0, 3, 1, 2).float() / 255.0
        return torch.cat([self.encoder(x), extra], dim=1)

    def get_value(self, x: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(x, extra))

    def get_action_and_value(self, x: torch.Tensor, extra: torch.Tensor, action: torch.Tensor | None = None,
                             deterministic: bool = False, generator: torch.Generator | None = None):
        """(action [N, 4], summed log-probability, summed entropy, value [N, 1]); samples unless ``action`` is
        given (or takes the most likely keys when ``deterministic``)."""
        hidden = self.features(x, extra)
        heads = [torch.distributions.Categorical(logits=logits)
                 for logits in self.actor(hidden).split(list(NVEC), dim=1)]
        if action is None:
            if deterministic:
                action = torch.stack([h.probs.argmax(1) for h in heads], dim=1)
            else:
                action = torch.stack([torch.multinomial(h.probs, 1, generator=generator)[:, 0] for h in heads], dim=1)
        logprob = torch.stack([h.log_prob(a) for h, a in zip(heads, action.T)]).sum(0)
        entropy = torch.stack([h.entropy() for h in heads]).sum(0)
        return action, logprob, entropy, self.critic(hidden)


def load_agent(checkpoint: dict) -> Agent:
    """The agent of a checkpoint dict (see ``agents/ppo.py``), in eval mode."""
    agent = Agent(**checkpoint["agent"])
    agent.load_state_dict(checkpoint["model"])
    return agent.eval()


class PPOPolicy:
    """Plays a PPO checkpoint: samples its actions (seeded by :meth:`reset`), or the most likely keys when
    ``deterministic``. ``task`` and ``latent`` say which env it was trained on."""

    def __init__(self, path: str | Path, deterministic: bool = False) -> None:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        self.agent = load_agent(checkpoint)
        self.task, self.latent = checkpoint["args"]["task"], checkpoint["args"]["latent_obs"]
        self.deterministic = deterministic

    def reset(self, num_envs: int, seed: int | None = None) -> None:
        self.generator = torch.Generator().manual_seed(0 if seed is None else seed)

    @torch.no_grad()
    def act(self, obs: Any, blocked: np.ndarray) -> np.ndarray:
        x, extra = to_tensors(obs, self.agent.kind)
        action = self.agent.get_action_and_value(x, extra, deterministic=self.deterministic,
                                                 generator=self.generator)[0]
        return action.numpy()
