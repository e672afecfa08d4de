"""The two agent tasks, the env settings they run on and the split of seeds between training and evaluation.

* ``exploration``: reward ``"exploration"`` (new memory voxels per latent cell of the step), RGB observations.
* ``goal``: reward ``"goal"`` (reach a goal view; terminates on success), Dict observations (``rgb``, ``pose``,
  ``depth``, ``goal_pose``).

Both run ``MirageEnv/Keys-v0`` (``MultiDiscrete([3, 3, 3, 3])``) with :data:`ENV_DEFAULTS`: outdoor courtyards and
0.2 m memory voxels. At 64x64 a latent cell spans about 0.15 m per metre of distance, so with the env's default
5 cm voxels nearly every cell of a moved camera lands in a new voxel: a random agent then earns most of the
maximum reward of 1 per step, which leaves a better policy little room (docs/agents.md, *Tasks and env settings*).
0.2 m voxels make the reward count newly seen surface. Any setting can be overridden.

Seeds: a world of a vector env reset with seed ``s`` draws its scenes, start poses and goals from a generator
seeded with ``s`` (the single env's ``reset(seed=s)`` uses the same generator). Evaluation resets with the
held-out seeds ``HELD_OUT_START + k``; training resets with seeds below ``HELD_OUT_START`` (checked by
:func:`check_train_seeds`).
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from mirage_env.envs import CameraEnv, LatentVectorObservation  # importing mirage_env.envs registers the ids

ENV_ID = "MirageEnv/Keys-v0"
TASKS = {"exploration": {"reward": "exploration", "obs_mode": "rgb"},
         "goal": {"reward": "goal", "obs_mode": "dict"}}
ENV_DEFAULTS: dict[str, Any] = {"scene_kind": "outdoor", "world": {"voxel_size": 0.2}}
EPISODE_STEPS = 48
HELD_OUT_START = 1_000_000


def env_kwargs(task: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of the env for ``task``: :data:`ENV_DEFAULTS` updated with ``overrides`` (None: keep)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return {**ENV_DEFAULTS, **TASKS[task], "action_mode": "keys", **given}


def held_out_seeds(count: int) -> list[int]:
    """The first ``count`` evaluation seeds."""
    return [HELD_OUT_START + k for k in range(count)]


def check_train_seeds(first: int, count: int) -> None:
    """ValueError unless seeds ``first .. first + count - 1`` are all training seeds."""
    if first < 0 or first + count > HELD_OUT_START:
        raise ValueError(f"training seeds must lie in [0, {HELD_OUT_START}); got {first}..{first + count - 1}")


def make_vec_env(task: str, num_envs: int, episode_steps: int = EPISODE_STEPS, latent: bool = False,
                 autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP, **overrides: Any) -> gym.vector.VectorEnv:
    """The batched vector env of ``task`` (latent observations with ``latent``; exploration only), wrapped in
    Gymnasium's ``RecordEpisodeStatistics``: the step that ends an episode reports its return and length in
    ``info["episode"]`` (``"r"``, ``"l"``, ``"t"``) where ``info["_episode"]`` is True."""
    if latent and task != "exploration":
        raise ValueError("latent observations replace the whole observation: only the exploration task takes them")
    envs = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point",
                        max_episode_steps=episode_steps, autoreset_mode=autoreset_mode,
                        **env_kwargs(task, **overrides))
    return RecordEpisodeStatistics(LatentVectorObservation(envs) if latent else envs)


def step_degrees(env: gym.Env | gym.vector.VectorEnv) -> float:
    """Degrees that holding a turn key turns the camera in one step (``turn_deg`` x frames per step)."""
    core = env.unwrapped.core
    return core.config.turn_deg * core.frames_per_step


def make_env(task: str, **overrides: Any) -> CameraEnv:
    """The single env of ``task`` (no time limit: the caller chooses the number of steps)."""
    return CameraEnv(**env_kwargs(task, **overrides))


def env_parser() -> argparse.ArgumentParser:
    """Env options shared by the agent commands (defaults: :data:`ENV_DEFAULTS` and the env's own)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--kind", choices=("indoor", "outdoor", "any"), default=None,
                        help="simulator scenes (default: outdoor)")
    parser.add_argument("--voxel-size", type=float, default=None, help="memory voxel size in metres (default 0.2)")
    parser.add_argument("--num-steps", type=int, default=None, help="denoising steps per segment (default 4)")
    parser.add_argument("--weights-dir", default=None, help="world-model weights (default: the tiny preset's)")
    return parser


def env_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The env keyword arguments that the options of :func:`env_parser` set (None: the task's default)."""
    world = None if args.voxel_size is None else {"voxel_size": args.voxel_size}
    return {"scene_kind": args.kind, "world": world, "num_steps": args.num_steps, "weights_dir": args.weights_dir}
