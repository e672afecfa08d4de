"""Evaluate policies on the held-out seeds of each task: mean +- std of the episode return -> JSON + markdown.

    python agents/evaluate.py --out out/eval --seeds 16 --policies random orbit loop lawnmower \\
        --checkpoint runs/ppo/checkpoint.pt

Every episode is ``--episode-steps`` long (the goal task ends sooner on success) and starts from a held-out seed
(``agents.tasks.HELD_OUT_START + k``, never used for training). The scripted and random policies run on every
task of ``--tasks``; a PPO checkpoint runs on the task it was trained for. Seeds run ``--num-envs`` at a time in
one batched vector env.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.network import PPOPolicy  # noqa: E402
from mirage_env.atomic import write_text  # noqa: E402
from agents.policies import POLICIES, Policy, make_policy  # noqa: E402
from agents.tasks import (EPISODE_STEPS, TASKS, env_kwargs, env_overrides, env_parser, held_out_seeds,  # noqa: E402
                          make_vec_env, step_degrees)


def evaluate(policy: Policy, task: str, seeds: list[int], num_envs: int = 8, episode_steps: int = EPISODE_STEPS,
             latent: bool = False, **overrides: Any) -> dict:
    """One episode of ``policy`` from each seed of ``seeds`` on ``task``; returns the per-seed returns (the episode
    statistics of Gymnasium's ``RecordEpisodeStatistics``), their mean and (population) standard deviation,
    episode lengths and, for the goal task, the success rate."""
    returns, lengths, successes = [], [], []
    for first in range(0, len(seeds), num_envs):
        chunk = seeds[first:first + num_envs]
        envs = make_vec_env(task, len(chunk), episode_steps, latent, AutoresetMode.DISABLED, **overrides)
        obs, _ = envs.reset(seed=chunk)
        policy.reset(len(chunk), seed=chunk[0])
        total, length = np.zeros(len(chunk)), np.zeros(len(chunk), np.int64)
        done, success, blocked = (np.zeros(len(chunk), bool) for _ in range(3))
        while not done.all():  # worlds that ended step on (no autoreset) until all have; their reports are not read
            obs, _, terminated, _, info = envs.step(policy.act(obs, blocked))
            ended = np.logical_and(info.get("_episode", False), ~done)  # RecordEpisodeStatistics' reports
            if ended.any():
                total[ended], length[ended] = info["episode"]["r"][ended], info["episode"]["l"][ended]
            success |= terminated & ended
            done |= ended
            blocked = info["blocked"]
        returns += total.tolist()
        lengths += length.tolist()
        successes += success.tolist()
    result = {"task": task, "seeds": list(seeds), "returns": returns, "mean": float(np.mean(returns)),
              "std": float(np.std(returns)), "mean_length": float(np.mean(lengths))}
    if task == "goal":
        result["success_rate"] = float(np.mean(successes))
    return result


def markdown(results: dict[str, dict[str, dict]]) -> str:
    """A table of ``results[task][policy]`` with each mean's ratio to the random policy's on the same task."""
    lines = ["| task | policy | return (mean +- std) | / random | success | episodes |",
             "|---|---|---:|---:|---:|---:|"]
    for task, by_policy in results.items():
        baseline = by_policy.get("random", {}).get("mean")
        for name, r in by_policy.items():
            ratio = f"{r['mean'] / baseline:.2f}x" if baseline and baseline > 0 else "-"
            success = f"{r['success_rate']:.0%}" if "success_rate" in r else "-"
            lines.append(f"| {task} | {name} | {r['mean']:.3f} +- {r['std']:.3f} | {ratio} | {success} | "
                         f"{len(r['returns'])} |")
    return "\n".join(lines) + "\n"


def run_evaluation(out: Path, policies: dict[str, Policy | str], tasks: list[str], seeds: list[int],
                   num_envs: int = 8, episode_steps: int = EPISODE_STEPS, **overrides: Any) -> dict:
    """Evaluate ``policies`` (name -> a policy, or a policy name of :data:`agents.policies.POLICIES`; a
    :class:`PPOPolicy` runs on its own task only) on ``tasks``; write ``out/eval.json`` and ``out/eval.md``."""
    results: dict[str, dict[str, dict]] = {task: {} for task in tasks}
    for task in tasks:
        step_deg = step_degrees(make_vec_env(task, 1, episode_steps, **overrides))
        for name, policy in policies.items():
            if isinstance(policy, PPOPolicy) and policy.task != task:
                continue
            latent = isinstance(policy, PPOPolicy) and policy.latent
            policy = make_policy(policy, step_deg) if isinstance(policy, str) else policy
            results[task][name] = evaluate(policy, task, seeds, num_envs, episode_steps, latent, **overrides)
            r = results[task][name]
            print(f"{task:12s} {name:12s} {r['mean']:8.3f} +- {r['std']:.3f}", flush=True)
    report = {"seeds": list(seeds), "episode_steps": episode_steps,
              "env": {task: env_kwargs(task, **overrides) for task in tasks}, "results": results}
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "eval.json", json.dumps(report, indent=2))
    write_text(out / "eval.md", markdown(results))
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[env_parser()])
    parser.add_argument("--out", type=Path, required=True, help="output folder (eval.json, eval.md)")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    parser.add_argument("--policies", nargs="*", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--checkpoint", type=Path, action="append", default=[], help="a PPO checkpoint (repeatable)")
    parser.add_argument("--deterministic", action="store_true", help="PPO plays its most likely keys")
    parser.add_argument("--seeds", type=int, default=16, help="number of held-out seeds")
    parser.add_argument("--num-envs", type=int, default=8, help="worlds per batched env")
    parser.add_argument("--episode-steps", type=int, default=EPISODE_STEPS)
    args = parser.parse_args(argv)
    policies: dict[str, Policy | str] = {name: name for name in args.policies}
    policies |= {f"ppo:{path}": PPOPolicy(path, args.deterministic) for path in args.checkpoint}
    report = run_evaluation(args.out, policies, args.tasks, held_out_seeds(args.seeds), args.num_envs,
                            args.episode_steps, **env_overrides(args))
    print(markdown(report["results"]), end="")
    return report


if __name__ == "__main__":
    main()
