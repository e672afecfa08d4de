"""Wrappers for the camera envs.

Gymnasium's own wrappers work as usual (e.g. ``FrameStackObservation``, ``RecordVideo`` with
``render_mode="rgb_array"``, ``ResizeObservation``); this module adds what is specific to a world-model env.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space


def latent_space(env: gym.Env | gym.vector.VectorEnv) -> spaces.Box:
    """The space of one world's latent observation: float32 [C, h, w]."""
    core = env.unwrapped.core
    return spaces.Box(-np.inf, np.inf, (core.model.latent_channels, *core.world.latent_hw), np.float32)


class LatentObservation(gym.Wrapper):
    """Observations are the world model's latent of the last frame (``info["latent"]``, float32 [C, h, w],
    normalised latents) instead of pixels.

    This changes what the agent sees, not what is computed: the world still decodes every segment, because the
    frames give the depth of new content, the memory write and the next segment's clean first latent.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = latent_space(env)

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        return info["latent"].copy(), info

    def step(self, action):
        _, reward, terminated, truncated, info = self.env.step(action)
        return info["latent"].copy(), reward, terminated, truncated, info


class LatentVectorObservation(gym.vector.VectorWrapper):
    """:class:`LatentObservation` for the batched vector env: observations are ``infos["latent"]`` [N, C, h, w].

    Worlds left out of a partial reset keep their last latent. In ``SAME_STEP`` autoreset mode
    ``infos["final_obs"]`` (an object array, as in Gymnasium) holds the final latent of each world that ended.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self.single_observation_space = latent_space(env)
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)
        self._latent = np.zeros(self.observation_space.shape, np.float32)

    def _update(self, infos: dict) -> np.ndarray:
        mask = infos["_latent"]
        self._latent[mask] = infos["latent"][mask]
        return self._latent.copy()

    def reset(self, **kwargs):
        _, infos = self.env.reset(**kwargs)
        return self._update(infos), infos

    def step(self, actions):
        _, rewards, terminated, truncated, infos = self.env.step(actions)
        if "final_obs" in infos:
            final = infos["final_obs"].copy()
            for i in np.flatnonzero(infos["_final_obs"]):
                final[i] = infos["final_info"]["latent"][i].copy()
            infos = {**infos, "final_obs": final}
        return self._update(infos), rewards, terminated, truncated, infos
