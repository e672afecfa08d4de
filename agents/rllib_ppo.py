"""PPO from RLlib on the camera envs: env runners are Ray workers, frames are 64x64x3 images, a small CNN.

Each env runner holds a vector env of ``--envs-per-runner`` envs: one local batched world
(``--world-actors 0``) or a ``RayVectorEnv`` over ``--world-actors`` world actors per runner (one GPU each when
the cluster has GPUs). Writes one CSV row per iteration (episode return mean, env steps, seconds)::

    python agents/rllib_ppo.py --iterations 2 --env-runners 1 --world-actors 1 --train-batch 32 --max-episode-steps 8
    python agents/rllib_ppo.py --address auto --env-runners 8 --world-actors 2 --envs-per-runner 8   # a cluster
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import ray
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from mirage_env.distributed.rllib_env import register_rllib_env

ENVS = {"keys": "MirageEnv/Keys-v0", "camera": "MirageEnv/Camera-v0"}
# 64x64x3 -> 16x16x16 -> 8x8x32 -> 4x4x64 ("same" padding), then a 256-unit head shared by policy and value.
CNN = DefaultModelConfig(conv_filters=[[16, 8, 4], [32, 4, 2], [64, 3, 2]], conv_activation="relu",
                         head_fcnet_hiddens=[256], vf_share_layers=True)


def build_config(args: argparse.Namespace) -> PPOConfig:
    """The PPO config of the command line (new API stack: RLModule, env runners, a local learner)."""
    env_config = {"env_id": ENVS[args.env], "world_actors": args.world_actors, "num_steps": args.num_steps,
                  "max_episode_steps": args.max_episode_steps}
    return (
        PPOConfig()
        .environment(register_rllib_env(), env_config=env_config)
        .env_runners(num_env_runners=args.env_runners, num_envs_per_env_runner=args.envs_per_runner,
                     gym_env_vectorize_mode="vector_entry_point", rollout_fragment_length="auto")
        .learners(num_learners=0, num_gpus_per_learner=args.learner_gpus)
        .training(train_batch_size_per_learner=args.train_batch, minibatch_size=args.minibatch,
                  num_epochs=args.epochs, lr=3e-4)
        .rl_module(model_config=CNN)
        .debugging(seed=args.seed)
    )


def train(args: argparse.Namespace) -> list[dict]:
    """Run ``args.iterations`` PPO iterations, writing one CSV row per iteration to ``args.out``."""
    algo = build_config(args).build_algo()
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["iteration", "episode_return_mean", "episodes", "env_steps", "seconds"])
        writer.writeheader()
        for i in range(1, args.iterations + 1):
            start = time.perf_counter()
            result = algo.train()
            runners = result.get("env_runners", {})
            row = {"iteration": i, "episode_return_mean": float(runners.get("episode_return_mean", math.nan)),
                   "episodes": int(runners.get("num_episodes_lifetime", 0)),
                   "env_steps": int(runners.get("num_env_steps_sampled_lifetime", 0)),
                   "seconds": round(time.perf_counter() - start, 2)}
            writer.writerow(row)
            f.flush()
            rows.append(row)
            print(row, flush=True)
    algo.stop()
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", choices=sorted(ENVS), default="keys")
    p.add_argument("--address", default=None, help="Ray cluster address ('auto' on a node of a running cluster); "
                                                   "default: start a local Ray")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (ignored with --address)")
    p.add_argument("--env-runners", type=int, default=2)
    p.add_argument("--envs-per-runner", type=int, default=4)
    p.add_argument("--world-actors", type=int, default=1, help="world actors per env runner (0: worlds in the runner)")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--train-batch", type=int, default=512, help="env steps per iteration")
    p.add_argument("--minibatch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--num-steps", type=int, default=4, help="denoising steps per segment")
    p.add_argument("--max-episode-steps", type=int, default=200)
    p.add_argument("--learner-gpus", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out/rllib_ppo.csv"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ray.init(address=args.address, num_cpus=None if args.address else args.num_cpus, include_dashboard=False)
    try:
        train(args)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
