"""What the single and the vector env share: B worlds on one model, stepped together.

:class:`CameraWorlds` turns actions into per-frame camera poses (collision from the simulator, or from the memory
without one), runs one batched :meth:`World.step`, and builds observations, rewards and infos.

Every info (at reset and at every step) has the same keys:

================  ==========================================================================================
``frames``        uint8 [F, H, W, 3], the step's new frames at the world's size (at reset: the start frame F times)
``pose``          float32 [4, 4], camera-to-world after the step
``frame_index``   int, frames generated since the reset
``blocked``       bool, a move was refused by collision (the camera then only turned)
``coverage``      float, mean fraction of the new latent frames the memory covered before generation (reset: 0)
``new_voxels``    int, voxels the step added to the memory
``memory_voxels`` int, voxels in the memory; ``memory_bytes``: bytes it holds
``latent``        float32 [C, h, w], the latent of the last frame (at reset: the encoded start frame)
``timings_ms``    :class:`~mirage_env.world.StepTimings` of the world step (in the vector env: of the whole batched step)
================  ==========================================================================================
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from mirage_env.config_checks import (
    check_bool,
    check_choice,
    check_int,
    check_keywords,
    check_number,
    check_size,
)
from mirage_env.envs import observations
from mirage_env.envs.actions import ACTION_MODES, ActionScale, heading_to_camera, make_actions
from mirage_env.envs.model_cache import DTYPES, shared_model
from mirage_env.envs.move_check import segment_is_free
from mirage_env.envs.rewards import Reward, Transition, make_reward
from mirage_env.envs.starts import SCENE_KINDS, Start, check_reset_options, make_start
from mirage_env.envs.window import check_display
from mirage_env.geometry.poses import integrate_velocity
from mirage_env.models import PRESETS, WorldModel
from mirage_env.models.depth import MemoryDepth, SimulatorDepth
from mirage_env.world import StepTimings, World, WorldConfig

RENDER_MODES = ["human", "rgb_array"]


def check_render_mode(render_mode: str | None, modes: Sequence[str] = RENDER_MODES) -> None:
    """ValueError unless ``render_mode`` is None or one of ``modes``; for ``"human"``, the errors of
    :func:`~mirage_env.envs.window.check_display` where no window can open."""
    if render_mode not in (None, *modes):
        raise ValueError(f"render_mode must be None or one of {list(modes)}, got {render_mode!r}")
    if render_mode == "human":
        check_display()


# WorldConfig fields the env sets from its own arguments (given in ``world`` they would be a second name).
_WORLD_FIELDS_SET_BY_THE_ENV = {"image_hw": "image_size", "latents_per_step": "latents_per_step",
                                "num_steps": "num_steps", "fov_deg": "fov_deg"}


@dataclass(frozen=True)
class EnvConfig:
    """Settings of the camera envs (the keyword arguments of ``gym.make``), checked when created.

    Model: ``preset``, ``weights_dir`` (None: the trained weights the preset ships), ``device``, ``dtype``,
    ``random_weights`` (the tiny preset with random weights drawn from ``model_seed`` instead). World:
    ``image_size`` (frame size: an int or ``(H, W)``, a multiple of the model's spatial stride),
    ``latents_per_step`` (4 frames each), ``num_steps`` (denoising steps), ``fov_deg`` (horizontal, in (0, 180)),
    ``world`` (further :class:`WorldConfig` fields). Episode: ``scene_kind`` ("indoor", "outdoor", "any"),
    ``action_mode`` ("continuous", "keys"), ``obs_mode`` ("rgb", "dict"), ``obs_size`` (default: ``image_size``),
    ``reward`` (a name or factory, see :mod:`mirage_env.envs.rewards`), speeds (see :mod:`mirage_env.envs.actions`)
    and the camera's ``collision_radius`` in metres (>= 0).

    Invalid values raise TypeError / ValueError naming the argument; :meth:`from_kwargs` also rejects unknown names.
    """

    preset: str = "tiny"
    weights_dir: str | os.PathLike | None = None
    device: str | torch.device = "cpu"
    dtype: str = "float32"
    model_seed: int = 0
    random_weights: bool = False
    image_size: int | tuple[int, int] = 64
    latents_per_step: int = 1
    num_steps: int = 4
    fov_deg: float = 70.0
    world: dict[str, Any] = field(default_factory=dict)
    scene_kind: str = "indoor"
    action_mode: str = "continuous"
    obs_mode: str = "rgb"
    obs_size: int | tuple[int, int] | None = None
    reward: str | Callable[[], Reward] = "exploration"
    move_m: float = 0.05
    turn_deg: float = 3.0
    max_pitch_deg: float = 80.0
    collision_radius: float = 0.2

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> EnvConfig:
        """The config of an env's keyword arguments; TypeError naming any unknown (or renamed) one."""
        check_keywords("camera env", kwargs, [f.name for f in fields(cls)])
        return cls(**kwargs)

    def __post_init__(self) -> None:
        check_choice("preset", self.preset, PRESETS)
        if self.weights_dir is not None and not isinstance(self.weights_dir, (str, os.PathLike)):
            raise TypeError(f"weights_dir must be a path or None, got {type(self.weights_dir).__name__}")
        check_device("device", self.device)
        check_choice("dtype", self.dtype, list(DTYPES))
        check_int("model_seed", self.model_seed, 0)
        random_weights = check_bool("random_weights", self.random_weights)
        if random_weights and (self.preset != "tiny" or self.weights_dir is not None):
            raise ValueError("random_weights=True is for preset 'tiny' without weights_dir")
        check_size("image_size", self.image_size)
        check_choice("scene_kind", self.scene_kind, SCENE_KINDS)
        check_choice("action_mode", self.action_mode, ACTION_MODES)
        check_choice("obs_mode", self.obs_mode, observations.OBS_MODES)
        if self.obs_size is not None:
            check_size("obs_size", self.obs_size)
        if not callable(self.reward):
            make_reward(self.reward)  # a known name
        self.scale()  # move_m, turn_deg, max_pitch_deg
        check_number("collision_radius", self.collision_radius, 0.0)
        if not isinstance(self.world, dict):
            raise TypeError(f"world must be a dict of WorldConfig fields, got {type(self.world).__name__}")
        for name, own in _WORLD_FIELDS_SET_BY_THE_ENV.items():
            if name in self.world:
                raise ValueError(f"world[{name!r}]: set the env argument {own!r} instead")
        check_keywords("world", self.world, [f.name for f in fields(WorldConfig)])
        self.world_config()  # the world's own checks: fov_deg, latents_per_step, num_steps and the world fields

    @property
    def image_hw(self) -> tuple[int, int]:
        return check_size("image_size", self.image_size)

    @property
    def obs_hw(self) -> tuple[int, int]:
        return self.image_hw if self.obs_size is None else check_size("obs_size", self.obs_size)

    def world_config(self) -> WorldConfig:
        return WorldConfig(**{"image_hw": self.image_hw, "latents_per_step": self.latents_per_step,
                              "num_steps": self.num_steps, "fov_deg": self.fov_deg, **self.world})

    def scale(self) -> ActionScale:
        return ActionScale(self.move_m, self.turn_deg, self.max_pitch_deg)


def check_device(name: str, device: Any) -> None:
    """A torch device or a string torch accepts as one."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a string or torch.device, got {type(device).__name__}")
    try:
        torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"{name}: {error}") from error


class DepthRecorder:
    """A depth provider that keeps the depth of the last frame it was asked for (the observation's depth)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.last: torch.Tensor | None = None

    def __call__(self, frames, memory_depth=None, memory_mask=None, cameras=None) -> torch.Tensor:
        depth = self.inner(frames, memory_depth, memory_mask, cameras)
        self.last = depth[0, -1].cpu()
        return depth


@dataclass
class Slot:
    """The episode state of one world that the :class:`World` does not hold."""

    start: Start
    depth: DepthRecorder
    reward: Reward
    frame: torch.Tensor  # uint8 [H, W, 3], the last frame
    frame_depth: torch.Tensor  # [H, W]
    latent: torch.Tensor  # [C, h, w]


class CameraWorlds:
    """B camera worlds sharing one model (``model`` or the process-wide :func:`shared_model`)."""

    def __init__(self, config: EnvConfig, batch_size: int, model: WorldModel | None = None) -> None:
        self.config = config
        self.model = model if model is not None else shared_model(config.preset, config.weights_dir, config.device,
                                                                  config.dtype, config.model_seed,
                                                                  config.random_weights)
        stride = self.model.spatial_stride
        if config.image_hw[0] % stride or config.image_hw[1] % stride:
            raise ValueError(f"image_size {config.image_hw} must be a multiple of the model's spatial stride {stride}")
        self.world = World(self.model, config.world_config(), batch_size)
        self.actions = make_actions(config.action_mode, config.scale())
        self.K = self.world.default_intrinsics()
        self.slots: list[Slot | None] = [None] * batch_size
        extra = make_reward(config.reward).extra_spaces()
        self.observation_space = observations.observation_space(config.obs_mode, config.obs_hw, extra)
        h, w = self.world.latent_hw
        self.cells_per_step = config.latents_per_step * h * w

    @property
    def batch_size(self) -> int:
        return self.world.batch_size

    @property
    def frames_per_step(self) -> int:
        return self.world.frames_per_step

    def slot(self, index: int) -> Slot:
        slot = self.slots[index]
        if slot is None:
            raise RuntimeError("call reset() before step() or render()")
        return slot

    def _check_started(self) -> None:
        for i in range(self.batch_size):
            self.slot(i)

    # ------------------------------------------------------------------ reset
    def reset(self, index: int, rng: np.random.Generator, options: dict | None) -> tuple[Any, dict]:
        """Start world ``index`` afresh (empty memory) from ``options`` (see :mod:`mirage_env.envs.starts`)."""
        options = check_reset_options(options)
        start = make_start(options, self.K, self.config.image_hw, self.config.scene_kind, rng)
        reward = make_reward(self.config.reward)
        reward.reset(start.scene, start.view.c2w.to(torch.float64), rng, options)
        depth = DepthRecorder(SimulatorDepth(start.scene) if start.scene is not None else MemoryDepth())
        self.world.reset(index, start.view, seed=int(rng.integers(2**31)), depth=depth)
        latent = self.world.state(index).first_latent[:, 0]
        self.slots[index] = Slot(start, depth, reward, start.view.image, start.view.depth, latent)
        frames = start.view.image.expand(self.frames_per_step, *start.view.image.shape)
        voxels = len(self.world.memory(index))
        return self.observation(index), self.info(index, frames, False, 0.0, voxels, StepTimings())

    # ------------------------------------------------------------------ step
    def check_actions(self, actions: Sequence[Any | None]) -> list[np.ndarray | None]:
        """Per-frame velocities of a batch of actions (None: stay); ValueError before anything changes."""
        if len(actions) != self.batch_size:
            raise ValueError(f"expected {self.batch_size} actions, got {len(actions)}")
        return [None if a is None else self.actions.velocity(a) for a in actions]

    def step(self, actions: Sequence[Any | None]) -> list[tuple[Any, float, bool, dict]]:
        """One segment of every world; ``None`` keeps that world still. Returns (obs, reward, terminated, info)."""
        velocities = self.check_actions(actions)
        self._check_started()
        paths = [self._path(i, v) for i, v in enumerate(velocities)]
        return self.step_poses(torch.stack([p for p, _ in paths]), [b for _, b in paths])

    def _path(self, index: int, velocity: np.ndarray | None) -> tuple[torch.Tensor, bool]:
        """Poses [F, 4, 4] of one world holding ``velocity`` for F frames, and whether collision refused a move."""
        pose = self.world.state(index).pose
        if velocity is None:
            return pose.expand(self.frames_per_step, 4, 4).clone(), False
        v = torch.as_tensor(velocity, dtype=torch.float64)
        turn_only = torch.cat([torch.zeros(3, dtype=torch.float64), v[3:]])
        max_pitch = np.radians(self.config.max_pitch_deg)
        scene, memory = self.slot(index).start.scene, self.world.memory(index)
        poses, blocked = [], False
        for _ in range(self.frames_per_step):
            step = v
            if self.actions.heading_frame:
                step = torch.cat([heading_to_camera(pose, v[:3]), v[3:]])
            nxt = integrate_velocity(pose, step, 1.0, max_pitch)
            if bool(v[:3].any()) and not segment_is_free(scene, memory, pose[:3, 3], nxt[:3, 3],
                                                        self.config.collision_radius):
                nxt, blocked = integrate_velocity(pose, turn_only, 1.0, max_pitch), True
            poses.append(nxt)
            pose = nxt
        return torch.stack(poses), blocked

    def step_poses(self, poses: torch.Tensor, blocked: Sequence[bool] | None = None
                   ) -> list[tuple[Any, float, bool, dict]]:
        """One segment of every world along given poses [B, F, 4, 4] (no collision check)."""
        self._check_started()
        blocked = blocked or [False] * self.batch_size
        before = [(self.world.state(i).pose, len(self.world.memory(i))) for i in range(self.batch_size)]
        segment = self.world.step(poses)
        timings = segment.timings
        results = []
        for i, (pose_before, voxels_before) in enumerate(before):
            slot = self.slot(i)
            slot.frame, slot.frame_depth, slot.latent = segment.frames[i, -1], slot.depth.last, segment.latents[i, :, -1]
            voxels = len(self.world.memory(i))
            transition = Transition(pose_before, self.world.state(i).pose, voxels_before, voxels,
                                    self.cells_per_step, blocked[i])
            reward, terminated = slot.reward(transition)
            info = self.info(i, segment.frames[i], blocked[i], float(segment.coverage[i].mean()),
                             voxels - voxels_before, timings)
            results.append((self.observation(i), float(reward), bool(terminated), info))
        return results

    # ------------------------------------------------------------------ outputs
    def observation(self, index: int):
        slot = self.slot(index)
        return observations.observation(self.config.obs_mode, self.config.obs_hw, slot.frame, slot.frame_depth,
                                        self.world.state(index).pose, slot.reward.extra_observation())

    def info(self, index: int, frames: torch.Tensor, blocked: bool, coverage: float, new_voxels: int,
             timings: StepTimings) -> dict:
        stats = self.world.memory(index).stats()
        state = self.world.state(index)
        return {"frames": frames.numpy().copy(), "pose": state.pose.to(torch.float32).numpy().copy(),
                "frame_index": int(state.frame), "blocked": bool(blocked), "coverage": float(coverage),
                "new_voxels": int(new_voxels), "memory_voxels": int(stats.points), "memory_bytes": int(stats.bytes),
                "latent": self.slot(index).latent.to("cpu", torch.float32).numpy().copy(), "timings_ms": timings}

    def render(self, index: int) -> np.ndarray:
        """The last frame of world ``index`` at the world's size, uint8 [H, W, 3]."""
        return self.slot(index).frame.numpy().copy()

    # ------------------------------------------------------------------ copies
    def snapshots(self) -> list[dict | None]:
        """Everything needed to continue each world exactly (None for worlds never reset)."""
        return [None if slot is None else {"world": self.world.state_dict(i), "slot": slot}
                for i, slot in enumerate(self.slots)]

    def restore(self, snapshots: list[dict | None]) -> None:
        for i, snapshot in enumerate(snapshots):
            if snapshot is not None:
                slot = snapshot["slot"]
                self.world.load_state_dict(i, snapshot["world"], depth=slot.depth)
                self.slots[i] = slot


class CopyableEnv:
    """Pickling and ``deepcopy`` of an env holding ``core``: its constructor arguments (``_init_args``), the worlds'
    snapshots and the attributes named in ``_copied``. The model comes back through the shared cache; a custom
    ``model`` is pickled with the env but shared by deep copies (envs never change it)."""

    _copied: tuple[str, ...] = ()

    def __deepcopy__(self, memo: dict):
        memo[id(self.core.model)] = self.core.model
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new

    def __getstate__(self) -> dict:
        return {"args": self._init_args, "spec": self.spec, "snapshots": self.core.snapshots(),
                "attributes": {name: getattr(self, name) for name in self._copied}}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state["args"])
        self.spec = state["spec"]
        for name, value in state["attributes"].items():
            setattr(self, name, value)
        self.core.restore(state["snapshots"])
