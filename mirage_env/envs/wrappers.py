"""Wrappers for the camera envs.

Gymnasium's own wrappers work as usual (e.g. ``FrameStackObservation``, ``RecordVideo`` with
``render_mode="rgb_array"``, ``ResizeObservation``); this module adds what is specific to a world-model env.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class LatentObservation(gym.Wrapper):
    """Observations are the world model's latent of the last frame (``info["latent"]``, float32 [C, h, w],
    normalised latents) instead of pixels.

    This changes what the agent sees, not what is computed: the world still decodes every segment, because the
    frames give the depth of new content, the memory write and the next segment's clean first latent.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        core = env.unwrapped.core
        shape = (core.model.latent_channels, *core.world.latent_hw)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape, np.float32)

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        return info["latent"].copy(), info

    def step(self, action):
        _, reward, terminated, truncated, info = self.env.step(action)
        return info["latent"].copy(), reward, terminated, truncated, info
