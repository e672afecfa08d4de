"""Frames per second of the camera envs on the tiny preset: the single env and the batched vector env (N worlds,
one batched world step) at N = 1, 4, 8, plus Gymnasium's SyncVectorEnv of N single envs for comparison.

    python benchmarks/env_throughput.py                      # 10 timed steps per row after one warm-up step
    python benchmarks/env_throughput.py --steps 20 --threads 1

Random continuous actions in seeded simulator scenes, 64x64, one latent (4 frames) and 4 denoising steps per
step. frames/s counts generated frames of all envs over wall-clock time (env overhead included); the stage columns
are the world's own timings (ms per env step). Prints a Markdown table and writes
benchmarks/results/env_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from mirage_env.envs import CameraVectorEnv

ENV_ID = "MirageEnv/Camera-v0"
STAGES = ("read", "denoise", "decode", "depth", "discard", "write", "total")


def _world_ms(env, info: dict) -> dict[str, float]:
    """Stage milliseconds of one step: the batched env reports its one batched step to every world, the others
    one world step per env."""
    timings = info["timings_ms"]
    if not isinstance(timings, np.ndarray):
        timings = [timings]
    elif isinstance(env.unwrapped, CameraVectorEnv):
        timings = timings[:1]
    return {s: sum(getattr(t, s) for t in timings) for s in STAGES}


def measure(make, steps: int) -> dict:
    """Wall-clock and world-stage times of ``steps`` steps (after one warm-up step) of the env ``make()`` builds."""
    env = make()
    env.reset(seed=0)
    env.action_space.seed(0)
    env.step(env.action_space.sample())
    stages = dict.fromkeys(STAGES, 0.0)
    started = time.perf_counter()
    for _ in range(steps):
        *_, info = env.step(env.action_space.sample())
        for stage, ms in _world_ms(env, info).items():
            stages[stage] += ms / steps
    wall = time.perf_counter() - started
    env.close()
    num_envs, frames_per_step = getattr(env, "num_envs", 1), info["frames"].shape[-4]
    return {"num_envs": num_envs, "steps": steps, "ms_per_step": 1e3 * wall / steps,
            "frames_per_s": num_envs * frames_per_step * steps / wall, "world_ms_per_step": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "env_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {"single env (gym.make)": measure(lambda: gym.make(ENV_ID, max_episode_steps=None), args.steps)}
    for n in args.sizes:
        rows[f"vector env, N = {n}"] = measure(lambda n=n: gym.make_vec(ENV_ID, num_envs=n), args.steps)
    n = max(args.sizes)
    rows[f"SyncVectorEnv, N = {n}"] = measure(
        lambda: gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync"), args.steps)
    base = rows[f"vector env, N = {min(args.sizes)}"]["frames_per_s"]
    load = os.getloadavg()[0]
    print(f"tiny preset, 64x64, 4 frames and 4 denoising steps per step, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the end")
    print("| env | N | ms per step | model (denoise + decode) | per-world stages (read, depth, discard, write) "
          "| frames/s | vs vector N = 1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        ms = r["world_ms_per_step"]
        print(f"| {name} | {r['num_envs']} | {r['ms_per_step']:.0f} | {ms['denoise'] + ms['decode']:.0f} | "
              f"{ms['read'] + ms['depth'] + ms['discard'] + ms['write']:.0f} | {r['frames_per_s']:.1f} | "
              f"{r['frames_per_s'] / base:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "cpus": os.cpu_count(), "load_average": load,
                                    "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
