"""The camera envs for RLlib's env runners.

:func:`register_rllib_env` registers :func:`make_env` with ``ray.tune.registry.register_env``. RLlib calls it
with the ``env_config`` plus ``num_envs`` when ``gym_env_vectorize_mode="vector_entry_point"``, and it returns
the runner's vector env: the local batched :class:`~mirage_env.envs.CameraVectorEnv`
(``world_actors=0``) or a :class:`~mirage_env.distributed.RayVectorEnv` over ``world_actors`` world actors (the
runner's envs then step in those actors, e.g. on GPUs). Frames become float32 in [0, 1] for RLlib's CNN
encoders, and the per-step ``frames`` and ``latent`` infos are dropped: RLlib keeps every info in its episodes
and ships them to the learners, and these two are most of the bytes.

``env_config`` keys: ``env_id`` (default ``MirageEnv/Keys-v0``), ``world_actors`` (default 0), and any keyword
argument of ``gym.make_vec`` for the id (``max_episode_steps``, ``num_steps``, ``reward``, ...) or of
``RayVectorEnv`` (``num_cpus``, ``num_gpus``, ...).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers.vector import TransformObservation
from ray.tune.registry import register_env

import mirage_env.envs  # noqa: F401  (registers the ids)
from mirage_env.distributed.ray_vector_env import RayVectorEnv

DROPPED_INFOS = ("frames", "latent")


class DropInfos(gym.vector.VectorWrapper):
    """Removes the vector infos named in ``keys`` (and their ``_key`` masks)."""

    def __init__(self, env: gym.vector.VectorEnv, keys: tuple[str, ...] = DROPPED_INFOS) -> None:
        super().__init__(env)
        self.keys = {*keys, *(f"_{k}" for k in keys)}

    def _drop(self, infos: dict) -> dict:
        return {k: v for k, v in infos.items() if k not in self.keys}

    def reset(self, **kwargs: Any):
        obs, infos = self.env.reset(**kwargs)
        return obs, self._drop(infos)

    def step(self, actions):
        *out, infos = self.env.step(actions)
        return *out, self._drop(infos)


def make_env(config: dict[str, Any]) -> gym.vector.VectorEnv:
    """One env runner's vector env (see the module docstring); ``config`` needs ``num_envs``."""
    config = dict(config)
    if "num_envs" not in config:
        raise ValueError("the camera envs are vector envs: set gym_env_vectorize_mode='vector_entry_point'")
    env_id = config.pop("env_id", "MirageEnv/Keys-v0")
    num_envs, world_actors = config.pop("num_envs"), config.pop("world_actors", 0)
    if world_actors:
        env = RayVectorEnv.make(env_id, num_envs, world_actors, **config)
    else:
        env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **config)
    space = env.single_observation_space
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"RLlib's CNN needs image observations (obs_mode='rgb'), got {space}")
    scaled = gym.spaces.Box(0.0, 1.0, space.shape, np.float32)
    return TransformObservation(DropInfos(env), lambda obs: obs.astype(np.float32) / 255.0,
                                single_observation_space=scaled)


def register_rllib_env(name: str = "mirage") -> str:
    """Register :func:`make_env` under ``name`` for RLlib (``config.environment(name, env_config=...)``)."""
    register_env(name, make_env)
    return name
