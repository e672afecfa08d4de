"""The segment loop on the tiny preset (random weights): shapes, determinism, snapshots, retrieval."""

import math

import pytest
import torch

from mirage_env.geometry.trajectories import from_velocities
from mirage_env.models import from_preset
from mirage_env.models.depth import SimulatorDepth
from mirage_env.sim import Scene, sample_scene, start_pose
from mirage_env.world import InitialView, KeyframeStore, World, WorldConfig


@pytest.fixture(scope="module")
def model():
    return from_preset("tiny", model_seed=0, random_weights=True)


def start(world: World, index: int, seed: int) -> Scene:
    scene = sample_scene(seed, "indoor")
    world.reset_in_scene(index, scene, start_pose(scene, seed), seed)
    return scene


def walk(world: World, yaw_deg: float = 2.0) -> torch.Tensor:
    """Poses [B, F, 4, 4]: forward 5 cm and a small turn per frame from every world's current pose."""
    velocity = torch.tensor([[0.0, 0.0, 0.05, math.radians(yaw_deg), 0.0, 0.0]] * world.frames_per_step)
    return torch.stack([from_velocities(pose, velocity)[1:] for pose in world.poses])


@pytest.mark.parametrize("config", [WorldConfig(), WorldConfig.mirage_chunks(num_steps=2)], ids=["rl", "mirage"])
def test_shapes_through_the_loop(model, config):
    world = World(model, config, batch_size=2)
    for i in range(2):
        start(world, i, seed=i)
    k, f = config.latents_per_step, world.frames_per_step
    assert f == 4 * k
    voxels = len(world.memory(0))
    for _ in range(2):
        segment = world.step(walk(world))
        assert segment.frames.shape == (2, f, 64, 64, 3) and segment.frames.dtype == torch.uint8
        grid = 64 // model.spatial_stride
        assert segment.latents.shape == (2, model.latent_channels, k, grid, grid)
        assert segment.coverage.shape == (2, k) and bool((segment.coverage > 0).all())
        assert len(segment.discard) == 2
        assert all(getattr(segment.timings, s) > 0 for s in ("read", "denoise", "decode", "depth", "write"))
    assert len(world.memory(0)) > voxels  # new content was written
    assert world.state(0).frame == 2 * f


def rollout(model, seed: int, steps: int, world: World | None = None) -> list[torch.Tensor]:
    if world is None:
        world = World(model, WorldConfig(), batch_size=1)
        start(world, 0, seed)
    return [world.step(walk(world)).frames for _ in range(steps)]


def test_identical_seeds_give_identical_frames(model):
    a, b = rollout(model, 3, 3), rollout(model, 3, 3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = rollout(model, 4, 3)
    assert not torch.equal(a[-1], c[-1])


def test_save_restore_continue_equals_an_uninterrupted_run(model, tmp_path):
    world = World(model, WorldConfig(), batch_size=1)
    scene = start(world, 0, 5)
    for _ in range(2):
        world.step(walk(world))
    world.save(0, tmp_path / "world.pt")
    uninterrupted = [world.step(walk(world)).frames for _ in range(3)]

    branch = World(model, WorldConfig(), batch_size=1)
    branch.load(0, tmp_path / "world.pt", depth=SimulatorDepth(scene))
    resumed = [branch.step(walk(branch)).frames for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(uninterrupted, resumed))


def test_snapshots_carry_the_discard_history_and_load_without_it(model):
    world = World(model, WorldConfig(), batch_size=1)
    start(world, 0, 5)
    world.step(walk(world))
    state = world.state_dict(0)
    recent = world.state(0).discard_history
    assert state["discard_history"]["depth"].shape == (2, *world.latent_hw)  # the reset view and one new frame
    assert torch.equal(state["discard_history"]["cameras"], recent.cameras)
    del state["discard_history"]  # a snapshot written before the history existed
    world.load_state_dict(0, state)
    assert world.state(0).discard_history is None and "discard_history" not in world.state_dict(0)
    world.step(walk(world))
    assert world.state(0).discard_history.depth.shape[0] == 1


def test_snapshot_errors(model, tmp_path):
    world = World(model, WorldConfig(), batch_size=1)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable world snapshot"):
        world.load(0, bad)
    with pytest.raises(ValueError, match="snapshot"):
        world.load_state_dict(0, {"format": "something else"})


def _nan(x):
    x = x.clone()
    x.view(-1)[0] = float("nan")
    return x


def _set(key, value):
    def change(state):
        state[key] = value(state[key]) if callable(value) else value
    return change


def _set_keyframes(key, value):
    def change(state):
        state["keyframes"][key] = value(state["keyframes"][key])
    return change


def _drop(*keys):
    def change(state):
        target = state
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return change


def _stretch(pose):
    pose = pose.clone()
    pose[:3, :3] *= 2
    return pose


BAD_WORLD_SNAPSHOTS = [
    (_drop("keyframes"), "world snapshot is missing 'keyframes'"),
    (_drop("pose"), "world snapshot is missing 'pose'"),
    (_drop("keyframes", "poses"), "world snapshot keyframes is missing 'poses'"),
    (_set("pose", _nan), "world snapshot pose contains NaN"),
    (_set("pose", _stretch), "world snapshot pose rotation is not orthonormal"),
    (_set("pose", lambda p: p[:3]), "world snapshot pose must have shape \\[4, 4\\]"),
    (_set("K", lambda K: K * 0), "world snapshot K must have last row|world snapshot K must have positive"),
    (_set("K", lambda K: K.int()), "world snapshot K must be a floating-point tensor"),
    (_set("frame", -4), "world snapshot frame must lie in"),
    (_set("frame", 4.0), "world snapshot frame must be an integer"),
    (_set("generator", lambda g: g[:10]), "world snapshot generator"),
    (_set("first_latent", _nan), "world snapshot first_latent contains NaN"),
    (_set("first_latent", lambda x: x[:, :, :4]), "world snapshot first_latent must have shape"),
    (_set("history", lambda h: [_nan(h[0]), *h[1:]]), "world snapshot history\\[0\\] contains NaN"),
    (_set("history_frames", lambda f: f[:-1]), "history and history_frames must be equally long"),
    (_set("history_frames", lambda f: [10_000] * len(f)), "history_frames\\[0\\] must lie in \\[0, 4\\]"),
    (_set_keyframes("latents", lambda x: [_nan(x[0]), *x[1:]]), "keyframes latents\\[0\\] contains NaN"),
    (_set_keyframes("poses", lambda x: [_nan(x[0]), *x[1:]]), "keyframes poses\\[0\\] contains NaN"),
    (_set_keyframes("keys", lambda x: [x[0].float(), *x[1:]]), "keyframes keys\\[0\\] must be an int64"),
    (_set_keyframes("frame_index", lambda x: x[:-1]), "keyframes lists must be equally long"),
    (_set_keyframes("capacity", lambda c: 0), "within capacity 0"),
    (lambda state: state["memory"].__setitem__("features", _nan(state["memory"]["features"])),
     "memory state features contains NaN"),
    (_set("discard_history", lambda h: {**h, "depth": h["depth"][:, :2]}), "discard_history depth must have shape"),
    (_set("discard_history", lambda h: {**h, "cameras": h["cameras"].double()}), "discard_history cameras must be"),
    (_set("discard_history", lambda h: {**h, "depth": -h["depth"]}), "discard_history depth must be >= 0"),
    (_set("discard_history", lambda h: {"depth": h["depth"]}), "discard_history must be a dict with keys"),
]


@pytest.mark.parametrize("corrupt, message", BAD_WORLD_SNAPSHOTS)
def test_bad_world_snapshots_raise_and_leave_the_world_unchanged(model, tmp_path, corrupt, message):
    world = World(model, WorldConfig(), batch_size=1)
    start(world, 0, 2)
    world.step(walk(world))
    before = world.state_dict(0)
    state = world.state_dict(0)
    state["memory"] = dict(state["memory"])
    state["keyframes"] = dict(state["keyframes"])
    corrupt(state)
    with pytest.raises(ValueError, match=message):
        world.load_state_dict(0, state)
    after = world.state_dict(0)
    assert torch.equal(after["pose"], before["pose"]) and after["frame"] == before["frame"]
    assert torch.equal(after["memory"]["keys"], before["memory"]["keys"])
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        world.load(0, tmp_path / "bad.pt")


@pytest.mark.parametrize("field, value, message", [
    ("fov_deg", float("nan"), "fov_deg must be finite"), ("fov_deg", 180.0, "fov_deg must lie in"),
    ("image_hw", (64, 0), "image_hw width must be >= 1"), ("voxel_size", float("inf"), "voxel_size must be finite"),
    ("memory_capacity", 1 << 40, "memory_capacity must be <="), ("memory_dtype", "int8", "memory_dtype"),
    ("observed_weight", float("inf"), "observed_weight must be finite"), ("discard", {}, "DiscardConfig"),
])
def test_world_config_checks_every_field(field, value, message):
    with pytest.raises((TypeError, ValueError), match=message):
        WorldConfig(**{field: value})


def test_bad_poses_raise_and_leave_the_world_unchanged(model):
    world = World(model, WorldConfig(), batch_size=1)
    start(world, 0, 1)
    before = world.state_dict(0)
    poses = walk(world)
    with pytest.raises(ValueError, match="poses must have shape"):
        world.step(poses[:, :2])
    singular = poses.clone()
    singular[0, 1, :3, :3] = 0
    with pytest.raises(ValueError, match="singular"):
        world.step(singular)
    after = world.state_dict(0)
    assert after["frame"] == before["frame"] and torch.equal(after["pose"], before["pose"])
    assert torch.equal(after["memory"]["keys"], before["memory"]["keys"])


def test_reset_rejects_bad_views(model):
    world = World(model, WorldConfig(), batch_size=1)
    K = world.default_intrinsics()
    image = torch.zeros(64, 64, 3, dtype=torch.uint8)
    depth = torch.ones(64, 64)
    with pytest.raises(ValueError, match="image must be uint8"):
        world.reset(0, InitialView(image.float(), depth, K, torch.eye(4)), seed=0)
    with pytest.raises(ValueError, match="NaN"):
        world.reset(0, InitialView(image, depth * float("nan"), K, torch.eye(4)), seed=0)
    with pytest.raises(RuntimeError, match="has not been reset"):
        world.step(torch.eye(4).expand(1, 4, 4, 4))


def test_keyframe_retrieval_ranks_by_visible_overlap_and_skips_the_preceding_window():
    store = KeyframeStore(capacity=3)
    store.add(torch.zeros(2, 1, 1), torch.eye(4), torch.tensor([1, 2, 3, 3]), frame_index=0)
    store.add(torch.ones(2, 1, 1), torch.eye(4), torch.tensor([3, 4, 5, 6]), frame_index=4)
    store.add(torch.ones(2, 1, 1), torch.eye(4), torch.tensor([7]), frame_index=8)
    visible = torch.tensor([3, 4, 5, 9])
    assert store.overlap(visible).tolist() == [1, 3, 0]
    assert store.retrieve(visible, count=2, exclude_after=100) == [0, 1]
    assert store.retrieve(visible, count=1, exclude_after=100) == [1]
    assert store.retrieve(visible, count=2, exclude_after=4) == [0]  # frame 4 is in the preceding window
    store.add(torch.ones(2, 1, 1), torch.eye(4), torch.tensor([9]), frame_index=12)
    assert len(store) == 3 and store.frame_index == [4, 8, 12]  # bounded: the oldest went


def test_world_retrieves_the_start_view_after_turning_away_and_back(model):
    world = World(model, WorldConfig(preceding=1, references=2), batch_size=1)
    start(world, 0, 2)
    segments = [world.step(walk(world, yaw_deg=yaw)) for yaw in [10.0] * 4 + [-10.0] * 4]  # 40 degrees a step
    assert 0 not in segments[3].references[0]  # facing away: the start view is not visible
    assert 0 in segments[-1].references[0]  # back at the start: its keyframe is retrieved
    assert all(len(s.references[0]) <= 2 for s in segments)


def test_zero_memory_ablation_hides_the_read_from_the_model(model):
    from mirage_env.world.world import segment_request

    world = World(model, WorldConfig(), batch_size=1)
    start(world, 0, 1)
    condition = world.condition(0, world.poses[:, None].expand(1, 2, 4, 4)[0])
    assert condition.read.mask.any()
    first = world.state(0).first_latent[None]
    shown = segment_request(first, [condition])
    hidden = segment_request(first, [condition], zero_memory=True)
    assert shown.memory_mask.any() and not hidden.memory_mask.any() and not hidden.memory_features.any()
