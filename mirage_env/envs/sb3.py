"""Stable-Baselines3 adapter for the batched vector env (needs ``pip install stable-baselines3``).

SB3 trains on its own ``VecEnv`` API (reset returns observations only, per-env info dicts, autoreset in the same
step with ``terminal_observation``), so :class:`SB3VecEnv` drives a
:class:`~mirage_env.envs.vector_env.CameraVectorEnv` in ``SAME_STEP`` autoreset mode and converts its outputs::

    from stable_baselines3 import PPO
    from mirage_env.envs.sb3 import SB3VecEnv
    model = PPO("MlpPolicy", SB3VecEnv.make("MirageEnv/Camera-v0", num_envs=4), n_steps=64).learn(1024)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv


def _split_infos(infos: dict, n: int) -> list[dict]:
    """Gymnasium's dict of batched infos (with ``_key`` masks) -> one dict per env."""
    out: list[dict] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}", np.ones(n, dtype=bool))
        for i in np.flatnonzero(mask):
            out[i][key] = _split_infos(value, n)[i] if isinstance(value, dict) else value[i]
    return out


class SB3VecEnv(VecEnv):
    """An SB3 ``VecEnv`` over a gymnasium vector env that autoresets in the same step. ``get_attr``,
    ``set_attr`` and ``env_method`` reach the vector env itself (one object serves every index); reset options set
    through ``set_options`` are those of the first index."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        if env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError("SB3VecEnv needs a vector env with autoreset_mode=SAME_STEP")
        self.env = env
        self.render_mode = env.render_mode
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None

    @classmethod
    def make(cls, env_id: str, num_envs: int, **kwargs: Any) -> SB3VecEnv:
        """``gym.make_vec(env_id, num_envs, autoreset_mode=SAME_STEP, **kwargs)`` wrapped for SB3."""
        return cls(gym.make_vec(env_id, num_envs=num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs))

    def reset(self):
        seeds = None if all(s is None for s in self._seeds) else self._seeds
        options = self._options[0] if self._options and self._options[0] else None
        obs, infos = self.env.reset(seed=seeds, options=options)
        self.reset_infos = _split_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.env.step(self._actions)
        per_env = _split_infos(infos, self.num_envs)
        for i, info in enumerate(per_env):
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if "final_obs" in info:
                info["terminal_observation"] = info.pop("final_obs")
        return obs, rewards.astype(np.float32), terminated | truncated, per_env

    def close(self) -> None:
        self.env.close()

    def get_images(self):
        return list(self.env.render() or [None] * self.num_envs)

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.env, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(self.env, method_name)(*method_args, **method_kwargs)] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))
