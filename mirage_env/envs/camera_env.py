"""The single camera env: one world, one segment per step.

``gym.make("MirageEnv/Camera-v0")`` (continuous) or ``"MirageEnv/Keys-v0"`` (keyboard) after
``import mirage_env.envs``. Keyword arguments are the fields of :class:`~mirage_env.envs.core.EnvConfig`, plus
``render_mode`` and ``model`` (a :class:`~mirage_env.models.WorldModel` to use instead of the shared one).

Rendering: ``render_mode="rgb_array"`` makes :meth:`~CameraEnv.render` return the last frame; ``"human"`` shows the
frames in a window (:mod:`mirage_env.envs.window`, needs pygame and a display): every frame of a step as the step
runs, at ``metadata["render_fps"]``, and the start frame at a reset; ``close()`` closes the window.

``reset(seed=..., options=...)`` starts in a simulator scene drawn from ``np_random`` unless options give
``scene`` (a :class:`~mirage_env.sim.Scene`, optionally with ``pose``), ``view`` (an
:class:`~mirage_env.world.InitialView`: image + depth + K + pose) or ``geometry_npz`` (a path); ``goal_pose``
sets the goal of the goal reward. The memory starts empty. ``step`` returns the last generated frame (see
:mod:`mirage_env.envs.observations`) and the info described in :mod:`mirage_env.envs.core`; ``terminated`` only
comes from the reward's task, truncation from the registered ``max_episode_steps``.

Copies: ``copy.deepcopy`` and pickling carry the full episode state (memory, RNGs, scene) and rebuild the model
through the shared cache, so a copy continues exactly like the original; a custom ``model`` travels with it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mirage_env.envs.core import RENDER_MODES, CameraWorlds, CopyableEnv, EnvConfig, check_render_mode
from mirage_env.envs.window import HumanWindow
from mirage_env.models import WorldModel


class CameraEnv(CopyableEnv, gym.Env):
    metadata = {"render_modes": RENDER_MODES, "render_fps": 16}
    _copied = ("_np_random", "_np_random_seed")

    def __init__(self, render_mode: str | None = None, model: WorldModel | None = None, **config: Any) -> None:
        check_render_mode(render_mode)
        self._init_args = {"render_mode": render_mode, "model": model, **config}
        self.render_mode = render_mode
        self.config = EnvConfig.from_kwargs(config)
        self.core = CameraWorlds(self.config, 1, model)
        self.action_space = self.core.actions.space
        self.observation_space = self.core.observation_space
        self.metadata = {**self.metadata, "render_fps": self.core.world.config.fps}
        self.window = HumanWindow(self.metadata["render_fps"]) if render_mode == "human" else None

    @property
    def frames_per_step(self) -> int:
        return self.core.frames_per_step

    @property
    def pose(self) -> torch.Tensor:
        """The camera-to-world pose [4, 4] (float64)."""
        return self.core.world.state(0).pose.clone()

    @property
    def scene(self):
        """The simulator scene of the episode (None when it started from a view or a geometry.npz)."""
        return self.core.slot(0).start.scene

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.core.reset(0, self.np_random, options)
        self._show(info["frames"][:1])
        return obs, info

    def step(self, action):
        """One segment; ``action=None`` keeps the camera still (the step still counts and is generated)."""
        obs, reward, terminated, info = self.core.step([action])[0]
        self._show(info["frames"])
        return obs, reward, terminated, False, info

    def step_poses(self, poses: torch.Tensor):
        """Like :meth:`step` but along given camera poses [F, 4, 4] (scripted cameras; no collision check)."""
        obs, reward, terminated, info = self.core.step_poses(torch.as_tensor(poses, dtype=torch.float64)[None])[0]
        self._show(info["frames"])
        return obs, reward, terminated, False, info

    def render(self) -> np.ndarray | None:
        """The last frame, uint8 [H, W, 3] (``rgb_array``); ``human`` shows it in the window and returns None."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the env with render_mode='rgb_array'")
            return None
        frame = self.core.render(0)
        if self.render_mode == "human":
            self._show(frame[None])
            return None
        return frame

    def _show(self, frames: np.ndarray) -> None:
        if self.window is not None:
            self.window.show(frames)

    def close(self) -> None:
        if self.window is not None:
            self.window.close()
        super().close()
