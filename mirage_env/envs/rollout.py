"""Rollouts of the camera env to a video, a PNG contact sheet and a metrics JSON (``mirage-env rollout`` / ``play``).

Drives: ``loop`` (walk forward turning right where the scene allows, then back the same way to the start),
``orbit`` (circle a point 0.5 m ahead, looking at it), ``file`` (the poses of a ``geometry.npz``, starting from its
first frame), ``keys`` (a key script, see :mod:`mirage_env.envs.actions`), ``random`` (a seeded random agent) and
``policy`` (a closed-loop policy ``(obs, info) -> action`` given to :func:`run_rollout`, e.g. the agents of
``agents/``) and ``interactive`` (actions given to :func:`run_rollout` as an iterable that is read as the rollout
runs and ends it when exhausted, e.g. the keys of ``mirage-env play --interactive``). Pose drives move the camera
along given poses (no collision check); action drives go through ``step``. The env is a :class:`CameraEnv` or a
Gymnasium wrapper of one: actions and resets go through the wrappers (e.g. ``RecordEpisodeStatistics``), poses
straight to the camera env, which alone takes them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from mirage_env.atomic import write_text
from mirage_env.envs.actions import parse_keys
from mirage_env.envs.camera_env import CameraEnv
from mirage_env.geometry.camera_files import load_geometry_npz
from mirage_env.geometry.trajectories import orbit, pan_path
from mirage_env.video import check_video_outputs, contact_sheet, write_png, write_video

DRIVES = ("loop", "orbit", "file", "keys", "random", "policy", "interactive")
STAGES = ("read", "denoise", "decode", "depth", "discard", "write", "total")


@dataclass
class RolloutSpec:
    """What to drive and where to write. ``steps`` is ignored by ``keys`` (the script's length), ``file`` and
    ``interactive``."""

    drive: str = "loop"
    steps: int = 24
    seed: int = 0
    keys: str | None = None
    poses_file: str | None = None
    out: str = "out/rollout.mp4"
    video_scale: int = 4
    progress: bool = True

    def __post_init__(self) -> None:
        if self.drive not in DRIVES:
            raise ValueError(f"drive must be one of {DRIVES}, got {self.drive!r}")
        if self.drive == "keys" and not self.keys:
            raise ValueError("drive 'keys' needs a key script")
        if self.drive == "file" and not self.poses_file:
            raise ValueError("drive 'file' needs a geometry.npz")
        if self.steps < 1 or self.video_scale < 1:
            raise ValueError("steps and video_scale must be >= 1")
        check_video_outputs(self.out)  # before the rollout runs, not after


Step = Callable[[gym.Env], tuple]
Policy = Callable[[Any, dict], Any]


def _pose_steps(poses: torch.Tensor, frames_per_step: int) -> list[Step]:
    """Poses [N, 4, 4] after the start -> one ``step_poses`` per F poses (the last chunk holds its final pose)."""
    pad = (-len(poses)) % frames_per_step
    poses = torch.cat([poses, poses[-1:].expand(pad, 4, 4)])
    return [lambda env, chunk=chunk: env.unwrapped.step_poses(chunk) for chunk in poses.split(frames_per_step)]


def _action_steps(actions: Iterable) -> Iterator[Step]:
    """One step per action, each action taken from ``actions`` only when its step runs."""
    return (lambda env, a=a: env.step(a) for a in actions)


def _policy_steps(policy: Policy, first: tuple, n: int) -> list[Step]:
    """``n`` steps, each acting on the observation and info of the step before (the reset's for the first)."""
    last = {"obs": first[0], "info": first[1]}

    def step(env: gym.Env) -> tuple:
        result = env.step(policy(last["obs"], last["info"]))
        last["obs"], last["info"] = result[0], result[-1]
        return result

    return [step] * n


def orbit_path(start: torch.Tensor, n: int, radius: float = 0.5) -> torch.Tensor:
    """``n`` poses circling a point ``radius`` ahead of ``start`` (level), beginning at ``start``'s position."""
    forward = start[:3, 2].clone()
    forward[1] = 0.0
    forward = forward / forward.norm()
    center = start[:3, 3] + radius * forward
    start_deg = math.degrees(math.atan2(-float(forward[0]), float(forward[2])))
    return orbit(center.tolist(), radius, n, start_deg=start_deg)


def plan(env: gym.Env, spec: RolloutSpec, policy: Policy | None = None, actions: Iterable | None = None
         ) -> tuple[tuple, list[Step] | Iterator[Step]]:
    """Reset ``env`` for ``spec`` and list its steps (``interactive``: an iterator over ``actions``); returns
    ((obs, info) of the reset, steps)."""
    if (spec.drive == "policy") != (policy is not None):
        raise ValueError("drive 'policy' needs a policy, and only that drive takes one")
    if (spec.drive == "interactive") != (actions is not None):
        raise ValueError("drive 'interactive' needs actions, and only that drive takes them")
    camera: CameraEnv = env.unwrapped
    f = camera.frames_per_step
    if spec.drive == "file":
        poses = load_geometry_npz(spec.poses_file).poses_c2w
        return env.reset(seed=spec.seed, options={"geometry_npz": spec.poses_file}), _pose_steps(poses[1:], f)
    first = env.reset(seed=spec.seed)
    if spec.drive == "keys":
        return first, list(_action_steps(parse_keys(spec.keys)))
    if spec.drive == "interactive":
        return first, _action_steps(actions)
    if spec.drive == "policy":
        return first, _policy_steps(policy, first, spec.steps)
    if spec.drive == "random":
        env.action_space.seed(spec.seed)
        return first, list(_action_steps([env.action_space.sample() for _ in range(spec.steps)]))
    if spec.drive == "loop":
        return first, _pose_steps(pan_path(camera.scene, camera.pose, spec.steps * f)[1:], f)
    path = orbit_path(camera.pose, spec.steps * f + 1)
    first = env.reset(seed=spec.seed, options={"scene": camera.scene, "pose": path[0]})
    return first, _pose_steps(path[1:], f)


def _upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2) if scale > 1 else frames


def _record(info: dict, reward: float) -> dict:
    return {"frame_index": info["frame_index"], "reward": reward, "coverage": info["coverage"],
            "new_voxels": info["new_voxels"], "memory_voxels": info["memory_voxels"], "blocked": info["blocked"],
            "timings_ms": {s: getattr(info["timings_ms"], s) for s in STAGES}}


def run_rollout(env: gym.Env, spec: RolloutSpec, policy: Policy | None = None,
                actions: Iterable | None = None) -> dict:
    """Run ``spec`` on ``env`` (``policy`` for drive ``policy``, ``actions`` for ``interactive``); write the
    video, ``<out>.png`` and ``<out>.json``; return the metrics. ValueError when no step ran."""
    (_, info), steps = plan(env, spec, policy, actions)
    frames = [info["frames"][:1]]
    records: list[dict] = []
    started = time.perf_counter()
    total = len(steps) if isinstance(steps, list) else None
    with tqdm(total=total, desc=f"rollout ({spec.drive})", unit="step", disable=not spec.progress) as bar:
        for step in steps:
            _, reward, terminated, truncated, info = step(env)
            frames.append(info["frames"])
            records.append(_record(info, float(reward)))
            bar.set_postfix(voxels=info["memory_voxels"], coverage=f"{info['coverage']:.2f}")
            bar.update()
            if terminated or truncated:  # the camera env never truncates; a TimeLimit wrapper may
                break
    wall = time.perf_counter() - started
    if not records:
        raise ValueError(f"the {spec.drive} rollout ended before its first step: nothing to write")
    video = np.concatenate(frames)
    out = Path(spec.out)
    write_video(out, _upscale(video, spec.video_scale), fps=env.metadata["render_fps"])
    tiles = video[np.linspace(0, len(video) - 1, min(len(video), 32)).round().astype(int)]
    write_png(out.with_suffix(".png"), contact_sheet(_upscale(tiles, max(spec.video_scale // 2, 1))))
    metrics = summarise(env.unwrapped, spec, records, len(video), wall)
    write_text(out.with_suffix(".json"), json.dumps(metrics, indent=2))
    return metrics


def summarise(env: CameraEnv, spec: RolloutSpec, records: list[dict], frames: int, wall: float) -> dict:
    stats = env.core.world.memory(0).stats()
    generated = frames - 1
    return {
        "spec": asdict(spec),
        "env": {**asdict(env.config), "reward": str(env.config.reward)},
        "video": spec.out, "contact_sheet": str(Path(spec.out).with_suffix(".png")),
        "steps": len(records), "frames": frames, "wall_s": wall,
        "generated_frames_per_s": generated / wall if wall > 0 else None,
        "timings_ms_mean": {s: float(np.mean([r["timings_ms"][s] for r in records])) for s in STAGES},
        "memory": {"voxels": stats.points, "bytes": stats.bytes, "capacity": stats.capacity},
        "coverage_mean": float(np.mean([r["coverage"] for r in records])),
        "coverage_last": records[-1]["coverage"],
        "blocked_steps": sum(r["blocked"] for r in records),
        "reward_sum": float(sum(r["reward"] for r in records)),
        "per_step": records,
    }

