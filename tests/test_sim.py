import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mirage_env.geometry import (
    backproject_depth,
    camera_rays,
    intrinsics_from_fov,
    look_at,
    pose_from_euler,
    scale_intrinsics,
)
from mirage_env.sim import (
    Box,
    Capsule,
    Material,
    Mover,
    Path,
    Plane,
    Scene,
    render,
    render_depth,
    sample_scene,
    start_pose,
)
from mirage_env.sim.textures import TEXTURES, albedo, seed_offset

HW = (24, 32)
K = intrinsics_from_fov(70.0, HW)
GREY = Material("checker", (0.6, 0.6, 0.6), (0.3, 0.3, 0.3), 0.5, 7)


@pytest.fixture(scope="module")
def indoor() -> Scene:
    return sample_scene(3, "indoor")


@pytest.fixture(scope="module")
def outdoor() -> Scene:
    return sample_scene(4, "outdoor")


FIELDS = ("rgb", "depth", "dynamic_mask", "sky_mask", "object_id")


def _same(a, b, index=slice(None)) -> bool:
    return all(torch.equal(getattr(a, f)[index], getattr(b, f)) for f in FIELDS)


def _toy_scene(movers=()) -> Scene:
    """A floor at y = 0, a 3 m wall at z in [5, 5.2] for |x| <= 2, open sky."""
    return Scene(kind="outdoor", boxes=(Box((-2.0, -3.0, 5.0), (2.0, 0.0, 5.2), GREY),), capsules=(),
                 planes=(Plane(0.0, True, GREY),), movers=tuple(movers), sky=True, light_dir=(0.0, -1.0, 0.0),
                 ambient=0.3, sky_zenith=(0.2, 0.4, 0.9), sky_horizon=(0.8, 0.9, 1.0),
                 areas=((-2.0, -2.0, 2.0, 4.5),))


def _facing_mover(scene: Scene, time: float) -> torch.Tensor:
    """A start pose turned towards the first mover from which it is visible."""
    for k in range(50):
        eye = start_pose(scene, k)[:3, 3]
        for mover in scene.movers:
            target = mover.path.position(time)
            if np.linalg.norm(target - eye.numpy()) > 1.5:
                pose = look_at(eye, target)
                if render(scene, K, pose, HW, time).dynamic_mask.any():
                    return pose
    raise AssertionError("no view of a mover found")


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_sampling_and_rendering_are_deterministic(kind):
    a, b = sample_scene(11, kind), sample_scene(11, kind)
    assert a.to_json() == b.to_json()
    assert a.to_json() != sample_scene(12, kind).to_json()
    pose = start_pose(a, 5)
    assert torch.equal(pose, start_pose(b, 5))
    assert _same(render(a, K, pose, HW, 0.7), render(b, K, pose, HW, 0.7))


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_json_round_trip_is_exact(kind):
    scene = sample_scene(5, kind)
    back = Scene.from_json(scene.to_json())
    assert back == scene and back.to_json() == scene.to_json()
    pose = start_pose(scene, 1)
    assert _same(render(scene, K, pose, HW, 1.3), render(back, K, pose, HW, 1.3))


def test_depth_is_exact_ray_plane_and_ray_box_intersection():
    scene = _toy_scene()
    hw = (48, 64)
    Ks = intrinsics_from_fov(80.0, hw)
    pose = pose_from_euler(torch.tensor([0.3, -1.5, 0.5], dtype=torch.float64), *torch.tensor([0.1, 0.15, 0.02],
                                                                                              dtype=torch.float64))
    out = render(scene, Ks, pose, hw)
    o, d = camera_rays(Ks, pose, hw)
    o, d = o[0], d[0]
    t_floor = torch.where(d[..., 1] > 0, (0.0 - o[1]) / d[..., 1], math.inf)
    t_wall = (5.0 - o[2]) / d[..., 2]
    p = o + t_wall[..., None] * d
    on_wall = (d[..., 2] > 0) & (p[..., 0].abs() <= 2.0) & (p[..., 1] >= -3.0) & (p[..., 1] <= 0.0)
    t_wall = torch.where(on_wall, t_wall, math.inf)
    expected = torch.minimum(t_floor, t_wall)
    clear = (t_floor - t_wall).abs() > 1e-3  # skip the floor-wall seam, where either answer is right
    got = out.depth[0].double()
    assert torch.isinf(expected).any() and torch.isfinite(expected).any() and on_wall.any()
    torch.testing.assert_close(got[clear], expected[clear], rtol=1e-7, atol=0.0)
    expected_id = torch.where(torch.isinf(expected), -1, torch.where(t_wall < t_floor, 0, 1)).int()  # wall, floor
    assert torch.equal(out.object_id[0][clear], expected_id[clear])


def test_floor_pixels_of_a_sampled_scene_lie_on_the_floor(indoor):
    pose = start_pose(indoor, 2)
    pose = pose_from_euler(pose[:3, 3], *torch.tensor([0.3, -0.6, 0.0], dtype=torch.float64))  # look down
    out = render(indoor, K, pose, HW)
    points = backproject_depth(out.depth, K, pose)[0].double()
    ids = out.object_id[0]
    floor_ids = [i for i, b in enumerate(indoor.boxes) if b.lo[1] == 0.0 and b.hi[1] > 0.0]
    on_floor = torch.isin(ids, torch.tensor(floor_ids, dtype=torch.int32))
    assert on_floor.sum() > 20
    assert points[on_floor][:, 1].abs().max() < 1e-5


def test_sky_only_outdoors_and_masks_agree(indoor, outdoor):
    for scene, has_sky in ((indoor, False), (outdoor, True)):
        for k in range(4):
            pose = start_pose(scene, k)
            up = pose_from_euler(pose[:3, 3], *torch.tensor([0.5 * k, 1.2, 0.0], dtype=torch.float64))
            out = render(scene, K, torch.stack([pose, up]), HW)
            assert torch.equal(out.sky_mask, torch.isinf(out.depth))
            assert torch.equal(out.sky_mask, out.object_id == -1)
            assert bool(out.sky_mask[1].any()) == has_sky
            assert torch.isfinite(out.depth[~out.sky_mask]).all() and (out.depth[~out.sky_mask] > 0).all()


def test_dynamic_mask_is_the_mover_ids(indoor):
    pose = _facing_mover(indoor, 0.0)
    out = render(indoor, K, pose, HW)
    assert torch.equal(out.dynamic_mask, out.object_id >= indoor.n_static)
    assert out.dynamic_mask.any()
    assert out.object_id.max() < indoor.n_static + len(indoor.movers)


def test_moving_objects_change_only_dynamic_pixels(indoor):
    pose = _facing_mover(indoor, 0.0)
    a, b = render(indoor, K, pose, HW, 0.0, supersample=1), render(indoor, K, pose, HW, 1.0, supersample=1)
    changed = (a.rgb != b.rgb).any(-1) | (a.depth != b.depth)
    assert changed.any()
    assert not (changed & ~(a.dynamic_mask | b.dynamic_mask)).any()
    # Anti-aliased colour also changes on the movers' one-pixel fringe (rays off the pixel centre hit them).
    a, b = render(indoor, K, pose, HW, 0.0), render(indoor, K, pose, HW, 1.0)
    fringe = F.max_pool2d((a.dynamic_mask | b.dynamic_mask).float()[:, None], 3, stride=1, padding=1)[:, 0] > 0
    changed = (a.rgb != b.rgb).any(-1)
    assert changed.any() and not (changed & ~fringe).any()


def test_supersampling_averages_the_fine_render(indoor):
    pose = _facing_mover(indoor, 0.0)
    coarse = render(indoor, K, pose, HW, 0.5, supersample=2)
    fine = render(indoor, scale_intrinsics(K, HW, (2 * HW[0], 2 * HW[1])), pose, (2 * HW[0], 2 * HW[1]), 0.5,
                  supersample=1)
    mean = fine.rgb.float().unflatten(1, (HW[0], 2)).unflatten(3, (HW[1], 2)).mean(dim=(2, 4))
    assert (coarse.rgb.float() - mean).abs().max() <= 1.0  # the 8-bit rounding of the fine frame
    assert torch.equal(coarse.depth, render(indoor, K, pose, HW, 0.5, supersample=1).depth)
    with pytest.raises(ValueError, match="supersample"):
        render(indoor, K, pose, HW, supersample=0)


def test_paths_are_periodic_closed_form():
    circle = Path("circle", (1.0, -0.5, 2.0), (2.0, 0.0, 1.0), period=4.0, phase=0.25)
    np.testing.assert_allclose(circle.position(1.3), circle.position(5.3), atol=1e-12)
    np.testing.assert_allclose(circle.position(0.0), [1.0, -0.5, 3.0], atol=1e-12)
    line = Path("line", (0.0, -1.0, 0.0), (3.0, 0.0, 0.0), period=2.0)
    np.testing.assert_allclose(line.position(np.array([0.0, 0.5, 1.5])),
                               [[0.0, -1.0, 0.0], [3.0, -1.0, 0.0], [-3.0, -1.0, 0.0]], atol=1e-12)


def test_texture_is_fixed_to_the_surface(indoor):
    """The same 3D point seen from two cameras gets the same colour (lighting depends only on the normal)."""
    pose = start_pose(indoor, 7)
    out = render(indoor, K, pose, HW, supersample=1)  # colour of the pixel-centre ray
    points = backproject_depth(out.depth, K, pose)[0].double().reshape(-1, 3)
    ids = out.object_id[0].reshape(-1)
    colors = out.rgb[0].reshape(-1, 3)
    rng = np.random.default_rng(0)
    pick = torch.from_numpy(rng.choice(len(points), 120, replace=False))
    eye = pose[:3, 3]
    poses, keep = [], []
    for i in pick.tolist():
        for _ in range(10):
            other = eye + torch.from_numpy(rng.uniform(-0.8, 0.8, 3))
            if indoor.segment_is_free(eye.numpy(), other.numpy()):
                break
        else:
            continue
        try:
            poses.append(look_at(other, points[i]))
            keep.append(i)
        except ValueError:
            continue
    one = torch.tensor([[100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    poses = torch.stack(poses)
    seen = render(indoor, one, poses, (1, 1), supersample=1)  # the single pixel's ray is the optical axis through the point
    distance = (points[keep] - poses[:, :3, 3]).norm(dim=-1)
    unoccluded = (seen.depth[:, 0, 0] - distance).abs() < 1e-4 * distance
    assert unoccluded.sum() > 60
    assert torch.equal(seen.object_id[unoccluded, 0, 0], ids[keep][unoccluded])
    diff = (seen.rgb[:, 0, 0].int() - colors[keep].int()).abs().amax(-1)[unoccluded]
    assert (diff <= 1).float().mean() > 0.98, diff


def test_albedo_depends_only_on_the_point_and_normal():
    n = 500
    points = torch.randn(3, n, dtype=torch.float64) * 5
    normals = torch.nn.functional.normalize(torch.randn(3, n, dtype=torch.float64), dim=0)
    texture = torch.arange(n) % len(TEXTURES)
    scale = torch.full((n,), 0.4, dtype=torch.float64)
    a, b = torch.rand(3, n), torch.rand(3, n)
    seed = seed_offset(torch.full((n,), 99))
    full = albedo(points, normals, texture, scale, a, b, seed)
    perm = torch.randperm(n)
    shuffled = albedo(points[:, perm], normals[:, perm], texture[perm], scale[perm], a[:, perm], b[:, perm], seed[perm])
    assert torch.equal(full[:, perm], shuffled)
    assert ((full >= 0) & (full <= 1)).all() and full.std() > 0.05


def test_lighting_varies_with_surface_orientation():
    plain = Material("noise", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1.0, 0)
    scene = Scene(kind="indoor", boxes=(Box((-1.0, -1.0, 3.0), (1.0, 0.0, 5.0), plain),), capsules=(), planes=(),
                  movers=(), sky=False, light_dir=(0.6, -0.8, 0.0), ambient=0.3, sky_zenith=(0.0, 0.0, 0.0),
                  sky_horizon=(0.0, 0.0, 0.0), areas=((-3.0, -3.0, 3.0, 3.0),))
    out = render(scene, K, look_at((2.5, -2.5, 1.0), (0.0, -0.5, 4.0)), HW, supersample=1)  # flat shades, no edge blends
    shades = {tuple(c) for c in out.rgb[0][out.object_id[0] == 0].tolist()}
    assert len(shades) == 3  # top, side facing the light, side away from it


def test_collision_queries():
    scene = _toy_scene()
    assert scene.is_free((0.0, -1.5, 2.0))
    assert not scene.is_free((0.0, -1.5, 5.1))  # inside the wall
    assert not scene.is_free((0.0, -1.5, 4.95), radius=0.1)  # too close to it
    assert not scene.is_free((0.0, 0.05, 2.0))  # under the floor
    assert not scene.segment_is_free((0.0, -1.5, 2.0), (0.0, -1.5, 5.5))  # through the wall
    assert scene.segment_is_free((0.0, -1.5, 2.0), (1.0, -1.0, 4.5))
    assert not scene.segment_is_free((0.0, -1.5, 2.0), (0.0, -1.5, 100.0))  # leaves the scene bounds


def test_sampled_walls_block_and_start_poses_are_free(indoor):
    walls = [b for b in indoor.boxes if b.hi[1] == 0.0 and b.lo[1] < -2.5 and min(np.subtract(b.hi, b.lo)) <= 0.25]
    assert len(walls) >= 4
    for wall in walls:
        lo, hi = np.array(wall.lo), np.array(wall.hi)
        centre = (lo + hi) / 2
        centre[1] = -1.5
        axis = int(np.argmin(hi - lo))
        a, b = centre.copy(), centre.copy()
        a[axis], b[axis] = lo[axis] - 0.3, hi[axis] + 0.3
        assert not indoor.segment_is_free(a, b)
    for k in range(5):
        pose = start_pose(indoor, k)
        assert indoor.is_free(pose[:3, 3].numpy(), radius=0.3)


def test_batched_render_equals_single_renders(outdoor):
    poses = torch.stack([start_pose(outdoor, k) for k in range(3)])
    Ks = torch.stack([intrinsics_from_fov(fov, HW) for fov in (60.0, 75.0, 90.0)])
    times = torch.tensor([0.0, 0.4, 2.5])
    batch = render(outdoor, Ks, poses, HW, times)
    for b in range(3):
        single = render(outdoor, Ks[b], poses[b], HW, float(times[b]))
        assert _same(batch, single, slice(b, b + 1))
    assert render(outdoor, K, poses, HW).rgb.shape == (3, *HW, 3)


def test_depth_only_render_is_the_full_renders_depth(indoor, outdoor):
    for scene in (indoor, outdoor):
        poses = torch.stack([start_pose(scene, k) for k in range(2)])
        times = torch.tensor([0.0, 1.5])
        assert torch.equal(render_depth(scene, K, poses, HW, times), render(scene, K, poses, HW, times).depth)
    with pytest.raises(ValueError):
        render_depth(outdoor, K, poses, HW, math.nan)


def test_tiled_and_per_primitive_visibility_agree(indoor, outdoor, monkeypatch):
    from mirage_env.sim import renderer

    for scene in (indoor, outdoor):
        poses = torch.stack([start_pose(scene, k) for k in range(3)])
        monkeypatch.setattr(renderer, "TEST_OVERHEAD", 0)  # per-primitive rectangles
        one_by_one = render(scene, K, poses, HW, 0.5)
        monkeypatch.setattr(renderer, "TEST_OVERHEAD", 10**12)  # batched per tile
        assert _same(render(scene, K, poses, HW, 0.5), one_by_one)


def test_bad_inputs_raise(outdoor):
    pose = start_pose(outdoor, 0)
    nan_pose = pose.clone()
    nan_pose[0, 3] = math.nan
    singular = pose.clone()
    singular[:3, :3] = 0.0
    with pytest.raises(ValueError):
        render(outdoor, K, nan_pose, HW)
    with pytest.raises(ValueError):
        render(outdoor, K, singular, HW)
    with pytest.raises(ValueError):
        render(outdoor, K[:2], pose, HW)
    with pytest.raises(ValueError):
        render(outdoor, K.expand(2, 2, 3, 3), pose, HW)
    with pytest.raises(ValueError):
        render(outdoor, K, pose.expand(2, 4, 4), HW, torch.zeros(3))
    with pytest.raises(ValueError):
        render(outdoor, K, pose, (0, 4))
    with pytest.raises(ValueError):
        render(outdoor, K, pose, HW, math.nan)
    with pytest.raises(ValueError):
        outdoor.is_free((0.0, math.nan, 0.0))
    with pytest.raises(ValueError):
        sample_scene(0, "underwater")


def test_movers_stay_in_their_area_and_on_the_floor(indoor, outdoor):
    for scene in (indoor, outdoor):
        assert scene.movers
        for mover in scene.movers:
            lo_off, hi_off = mover.offsets()
            bottom = mover.path.position(np.linspace(0, mover.path.period, 50))[:, 1] + hi_off[1]
            assert (bottom < 0).all() and (bottom > -0.7).all()
            for part in mover.parts(0.3):
                assert isinstance(part, (Box, Capsule))
    ball = Mover("ball", (0.3, 0.0, 0.0), GREY, Path("line", (0.0, -0.31, 2.0), (3.0, 0.0, 0.0), 2.0))
    scene = _toy_scene([ball])
    assert scene.bounds[1][0] == pytest.approx(3.3) and scene.n_static == 2
