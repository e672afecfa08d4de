"""Distributed rollouts on a local Ray with 2 CPUs: the Ray vector env against the local envs, and RLlib's PPO."""

import csv
import importlib.util
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="distributed rollouts need Ray: pip install 'mirage-env[distributed]'")

from mirage_env.distributed import RayVectorEnv  # noqa: E402
from mirage_env.distributed.batches import merge_infos  # noqa: E402
from mirage_env.envs import CameraVectorEnv  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
CAMERA = "MirageEnv/Camera-v0"
FAST = {"num_steps": 1, "max_episode_steps": 2}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # a new Ray, not a running one
    yield
    ray.shutdown()


def transitions(env: gym.vector.VectorEnv, actions: list[np.ndarray], seed: int, mask: np.ndarray) -> list[tuple]:
    """reset(seed), a step per action batch, then a partial reset of ``mask``: every output."""
    out = [env.reset(seed=seed)]
    out += [env.step(a) for a in actions]
    return out + [env.reset(options={"reset_mask": mask})]


def layout(infos: dict) -> dict:
    """Keys, dtypes and shapes of vector infos (nested dicts included)."""
    return {k: layout(v) if isinstance(v, dict) else (v.dtype, v.shape) for k, v in infos.items()}


def assert_same_infos(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_infos(a[key], b[key])
        else:
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def test_ray_vector_env_matches_the_local_envs_for_the_same_seed_and_actions(memory_model):
    """3 envs on 2 world actors (2 + 1 worlds): each actor's envs equal a local vector env of the same envs bit
    for bit (obs, rewards, autoreset, partial reset, every info), and all 3 equal CameraVectorEnv(3) up to the
    float rounding of a differently batched model (same start frames, poses, rewards)."""
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, (3, 6)).astype(np.float32) for _ in range(3)]  # the third step autoresets
    mask = np.array([True, False, True])
    env = RayVectorEnv(num_envs=3, num_actors=2, model=memory_model, **gym.spec(CAMERA).kwargs, **FAST)
    try:
        assert env.ranges == [(0, 2), (2, 3)]
        assert env.single_observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
        remote = transitions(env, actions, 7, mask)
        bad = actions[0].copy()
        bad[2, 0] = np.nan  # the last env's, in the second actor
        with pytest.raises(ValueError):
            env.step(bad)
        assert env.step(actions[0])[-1]["frame_index"].tolist() == [4, 4, 4]  # no world moved on the bad step
    finally:
        env.close()
    local = [transitions(CameraVectorEnv(num_envs=hi - lo, model=memory_model, **FAST), [a[lo:hi] for a in actions],
                         7 + lo, mask[lo:hi]) for lo, hi in env.ranges]
    for t, got in enumerate(remote):
        *arrays, infos = got
        for j, value in enumerate(arrays):
            assert np.array_equal(value, np.concatenate([run[t][j] for run in local])), (t, j)
        assert_same_infos(infos, merge_infos([(run[t][-1], lo, hi) for run, (lo, hi) in zip(local, env.ranges)], 3))
    whole = transitions(CameraVectorEnv(num_envs=3, model=memory_model, **FAST), actions, 7, mask)
    assert np.array_equal(remote[0][0], whole[0][0])  # the start frames are simulator renders
    for got, want in zip(remote, whole):
        assert np.abs(got[0].astype(int) - want[0]).max() <= 2
        assert all(np.array_equal(a, b) for a, b in zip(got[1:-1], want[1:-1]))  # rewards, terminated, truncated
        assert layout(got[-1]) == layout(want[-1])  # merged infos are laid out as the local vector env's
        assert np.array_equal(got[-1]["pose"], want[-1]["pose"])
        assert np.array_equal(got[-1]["memory_voxels"], want[-1]["memory_voxels"])


def test_more_actors_than_envs_is_an_error():
    with pytest.raises(ValueError, match="num_actors"):
        RayVectorEnv(num_envs=1, num_actors=2)


def test_a_human_window_is_refused_before_any_actor_starts():
    with pytest.raises(ValueError, match=r"render_mode must be None or one of \['rgb_array'\]"):
        RayVectorEnv(num_envs=1, render_mode="human")


def test_rllib_ppo_trains_one_iteration_with_env_runners_and_world_actors(tmp_path):
    """agents/rllib_ppo.py with 1 env runner whose 2 envs live in 1 world actor: one PPO iteration, one CSV row."""
    pytest.importorskip("ray.rllib", reason="the RLlib example needs ray[rllib]")
    path = Path(__file__).parents[1] / "agents" / "rllib_ppo.py"
    spec = importlib.util.spec_from_file_location("rllib_ppo", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "ppo.csv"
    args = example.parse_args(["--iterations", "1", "--env-runners", "1", "--envs-per-runner", "2", "--world-actors",
                               "1", "--train-batch", "16", "--minibatch", "8", "--epochs", "1", "--num-steps", "1",
                               "--max-episode-steps", "4", "--out", str(out)])
    assert example.build_config(args).env_config["world_actors"] == 1
    rows = example.train(args)
    assert len(rows) == 1 and rows[0]["env_steps"] >= 16 and math.isfinite(rows[0]["episode_return_mean"])
    with out.open() as f:
        assert [int(row["iteration"]) for row in csv.DictReader(f)] == [1]
