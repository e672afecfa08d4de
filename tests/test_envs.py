"""The Gymnasium envs, the batched vector env, wrappers, SB3 and the rollout CLI on the tiny preset.

Runs single-threaded (the CPU is shared: OpenMP spin-waiting under contention makes 2-thread runs many times
slower) and with one denoising step per segment to stay fast.
"""

import copy
import json
import math
import multiprocessing
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import mirage_env.envs
from mirage_env.cli import main
from mirage_env.envs import ENV_IDS, CameraVectorEnv, LatentObservation, LatentVectorObservation
from mirage_env.envs.actions import parse_keys
from mirage_env.envs.move_check import memory_segment_is_free
from mirage_env.envs.rollout import RolloutSpec, run_rollout
from mirage_env.envs.window import window_available
from mirage_env.geometry.camera import intrinsics_from_fov
from mirage_env.geometry.camera_files import CameraSequence, save_geometry_npz
from mirage_env.geometry.poses import euler_from_rotation
from mirage_env.models import load_preset
from mirage_env.sim import render, sample_scene, start_pose
from mirage_env.world import InitialView

FAST = {"num_steps": 1}
_TINY = load_preset("tiny")
TINY_LATENT = (_TINY.latent_channels, 64 // _TINY.spatial_stride, 64 // _TINY.spatial_stride)
CAMERA, KEYS = ENV_IDS
pytestmark = pytest.mark.usefixtures("one_thread")


def make(env_id: str = CAMERA, **kwargs) -> gym.Env:
    return gym.make(env_id, **{**FAST, **kwargs})


def walk(env: gym.Env, actions) -> list[np.ndarray]:
    return [env.step(a)[0] for a in actions]


FORWARD_RIGHT = np.array([0, 0, 1, 0.5, 0, 0], np.float32)


# ---------------------------------------------------------------------- registration and API
def test_registered_ids_spaces_and_limits():
    for env_id in ENV_IDS:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == 200 and spec.vector_entry_point and not spec.nondeterministic
    camera, keys = make(CAMERA), make(KEYS)
    assert camera.action_space == gym.spaces.Box(-1, 1, (6,), np.float32)
    assert keys.action_space == gym.spaces.MultiDiscrete([3, 3, 3, 3])
    assert camera.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert camera.metadata["render_fps"] == 16


# check_env makes the env in every render mode of its metadata; "human" needs a window (pygame: the human extra)
SKIP_RENDER_CHECK = not window_available()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env_passes(env_id):
    check_env(make(env_id, render_mode="rgb_array").unwrapped, skip_render_check=SKIP_RENDER_CHECK)


def test_gymnasium_check_env_passes_with_dict_observations_and_the_goal_reward():
    env = make(KEYS, render_mode="rgb_array", obs_mode="dict", obs_size=32, reward="goal")
    check_env(env.unwrapped, skip_render_check=SKIP_RENDER_CHECK)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"rgb", "pose", "depth", "goal_pose"}
    assert obs["rgb"].shape == (32, 32, 3) and obs["depth"].shape == (32, 32, 1) and obs["pose"].shape == (12,)


def test_info_has_the_same_keys_at_reset_and_every_step_and_render_is_full_size():
    env = make(CAMERA, render_mode="rgb_array", obs_size=32)
    obs, info = env.reset(seed=1)
    keys = set(info)
    assert {"frames", "pose", "blocked", "coverage", "memory_voxels", "memory_bytes", "timings_ms"} <= keys
    for _ in range(2):
        obs, reward, terminated, truncated, info = env.step(FORWARD_RIGHT)
        assert set(info) == keys and not terminated and not truncated and 0.0 <= reward <= 1.0
        assert info["frames"].shape == (4, 64, 64, 3) and info["frames"].dtype == np.uint8
        assert info["timings_ms"].total > 0 and info["frame_index"] % 4 == 0
    assert obs.shape == (32, 32, 3)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and np.array_equal(frame, info["frames"][-1])


def test_same_seed_and_actions_give_identical_observations():
    runs = []
    for seed in (5, 5, 6):
        env = make(CAMERA)
        runs.append([env.reset(seed=seed)[0], *walk(env, [FORWARD_RIGHT] * 3)])
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not np.array_equal(runs[0][-1], runs[2][-1])


def test_an_action_changes_the_next_frame_and_copies_continue_exactly(memory_model):
    env = make(CAMERA, model=memory_model)
    env.reset(seed=2)
    env.step(FORWARD_RIGHT)
    deep, pickled = copy.deepcopy(env), pickle.loads(pickle.dumps(env))
    assert deep.unwrapped.core.model is memory_model  # deep copies share the model
    left = np.array([0, 0, 0, -1, 0, 0], np.float32)
    turned = env.step(left)[0]
    assert np.array_equal(turned, pickled.step(left)[0])
    assert not np.array_equal(turned, deep.step(FORWARD_RIGHT)[0])


def test_bad_actions_raise_and_the_episode_goes_on_unchanged():
    env, keys = make(CAMERA), make(KEYS)
    env.reset(seed=3)
    keys.reset(seed=3)
    twin, keys_twin = copy.deepcopy(env), copy.deepcopy(keys)
    for bad in (np.full(6, np.nan, np.float32), np.zeros(5, np.float32), "left"):
        with pytest.raises(ValueError, match="action"):
            env.step(bad)
    for bad in (np.array([3, 0, 0, 0]), np.array([0, -1, 0, 0]), np.array([0.5, 0, 0, 0]), np.zeros(3, int)):
        with pytest.raises(ValueError, match="action"):
            keys.step(bad)
    assert np.array_equal(env.step(FORWARD_RIGHT)[0], twin.step(FORWARD_RIGHT)[0])
    assert np.array_equal(keys.step(np.array([1, 0, 2, 0]))[0], keys_twin.step(np.array([1, 0, 2, 0]))[0])
    assert env.unwrapped.core.world.state(0).frame == 4


def test_continuous_actions_beyond_the_bounds_are_clipped():
    env = make(CAMERA)
    env.reset(seed=4)
    twin = copy.deepcopy(env)
    assert np.array_equal(env.step(FORWARD_RIGHT * 5)[0], twin.step(np.clip(FORWARD_RIGHT * 5, -1, 1))[0])


# ---------------------------------------------------------------------- camera motion
def test_collision_blocks_moves_and_the_camera_never_passes_through_geometry():
    env = make(CAMERA, move_m=0.4)
    env.reset(seed=0)
    scene, blocked = env.unwrapped.scene, []
    for _ in range(8):
        before = env.unwrapped.pose[:3, 3]
        info = env.step(np.array([0, 0, 1, 0, 0, 0], np.float32))[-1]
        after = env.unwrapped.pose[:3, 3]
        assert scene.segment_is_free(before.numpy(), after.numpy(), 0.0)
        blocked.append(info["blocked"])
    assert any(blocked) and blocked[-1]


def test_keys_walk_level_and_pitch_is_clamped():
    env = make(KEYS, turn_deg=20.0, max_pitch_deg=45.0)
    env.reset(seed=1)
    walk(env, parse_keys("k*2"))  # look down 160 degrees: clamped at 45
    _, pitch, _ = euler_from_rotation(env.unwrapped.pose[:3, :3])
    assert math.isclose(float(pitch), -math.radians(45.0), abs_tol=1e-6)
    before = env.unwrapped.pose[:3, 3]
    info = env.step(parse_keys("w")[0])[-1]
    after = env.unwrapped.pose[:3, 3]
    assert math.isclose(float(after[1]), float(before[1]), abs_tol=1e-9)  # forward stays level
    assert info["blocked"] or float((after - before).norm()) == pytest.approx(4 * 0.05)


def test_memory_collision_without_a_simulator():
    points = torch.tensor([[0.0, 0.0, 1.0]])
    assert not memory_segment_is_free(points, torch.zeros(3), torch.tensor([0.0, 0.0, 2.0]), 0.2)
    assert memory_segment_is_free(points, torch.zeros(3), torch.tensor([1.0, 0.0, 0.0]), 0.2)
    assert memory_segment_is_free(points[:0], torch.zeros(3), torch.ones(3), 0.2)


def test_key_scripts():
    actions = parse_keys("w*2 wl . i+a")
    assert [a.tolist() for a in actions] == [[1, 0, 0, 0]] * 2 + [[1, 0, 2, 0], [0, 0, 0, 0], [0, 1, 0, 1]]
    for bad, message in (("x", "unknown key"), ("ws", "conflicting"), ("w*0", ">= 1"), ("w*two", "integer"),
                         ("", "empty")):
        with pytest.raises(ValueError, match=message):
            parse_keys(bad)


# ---------------------------------------------------------------------- reset options and rewards
def _view(seed: int, hw: tuple[int, int]) -> InitialView:
    scene = sample_scene(seed, "indoor")
    pose = start_pose(scene, seed)
    K = intrinsics_from_fov(70.0, hw)
    out = render(scene, K, pose, hw)
    return InitialView(out.rgb[0], out.depth[0], K, pose)


def test_reset_from_a_user_view_a_geometry_npz_and_a_scene_with_pose(tmp_path):
    env = make(CAMERA, obs_mode="dict")
    view = _view(7, (96, 128))  # another size: resized to 64x64 with scaled intrinsics
    obs, info = env.reset(seed=0, options={"view": view})
    assert env.unwrapped.scene is None and obs["rgb"].shape == (64, 64, 3)
    assert np.allclose(obs["pose"], view.c2w[:3].numpy().reshape(12), atol=1e-6)
    assert env.step(FORWARD_RIGHT)[0]["rgb"].shape == (64, 64, 3)  # depth and collision from the memory

    sequence = CameraSequence(view.K.expand(2, 3, 3), view.c2w.expand(2, 4, 4), view.depth.expand(2, -1, -1),
                              view.image.expand(2, -1, -1, -1))
    save_geometry_npz(tmp_path / "geometry.npz", sequence)
    _, npz_info = env.reset(options={"geometry_npz": str(tmp_path / "geometry.npz")})
    assert np.array_equal(npz_info["frames"][0], info["frames"][0])
    save_geometry_npz(tmp_path / "no_frames.npz", CameraSequence(sequence.intrinsics, sequence.poses_c2w,
                                                                 sequence.depths))
    with pytest.raises(ValueError, match="frames"):
        env.reset(options={"geometry_npz": str(tmp_path / "no_frames.npz")})

    scene = sample_scene(7, "indoor")
    obs, _ = env.reset(options={"scene": scene, "pose": view.c2w})
    assert env.unwrapped.scene is scene and np.allclose(obs["pose"], view.c2w[:3].numpy().reshape(12), atol=1e-6)
    for options, message in (({"typo": 1}, "unknown reset options"), ({"view": view, "scene": scene}, "exclusive")):
        with pytest.raises(ValueError, match=message):
            env.reset(options=options)


BAD_ENV_ARGUMENTS = [
    ({"collision_radius": float("nan")}, ValueError, "collision_radius must be finite"),
    ({"collision_radius": -0.1}, ValueError, "collision_radius must lie in"),
    ({"collision_radius": "0.2"}, TypeError, "collision_radius must be a number"),
    ({"fov_deg": 0}, ValueError, "fov_deg must lie in"),
    ({"fov_deg": 180}, ValueError, "fov_deg must lie in"),
    ({"fov_deg": float("nan")}, ValueError, "fov_deg must be finite"),
    ({"move_m": float("nan")}, ValueError, "move_m must be finite"),
    ({"move_m": float("inf")}, ValueError, "move_m must be finite"),
    ({"turn_deg": -1.0}, ValueError, "turn_deg must lie in"),
    ({"max_pitch_deg": 90}, ValueError, "max_pitch_deg must lie in"),
    ({"image_size": 0}, ValueError, "image_size height must be >= 1"),
    ({"image_size": "64"}, TypeError, "image_size must be an int or a pair"),
    ({"image_size": (64,)}, TypeError, "image_size must be an int or a pair"),
    ({"image_size": (64.0, 64)}, TypeError, "image_size height must be an integer"),
    ({"image_size": True}, TypeError, "image_size height must be an integer"),
    ({"image_size": 60}, ValueError, "image_size \\(60, 60\\) must be a multiple of the model's spatial stride 8"),
    ({"obs_size": (32, 0)}, ValueError, "obs_size width must be >= 1"),
    ({"latents_per_step": 0}, ValueError, "latents_per_step must be >= 1"),
    ({"num_steps": 1.5}, TypeError, "num_steps must be an integer"),
    ({"scene_kind": "cave"}, ValueError, "scene_kind must be one of"),
    ({"action_mode": "mouse"}, ValueError, "action_mode must be one of"),
    ({"obs_mode": "depth"}, ValueError, "obs_mode must be one of"),
    ({"reward": "fun"}, ValueError, "unknown reward"),
    ({"preset": "huge"}, ValueError, "preset must be one of"),
    ({"dtype": "int8"}, ValueError, "dtype must be one of"),
    ({"device": "toaster"}, ValueError, "device"),
    ({"model_seed": -1}, ValueError, "model_seed must be >= 0"),
    ({"random_weights": "yes"}, TypeError, "random_weights must be True or False"),
    ({"weights_dir": 3}, TypeError, "weights_dir must be a path"),
    ({"world": "big"}, TypeError, "world must be a dict"),
    ({"world": {"voxel_size": float("nan")}}, ValueError, "voxel_size must be finite"),
    ({"world": {"memory_dtype": "int8"}}, ValueError, "memory_dtype must be one of"),
    ({"world": {"fov_deg": 90.0}}, ValueError, "world\\['fov_deg'\\]: set the env argument 'fov_deg'"),
    ({"world": {"voxel": 0.1}}, TypeError, "world: unknown argument \\['voxel'\\]"),
    ({"frame_size": 64}, TypeError, "unknown argument \\['frame_size'\\]"),
    ({"random_init": True}, TypeError, "'random_init' is now called 'random_weights'"),
    ({"seed": 3}, TypeError, "'seed' is now called 'model_seed'"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_ENV_ARGUMENTS)
@pytest.mark.parametrize("kind", ["single", "vector"])
def test_bad_env_arguments_raise_naming_the_argument_in_both_envs(kind, kwargs, error, message):
    with pytest.raises(error, match=message):
        if kind == "single":
            make(CAMERA, **kwargs)
        else:
            CameraVectorEnv(num_envs=2, **{**FAST, **kwargs})


@pytest.mark.parametrize("kwargs, error, message", [
    ({"num_envs": 0}, ValueError, "num_envs must be >= 1"),
    ({"num_envs": "2"}, TypeError, "num_envs must be an integer"),
    ({"max_episode_steps": 0}, ValueError, "max_episode_steps must be >= 1"),
    ({"autoreset_mode": "Sometimes"}, ValueError, "autoreset_mode must be one of"),
    ({"render_mode": "human-ish"}, ValueError, "render_mode"),
])
def test_bad_vector_env_arguments_raise_naming_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        CameraVectorEnv(**{"num_envs": 2, **FAST, **kwargs})


def test_image_size_takes_an_int_or_a_pair_of_ints():
    env = make(CAMERA, image_size=(np.int64(32), 48))
    assert env.reset(seed=0)[0].shape == (32, 48, 3)


def _bad_reset_options(view):
    nan_pose = torch.eye(4, dtype=torch.float64)
    nan_pose[0, 3] = float("nan")
    return [
        ([1, 2], TypeError, "options must be a dict or None"),
        ({"pose": "abc"}, TypeError, "options\\['pose'\\] must be a 4x4"),
        ({"pose": [[1, 2], [3, 4]]}, ValueError, "options\\['pose'\\] must have shape \\[4, 4\\]"),
        ({"pose": nan_pose}, ValueError, "options\\['pose'\\] contains NaN"),
        ({"pose": np.diag([2.0, 2.0, 2.0, 1.0])}, ValueError, "options\\['pose'\\] rotation is not orthonormal"),
        ({"goal_pose": "abc"}, TypeError, "options\\['goal_pose'\\] must be a 4x4"),
        ({"view": {}}, TypeError, "options\\['view'\\] must be a mirage_env.world.InitialView"),
        ({"view": InitialView(view.image.numpy(), view.depth, view.K, view.c2w)}, TypeError,
         "options\\['view'\\].image must be a torch.Tensor"),
        ({"view": InitialView(view.image, view.depth, view.K * float("nan"), view.c2w)}, ValueError,
         "options\\['view'\\].K contains NaN"),
        ({"scene": "kitchen"}, TypeError, "options\\['scene'\\] must be a mirage_env.sim.Scene"),
        ({"geometry_npz": 5}, TypeError, "options\\['geometry_npz'\\] must be a path"),
        ({"typo": 1}, ValueError, "unknown reset options \\['typo'\\]; known: \\['scene', 'pose'"),
    ]


@pytest.mark.parametrize("kind", ["single", "vector"])
def test_bad_reset_options_raise_before_anything_changes(kind):
    env = make(CAMERA, reward="goal") if kind == "single" else CameraVectorEnv(num_envs=2, reward="goal", **FAST)
    env.reset(seed=2)
    env.step(None)
    pose = env.unwrapped.core.world.poses.clone()
    for options, error, message in _bad_reset_options(_view(7, (64, 64))):
        with pytest.raises(error, match=message):
            env.reset(options=options)
        assert torch.equal(env.unwrapped.core.world.poses, pose)
    assert int(env.unwrapped.core.world.state(0).frame) == 4  # the episode was not restarted
    env.reset(seed=2, options={"scene": None, "pose": None, "goal_pose": None})  # None: not given


def test_step_none_keeps_every_camera_still_in_both_envs():
    single = make(CAMERA)
    single.reset(seed=4)
    start = single.unwrapped.pose
    _, _, _, _, info = single.step(None)
    assert torch.equal(single.unwrapped.pose, start) and info["frame_index"] == 4
    vector = CameraVectorEnv(num_envs=2, **FAST)
    vector.reset(seed=4)
    starts = vector.core.world.poses.clone()
    obs, rewards, terminated, truncated, info = vector.step(None)
    assert torch.equal(vector.core.world.poses, starts) and info["frame_index"].tolist() == [4, 4]
    assert obs.shape == (2, 64, 64, 3) and not terminated.any() and not truncated.any()


def test_reset_clears_the_memory():
    env = make(CAMERA)
    _, first = env.reset(seed=8)
    walk(env, [FORWARD_RIGHT] * 2)
    _, again = env.reset(seed=8)
    assert again["memory_voxels"] == first["memory_voxels"] and again["frame_index"] == 0


def test_rewards_none_exploration_and_goal():
    none = make(CAMERA, reward="none")
    none.reset(seed=0)
    assert none.step(FORWARD_RIGHT)[1] == 0.0
    goal = make(KEYS, reward="goal", obs_mode="dict")
    obs, _ = goal.reset(seed=0)
    assert not np.allclose(obs["goal_pose"], obs["pose"])
    obs, _ = goal.reset(seed=0, options={"goal_pose": goal.unwrapped.pose})  # already there: staying succeeds
    _, reward, terminated, truncated, _ = goal.step(np.zeros(4, int))
    assert terminated and not truncated and reward == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown reward"):
        make(CAMERA, reward="fun")


# ---------------------------------------------------------------------- vector envs
def test_make_vec_uses_the_batched_vector_env_with_next_step_autoreset_and_partial_resets():
    envs = gym.make_vec(CAMERA, num_envs=3, max_episode_steps=2, **FAST)
    assert isinstance(envs, CameraVectorEnv) and envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, info = envs.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3) and info["frames"].shape == (3, 4, 64, 64, 3)
    truncations = []
    for _ in range(3):
        obs, rewards, _, truncated, info = envs.step(envs.action_space.sample())
        truncations.append(truncated.tolist())
    assert truncations == [[False] * 3, [True] * 3, [False] * 3]
    assert info["frame_index"].tolist() == [0, 0, 0] and rewards.tolist() == [0.0] * 3  # the autoreset step
    envs.step(envs.action_space.sample())
    obs, info = envs.reset(options={"reset_mask": np.array([False, True, False])})
    assert info["_frame_index"].tolist() == [False, True, False]
    assert envs.step(envs.action_space.sample())[-1]["frame_index"].tolist() == [8, 4, 8]
    assert envs.unwrapped.core.model is make(CAMERA).unwrapped.core.model


def test_vector_env_same_step_autoreset_and_determinism():
    runs = []
    for _ in range(2):
        envs = gym.make_vec(KEYS, num_envs=2, max_episode_steps=1, autoreset_mode=AutoresetMode.SAME_STEP, **FAST)
        envs.reset(seed=3)
        envs.action_space.seed(0)
        obs, _, _, truncated, info = envs.step(envs.action_space.sample())
        assert truncated.all() and info["final_obs"][0].shape == (64, 64, 3)
        assert info["frame_index"].tolist() == [0, 0] and info["final_info"]["frame_index"].tolist() == [4, 4]
        runs.append((obs, np.stack(info["final_obs"])))
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def test_vector_env_copies_continue_exactly():
    envs = gym.make_vec(CAMERA, num_envs=2, **FAST)
    envs.reset(seed=1)
    twin = copy.deepcopy(envs)
    actions = np.stack([FORWARD_RIGHT, -FORWARD_RIGHT])
    assert np.array_equal(envs.step(actions)[0], twin.step(actions)[0])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_sync_and_async(mode):
    if mode == "async" and "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("fork is not available (spawned workers each build the model: slow)")
    kwargs = {"vector_kwargs": {"context": "fork"}} if mode == "async" else {}
    envs = gym.make_vec(KEYS, num_envs=2, vectorization_mode=mode, max_episode_steps=3, **kwargs, **FAST)
    try:
        obs, _ = envs.reset(seed=0)
        obs, _, _, _, info = envs.step(envs.action_space.sample())
        assert obs.shape == (2, 64, 64, 3) and info["memory_voxels"].shape == (2,)
    finally:
        envs.close()


# ---------------------------------------------------------------------- wrappers
def test_latent_observations_and_frame_stacking():
    latent = LatentObservation(make(CAMERA))
    obs, _ = latent.reset(seed=0)
    assert obs.shape == latent.observation_space.shape == TINY_LATENT and obs.dtype == np.float32
    assert not np.array_equal(obs, latent.step(FORWARD_RIGHT)[0])

    stacked = gym.wrappers.FrameStackObservation(make(CAMERA), stack_size=3)
    first, _ = stacked.reset(seed=0)
    obs = stacked.step(FORWARD_RIGHT)[0]
    assert obs.shape == (3, 64, 64, 3) and np.array_equal(obs[:2], first[:2])  # padded with the reset frame
    assert not np.array_equal(obs[2], obs[1])


def test_latent_observations_of_the_vector_env_with_same_step_autoreset_and_partial_resets():
    envs = LatentVectorObservation(gym.make_vec(KEYS, num_envs=2, max_episode_steps=2,
                                                autoreset_mode=AutoresetMode.SAME_STEP, **FAST))
    assert envs.observation_space.shape == (2, *TINY_LATENT) and envs.single_observation_space.shape == TINY_LATENT
    obs, info = envs.reset(seed=0)
    assert obs.dtype == np.float32 and np.array_equal(obs, info["latent"]) and obs in envs.observation_space
    actions = np.array([[1, 0, 2, 0], [0, 0, 1, 0]])
    obs, _, _, truncated, info = envs.step(actions)
    assert not truncated.any() and np.array_equal(obs, info["latent"])
    obs, _, _, truncated, info = envs.step(actions)  # the time limit: both worlds end and restart
    assert truncated.all() and np.array_equal(np.stack(info["final_obs"]), info["final_info"]["latent"])
    assert info["frame_index"].tolist() == [0, 0] and np.array_equal(obs, info["latent"])
    kept = envs.step(actions)[0][0]
    obs, info = envs.reset(options={"reset_mask": np.array([False, True])})
    assert np.array_equal(obs[0], kept) and np.array_equal(obs[1], info["latent"][1])


def test_rollout_with_a_policy_drive_acts_on_the_last_observation(tmp_path):
    seen = []

    def policy(obs, info):
        seen.append((obs.copy(), info["frame_index"]))
        return np.array([1, 0, 2, 0])

    env = mirage_env.envs.CameraEnv(action_mode="keys", **FAST)
    spec = RolloutSpec(drive="policy", steps=3, out=str(tmp_path / "p.mp4"), progress=False)
    metrics = run_rollout(env, spec, policy)
    assert [frame for _, frame in seen] == [0, 4, 8] and metrics["steps"] == 3  # the info of the step before
    assert np.array_equal(seen[0][0], env.core.slot(0).start.view.image.numpy())  # first: the reset observation
    with pytest.raises(ValueError, match="policy"):
        run_rollout(env, RolloutSpec(drive="random", out=str(tmp_path / "r.mp4")), policy)
    with pytest.raises(ValueError, match="video format"):  # refused before anything runs
        RolloutSpec(out=str(tmp_path / "rollout"))


def test_record_video(tmp_path):
    pytest.importorskip("moviepy")  # RecordVideo writes through moviepy (gymnasium[other])
    recorded = gym.wrappers.RecordVideo(make(CAMERA, render_mode="rgb_array"), str(tmp_path / "videos"),
                                        name_prefix="clip", episode_trigger=lambda episode: True,
                                        disable_logger=True)
    recorded.reset(seed=0)
    walk(recorded, [FORWARD_RIGHT] * 2)
    recorded.close()
    assert list((tmp_path / "videos").glob("clip*.mp4"))


# ---------------------------------------------------------------------- Stable-Baselines3
def test_sb3_check_env_and_a_short_ppo_run_on_the_vector_env():
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from mirage_env.envs.sb3 import SB3VecEnv

    for env_id in ENV_IDS:
        sb3_check_env(make(env_id))
    vec = SB3VecEnv.make(CAMERA, num_envs=2, max_episode_steps=6, **FAST)
    model = PPO("MlpPolicy", vec, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=16)
    assert model.num_timesteps == 16


# ---------------------------------------------------------------------- CLI
def test_cli_rollout_play_and_info(tmp_path, capsys):
    out = tmp_path / "rollout.mp4"
    main(["rollout", "--steps", "2", "--num-steps", "1", "--out", str(out), "--no-progress"])
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert out.stat().st_size > 0 and out.with_suffix(".png").stat().st_size > 0
    assert metrics["steps"] == 2 and metrics["frames"] == 9 and metrics["memory"]["voxels"] > 0
    assert set(metrics["timings_ms_mean"]) >= {"denoise", "decode", "total"} and len(metrics["per_step"]) == 2

    main(["play", "w*2 l", "--num-steps", "1", "--out", str(tmp_path / "play.gif"), "--no-progress"])
    assert json.loads((tmp_path / "play.json").read_text())["steps"] == 3

    main(["rollout", "--drive", "orbit", "--steps", "1", "--num-steps", "1", "--out", str(tmp_path / "orbit.mp4"),
          "--no-progress"])
    view = _view(2, (64, 64))
    poses = torch.stack([view.c2w, view.c2w])
    poses[1, 2, 3] += 0.1
    save_geometry_npz(tmp_path / "g.npz", CameraSequence(view.K, poses, view.depth.expand(2, -1, -1),
                                                         view.image.expand(2, -1, -1, -1)))
    main(["rollout", "--drive", "file", "--poses", str(tmp_path / "g.npz"), "--num-steps", "1",
          "--out", str(tmp_path / "file.mp4"), "--no-progress"])
    assert json.loads((tmp_path / "file.json").read_text())["frames"] == 5  # 1 pose padded to a 4-frame step

    capsys.readouterr()
    main(["info", "--weights-dir", str(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    assert set(report["presets"]) == {"tiny", "wan2.2-ti2v-5b"} and str(tmp_path) in report["weights"]
    with pytest.raises(SystemExit):
        main(["play", "w*x"])


def test_weights_are_chosen_by_argument_and_shared(tmp_path, memory_model):
    memory_model.save_pretrained(tmp_path / "weights")
    env = make(CAMERA, weights_dir=str(tmp_path / "weights"))
    assert make(KEYS, weights_dir=str(tmp_path / "weights")).unwrapped.core.model is env.unwrapped.core.model
    assert env.unwrapped.core.model is not make(CAMERA).unwrapped.core.model
    loaded = dict(env.unwrapped.core.model.branch.named_parameters())
    assert all(torch.equal(p, loaded[n]) for n, p in memory_model.branch.named_parameters())


def test_envs_register_on_import_and_the_model_cache_can_be_cleared():
    gym.registry.pop(CAMERA)
    mirage_env.envs.register_envs()
    assert CAMERA in gym.registry
    model = make(CAMERA).unwrapped.core.model
    mirage_env.envs.clear_model_cache()
    assert make(CAMERA).unwrapped.core.model is not model
