"""The agents of agents/: random and scripted commands, the policies, evaluation on held-out seeds and PPO
(one short update, checkpoint, resume). Tiny settings: 1 denoising step, episodes of 2-3 steps, one thread."""

import csv
import io
import json

import numpy as np
import pytest
import torch

from gymnasium.wrappers.vector import RecordEpisodeStatistics

from agents import ppo, random_agent, scripted, tasks
from agents.evaluate import evaluate, run_evaluation
from agents.network import PPOPolicy
from agents.policies import LawnMowerPolicy, RandomPolicy, make_policy
from agents.tasks import HELD_OUT_START, check_train_seeds, held_out_seeds, make_vec_env

FAST = ["--num-steps", "1", "--no-progress"]
TINY_PPO = ["--num-envs", "2", "--rollout-steps", "2", "--episode-steps", "2", "--num-steps", "1",
            "--num-minibatches", "2", "--update-epochs", "1", "--eval-seeds", "0", "--save-every", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A PPO run of one update (4 env steps) on the exploration task, evaluated on 2 held-out seeds."""
    out = tmp_path_factory.mktemp("ppo")
    summary = ppo.main(["--out", str(out), "--total-steps", "4", *TINY_PPO, "--eval-seeds", "2"])
    return out, summary


# ---------------------------------------------------------------------- policies
def test_lawnmower_sweeps_lanes_and_turns_on_the_spot_when_blocked():
    policy = LawnMowerPolicy(leg=2, step_deg=45.0)  # U-turn: 4 steps, quarter turn: 2 steps
    policy.reset(2)
    free, blocked = np.zeros(2, bool), np.array([False, True])
    keys = [policy.act(None, blocked if t == 1 else free) for t in range(9)]
    lane = [k[0].tolist() for k in keys]
    assert lane == [[1, 0, 0, 0]] * 2 + [[1, 0, 2, 0]] * 4 + [[1, 0, 0, 0]] * 2 + [[1, 0, 1, 0]]  # then left
    bumped = [k[1].tolist() for k in keys]
    assert bumped[:4] == [[1, 0, 0, 0], [0, 0, 2, 0], [0, 0, 2, 0], [1, 0, 0, 0]]  # blocked: turn, new lane


def test_key_script_and_random_policies():
    loop = make_policy("loop", step_deg=90.0)
    loop.reset(3)
    keys = [loop.act(None, np.zeros(3, bool)) for _ in range(40)]
    assert all(k.shape == (3, 4) and (k == k[0]).all() for k in keys)
    assert [k[0].tolist() for k in keys[:10]] == [[1, 0, 0, 0]] * 8 + [[0, 0, 1, 0]] * 2
    assert np.array_equal(keys[0], keys[20])  # 8 + 2 + 8 + 2 steps, then again
    random = RandomPolicy()
    draws = []
    for _ in range(2):
        random.reset(4, seed=7)
        draws.append(np.concatenate([random.act(None, np.zeros(4, bool)) for _ in range(50)]))
    assert np.array_equal(*draws) and set(np.unique(draws[0])) == {0, 1, 2}
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("spiral")


# ---------------------------------------------------------------------- commands
def test_random_and_scripted_commands_write_a_video_a_sheet_and_metrics(tmp_path):
    runs = {"random": random_agent.main(["--out", str(tmp_path / "random"), "--steps", "3", *FAST]),
            "lawnmower": scripted.main(["--out", str(tmp_path / "lawnmower"), "--steps", "3", *FAST]),
            "orbit": scripted.main(["--policy", "orbit", "--out", str(tmp_path / "orbit"), "--steps", "2", *FAST])}
    for name, returned in runs.items():
        folder = tmp_path / name
        assert (folder / "episode.mp4").stat().st_size > 0 and (folder / "episode.png").stat().st_size > 0
        metrics = json.loads((folder / "episode.json").read_text())
        assert metrics["policy"] == name and metrics["task"] == "exploration" and metrics == returned
        assert metrics["steps"] == len(metrics["per_step"]) and metrics["memory"]["voxels"] > 0
        assert metrics["episode_return"] == pytest.approx(sum(r["reward"] for r in metrics["per_step"]))
        assert metrics["episode_return"] > 0 and metrics["timings_ms_mean"]["total"] > 0
    assert runs["random"]["steps"] == 3 and runs["orbit"]["steps"] == 2
    env = runs["lawnmower"]["env"]
    assert env["scene_kind"] == "outdoor" and env["world"]["voxel_size"] == 0.2 and env["reward"] == "exploration"


# ---------------------------------------------------------------------- evaluation
def test_evaluation_on_held_out_seeds_matches_the_single_env_episode(tmp_path):
    seeds = held_out_seeds(2)
    assert seeds == [HELD_OUT_START, HELD_OUT_START + 1]
    result = evaluate(make_policy("lawnmower"), "exploration", seeds, num_envs=2, episode_steps=3, num_steps=1)
    assert result["seeds"] == seeds and len(result["returns"]) == 2 and result["mean_length"] == 3
    assert result["mean"] == pytest.approx(np.mean(result["returns"])) and result["std"] > 0
    single = scripted.main(["--out", str(tmp_path), "--seed", str(seeds[1]), "--steps", "3", *FAST])
    assert single["episode_return"] == pytest.approx(result["returns"][1])  # same scene and start from the seed


def test_run_evaluation_writes_json_and_a_markdown_table_for_both_tasks(tmp_path, trained):
    checkpoint = trained[0] / "checkpoint.pt"
    report = run_evaluation(tmp_path, {"random": "random", "ppo": PPOPolicy(checkpoint)}, ["exploration", "goal"],
                            held_out_seeds(2), num_envs=2, episode_steps=2, num_steps=1)
    assert set(report["results"]["exploration"]) == {"random", "ppo"}
    assert set(report["results"]["goal"]) == {"random"}  # the checkpoint was trained for exploration
    assert 0 <= report["results"]["goal"]["random"]["success_rate"] <= 1
    assert json.loads((tmp_path / "eval.json").read_text()) == report
    table = (tmp_path / "eval.md").read_text()
    ppo_row = report["results"]["exploration"]["ppo"]
    assert f"| exploration | ppo | {ppo_row['mean']:.3f} +- {ppo_row['std']:.3f} |" in table
    assert "| exploration | random |" in table and "1.00x" in table


# ---------------------------------------------------------------------- PPO
def test_ppo_update_checkpoint_and_resume(trained):
    out, summary = trained
    first = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (first["global_step"], first["update"]) == (4, 1) and summary["global_step"] == 4
    assert first["args"]["task"] == "exploration" and first["optimizer"]["state"]  # Adam has stepped
    policy = PPOPolicy(out / "checkpoint.pt")
    assert all(torch.equal(p, first["model"][k]) for k, p in policy.agent.state_dict().items())
    assert (out / "learning_curve.png").stat().st_size > 0
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated == summary["eval"] and evaluated["seeds"] == held_out_seeds(2)
    assert set(evaluated["results"]["exploration"]) == {"random", "ppo"}

    resumed = ppo.main(["--out", str(out), "--total-steps", "8", "--resume", *TINY_PPO])
    second = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (second["global_step"], second["update"]) == (8, 2) and resumed["global_step"] == 8
    assert any(not torch.equal(p, first["model"][k]) for k, p in second["model"].items())  # trained on
    with open(out / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["global_step"]) for r in rows] == [4, 8] and all(float(r["sps"]) > 0 for r in rows)
    assert all(r["episodic_return"] and float(r["episodic_return"]) > 0 for r in rows)  # 2-step episodes ended


class EpisodeReports(RecordEpisodeStatistics):
    """Gymnasium's vector RecordEpisodeStatistics that also keeps every step's report: (ended, returns, lengths)."""

    reports: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def step(self, actions):
        result = super().step(actions)
        infos = result[-1]
        if "_episode" in infos:
            self.reports.append((infos["_episode"].copy(), infos["episode"]["r"].copy(), infos["episode"]["l"].copy()))
        return result


def test_ppo_and_evaluation_log_the_episode_statistics_of_gymnasiums_wrapper(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "RecordEpisodeStatistics", EpisodeReports)
    monkeypatch.setattr(EpisodeReports, "reports", [])
    ppo.main(["--out", str(tmp_path), "--total-steps", "8", *TINY_PPO])  # 2 updates, each ending 2 episodes
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(EpisodeReports.reports) == len(rows) == 2
    for row, (ended, returns, lengths) in zip(rows, EpisodeReports.reports):
        assert int(row["episodes"]) == ended.sum() == 2
        assert float(row["episodic_return"]) == np.mean(returns[ended])
        assert float(row["episodic_length"]) == np.mean(lengths[ended]) == 2

    monkeypatch.setattr(EpisodeReports, "reports", [])
    result = evaluate(make_policy("random"), "goal", held_out_seeds(2), num_envs=2, episode_steps=3, num_steps=1)
    first = {}  # no autoreset: a world that ended steps on until all have; its first report is its episode
    for ended, returns, lengths in EpisodeReports.reports:
        for i in np.flatnonzero(ended):
            first.setdefault(int(i), (float(returns[i]), int(lengths[i])))
    assert result["returns"] == [first[i][0] for i in range(2)]
    assert result["mean_length"] == np.mean([first[i][1] for i in range(2)])


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_ppo_logs_its_csv_rows_to_tensorboard_and_shows_a_progress_bar_over_env_steps(tmp_path, monkeypatch):
    bars = []

    class Bar(ppo.tqdm):  # records what PPO asked for, then shows the bar into a buffer (pytest's stderr is no tty)
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})
            bars.append((kwargs["disable"], self))

    monkeypatch.setattr(ppo, "tqdm", Bar)
    ppo.main(["--out", str(tmp_path), "--total-steps", "8", *TINY_PPO])
    ppo.main(["--out", str(tmp_path), "--total-steps", "12", "--resume", "--no-progress", *TINY_PPO])
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert set(scalars) == set(ppo.TENSORBOARD_TAGS.values())
    for column, tag in ppo.TENSORBOARD_TAGS.items():
        expected = [(int(r["global_step"]), pytest.approx(float(r[column]), rel=1e-6, nan_ok=True)) for r in rows]
        assert scalars[tag] == expected, tag
    assert [(disable, bar.initial, bar.n, bar.total) for disable, bar in bars] == [(None, 0, 8, 8), (True, 8, 12, 12)]

    ppo.main(["--out", str(tmp_path), "--total-steps", "4", "--no-progress", *TINY_PPO])  # a new run starts afresh
    assert [step for step, _ in tensorboard_scalars(tmp_path / "tensorboard")["losses/entropy"]] == [4]


def test_a_time_limit_bootstraps_from_the_final_observation_not_the_reset_one():
    envs = make_vec_env("goal", 2, episode_steps=1, num_steps=1)
    envs.reset(seed=0)
    obs, _, _, truncated, infos = envs.step(np.zeros((2, 4), np.int64))
    final = ppo.final_observations(envs, obs, infos)
    assert truncated.all() and set(final) == set(obs)
    for i in range(2):
        assert all(np.array_equal(final[key][i], infos["final_obs"][i][key]) for key in obs)
        assert not np.array_equal(final["pose"][i], obs["pose"][i])  # the reset went to a new scene


@pytest.mark.parametrize("options", [["--task", "goal"], ["--latent-obs"]])
def test_ppo_on_the_goal_task_and_on_latent_observations(tmp_path, options):
    ppo.main(["--out", str(tmp_path), "--total-steps", "4", *options, *TINY_PPO])
    policy = PPOPolicy(tmp_path / "checkpoint.pt")
    assert (policy.task, policy.latent) == (("goal", False) if "--task" in options else ("exploration", True))
    result = evaluate(policy, policy.task, held_out_seeds(2), num_envs=2, episode_steps=2, latent=policy.latent,
                      num_steps=1)
    assert len(result["returns"]) == 2 and np.isfinite(result["returns"]).all()


def test_training_seeds_stay_below_the_held_out_seeds(tmp_path):
    check_train_seeds(0, HELD_OUT_START)
    with pytest.raises(ValueError, match="training seeds"):
        check_train_seeds(HELD_OUT_START - 10, 11)
    with pytest.raises(ValueError, match="training seeds"):
        ppo.main(["--out", str(tmp_path), "--seed", str(HELD_OUT_START - 5), "--total-steps", "4", *TINY_PPO])
