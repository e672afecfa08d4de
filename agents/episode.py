"""One episode of a policy on the single env -> ``DIR/episode.mp4`` (+ ``.png`` contact sheet, ``.json`` metrics).

What ``agents/random_agent.py`` and ``agents/scripted.py`` run; recording is
:func:`mirage_env.envs.rollout.run_rollout` with the ``policy`` drive, on the env wrapped in a ``TimeLimit`` of
``--steps`` and Gymnasium's ``RecordEpisodeStatistics``, whose episode return and length the metrics report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit

from agents.policies import make_policy
from agents.tasks import EPISODE_STEPS, TASKS, env_overrides, env_parser, make_env, step_degrees
from mirage_env.atomic import write_text
from mirage_env.envs.rollout import RolloutSpec, run_rollout


def episode_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, parents=[env_parser()])
    parser.add_argument("--task", choices=sorted(TASKS), default="exploration")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="scene, start pose (and goal) and policy seed")
    parser.add_argument("--steps", type=int, default=EPISODE_STEPS, help="env steps (the goal task may end sooner)")
    parser.add_argument("--video-scale", type=int, default=4, help="nearest-neighbour upscaling of the video")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _one(obs: Any) -> Any:
    """One world's observation as a batch of one."""
    return {k: v[None] for k, v in obs.items()} if isinstance(obs, dict) else obs[None]


def run_episode(name: str, args: argparse.Namespace) -> dict:
    """Run policy ``name`` (see :func:`agents.policies.make_policy`) for one episode as ``args`` say; write the
    files and return the metrics."""
    env = RecordEpisodeStatistics(TimeLimit(make_env(args.task, **env_overrides(args)), args.steps))
    policy = make_policy(name, step_degrees(env))
    policy.reset(1, args.seed)
    spec = RolloutSpec(drive="policy", steps=args.steps, seed=args.seed, out=str(args.out / "episode.mp4"),
                       video_scale=args.video_scale, progress=not args.no_progress)
    metrics = run_rollout(env, spec, lambda obs, info: policy.act(_one(obs), np.array([info["blocked"]]))[0])
    metrics = {"policy": name, "task": args.task, "episode_return": float(env.return_queue[-1]),
               "episode_length": int(env.length_queue[-1]), **metrics}
    write_text(args.out / "episode.json", json.dumps(metrics, indent=2))
    print(f"{name}: return {metrics['episode_return']:.3f} over {metrics['steps']} steps, "
          f"{metrics['memory']['voxels']} voxels ({metrics['memory']['bytes'] / 1e6:.2f} MB), "
          f"{metrics['timings_ms_mean']['total']:.0f} ms/step; wrote {args.out}/episode.{{mp4,png,json}}")
    return metrics
