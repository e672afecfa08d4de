"""Every kernel: reference vs CPU extension (vs CUDA when present), exactly, plus tie and permutation rules."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mirage_env.geometry import intrinsics_from_fov, look_at, pack_cameras
from mirage_env.geometry.trajectories import orbit
from mirage_env.ops import EMPTY_KEY, INDEX_MASK, bits_to_float, extension, reference

CPU_EXT = extension.load_module("cpu")
CUDA_EXT = extension.load_module("cuda")
HAS_CUDA = CUDA_EXT is not None and torch.cuda.is_available() and CUDA_EXT.device_count() > 0

needs_cpu_ext = pytest.mark.skipif(CPU_EXT is None, reason="mirage_env._C is not built")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device or mirage_env._C_cuda")


def random_scene(n: int, seed: int, b: int = 3, hw=(20, 28)):
    g = torch.Generator().manual_seed(seed)
    points = (torch.rand(n, 3, generator=g) * 4 - 2) + torch.tensor([0.0, 0.0, 4.0])
    K = intrinsics_from_fov(60.0, hw).expand(b, 3, 3)
    poses = orbit((0.0, 0.0, 4.0), radius=4.0, n=b, sweep_deg=40.0, start_deg=-20.0)
    return points.contiguous(), pack_cameras(K, poses), hw


def run_all_backends(fn_name: str, *args):
    """Reference result plus the result of every available extension backend (moved back to CPU)."""
    results = {"reference": getattr(reference, fn_name)(*args)}
    if CPU_EXT is not None:
        with_threads = {}
        for threads in (1, 2):
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with_threads[threads] = getattr(extension, fn_name)(CPU_EXT, *args)
            finally:
                torch.set_num_threads(previous)
        results["cpu-1-thread"], results["cpu-2-threads"] = with_threads[1], with_threads[2]
    if HAS_CUDA:
        cuda_args = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
        out = getattr(extension, fn_name)(CUDA_EXT, *cuda_args)
        results["cuda"] = tuple(o.cpu() for o in out) if isinstance(out, tuple) else out.cpu()
    return results


@pytest.mark.parametrize("n", [0, 1, 1000, 50_000])
def test_project_zbuffer_backends_agree_exactly(n):
    points, cameras, (h, w) = random_scene(n, seed=n)
    results = run_all_backends("project_zbuffer", points, cameras, h, w, 0.01)
    expected = results.pop("reference")
    assert expected.shape == (3, h * w)
    for name, got in results.items():
        assert torch.equal(got, expected), name


@pytest.mark.parametrize("n, hw", [(200, (20, 28)), (5_000, (20, 28)), (5_000, (520, 520))])
def test_project_zbuffer_cpu_paths_agree_exactly(n, hw):
    # the CPU kernel's paths at 2 threads: z-buffers shared through atomic min (fewer points than pixels, or more
    # than 2**18 pixels), per-thread private z-buffers merged by min (many points, small image); n is not a multiple
    # of the 64-point chunk, so the padded last chunk runs too
    points, cameras, _ = random_scene(n, seed=n, hw=hw)
    results = run_all_backends("project_zbuffer", points, cameras, *hw, 0.01)
    expected = results.pop("reference")
    assert int((expected != EMPTY_KEY).sum()) > 0
    for name, got in results.items():
        assert torch.equal(got, expected), name


def brute_force_winners(points, camera, h, w, near):
    """Nearest point per pixel by a Python loop over points (ties -> lowest index)."""
    zc, px, py, inside = reference._project(points, camera, h, w, near)
    best = {}
    for i in range(points.shape[0]):
        if inside[i]:
            pixel = int(py[i] * w + px[i])
            key = (zc[i].item(), i)
            best[pixel] = min(best.get(pixel, key), key)
    return {pixel: i for pixel, (_, i) in best.items()}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), seed=st.integers(0, 10_000))
def test_zbuffer_matches_brute_force(n, seed):
    points, cameras, (h, w) = random_scene(n, seed, b=1, hw=(6, 7))
    packed = reference.project_zbuffer(points, cameras, h, w, 0.01)[0]
    winners = {p: int(packed[p] & INDEX_MASK) for p in range(h * w) if packed[p] != EMPTY_KEY}
    assert winners == brute_force_winners(points, cameras[0], h, w, 0.01)
    if CPU_EXT is not None:
        assert torch.equal(extension.project_zbuffer(CPU_EXT, points, cameras, h, w, 0.01)[0], packed)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_zbuffer_winners_are_permutation_invariant(seed):
    points, cameras, (h, w) = random_scene(300, seed)
    perm = torch.randperm(points.shape[0], generator=torch.Generator().manual_seed(seed))
    project = reference.project_zbuffer if CPU_EXT is None else (
        lambda *a: extension.project_zbuffer(CPU_EXT, *a))
    base = project(points, cameras, h, w, 0.01)
    permuted = project(points[perm].contiguous(), cameras, h, w, 0.01)
    hit = base != EMPTY_KEY
    assert torch.equal(hit, permuted != EMPTY_KEY)
    assert torch.equal(base[hit] >> 32, permuted[hit] >> 32)  # same depth drawn
    assert torch.equal(base[hit] & INDEX_MASK, perm[permuted[hit] & INDEX_MASK])  # same point drawn


def test_equal_depth_ties_go_to_the_lowest_index():
    # Four copies of the same point and one farther point on the same pixel.
    points = torch.tensor([[0.0, 0.0, 3.0]] * 2 + [[0.0, 0.0, 5.0]] + [[0.0, 0.0, 3.0]] * 2)
    points = points[[2, 3, 0, 4, 1]].contiguous()  # the farther point first; nearest copies at 1, 2, 3, 4
    cameras = pack_cameras(intrinsics_from_fov(60.0, (5, 5))[None], torch.eye(4, dtype=torch.float64)[None])
    for name, packed in run_all_backends("project_zbuffer", points, cameras, 5, 5, 0.01).items():
        centre = packed[0, 12]
        assert int(centre & INDEX_MASK) == 1, name
        assert bits_to_float(centre >> 32).item() == 3.0, name
        assert int((packed != EMPTY_KEY).sum()) == 1, name


def test_points_behind_or_near_the_camera_are_not_drawn():
    points = torch.tensor([[0.0, 0.0, -2.0], [0.0, 0.0, 0.005], [0.0, 0.0, 0.02]])
    cameras = pack_cameras(intrinsics_from_fov(60.0, (5, 5))[None], torch.eye(4, dtype=torch.float64)[None])
    for name, packed in run_all_backends("project_zbuffer", points, cameras, 5, 5, 0.01).items():
        assert int(packed[0, 12] & INDEX_MASK) == 2, name
        assert int((packed != EMPTY_KEY).sum()) == 1, name


def consistency_inputs(seed: int, radius: int, n: int = 4000):
    g = torch.Generator().manual_seed(seed)
    t, h, w = 4, 12, 16
    depths = torch.rand(t, h, w, generator=g) * 3 + 2
    depths[torch.rand(t, h, w, generator=g) < 0.1] = 0.0
    points, cameras, _ = random_scene(n, seed, b=t, hw=(h, w))
    source = torch.randint(-1, t, (n,), generator=g, dtype=torch.int32)
    return (points, source, *reference.window_depth_range(depths, radius), cameras)


def test_window_depth_range():
    depth = torch.tensor([[[1.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    near, far = reference.window_depth_range(depth, 1)
    assert near[0].tolist() == [[1.0, 1.0, 3.0], [1.0, 1.0, 3.0], [float("inf"), 5.0, 5.0]]
    assert far[0].tolist() == [[1.0, 3.0, 3.0], [1.0, 5.0, 5.0], [float("-inf"), 5.0, 5.0]]


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_depth_consistency_backends_agree_exactly(radius):
    args = consistency_inputs(radius, radius)
    results = run_all_backends("depth_consistency", *args, 0.05, 0.01)
    expected = results.pop("reference")
    assert int(expected[:, 0].sum()) > 0 and int(expected[:, 1].sum()) > 0 and int(expected[:, 2].sum()) > 0
    for name, got in results.items():
        assert torch.equal(got, expected), name


def test_depth_consistency_votes():
    depth = torch.full((2, 5, 5), 4.0)
    depth[1] = 0.0  # frame 1 has no depth: never visible there
    cameras = pack_cameras(intrinsics_from_fov(60.0, (5, 5)).expand(2, 3, 3),
                           torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
    points = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 4.02], [0.0, 0.0, 6.0], [0.0, 0.0, 4.0]])
    source = torch.tensor([-1, -1, -1, 0], dtype=torch.int32)
    ranges = reference.window_depth_range(depth, 1)
    for name, counts in run_all_backends("depth_consistency", points, source, *ranges, cameras, 0.05, 0.01).items():
        assert counts.tolist() == [[1, 1, 0], [1, 0, 0], [1, 0, 1], [0, 0, 0]], name


def fuse_inputs(seed: int, m: int = 5000, c: int = 7):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randint(0, 800, (m,), generator=g)
    sorted_keys, order = torch.sort(keys, stable=True)
    positions = torch.randn(m, 3, generator=g)
    features = torch.randn(m, c, generator=g)
    weights = torch.rand(m, generator=g) + 0.5
    store_keys = torch.unique(torch.randint(0, 1600, (500,), generator=g))
    store_slots = torch.randperm(store_keys.numel(), generator=g)
    return sorted_keys, order, positions, features, weights, store_keys, store_slots


@pytest.mark.parametrize("seed", [0, 1])
def test_segment_fuse_backends_agree(seed):
    args = fuse_inputs(seed)
    results = run_all_backends("segment_fuse", *args)
    keys, pos, feat, weight, slot = results.pop("reference")
    assert int((slot >= 0).sum()) > 0 and int((slot < 0).sum()) > 0
    for name, got in results.items():
        assert torch.equal(got[0], keys) and torch.equal(got[4], slot), name
        assert torch.allclose(got[1], pos, atol=1e-4) and torch.allclose(got[2], feat, atol=1e-4), name
        assert torch.allclose(got[3], weight, rtol=1e-5), name


def test_segment_fuse_empty_store_and_single_point():
    sorted_keys, order = torch.tensor([7]), torch.tensor([0])
    args = (sorted_keys, order, torch.ones(1, 3), torch.ones(1, 2), torch.full((1,), 2.0),
            torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64))
    for name, (keys, pos, feat, weight, slot) in run_all_backends("segment_fuse", *args).items():
        assert keys.tolist() == [7] and slot.tolist() == [-1], name
        assert pos.tolist() == [[2.0, 2.0, 2.0]] and weight.tolist() == [2.0], name


@needs_cpu_ext
def test_extension_wrappers_reject_wrong_dtype_and_layout():
    points, cameras, (h, w) = random_scene(10, 0)
    with pytest.raises(TypeError, match="points must be torch.float32"):
        extension.project_zbuffer(CPU_EXT, points.double(), cameras, h, w, 0.01)
    with pytest.raises(ValueError, match="contiguous"):
        extension.project_zbuffer(CPU_EXT, points.t().contiguous().t(), cameras, h, w, 0.01)
    with pytest.raises(ValueError, match="dimensions"):
        extension.project_zbuffer(CPU_EXT, points[None], cameras, h, w, 0.01)


@needs_cuda
def test_memory_on_cuda_matches_cpu():
    from mirage_env.memory import LatentSpatialMemory, MemoryConfig

    config = MemoryConfig(feature_dim=5, voxel_size=0.05)
    cpu, gpu = LatentSpatialMemory(config), LatentSpatialMemory(config, "cuda")
    K = intrinsics_from_fov(60.0, (12, 16))
    for i, c2w in enumerate(orbit((0.0, 0.0, 3.0), 3.0, 4, sweep_deg=60.0)):
        latents = torch.randn(1, 5, 12, 16, generator=torch.Generator().manual_seed(i))
        depth = torch.full((1, 12, 16), 2.5)
        cpu.write(latents, depth, K, c2w)
        gpu.write(latents.cuda(), depth.cuda(), K.cuda(), c2w.cuda())
    c2w = look_at((0.1, 0.0, 0.0), (0.0, 0.0, 3.0))[None]
    a, b = cpu.read(K[None], c2w, (12, 16)), gpu.read(K[None].cuda(), c2w.cuda(), (12, 16))
    assert torch.equal(a.mask, b.mask.cpu()) and torch.equal(a.depth, b.depth.cpu())
    assert torch.allclose(a.features, b.features.cpu(), atol=1e-5)


def cell_inputs(seed: int, t: int, hw: tuple[int, int]):
    """Depth with ties (half-metre steps), zeros, infinities, depths beyond far=100 and a random sky mask; the
    first frame keeps every pixel's depth (complete blocks whatever the stride)."""
    g = torch.Generator().manual_seed(seed)
    shape = (t, *hw)
    depth = torch.randint(1, 8, shape, generator=g).float() * 0.5
    depth += torch.rand(shape, generator=g) * (torch.rand(shape, generator=g) < 0.5)
    for value, share in ((float("inf"), 0.1), (0.0, 0.1), (150.0, 0.05), (100.0, 0.05)):
        depth[1:][torch.rand(shape, generator=g)[1:] < share] = value
    sky = torch.rand(shape, generator=g) < 0.05
    sky[0] = False
    return depth, sky


@pytest.mark.parametrize("stride, hw", [(1, (5, 7)), (2, (6, 8)), (3, (9, 12)), (4, (32, 48)), (16, (64, 96))])
@pytest.mark.parametrize("with_sky", [False, True])
def test_cell_stats_backends_agree_exactly(stride, hw, with_sky):
    depth, sky = cell_inputs(stride, 3, hw)
    results = run_all_backends("cell_stats", depth, sky if with_sky else None, stride, 100.0)
    expected = results.pop("reference")
    mean, is_far, nearest, index = expected
    assert mean.shape == (3, hw[0] // stride, hw[1] // stride) and index.dtype == torch.int32
    assert bool(is_far.any()) and bool((mean > 0).any()) and (stride == 1 or bool((index > 0).any()))
    for name, got in results.items():
        assert all(torch.equal(g, e) for g, e in zip(got, expected)), name


def test_cell_stats_rules():
    depth = torch.tensor([[[2.0, 1.0, 0.0, 0.0], [1.0, 3.0, 0.0, 0.0],
                           [float("inf"), 4.0, 5.0, 6.0], [200.0, 4.0, 7.0, 8.0]]])
    sky = torch.zeros(1, 4, 4, dtype=torch.bool)
    sky[0, 2, 3] = True
    for name, (mean, is_far, nearest, index) in run_all_backends("cell_stats", depth, sky, 2, 100.0).items():
        assert mean.tolist() == [[[1.75, 0.0], [0.0, 0.0]]], name  # complete blocks only
        assert is_far.tolist() == [[[False, False], [True, True]]], name
        # the first of two nearest pixels; nothing seen; far pixels seen at `far`
        assert nearest.tolist() == [[[1.0, float("inf")], [4.0, 5.0]]], name
        assert index.tolist() == [[[1, 0], [1, 0]]], name
    empty = run_all_backends("cell_stats", torch.zeros(0, 4, 4), None, 2, 100.0)
    assert all(r[0].shape == (0, 2, 2) for r in empty.values())


@needs_cpu_ext
def test_cell_stats_extension_rejects_bad_sizes():
    with pytest.raises(ValueError, match="stride"):
        extension.cell_stats(CPU_EXT, torch.zeros(1, 4, 6), None, 4, 100.0)
    with pytest.raises(ValueError, match="sky"):
        extension.cell_stats(CPU_EXT, torch.zeros(1, 4, 4), torch.zeros(1, 2, 2, dtype=torch.bool), 2, 100.0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        CPU_EXT.cell_stats(0, 0, 1, 4, 4, 0, 100.0, 0, 0, 0, 0, 1)
