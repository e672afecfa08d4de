"""Gymnasium ids of the camera envs, registered when :mod:`mirage_env.envs` is imported.

Gymnasium 1.x has no plugin entry points: ``import mirage_env.envs`` (or ``gym.make("mirage_env.envs:ID")``)
registers the ids below. Both run the same env class with a different ``action_mode``; ``gym.make_vec`` uses the
batched :class:`~mirage_env.envs.vector_env.CameraVectorEnv` by default.
"""

from __future__ import annotations

import gymnasium as gym

NAMESPACE = "MirageEnv"
MAX_EPISODE_STEPS = 200
ENV_IDS = {f"{NAMESPACE}/Camera-v0": "continuous", f"{NAMESPACE}/Keys-v0": "keys"}


def register_envs() -> None:
    """Register every id of :data:`ENV_IDS` (ids already in the registry are left as they are)."""
    for env_id, action_mode in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point="mirage_env.envs.camera_env:CameraEnv",
                     vector_entry_point="mirage_env.envs.vector_env:CameraVectorEnv",
                     max_episode_steps=MAX_EPISODE_STEPS, kwargs={"action_mode": action_mode})
