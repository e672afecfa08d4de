import math

import pytest
import torch

from mirage_env.geometry import intrinsics_from_fov, look_at, scale_intrinsics
from mirage_env.geometry.trajectories import orbit
from mirage_env.memory import LatentSpatialMemory, MemoryConfig, downsample_depth

H, W, S = 32, 48, 4  # pixel grid and latent stride
h, w = H // S, W // S
K_PIX = intrinsics_from_fov(70.0, (H, W))
K_LAT = scale_intrinsics(K_PIX, (H, W), (h, w))


@pytest.fixture(params=["reference", "auto"])
def backend(request, monkeypatch):
    monkeypatch.setenv("MIRAGE_ENV_BACKEND", request.param)
    return request.param


def box_depth(c2w: torch.Tensor, hw=(H, W), K=K_PIX, half=3.0) -> torch.Tensor:
    """Z-depth of the inside of an axis-aligned box [-half, half]^3 seen from ``c2w`` (exact ray casting)."""
    from mirage_env.geometry import camera_rays

    origin, dirs = camera_rays(K, c2w, hw)
    o = origin[:, None, None, :]
    with torch.no_grad():
        t = torch.where(dirs > 0, (half - o) / dirs, (-half - o) / dirs)
        t = torch.where(dirs == 0, torch.full_like(t, math.inf), t)
    return t.amin(dim=-1).to(torch.float32)


def make_memory(**kwargs) -> LatentSpatialMemory:
    config = dict(feature_dim=6, voxel_size=0.1)
    config.update(kwargs)
    return LatentSpatialMemory(MemoryConfig(**config))


def view(seed: int, c2w: torch.Tensor):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 6, h, w, generator=g)
    return latents, box_depth(c2w[None]), K_PIX, c2w


def snapshot(memory: LatentSpatialMemory):
    return {k: v.clone() for k, v in memory.state_dict().items()}, memory.step


def assert_unchanged(memory, before):
    state, step = before
    assert memory.step == step
    for k, v in memory.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_write_then_read_same_view_reproduces_depth_and_features(backend):
    memory = make_memory(voxel_size=0.01)
    c2w = look_at((0.5, -0.2, 0.0), (0.0, 0.3, 2.0))
    latents, depth, K, _ = view(0, c2w)
    stats = memory.write(latents, depth, K, c2w)
    assert stats.written == h * w and stats.new_voxels == h * w
    read = memory.read(K_LAT[None], c2w[None], (h, w))
    cell_depth = downsample_depth(depth, (h, w))
    assert read.mask.all()
    assert torch.allclose(read.depth, cell_depth, rtol=1e-5)
    assert torch.allclose(read.features, latents)


def test_writing_the_same_view_twice_does_not_duplicate(backend):
    memory = make_memory()
    args = view(0, look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
    first = memory.write(*args)
    second = memory.write(*args)
    assert second.new_voxels == 0 and second.fused_voxels == first.new_voxels
    assert len(memory) == first.new_voxels
    assert torch.unique(memory.keys).numel() == len(memory)


def test_fusion_averages_features():
    memory = make_memory(voxel_size=0.01)
    c2w = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    latents, depth, K, _ = view(0, c2w)
    memory.write(latents, depth, K, c2w)
    memory.write(latents + 2.0, depth, K, c2w)
    read = memory.read(K_LAT[None], c2w[None], (h, w))
    assert torch.allclose(read.features, latents + 1.0, atol=1e-5)
    assert torch.all(memory.weights == 2.0)


def test_max_weight_caps_confidence():
    memory = make_memory(max_weight=3.0)
    args = view(0, look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
    for _ in range(5):
        memory.write(*args)
    assert memory.weights.max().item() == 3.0


def test_invalid_depth_cells_and_keep_mask_are_not_written():
    memory = make_memory(voxel_size=0.01)
    c2w = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    latents, depth, K, _ = view(0, c2w)
    depth[0, 0, 0] = 0.0  # one pixel without depth invalidates its whole latent cell
    keep = torch.ones(1, h, w, dtype=torch.bool)
    keep[0, -1, -1] = False
    stats = memory.write(latents, depth, K, c2w, keep_mask=keep)
    assert stats.invalid_depth == 1 and stats.masked == 1 and stats.written == h * w - 2
    read = memory.read(K_LAT[None], c2w[None], (h, w))
    assert not read.mask[0, 0, 0] and not read.mask[0, -1, -1]
    assert read.mask.sum() == h * w - 2


def test_pixel_resolution_keep_mask_drops_the_whole_cell():
    memory = make_memory(voxel_size=0.01)
    c2w = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    latents, depth, K, _ = view(0, c2w)
    keep = torch.ones(1, H, W, dtype=torch.bool)
    keep[0, 5, 5] = False
    assert memory.write(latents, depth, K, c2w, keep_mask=keep).masked == 1


def test_occlusion_nearest_wins(backend):
    memory = make_memory(voxel_size=0.01)
    front = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    far = torch.full((1, h, w), 5.0)
    near = torch.full((1, h, w), 2.0)
    memory.write(torch.zeros(1, 6, h, w), far, K_LAT, front)
    memory.write(torch.ones(1, 6, h, w), near, K_LAT, front)
    read = memory.read(K_LAT[None], front[None], (h, w))
    assert torch.all(read.features == 1.0) and torch.allclose(read.depth, near)


def test_memory_is_bounded_under_many_overlapping_views():
    capacity = 3000
    memory = make_memory(voxel_size=0.05, capacity=capacity)
    poses = orbit((0.0, 0.0, 0.0), radius=1.5, n=500, height=0.3, sweep_deg=720.0)
    limit = memory.stats().capacity_bytes
    latents = torch.randn(1, 6, h, w)
    for c2w in poses:
        memory.write(latents, box_depth(c2w[None]), K_PIX, c2w)
        stats = memory.stats()
        assert stats.points <= capacity and stats.bytes <= limit
    assert memory.stats().points == capacity  # this scene has more voxels than the capacity
    assert torch.unique(memory.keys).numel() == len(memory)


def test_eviction_drops_the_least_recently_seen():
    memory = make_memory(voxel_size=0.01, capacity=h * w + 10)
    first = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    second = look_at((0.0, 0.0, 0.0), (0.0, 0.0, -1.0))
    memory.write(*view(0, first))
    memory.write(*view(1, second))
    assert len(memory) == h * w + 10
    assert int((memory.last_seen == 1).sum()) == 10 and int((memory.last_seen == 2).sum()) == h * w


def test_remove_keeps_slots_dense_and_reads_consistent(backend):
    memory = make_memory(voxel_size=0.01)
    c2w = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    latents, depth, K, _ = view(0, c2w)
    memory.write(latents, depth, K, c2w)
    removed = memory.remove(torch.tensor([0, 5, len(memory) - 1]))
    assert removed == 3 and len(memory) == h * w - 3
    read = memory.read(K_LAT[None], c2w[None], (h, w))
    assert read.mask.sum() == h * w - 3
    drawn = read.mask[0]
    assert torch.allclose(read.features[0][:, drawn], latents[0][:, drawn])
    # the index is still consistent: writing the view again re-creates exactly the removed voxels
    assert memory.write(latents, depth, K, c2w).new_voxels == 3


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_save_load_round_trip(tmp_path, dtype):
    memory = make_memory(dtype=dtype)
    memory.write(*view(0, look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))))
    memory.write(*view(1, look_at((0.0, 0.0, 0.0), (1.0, 0.0, 1.0))))
    path = tmp_path / "memory.safetensors"
    memory.save(path)
    back = LatentSpatialMemory.load(path)
    assert back.config == memory.config and back.step == memory.step
    for k, v in memory.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    c2w = look_at((0.1, 0.0, 0.0), (0.5, 0.0, 1.0))[None]
    a, b = memory.read(K_LAT[None], c2w, (h, w)), back.read(K_LAT[None], c2w, (h, w))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # writing after a load continues like the original
    args = view(2, look_at((0.0, 0.0, 0.0), (-1.0, 0.0, 1.0)))
    assert memory.write(*args) == back.write(*args)


def test_corrupt_memory_file_raises_and_leaves_memory_unchanged(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="broken.safetensors"):
        LatentSpatialMemory.load(path)
    memory = make_memory()
    memory.write(*view(0, look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))))
    before = snapshot(memory)
    state = memory.state_dict()
    state["features"] = state["features"][:-1]
    with pytest.raises(ValueError, match="features"):
        memory.load_state_dict(state)
    state = memory.state_dict()
    state["keys"][1] = state["keys"][0]
    with pytest.raises(ValueError, match="duplicate"):
        memory.load_state_dict(state)
    assert_unchanged(memory, before)


def _corrupt(name, change):
    def apply(state):
        state[name] = change(state[name])
        return state
    return apply


def _with_nan(x):
    x = x.clone()
    x.view(-1)[0] = float("nan")
    return x


BAD_MEMORY_STATES = [
    (_corrupt("features", _with_nan), "features contains NaN"),
    (_corrupt("positions", lambda x: x + float("inf")), "positions contains infinite"),
    (_corrupt("weights", _with_nan), "weights contains NaN"),
    (_corrupt("weights", lambda x: x * 0), "weights must lie in \\(0, 64.0\\]"),
    (_corrupt("weights", lambda x: x * 1000), "weights must lie in"),
    (_corrupt("keys", lambda x: x.roll(1)), "keys do not match the voxels of positions"),
    (_corrupt("keys", lambda x: x.float()), "keys must be an int64 tensor"),
    (_corrupt("last_seen", lambda x: x - 10), "last_seen must be >= 0"),
    (_corrupt("last_seen", lambda x: x.float()), "last_seen must be an int64 tensor"),
    (_corrupt("last_seen", lambda x: x + 5), "last_seen .* after step"),
    (_corrupt("step", lambda x: x.float() + 0.5), "step must be an int64 tensor"),
    (_corrupt("step", lambda x: x * 0 - 1), "step must be >= 0"),
    (_corrupt("positions", lambda x: x.numpy()), "positions must be a torch.Tensor"),
    (_corrupt("positions", lambda x: x.double()), "positions must be a float32 tensor"),
]


@pytest.mark.parametrize("corrupt, message", BAD_MEMORY_STATES)
def test_inconsistent_memory_states_raise_and_leave_memory_unchanged(tmp_path, corrupt, message):
    memory = make_memory(max_weight=64.0)
    memory.write(*view(0, look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))))
    memory.write(*view(1, look_at((0.0, 0.0, 0.0), (1.0, 0.0, 1.0))))
    before = snapshot(memory)
    with pytest.raises(ValueError, match=message):
        memory.load_state_dict(corrupt(memory.state_dict()))
    assert_unchanged(memory, before)
    state = corrupt(memory.state_dict())
    if all(isinstance(v, torch.Tensor) for v in state.values()):  # the same through a file, which it names
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "bad.safetensors"))
        with pytest.raises(ValueError, match="bad.safetensors"):
            LatentSpatialMemory.load(tmp_path / "bad.safetensors")


def test_a_position_on_the_far_border_of_its_voxel_loads():
    from mirage_env.memory.voxels import pack_voxel_keys

    memory = make_memory(voxel_size=0.1)
    memory.write(*view(0, look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))))
    state = memory.state_dict()
    # the far corner of voxel (-1, -1, -1), where float32 rounding can put a fused mean of points inside it
    state["positions"][0] = 0.0
    state["keys"][0] = pack_voxel_keys(torch.tensor([[-1, -1, -1]]))[0]
    assert not bool((state["keys"][1:] == state["keys"][0]).any())
    memory.load_state_dict(state)
    assert torch.equal(memory.keys, state["keys"])


def bad_writes():
    c2w = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    latents, depth, K, _ = view(0, c2w)
    nan_depth = depth.clone()
    nan_depth[0, 3, 3] = float("nan")
    inf_depth = depth.clone()
    inf_depth[0, 3, 3] = float("inf")
    singular = c2w.clone()
    singular[:3, :3] = 0
    skewed = c2w.clone()
    skewed[0, 1] = 0.5
    nan_latents = latents.clone()
    nan_latents[0, 0, 0, 0] = float("nan")
    return {
        "NaN": (nan_latents, depth, K, c2w),
        "contains NaN": (latents, nan_depth, K, c2w),
        "infinite": (latents, inf_depth, K, c2w),
        "negative": (latents, -depth, K, c2w),
        "singular": (latents, depth, K, singular),
        "orthonormal": (latents, depth, K, skewed),
        "latents must have shape": (latents[:, :3], depth, K, c2w),
        "integer multiple": (latents, depth[:, :, :-1], K, c2w),
        "floating-point": (latents, depth.to(torch.int64), K, c2w),
        "focal": (latents, depth, -K, c2w),
        "c2w must have shape": (latents, depth, K, torch.eye(3, dtype=torch.float64)),
    }


@pytest.mark.parametrize("problem", list(bad_writes()))
def test_bad_writes_raise_and_leave_memory_unchanged(problem):
    memory = make_memory()
    memory.write(*view(5, look_at((0.0, 0.0, 0.0), (1.0, 0.0, 1.0))))
    before = snapshot(memory)
    with pytest.raises((ValueError, TypeError), match=problem):
        memory.write(*bad_writes()[problem])
    assert_unchanged(memory, before)


def test_bad_keep_mask_and_device_mismatch():
    memory = make_memory()
    latents, depth, K, c2w = view(0, look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
    with pytest.raises(TypeError, match="keep_mask must be a bool"):
        memory.write(latents, depth, K, c2w, keep_mask=torch.ones(1, h, w))
    with pytest.raises(ValueError, match="keep_mask must have shape"):
        memory.write(latents, depth, K, c2w, keep_mask=torch.ones(1, h + 1, w, dtype=torch.bool))
    with pytest.raises(ValueError, match="meta"):
        memory.write(latents.to("meta"), depth, K, c2w)
    assert len(memory) == 0 and memory.step == 0


def test_bad_reads_raise():
    memory = make_memory()
    c2w = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="same number of cameras"):
        memory.read(K_LAT.expand(2, 3, 3), c2w[None], (h, w))
    with pytest.raises(ValueError, match="hw must be positive"):
        memory.read(K_LAT[None], c2w[None], (0, w))
    nan_pose = c2w.clone()
    nan_pose[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        memory.read(K_LAT[None], nan_pose[None], (h, w))


def test_empty_memory_read_and_empty_write(backend):
    memory = make_memory()
    c2w = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    read = memory.read(K_LAT.expand(3, 3, 3), c2w.expand(3, 4, 4), (h, w))
    assert read.features.shape == (3, 6, h, w) and not read.mask.any()
    assert torch.all(read.index == -1) and torch.all(read.depth == 0)
    latents, depth, K, _ = view(0, c2w)
    stats = memory.write(latents, torch.zeros_like(depth), K, c2w)  # no valid cell: N = 0
    assert stats.written == 0 and len(memory) == 0 and memory.step == 1


def test_clear_and_to():
    memory = make_memory()
    memory.write(*view(0, look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))))
    assert memory.to("cpu") is memory and len(memory) > 0
    memory.clear()
    assert len(memory) == 0 and memory.step == 0 and memory.stats().bytes == 0


def test_config_validation():
    with pytest.raises(ValueError, match="dtype"):
        MemoryConfig(feature_dim=4, dtype="int8")
    with pytest.raises(ValueError, match="voxel_size"):
        MemoryConfig(feature_dim=4, voxel_size=0.0)


def test_voxel_keys_round_trip_and_range():
    from mirage_env.memory.voxels import pack_voxel_keys, unpack_voxel_keys

    coords = torch.tensor([[0, 0, 0], [-1, 2, -3], [(1 << 20) - 1, -(1 << 20), 5]])
    assert torch.equal(unpack_voxel_keys(pack_voxel_keys(coords)), coords)
    with pytest.raises(ValueError, match="larger voxel_size"):
        pack_voxel_keys(torch.tensor([[1 << 20, 0, 0]]))
