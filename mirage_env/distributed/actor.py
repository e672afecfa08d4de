"""World actors: one world model and a batch of worlds per Ray actor.

A :class:`WorldActor` holds a :class:`~mirage_env.envs.CameraVectorEnv` of its share of the envs, so the env
logic (actions, collisions, rewards, autoreset, infos) is the local vector env's, and each call runs one batched
``World.step`` for all its worlds. The model comes from the process's model cache, so it is built once per actor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import ray
from ray.actor import ActorHandle

from mirage_env.envs import CameraVectorEnv
from mirage_env.models import WorldModel


class WorldActor:
    """A batch of ``num_envs`` worlds on one model: ``CameraVectorEnv(num_envs, model=model, **env_kwargs)``."""

    def __init__(self, num_envs: int, env_kwargs: dict[str, Any], model: WorldModel | None = None) -> None:
        self.env = CameraVectorEnv(num_envs=num_envs, model=model, **env_kwargs)

    def spaces(self) -> tuple[gym.Space, gym.Space, dict[str, Any]]:
        """The single observation and action spaces and the metadata of the vector env."""
        return self.env.single_observation_space, self.env.single_action_space, self.env.metadata

    def reset(self, seed: list[int | None], options: dict[str, Any]) -> tuple[Any, dict]:
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: list[Any] | None) -> tuple[Any, Any, Any, Any, dict]:
        return self.env.step(actions)

    def render(self) -> tuple | None:
        return self.env.render()


def default_num_gpus() -> float:
    """One GPU per world actor when the Ray cluster has GPUs, none otherwise."""
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def start_world_actors(sizes: Sequence[int], env_kwargs: dict[str, Any], model: WorldModel | None,
                       num_cpus: float, num_gpus: float, options: dict[str, Any]) -> list[ActorHandle]:
    """One :class:`WorldActor` per entry of ``sizes`` (its number of worlds), placed with ``ray.remote`` options
    ``num_cpus``, ``num_gpus`` and ``options`` (e.g. ``resources``, ``scheduling_strategy``). A custom ``model``
    goes to the object store once and every actor gets a copy."""
    remote = ray.remote(WorldActor).options(num_cpus=num_cpus, num_gpus=num_gpus, **options)
    model_ref = None if model is None else ray.put(model)
    return [remote.remote(size, env_kwargs, model_ref) for size in sizes]
