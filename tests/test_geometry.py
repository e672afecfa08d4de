import math

import numpy as np
import pytest
import torch

from mirage_env.geometry import (
    backproject_depth,
    euler_from_rotation,
    integrate_velocity,
    intrinsics_from_fov,
    invert_pose,
    look_at,
    pose_from_euler,
    project_points,
    rotation_from_euler,
    scale_intrinsics,
)
from mirage_env.geometry.camera_files import (
    CameraSequence,
    load_geometry_npz,
    load_realestate10k,
    save_geometry_npz,
)
from mirage_env.geometry.trajectories import from_velocities, loop_and_return, orbit, pan_path, straight


def test_scale_intrinsics_keeps_pixel_footprints_aligned():
    K = intrinsics_from_fov(70.0, (64, 96))
    small = scale_intrinsics(K, (64, 96), (4, 6))
    # The centre of latent cell (i, j) is the centre of its 16x16 pixel block.
    ray_big = torch.linalg.solve(K, torch.tensor([16 * 2 + 7.5, 16 * 1 + 7.5, 1.0], dtype=torch.float64))
    ray_small = torch.linalg.solve(small, torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))
    assert torch.allclose(ray_big, ray_small, atol=1e-12)
    assert torch.allclose(scale_intrinsics(small, (4, 6), (64, 96)), K, atol=1e-12)


def test_backproject_then_project_round_trip():
    K = intrinsics_from_fov(60.0, (8, 10))
    c2w = pose_from_euler(torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64),
                          torch.tensor(-0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64))
    depth = torch.rand(1, 8, 10) + 1.0
    points = backproject_depth(depth, K, c2w)
    uv, z = project_points(points.reshape(-1, 3), K, c2w)
    v, u = torch.meshgrid(torch.arange(8.0), torch.arange(10.0), indexing="ij")
    assert torch.allclose(uv[0, :, 0].float(), u.flatten(), atol=1e-4)
    assert torch.allclose(uv[0, :, 1].float(), v.flatten(), atol=1e-4)
    assert torch.allclose(z[0].float(), depth.flatten(), atol=1e-5)


def test_invert_pose():
    c2w = look_at((1.0, -2.0, 3.0), (0.0, 0.0, 0.0))
    assert torch.allclose(invert_pose(c2w) @ c2w, torch.eye(4, dtype=torch.float64), atol=1e-12)


def test_look_at_is_opencv():
    c2w = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 5.0))
    assert torch.allclose(c2w, torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="parallel"):
        look_at((0.0, 0.0, 0.0), (0.0, -1.0, 0.0))


def test_euler_round_trip():
    g = torch.Generator().manual_seed(0)
    yaw = (torch.rand(50, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    pitch = (torch.rand(50, generator=g, dtype=torch.float64) * 2 - 1) * 1.5
    roll = (torch.rand(50, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    got = euler_from_rotation(rotation_from_euler(yaw, pitch, roll))
    for a, b in zip(got, (yaw, pitch, roll)):
        assert torch.allclose(a, b, atol=1e-9)


def test_integrate_velocity_moves_in_camera_frame_and_turns():
    start = look_at((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))  # looking along +x
    moved = integrate_velocity(start, torch.tensor([0.0, 0.0, 2.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(moved[:3, 3], torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64), atol=1e-12)
    turned = integrate_velocity(start, torch.tensor([0.0, 0.0, 0.0, math.pi / 2, 0.0, 0.0]))
    # Positive yaw turns right: the new forward axis is the old right axis.
    assert torch.allclose(turned[:3, 2], start[:3, 0], atol=1e-6)
    up = integrate_velocity(start, torch.tensor([0.0, 0.0, 0.0, 0.0, 0.3, 0.0]))
    assert up[1, 2] < 0  # looking up means forward has a negative y component


def test_pitch_is_clamped():
    pose = torch.eye(4, dtype=torch.float64)
    for _ in range(10):
        pose = integrate_velocity(pose, torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 0.0]), max_pitch=math.radians(80))
    _, pitch, _ = euler_from_rotation(pose[:3, :3])
    assert math.isclose(pitch.item(), math.radians(80), abs_tol=1e-9)


def test_integrate_velocity_batched_matches_single():
    poses = torch.stack([torch.eye(4, dtype=torch.float64), look_at((1.0, 0.0, 0.0), (0.0, 0.0, 2.0))])
    vel = torch.tensor([[0.1, 0.0, 0.2, 0.1, 0.0, 0.0], [0.0, -0.1, 0.0, -0.2, 0.1, 0.05]], dtype=torch.float64)
    batched = integrate_velocity(poses, vel)
    for i in range(2):
        assert torch.allclose(batched[i], integrate_velocity(poses[i], vel[i]))


def test_orbit_looks_at_centre():
    poses = orbit((1.0, 0.0, 2.0), radius=3.0, n=8, height=0.5)
    centre = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    for pose in poses:
        horizontal = pose[:3, 3] - centre
        assert math.isclose(float(torch.hypot(horizontal[0], horizontal[2])), 3.0, rel_tol=1e-9)
        assert math.isclose(float(horizontal[1]), -0.5, abs_tol=1e-12)  # above = -y
        to_centre = (centre - pose[:3, 3]) / (centre - pose[:3, 3]).norm()
        assert torch.allclose(pose[:3, 2], to_centre, atol=1e-12)


def test_straight_and_loop_and_return():
    start = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    path = straight(start, 5, step=(0.0, 0.0, 0.5))
    assert torch.allclose(path[-1, :3, 3], torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))
    loop = loop_and_return(path)
    assert loop.shape[0] == 9 and torch.equal(loop[0], loop[-1]) and torch.equal(loop[4], path[-1])


class _WallAhead:
    """Obstacles for :func:`pan_path`: every move that ends beyond z = ``wall_z`` is blocked."""

    def __init__(self, wall_z: float) -> None:
        self.wall_z = wall_z

    def segment_is_free(self, p0, p1, radius: float) -> bool:
        return p1[2] + radius <= self.wall_z


def test_pan_path_walks_where_free_turns_where_blocked_and_comes_back():
    start = torch.eye(4, dtype=torch.float64)
    free, walled = pan_path(_WallAhead(math.inf), start, 8), pan_path(_WallAhead(0.0), start, 8)
    assert free.shape == walled.shape == (9, 4, 4)
    assert torch.equal(free[0], start) and torch.equal(free[-1], start) and torch.equal(walled[-1], start)
    assert math.isclose(float(free[1, 2, 3]), 0.08, rel_tol=1e-6)  # forward, then turned right
    assert torch.equal(walled[:, :3, 3], torch.zeros(9, 3, dtype=torch.float64))  # blocked: turns on the spot
    assert torch.allclose(walled[:, :3, :3], free[:, :3, :3])
    yaw = [math.degrees(float(euler_from_rotation(pose[:3, :3])[0])) for pose in walled[:5]]
    assert yaw == pytest.approx([0.0, 6.0, 12.0, 18.0, 24.0])


def test_from_velocities():
    start = torch.eye(4, dtype=torch.float64)
    path = from_velocities(start, torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]] * 3))
    assert path.shape == (4, 4, 4)
    assert torch.allclose(path[-1, :3, 3], torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64))


def test_geometry_npz_round_trip(tmp_path):
    t, h, w = 3, 6, 8
    seq = CameraSequence(
        intrinsics=intrinsics_from_fov(60.0, (h, w)).expand(t, 3, 3),
        poses_c2w=orbit((0.0, 0.0, 0.0), 2.0, t),
        depths=torch.rand(t, h, w) + 0.5,
        frames=torch.randint(0, 255, (t, h, w, 3), dtype=torch.uint8),
        masks=torch.rand(t, h, w) > 0.5,
    )
    path = tmp_path / "geometry.npz"
    save_geometry_npz(path, seq)
    back = load_geometry_npz(path)
    assert torch.equal(back.depths, seq.depths)
    assert torch.equal(back.frames, seq.frames) and torch.equal(back.masks, seq.masks)
    assert torch.allclose(back.poses_c2w, seq.poses_c2w, atol=1e-6)
    assert torch.allclose(back.intrinsics, seq.intrinsics.float().double())


def test_geometry_npz_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_geometry_npz(bad)
    missing = tmp_path / "missing.npz"
    np.savez(missing, depths=np.ones((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="intrinsics"):
        load_geometry_npz(missing)
    singular = tmp_path / "singular.npz"
    poses = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    poses[1, :3, :3] = 0
    np.savez(singular, depths=np.ones((2, 4, 4), np.float32), intrinsics=np.eye(3, dtype=np.float32),
             poses_c2w=poses)
    with pytest.raises(ValueError, match="singular"):
        load_geometry_npz(singular)


def _npz(path, **overrides):
    arrays = {"depths": np.ones((2, 4, 4), np.float32), "intrinsics": intrinsics_from_fov(60.0, (4, 4)).numpy(),
              "poses_c2w": np.tile(np.eye(4), (2, 1, 1)), "frames": np.zeros((2, 4, 4, 3), np.uint8)}
    np.savez(path, **{**arrays, **overrides})
    return path


@pytest.mark.parametrize("overrides, message", [
    ({"frames": np.full((2, 4, 4, 3), 0.9)}, "frames must be uint8 .* got float64; convert"),
    ({"frames": np.arange(96).reshape(2, 4, 4, 3) * 3 + 15}, "frames hold values outside \\[0, 255\\] \\(15 .. 300\\)"),
    ({"frames": np.full((2, 4, 4, 3), -1, np.int16)}, "frames hold values outside"),
    ({"frames": np.ones((2, 4, 4, 3), bool)}, "frames must be uint8"),
    ({"masks": np.full((2, 4, 4), 0.5)}, "masks must be bool or integers"),
    ({"depths": np.full((2, 4, 4), np.nan, np.float32)}, "depths contain NaN or negative"),
    ({"depths": np.full((2, 4, 4), -np.inf, np.float32)}, "depths contain NaN or negative"),
    ({"depths": np.array([["a"]])}, "depths must hold numbers, got <U1"),
    ({"depths": np.ones((0, 4, 4), np.float32), "poses_c2w": np.ones((0, 4, 4))}, "depths must hold at least one"),
    ({"intrinsics": np.zeros((3, 3))}, "intrinsics"),
    ({"poses_c2w": np.full((2, 4, 4), np.nan)}, "poses_c2w contains NaN"),
])
def test_geometry_npz_rejects_frames_depths_and_cameras_that_would_load_wrong(tmp_path, overrides, message):
    path = _npz(tmp_path / "geometry.npz", **overrides)
    with pytest.raises(ValueError, match=message) as error:
        load_geometry_npz(path)
    assert str(path) in str(error.value)


def test_geometry_npz_takes_integer_frames_within_0_255_and_integer_masks(tmp_path):
    frames = np.full((2, 4, 4, 3), 255, np.int64)
    sequence = load_geometry_npz(_npz(tmp_path / "g.npz", frames=frames, masks=np.full((2, 4, 4), 255, np.uint8)))
    assert sequence.frames.dtype == torch.uint8 and int(sequence.frames.max()) == 255 and bool(sequence.masks.all())


def test_realestate10k_reader(tmp_path):
    w2c = invert_pose(look_at((1.0, 0.0, -2.0), (0.0, 0.0, 0.0)))
    numbers = [0.5, 0.6, 0.5, 0.5, 0.0, 0.0] + w2c[:3, :4].flatten().tolist()
    text = "https://www.youtube.com/watch?v=x\n" + "\n".join(
        " ".join(str(x) for x in [ts] + numbers) for ts in (1000, 2000)) + "\n"
    path = tmp_path / "cams.txt"
    path.write_text(text)
    seq = load_realestate10k(path, image_hw=(90, 160))
    assert len(seq) == 2
    assert torch.allclose(seq.poses_c2w[0], look_at((1.0, 0.0, -2.0), (0.0, 0.0, 0.0)), atol=1e-12)
    assert math.isclose(seq.intrinsics[0, 0, 0].item(), 80.0)
    assert math.isclose(seq.intrinsics[0, 0, 2].item(), 79.5)  # image centre in pixel-centre coordinates
    assert math.isclose(seq.intrinsics[0, 1, 2].item(), 44.5)
    path.write_text("url\n1 2 3\n")
    with pytest.raises(ValueError, match="19 numbers"):
        load_realestate10k(path, (90, 160))
    path.write_text(text.replace("1000", "nan"))
    with pytest.raises(ValueError, match="timestamps must be finite"):
        load_realestate10k(path, (90, 160))
    path.write_text(text)
    with pytest.raises(TypeError, match="image_hw must be an int or a pair"):
        load_realestate10k(path, "90x160")
