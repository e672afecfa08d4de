"""The batched vector env: N worlds on one shared model, every segment of all N generated in one batched step.

``gym.make_vec("MirageEnv/Camera-v0", num_envs=N)`` (the registered ``vector_entry_point``; also
``vectorization_mode="sync"`` or ``"async"`` for N copies of the single env). Keyword arguments are those of
:class:`~mirage_env.envs.camera_env.CameraEnv` plus ``max_episode_steps`` (truncation, counted per world) and
``autoreset_mode`` (``NEXT_STEP`` default, ``SAME_STEP`` or ``DISABLED``, as in Gymnasium's vector API).

Seeding follows :class:`gymnasium.vector.SyncVectorEnv`: ``reset(seed=s)`` seeds world i with ``s + i`` (or a
list of seeds), and autoresets draw from that world's generator. ``reset(options={"reset_mask": mask})`` resets
only the worlds where ``mask`` is True (partial reset); other options go to every world being reset. Options are
checked once, before any world resets. ``step(None)`` keeps every camera still (``None`` in the single env does the
same).

``render_mode="human"`` tiles the N worlds' frames in one window (see :mod:`mirage_env.envs.camera_env`).

World.step always advances all N worlds, so a world that is autoresetting in NEXT_STEP mode is held still in
that batched step, its result discarded, and then reset: it costs one world's share of that step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from mirage_env.config_checks import check_choice, check_int
from mirage_env.envs.core import RENDER_MODES, CameraWorlds, CopyableEnv, EnvConfig, check_render_mode
from mirage_env.envs.starts import check_reset_options
from mirage_env.envs.window import HumanWindow
from mirage_env.models import WorldModel
from mirage_env.video import contact_sheet


class CameraVectorEnv(CopyableEnv, gym.vector.VectorEnv):
    metadata = {"render_modes": RENDER_MODES, "render_fps": 16, "autoreset_mode": AutoresetMode.NEXT_STEP}
    _copied = ("_rngs", "_obs", "_steps", "_done")

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP, render_mode: str | None = None,
                 model: WorldModel | None = None, **config: Any) -> None:
        check_vector_arguments(num_envs, max_episode_steps, autoreset_mode, render_mode)
        env_config = EnvConfig.from_kwargs(config)
        self._init_args = {"num_envs": num_envs, "max_episode_steps": max_episode_steps,
                           "autoreset_mode": autoreset_mode, "render_mode": render_mode, "model": model, **config}
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.core = CameraWorlds(env_config, num_envs, model)
        self.num_envs = num_envs
        self.single_action_space = self.core.actions.space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = self.core.observation_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode,
                         "render_fps": self.core.world.config.fps}
        self.window = HumanWindow(self.metadata["render_fps"]) if render_mode == "human" else None
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._obs: list[Any] = [None] * num_envs
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._done = np.zeros(num_envs, dtype=np.bool_)

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        options = check_reset_options(options, extra_keys=("reset_mask",))
        mask = parse_reset_mask(options.pop("reset_mask", None), self.num_envs)
        seeds = env_seeds(seed, self.num_envs)
        infos: dict = {}
        for i in np.flatnonzero(mask):
            infos = self._add_info(infos, self._reset_world(i, seeds[i], options), i)
        self._show()
        return self._batch(), infos

    def _reset_world(self, index: int, seed: int | None, options: dict | None) -> dict:
        if seed is not None or self._rngs[index] is None:
            self._rngs[index], _ = seeding.np_random(seed)
        self._obs[index], info = self.core.reset(index, self._rngs[index], options)
        self._steps[index], self._done[index] = 0, False
        return info

    def _batch(self):
        return concatenate(self.single_observation_space, self._obs,
                           create_empty_array(self.single_observation_space, self.num_envs))

    # ------------------------------------------------------------------ step
    def step(self, actions):
        """One batched segment; ``actions=None`` keeps every world still (as ``None`` does in the single env)."""
        actions = [None] * self.num_envs if actions is None else list(iterate(self.action_space, actions))
        if len(actions) != self.num_envs:
            raise ValueError(f"expected actions for {self.num_envs} envs, got {len(actions)}")
        restart = self._done.copy() if self.autoreset_mode == AutoresetMode.NEXT_STEP else np.zeros_like(self._done)
        results = self.core.step([None if r else a for r, a in zip(restart, actions)])
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        infos: dict = {}
        shown = []
        for i, (obs, reward, term, info) in enumerate(results):
            shown.append(info["frames"])
            if restart[i]:
                info = self._reset_world(i, None, None)
                infos = self._add_info(infos, info, i)
                continue
            self._steps[i] += 1
            self._obs[i], rewards[i], terminated[i] = obs, reward, term
            truncated[i] = self.max_episode_steps is not None and self._steps[i] >= self.max_episode_steps
            self._done[i] = terminated[i] or truncated[i]
            if self._done[i] and self.autoreset_mode == AutoresetMode.SAME_STEP:
                infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                info = self._reset_world(i, None, None)
            infos = self._add_info(infos, info, i)
        self._show(shown)
        return self._batch(), rewards, terminated, truncated, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The last frame of every world (``rgb_array``); ``human`` shows them in the window and returns None."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the env with render_mode='rgb_array'")
            return None
        if self.render_mode == "human":
            self._show()
            return None
        return tuple(self.core.render(i) for i in range(self.num_envs))

    def _show(self, frames: list[np.ndarray] | None = None) -> None:
        """Human mode: every world's frames [F, H, W, 3] (default: its last frame; black before its first reset)
        tiled into one image per frame, a near-square grid."""
        if self.window is None:
            return
        if frames is None:
            black = np.zeros((*self.core.config.image_hw, 3), np.uint8)
            frames = [(black if slot is None else self.core.render(i))[None] for i, slot in enumerate(self.core.slots)]
        columns = int(np.ceil(np.sqrt(self.num_envs)))
        self.window.show(np.stack([contact_sheet(worlds, columns) for worlds in np.stack(frames, axis=1)]))

    def close_extras(self, **kwargs: Any) -> None:
        if self.window is not None:
            self.window.close()


def check_vector_arguments(num_envs: int, max_episode_steps: int | None, autoreset_mode: str | AutoresetMode,
                           render_mode: str | None) -> None:
    """The vector env's own arguments (the world settings are :class:`EnvConfig`'s); raises naming the argument."""
    check_int("num_envs", num_envs, 1)
    if max_episode_steps is not None:
        check_int("max_episode_steps", max_episode_steps, 1)
    check_choice("autoreset_mode", autoreset_mode, [*AutoresetMode, *(m.value for m in AutoresetMode)])
    check_render_mode(render_mode)


def parse_reset_mask(mask, n: int) -> np.ndarray:
    """``options["reset_mask"]`` checked: a bool array [n] selecting the envs to reset (None: all)."""
    if mask is None:
        return np.ones(n, dtype=np.bool_)
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (n,):
        raise ValueError(f"options['reset_mask'] must be a numpy bool array of shape ({n},)")
    if not mask.any():
        raise ValueError("options['reset_mask'] must select at least one env")
    return mask


def env_seeds(seed: int | list[int | None] | None, n: int) -> list[int | None]:
    """Per-env seeds of ``reset(seed=...)``: ``s`` gives env ``i`` the seed ``s + i``; a list is taken as is."""
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(n)]
    if len(seed) != n:
        raise ValueError(f"a list of seeds must have num_envs={n} entries, got {len(seed)}")
    return list(seed)
