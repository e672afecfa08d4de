"""Frames per second of the camera envs on the tiny preset: the single env and the batched vector env (N worlds,
one batched world step) at N = 1, 4, 8, plus Gymnasium's SyncVectorEnv of N single envs for comparison.

    python benchmarks/env_throughput.py                      # 5 rounds of 5 timed steps per env
    python benchmarks/env_throughput.py --rounds 9 --threads 1
    python benchmarks/env_throughput.py --ray-actors 2       # + RayVectorEnv: N = 8 in 2 actors of one CPU

Random continuous actions in seeded simulator scenes, 64x64, one latent (4 frames) and 4 denoising steps per
step. frames/s counts generated frames of all envs over wall-clock time (env overhead included); the stage columns
are the world's own timings (ms per env step); "model alone" is the speed-up of the model's stages only (denoise +
decode of N worlds against N times one world's), what batching gains on the model itself. ``--ray-actors K`` adds
:class:`~mirage_env.distributed.RayVectorEnv` with the largest N split over K actor processes (batched in each, the
actors side by side; its stage columns are the actors' mean). The envs take turns round by round and each reports
its median round, so the ratios compare the envs over the same stretch of time on a shared machine. Prints a
Markdown table and writes benchmarks/results/env_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from mirage_env.atomic import write_text
from mirage_env.envs import CameraVectorEnv

ENV_ID = "MirageEnv/Camera-v0"
STAGES = ("read", "denoise", "decode", "depth", "discard", "write", "total")


def _world_ms(env, info: dict) -> dict[str, float]:
    """Stage milliseconds of one step: the batched env reports its one batched step to every world, the Ray env each
    actor's batched step to the actor's worlds (the actors run side by side: their mean), the others one world step
    per env."""
    timings = info["timings_ms"]
    share = 1
    if not isinstance(timings, np.ndarray):
        timings = [timings]
    elif isinstance(env.unwrapped, CameraVectorEnv):
        timings = timings[:1]
    elif hasattr(env.unwrapped, "ranges"):  # RayVectorEnv: the env ranges of its actors
        timings, share = [timings[lo] for lo, _ in env.unwrapped.ranges], len(env.unwrapped.ranges)
    return {s: sum(getattr(t, s) for t in timings) / share for s in STAGES}


def _timed_steps(env, steps: int) -> tuple[float, dict[str, float], int]:
    """Wall seconds and summed world-stage milliseconds of ``steps`` random steps; frames per env step."""
    stages = dict.fromkeys(STAGES, 0.0)
    started = time.perf_counter()
    for _ in range(steps):
        *_, info = env.step(env.action_space.sample())
        for stage, ms in _world_ms(env, info).items():
            stages[stage] += ms
    return time.perf_counter() - started, stages, info["frames"].shape[-4]


def _model_ms(row: dict) -> float:
    """The model's share of a step: denoise + decode, ms."""
    return row["world_ms_per_step"]["denoise"] + row["world_ms_per_step"]["decode"]


def measure(makers: dict[str, Callable[[], gym.Env]], steps: int, rounds: int) -> dict[str, dict]:
    """Per env of ``makers``: ``rounds`` rounds of ``steps`` steps, the envs taking turns round by round (after one
    warm-up step each), so that a slow spell of the machine falls on every env alike. Reports the median round."""
    envs = {name: make() for name, make in makers.items()}
    for env in envs.values():
        env.reset(seed=0)
        env.action_space.seed(0)
        env.step(env.action_space.sample())
    timed: dict[str, list] = {name: [] for name in envs}
    for _ in range(rounds):
        for name, env in envs.items():
            timed[name].append(_timed_steps(env, steps))
    rows = {}
    for name, env in envs.items():
        wall, stages, frames_per_step = sorted(timed[name], key=lambda r: r[0])[rounds // 2]
        num_envs = getattr(env, "num_envs", 1)
        rows[name] = {"num_envs": num_envs, "steps": steps, "rounds": rounds, "ms_per_step": 1e3 * wall / steps,
                      "frames_per_s": num_envs * frames_per_step * steps / wall,
                      "round_ms_per_step": [1e3 * r[0] / steps for r in timed[name]],
                      "world_ms_per_step": {s: ms / steps for s, ms in stages.items()}}
        env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per env and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the envs take turns, the median round counts")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--ray-actors", type=int, default=0,
                        help="also time RayVectorEnv, the largest N in this many world actors of one CPU each "
                             "(needs mirage-env[distributed])")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "env_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    makers = {"single env (gym.make)": lambda: gym.make(ENV_ID, max_episode_steps=None)}
    for n in args.sizes:
        makers[f"vector env, N = {n}"] = lambda n=n: gym.make_vec(ENV_ID, num_envs=n)
    n = max(args.sizes)
    makers[f"SyncVectorEnv, N = {n}"] = lambda: gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync")
    if args.ray_actors:
        import ray

        from mirage_env.distributed import RayVectorEnv

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        makers[f"RayVectorEnv, N = {n}, {args.ray_actors} actors"] = lambda: RayVectorEnv(n, args.ray_actors)
    rows = measure(makers, args.steps, args.rounds)
    base_row = rows[f"vector env, N = {min(args.sizes)}"]
    base, base_model_ms = base_row["frames_per_s"], _model_ms(base_row) / base_row["num_envs"]
    load = os.getloadavg()[0]
    print(f"tiny preset, 64x64, 4 frames and 4 denoising steps per step, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the end")
    print("| env | N | ms per step | model (denoise + decode) | per-world stages (read, depth, discard, write) "
          "| frames/s | vs vector N = 1 | model alone vs vector N = 1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        ms = r["world_ms_per_step"]
        print(f"| {name} | {r['num_envs']} | {r['ms_per_step']:.0f} | {_model_ms(r):.0f} | "
              f"{ms['read'] + ms['depth'] + ms['discard'] + ms['write']:.0f} | {r['frames_per_s']:.1f} | "
              f"{r['frames_per_s'] / base:.2f}x | {r['num_envs'] * base_model_ms / _model_ms(r):.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps({"threads": args.threads, "cpus": os.cpu_count(), "load_average": load,
                                    "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
