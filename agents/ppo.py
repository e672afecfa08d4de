"""PPO on the batched mirage-env vector env, single file, in the style of CleanRL's ppo_multidiscrete.py.

    python agents/ppo.py --out runs/ppo --time-limit-min 60                 # exploration, frame observations
    python agents/ppo.py --out runs/ppo-latent --latent-obs                  # exploration, latent observations
    python agents/ppo.py --out runs/ppo-goal --task goal                     # goal view, frame + goal pose
    python agents/ppo.py --out runs/ppo --time-limit-min 60 --resume         # continue from runs/ppo/checkpoint.pt

Writes ``OUT/progress.csv`` (one row per update) and the same scalars for TensorBoard under ``OUT/tensorboard``
(``tensorboard --logdir OUT/tensorboard``), ``OUT/checkpoint.pt`` (every ``--save-every`` updates and at the
end), ``OUT/learning_curve.png`` and, unless ``--eval-seeds 0``, ``OUT/eval.json`` + ``OUT/eval.md``: the trained
policy and the random one on held-out seeds (see agents/evaluate.py). A progress bar over env steps shows on a
terminal (``--no-progress``: none).

Budget: training stops at ``--total-steps`` env steps or ``--time-limit-min`` minutes of training (counted across
resumes), whichever comes first; the learning rate anneals linearly over whichever is nearer. On a CPU a batched
step of the world model costs far more than an update of the small network, so the defaults make the most of few
samples: a small network, a rollout of only 32 steps per world (many updates), a learning rate of 1e-3 and 8
minibatches. The step and update times and what 60 minutes hold: docs/agents.md, *The 60-minute run*.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import concatenate, create_empty_array, iterate
from torch import nn, optim
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.evaluate import run_evaluation  # noqa: E402
from mirage_env.atomic import atomic_file  # noqa: E402
from agents.network import Agent, PPOPolicy, to_tensors  # noqa: E402
from agents.tasks import (EPISODE_STEPS, TASKS, check_train_seeds, env_overrides, env_parser,  # noqa: E402
                          held_out_seeds, make_vec_env)

CSV_FIELDS = ("global_step", "update", "elapsed_s", "sps", "episodes", "episodic_return", "episodic_length",
              "learning_rate", "value_loss", "policy_loss", "entropy", "approx_kl", "clipfrac", "explained_variance",
              "rollout_s", "update_s")
# CSV column -> TensorBoard tag (CleanRL's names)
TENSORBOARD_TAGS = {"episodic_return": "charts/episodic_return", "episodic_length": "charts/episodic_length",
                    "episodes": "charts/episodes", "learning_rate": "charts/learning_rate", "sps": "charts/SPS",
                    "value_loss": "losses/value_loss", "policy_loss": "losses/policy_loss", "entropy": "losses/entropy",
                    "approx_kl": "losses/approx_kl", "clipfrac": "losses/clipfrac",
                    "explained_variance": "losses/explained_variance", "rollout_s": "time/rollout_s",
                    "update_s": "time/update_s"}


def option(default, text: str):
    return dataclasses.field(default=default, metadata={"help": text})


@dataclass
class Args:
    out: str = option("runs/ppo", "output folder")
    task: str = option("exploration", "exploration (frames) or goal (frame + goal pose)")
    latent_obs: bool = option(False, "observe the world model's latents instead of frames (exploration only)")
    seed: int = option(1, "world i of the env starts from seed + i (+ the global step when resuming)")
    total_steps: int = option(100_000, "env steps, all worlds together")
    time_limit_min: float = option(60.0, "minutes of training, counted across resumes (0: no limit)")
    num_envs: int = option(8, "worlds in the batched env")
    rollout_steps: int = option(32, "steps per world per update (CleanRL's num_steps)")
    episode_steps: int = option(EPISODE_STEPS, "time limit of an episode")
    learning_rate: float = option(1e-3, "Adam learning rate")
    anneal_lr: bool = option(True, "anneal the learning rate linearly to 0 over the budget")
    gamma: float = option(0.9, "discount")
    gae_lambda: float = option(0.9, "GAE lambda")
    num_minibatches: int = option(8, "minibatches per epoch")
    update_epochs: int = option(4, "epochs per update")
    clip_coef: float = option(0.2, "PPO clip range (policy and value)")
    ent_coef: float = option(0.01, "entropy bonus")
    vf_coef: float = option(0.5, "value loss weight")
    max_grad_norm: float = option(0.5, "gradient clipping")
    save_every: int = option(10, "updates between checkpoints")
    eval_seeds: int = option(16, "held-out seeds of the final evaluation (0: none)")
    resume: bool = option(False, "continue from OUT/checkpoint.pt (give the same settings)")
    threads: int = option(0, "torch threads (0: torch's default, e.g. from OMP_NUM_THREADS)")
    progress: bool = option(True, "a progress bar over env steps (on a terminal only)")
    # env options, from agents.tasks.env_parser (None: the task's default)
    kind: str | None = None
    voxel_size: float | None = None
    num_steps: int | None = None
    weights_dir: str | None = None


def parse_args(argv: list[str] | None = None) -> Args:
    """Command-line options from the fields of :class:`Args` (env options from ``agents.tasks.env_parser``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[env_parser()])
    env_options = vars(env_parser().parse_args([]))
    for field in dataclasses.fields(Args):
        if field.name in env_options:
            continue
        flag, text = "--" + field.name.replace("_", "-"), field.metadata["help"]
        if field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=text)
        else:
            parser.add_argument(flag, type={"int": int, "float": float, "str": str}[field.type], help=text,
                                default=field.default, choices=sorted(TASKS) if field.name == "task" else None)
    return Args(**vars(parser.parse_args(argv)))


def final_observations(envs: VectorEnv, next_obs, infos: dict):
    """The batch of ``next_obs`` with the final observation of every world that ended in this step."""
    ended = infos.get("_final_obs", np.zeros(envs.num_envs, bool))
    current = iterate(envs.observation_space, next_obs)
    items = [infos["final_obs"][i] if ended[i] else obs for i, obs in enumerate(current)]
    space = envs.single_observation_space
    return concatenate(space, items, create_empty_array(space, envs.num_envs))


def save_checkpoint(path: Path, agent: Agent, optimizer: optim.Optimizer, args: Args, progress: dict) -> None:
    """Policy, optimizer, settings and progress (global_step, update, elapsed_s), written atomically."""
    with atomic_file(path) as temp:
        torch.save({"model": agent.state_dict(), "agent": agent.config, "optimizer": optimizer.state_dict(),
                    "args": dataclasses.asdict(args), **progress}, temp)


def log_tensorboard(writer: SummaryWriter, row: dict) -> None:
    """The numeric columns of a CSV row as TensorBoard scalars at its global step (an empty return: none)."""
    for column, tag in TENSORBOARD_TAGS.items():
        if row[column] != "":
            writer.add_scalar(tag, float(row[column]), row["global_step"])
    writer.flush()


def plot_curve(csv_path: Path, png_path: Path) -> None:
    """Episodic return, entropy and losses against the global step, from the CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    steps = np.array([int(r["global_step"]) for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    done = [i for i, r in enumerate(rows) if r["episodic_return"]]
    returns = np.array([float(rows[i]["episodic_return"]) for i in done])
    axes[0].plot(steps[done], returns, ".", alpha=0.4, label="per update")
    if len(returns) >= 5:
        axes[0].plot(steps[done][4:], np.convolve(returns, np.ones(5) / 5, "valid"), label="mean of 5")
    axes[0].set(title="episodic return", xlabel="env steps")
    axes[0].legend()
    axes[1].plot(steps, [float(r["entropy"]) for r in rows])
    axes[1].set(title="entropy (sum over key groups)", xlabel="env steps")
    for key in ("value_loss", "policy_loss"):
        axes[2].plot(steps, [float(r[key]) for r in rows], label=key)
    axes[2].set(title="losses", xlabel="env steps")
    axes[2].legend()
    fig.tight_layout()
    with atomic_file(png_path) as temp:
        fig.savefig(temp, dpi=100)
    plt.close(fig)


def train(args: Args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_size = args.num_envs * args.rollout_steps
    check_train_seeds(args.seed, args.total_steps + batch_size + args.num_envs)  # resets: seed + global_step + i
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # ---- env and agent
    envs = make_vec_env(args.task, args.num_envs, args.episode_steps, args.latent_obs, AutoresetMode.SAME_STEP,
                        **env_overrides(args))
    obs_kind = "latent" if args.latent_obs else ("goal" if args.task == "goal" else "rgb")
    agent = Agent(obs_kind, envs.single_observation_space.shape if args.latent_obs else None)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    progress = {"global_step": 0, "update": 0, "elapsed_s": 0.0}
    checkpoint_path = out / "checkpoint.pt"
    csv_path = out / "progress.csv"
    tensorboard_dir = out / "tensorboard"
    if args.resume:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        agent.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        progress = {k: checkpoint[k] for k in progress}
        print(f"resumed from {checkpoint_path} at step {progress['global_step']}, update {progress['update']}")
    else:  # a new run: no rows or scalars of an earlier one
        csv_path.unlink(missing_ok=True)
        shutil.rmtree(tensorboard_dir, ignore_errors=True)

    # ---- rollout storage
    n, t_max = args.num_envs, args.rollout_steps
    minibatch_size = batch_size // args.num_minibatches
    next_obs, _ = envs.reset(seed=args.seed + progress["global_step"])
    next_x, next_f = to_tensors(next_obs, obs_kind)
    next_done = torch.zeros(n)
    xs = torch.zeros((t_max, *next_x.shape), dtype=next_x.dtype)
    fs = torch.zeros((t_max, *next_f.shape))
    actions = torch.zeros((t_max, n, 4), dtype=torch.long)
    logprobs, rewards, dones, values = (torch.zeros((t_max, n)) for _ in range(4))

    time_limit_s = args.time_limit_min * 60.0
    started = time.perf_counter() - progress["elapsed_s"]
    log = open(csv_path, "a", newline="")
    writer = csv.DictWriter(log, fieldnames=CSV_FIELDS)
    if log.tell() == 0:
        writer.writeheader()
    tensorboard = SummaryWriter(str(tensorboard_dir))
    if progress["update"] == 0:
        tensorboard.add_text("args", "\n".join(f"- {k}: {v}" for k, v in dataclasses.asdict(args).items()))
    bar = tqdm(total=args.total_steps, initial=progress["global_step"], desc="ppo", unit="step",
               disable=None if args.progress else True)  # None: only on a terminal

    def remaining() -> float:
        """The fraction of the budget (steps or time, whichever is nearer its end) still left."""
        used = progress["global_step"] / args.total_steps
        if time_limit_s > 0:
            used = max(used, (time.perf_counter() - started) / time_limit_s)
        return max(1.0 - used, 0.0)

    while remaining() > 0:
        progress["update"] += 1
        lr = args.learning_rate * (remaining() if args.anneal_lr else 1.0)
        optimizer.param_groups[0]["lr"] = lr

        # ---- collect a rollout
        rollout_started = time.perf_counter()
        finished_returns, finished_lengths = [], []
        for step in range(t_max):
            progress["global_step"] += n
            bar.update(n)
            xs[step], fs[step], dones[step] = next_x, next_f, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_x, next_f)
            values[step], actions[step], logprobs[step] = value.flatten(), action, logprob
            next_obs, reward, terminated, truncated, infos = envs.step(action.numpy())
            if "_episode" in infos:  # the episodes that ended, from RecordEpisodeStatistics (agents.tasks)
                ended = infos["_episode"]
                finished_returns += infos["episode"]["r"][ended].tolist()
                finished_lengths += infos["episode"]["l"][ended].tolist()
            reward = torch.as_tensor(reward, dtype=torch.float32)
            cut = truncated & ~terminated
            if cut.any():  # a time limit is not the end of the task: bootstrap from the final observation
                with torch.no_grad():
                    final = to_tensors(final_observations(envs, next_obs, infos), obs_kind)
                    final_value = agent.get_value(*final).flatten()
                reward += args.gamma * final_value * torch.as_tensor(cut, dtype=torch.float32)
            rewards[step] = reward
            next_x, next_f = to_tensors(next_obs, obs_kind)
            next_done = torch.as_tensor(terminated | truncated, dtype=torch.float32)
        rollout_s = time.perf_counter() - rollout_started

        # ---- generalised advantage estimation
        update_started = time.perf_counter()
        with torch.no_grad():
            next_value = agent.get_value(next_x, next_f).flatten()
            advantages = torch.zeros_like(rewards)
            last = torch.zeros(n)
            for t in reversed(range(t_max)):
                not_done = 1.0 - (next_done if t == t_max - 1 else dones[t + 1])
                following = next_value if t == t_max - 1 else values[t + 1]
                delta = rewards[t] + args.gamma * following * not_done - values[t]
                last = delta + args.gamma * args.gae_lambda * not_done * last
                advantages[t] = last
            returns = advantages + values

        # ---- optimise the policy and the value function
        b_x, b_f = xs.reshape(batch_size, *xs.shape[2:]), fs.reshape(batch_size, -1)
        b_actions, b_logprobs = actions.reshape(batch_size, 4), logprobs.reshape(-1)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        clipfracs = []
        for _ in range(args.update_epochs):
            order = torch.randperm(batch_size)
            for first in range(0, batch_size, minibatch_size):
                mb = order[first:first + minibatch_size]
                _, new_logprob, entropy, new_value = agent.get_action_and_value(b_x[mb], b_f[mb], b_actions[mb])
                log_ratio = new_logprob - b_logprobs[mb]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
                new_value = new_value.flatten()
                v_clipped = b_values[mb] + (new_value - b_values[mb]).clamp(-args.clip_coef, args.clip_coef)
                v_loss = 0.5 * torch.max((new_value - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
        update_s = time.perf_counter() - update_started

        # ---- log and checkpoint
        progress["elapsed_s"] = time.perf_counter() - started
        variance = float(b_returns.var())
        explained = float("nan") if variance == 0 else 1 - float((b_returns - b_values).var()) / variance
        row = {"global_step": progress["global_step"], "update": progress["update"],
               "elapsed_s": round(progress["elapsed_s"], 1), "sps": round(batch_size / (rollout_s + update_s), 2),
               "episodes": len(finished_returns),
               "episodic_return": np.mean(finished_returns) if finished_returns else "",
               "episodic_length": np.mean(finished_lengths) if finished_lengths else "",
               "learning_rate": lr, "value_loss": v_loss.item(), "policy_loss": pg_loss.item(),
               "entropy": entropy_loss.item(), "approx_kl": approx_kl.item(), "clipfrac": float(np.mean(clipfracs)),
               "explained_variance": explained, "rollout_s": round(rollout_s, 2), "update_s": round(update_s, 2)}
        writer.writerow(row)
        log.flush()
        log_tensorboard(tensorboard, row)
        shown = f"{row['episodic_return']:.3f}" if finished_returns else "-"
        bar.set_postfix(ret=shown, sps=row["sps"])
        tqdm.write(f"update {row['update']:4d}  step {row['global_step']:7d}  return {shown:>7}  entropy "
                   f"{row['entropy']:.3f}  sps {row['sps']:.1f}  ({rollout_s:.1f} s rollout, {update_s:.1f} s update)")
        sys.stdout.flush()  # the line reaches a log file now, not when the buffer fills
        if progress["update"] % args.save_every == 0:
            save_checkpoint(checkpoint_path, agent, optimizer, args, progress)
    log.close()
    tensorboard.close()
    bar.close()
    save_checkpoint(checkpoint_path, agent, optimizer, args, progress)
    plot_curve(csv_path, out / "learning_curve.png")
    summary = {**progress, "checkpoint": str(checkpoint_path)}
    if args.eval_seeds:
        policies = {"random": "random", "ppo": PPOPolicy(checkpoint_path)}
        summary["eval"] = run_evaluation(out, policies, [args.task], held_out_seeds(args.eval_seeds),
                                         args.num_envs, args.episode_steps, **env_overrides(args))
    return summary


def main(argv: list[str] | None = None) -> dict:
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
