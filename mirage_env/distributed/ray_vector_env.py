"""The client side: a Gymnasium vector env whose N envs live in K world actors.

``RayVectorEnv(num_envs=N, num_actors=K, **kwargs)`` takes the keyword arguments of
:class:`~mirage_env.envs.CameraVectorEnv` (``max_episode_steps``, ``autoreset_mode``, ``render_mode``, ``model``
and the :class:`~mirage_env.envs.EnvConfig` fields) plus the actors' placement: ``num_cpus`` and ``num_gpus`` per
actor (default: one GPU each when the cluster has GPUs, and then ``device="cuda"``) and further ``ray.remote``
``actor_options``. Env ``i`` lives in the actor whose contiguous range holds ``i``; each actor runs a
``CameraVectorEnv`` of its envs, so spaces, autoreset modes, partial resets and info keys are the local vector
env's. ``step`` sends every actor its share of the actions before waiting for any, so the K batched world steps
run in parallel. ``render_mode`` is None or ``"rgb_array"``: frames come back to the caller (a ``"human"`` window
would open on the actors' machines).

Seeding is the local vector env's: ``reset(seed=s)`` seeds env ``i`` with ``s + i`` (or takes a list of seeds),
which is also what ``gym.make(...).reset(seed=s + i)`` does. An env's frames equal those of the local envs
bit for bit when it is batched with the same envs (e.g. one env per actor and single envs); batching envs
differently changes float rounding in the model's batched matmuls, so frames may then differ by a grey level.
Infos are per env as locally, except ``timings_ms``, which holds the timings of the batched step of the env's actor.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import ray
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate
from ray.actor import ActorHandle

from mirage_env.distributed.actor import default_num_gpus, start_world_actors
from mirage_env.distributed.batches import env_ranges, merge_infos
from mirage_env.envs.actions import make_actions
from mirage_env.envs.core import EnvConfig, check_render_mode
from mirage_env.envs.starts import check_reset_options
from mirage_env.envs.vector_env import check_vector_arguments, env_seeds, parse_reset_mask
from mirage_env.models import WorldModel


class RayVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` camera envs in ``num_actors`` world actors (see the module docstring)."""

    def __init__(self, num_envs: int = 1, num_actors: int = 1, max_episode_steps: int | None = None,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP, render_mode: str | None = None,
                 model: WorldModel | None = None, num_cpus: float = 1.0, num_gpus: float | None = None,
                 actor_options: dict[str, Any] | None = None, **config: Any) -> None:
        self.actors: list[ActorHandle] = []  # closing works even when __init__ fails
        check_vector_arguments(num_envs, max_episode_steps, autoreset_mode, render_mode)
        self.ranges = env_ranges(num_envs, num_actors)
        check_render_mode(render_mode, ["rgb_array"])  # a human window would open on the actors' machines
        settings = EnvConfig.from_kwargs(config)  # bad settings fail here, before any actor starts
        self._action_map = make_actions(settings.action_mode, settings.scale())
        num_gpus = default_num_gpus() if num_gpus is None else num_gpus
        env_kwargs = {"max_episode_steps": max_episode_steps, "autoreset_mode": autoreset_mode,
                      "render_mode": render_mode, "device": "cuda" if num_gpus else "cpu", **config}
        self.actors = start_world_actors([hi - lo for lo, hi in self.ranges], env_kwargs, model, num_cpus,
                                         num_gpus, actor_options or {})
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space, self.single_action_space, metadata = ray.get(self.actors[0].spaces.remote())
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.metadata = {**metadata, "render_modes": ["rgb_array"]}
        self._obs: list[Any] = [None] * num_actors  # the last batched observation of each actor

    @classmethod
    def make(cls, env_id: str, num_envs: int, num_actors: int, **kwargs: Any) -> RayVectorEnv:
        """The vector env of a registered id (its kwargs and ``max_episode_steps``), overridden by ``kwargs``."""
        spec = gym.spec(env_id)
        return cls(num_envs=num_envs, num_actors=num_actors,
                   **{"max_episode_steps": spec.max_episode_steps, **spec.kwargs, **kwargs})

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        options = check_reset_options(options, extra_keys=("reset_mask",))
        mask = parse_reset_mask(options.pop("reset_mask", None), self.num_envs)
        seeds = env_seeds(seed, self.num_envs)
        calls = {a: actor.reset.remote(seeds[lo:hi], {**options, "reset_mask": mask[lo:hi]})
                 for a, (actor, (lo, hi)) in enumerate(zip(self.actors, self.ranges)) if mask[lo:hi].any()}
        parts = []
        for a, (obs, infos) in zip(calls, ray.get(list(calls.values()))):
            self._obs[a] = obs
            parts.append((infos, *self.ranges[a]))
        return self._batch(), merge_infos(parts, self.num_envs)

    def step(self, actions):
        """One step of every env; ``actions=None`` keeps every camera still (as in the local vector env)."""
        if actions is not None:
            actions = list(iterate(self.action_space, actions))
            if len(actions) != self.num_envs:
                raise ValueError(f"expected actions for {self.num_envs} envs, got {len(actions)}")
            for action in actions:  # a bad action raises here, before any actor moves its worlds (as locally)
                self._action_map.velocity(action)
        results = ray.get([actor.step.remote(None if actions is None else actions[lo:hi])
                           for actor, (lo, hi) in zip(self.actors, self.ranges)])
        self._obs = [obs for obs, *_ in results]
        rewards, terminated, truncated = (np.concatenate([r[j] for r in results]) for j in (1, 2, 3))
        infos = merge_infos([(r[4], lo, hi) for r, (lo, hi) in zip(results, self.ranges)], self.num_envs)
        return self._batch(), rewards, terminated, truncated, infos

    def _batch(self):
        observations = [obs for part in self._obs for obs in iterate(self.observation_space, part)]
        return concatenate(self.single_observation_space, observations,
                           create_empty_array(self.single_observation_space, self.num_envs))

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The frames of every env; without a render_mode the actors warn (in their logs) and this returns None."""
        parts = ray.get([actor.render.remote() for actor in self.actors])
        return None if parts[0] is None else tuple(frame for part in parts for frame in part)

    def close_extras(self, **kwargs: Any) -> None:
        """End the world actors (they also end with the process that created them)."""
        if ray.is_initialized():
            for actor in self.actors:
                ray.kill(actor)
