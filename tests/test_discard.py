"""The memory against the simulator's ground truth, and dynamic-object discard."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mirage_env.geometry import backproject_depth, intrinsics_from_fov, project_points, scale_intrinsics
from mirage_env.geometry.trajectories import from_velocities
from mirage_env.memory import LatentSpatialMemory, MemoryConfig
from mirage_env.memory.discard import DiscardConfig, discard_dynamic, grow
from mirage_env.sim import Mover, Path, Scene, render, sample_scene, start_pose
from mirage_env.sim.textures import Material

HW = (48, 48)
K = intrinsics_from_fov(70.0, HW)


def static_scene(seed: int, kind: str = "indoor") -> tuple[Scene, torch.Tensor]:
    scene = sample_scene(seed, kind, n_movers=0)
    return scene, start_pose(scene, seed)


def memory_of_view(scene: Scene, pose: torch.Tensor, voxel_size: float = 0.01) -> LatentSpatialMemory:
    """A memory holding one static render lifted at latent resolution (depth rendered on the latent grid)."""
    view = render(scene, K, pose, HW)
    kept = discard_dynamic(view.depth, K[None], pose[None], HW, sky_mask=view.sky_mask)
    memory = LatentSpatialMemory(MemoryConfig(feature_dim=3, voxel_size=voxel_size))
    latents = view.rgb.permute(0, 3, 1, 2).float() / 255
    memory.write(latents, kept.cell_depth, K, pose, keep_mask=kept.keep_mask)
    return memory


@pytest.mark.parametrize("seed,kind", [(0, "indoor"), (1, "outdoor")])
def test_lift_and_read_back_reproduces_the_render_exactly(seed, kind):
    scene, pose = static_scene(seed, kind)
    view = render(scene, K, pose, HW)
    memory = memory_of_view(scene, pose, voxel_size=0.001)
    read = memory.read(K[None], pose[None], HW)
    ground = torch.isfinite(view.depth)
    assert torch.equal(read.mask, ground)  # everything but the sky, nothing else
    assert torch.allclose(read.depth[read.mask], view.depth[read.mask], rtol=1e-5)
    colours = view.rgb.permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(read.features.permute(0, 2, 3, 1)[read.mask], colours.permute(0, 2, 3, 1)[read.mask])


MOVES = {
    "forward": [0.0, 0.0, 0.3, 0.0, 0.0, 0.0],
    "back": [0.0, 0.0, -0.3, 0.0, 0.0, 0.0],
    "strafe-and-turn": [0.1, 0.0, 0.0, math.radians(5.0), 0.0, 0.0],
    "turn": [0.0, 0.0, 0.0, math.radians(8.0), 0.0, 0.0],
}


def window_range(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest and farthest finite depth in the 3x3 window of every pixel of [B, h, w] (sky counts as far)."""
    finite = torch.where(torch.isfinite(depth), depth, torch.full_like(depth, 1e6))[:, None]
    return -F.max_pool2d(-finite, 3, 1, 1)[:, 0], F.max_pool2d(finite, 3, 1, 1)[:, 0]


def seen_from(depth: torch.Tensor, pose: torch.Tensor, first_depth: torch.Tensor, first_pose: torch.Tensor):
    """Cells of a render whose surface was visible in an earlier render (same surface within 2 %, +-1 cell)."""
    points = backproject_depth(depth.nan_to_num(posinf=0.0), K, pose).reshape(-1, 3)
    uv, z = project_points(points, K, first_pose)
    px, py = uv[0, :, 0].round().long(), uv[0, :, 1].round().long()
    inside = (px >= 0) & (px < HW[1]) & (py >= 0) & (py < HW[0]) & (z[0] > 0)
    near, far = window_range(first_depth)
    at = py.clamp(0, HW[0] - 1) * HW[1] + px.clamp(0, HW[1] - 1)
    zf = z[0].float()
    seen = inside & (zf >= near.flatten()[at] * 0.98) & (zf <= far.flatten()[at] * 1.02)
    return seen.reshape(depth.shape) & torch.isfinite(depth)


@pytest.mark.parametrize("move", list(MOVES))
@pytest.mark.parametrize("seed,kind", [(0, "indoor"), (2, "indoor"), (3, "outdoor")])
def test_read_after_moving_agrees_with_a_fresh_render(seed, kind, move):
    """>= 95 % of covered cells within 2 % of the fresh render's depth, on the part of the scene the memory saw.

    A point is drawn at the cell centre nearest to where it projects, up to half a cell away, so the fresh depth
    is taken over the cell and its 8 neighbours (on a floor near the horizon depth changes by more than 2 % per
    half cell, and a strict per-cell comparison would measure that rounding, not the memory). Cells showing
    geometry that the first view never saw (it was behind or beside the camera) are left out.
    """
    scene, pose = static_scene(seed, kind)
    memory = memory_of_view(scene, pose, voxel_size=0.02)
    moved = from_velocities(pose, torch.tensor([MOVES[move]]))[-1]
    read = memory.read(K[None], moved[None], HW)
    fresh = render(scene, K, moved, HW).depth
    near, far = window_range(fresh)
    covered = read.mask & seen_from(fresh, moved, render(scene, K, pose, HW).depth, pose)
    agree = covered & (read.depth >= near * 0.98) & (read.depth <= far * 1.02)
    assert covered.float().mean() > 0.5
    assert agree.sum() / covered.sum() >= 0.95


def scene_with_ball(seed: int) -> tuple[Scene, torch.Tensor, Mover]:
    """A static scene and a red ball 1.6 m in front of the start camera that moves 1.5 m sideways."""
    scene, pose = static_scene(seed)
    centre = pose[:3, 3] + 1.6 * pose[:3, 2]
    sideways = 1.5 * pose[:3, 0]
    ball = Mover("ball", (0.3, 0.0, 0.0), Material("checker", (0.9, 0.1, 0.1), (0.6, 0.0, 0.0), 0.2, 7),
                 Path("line", tuple(centre.tolist()), tuple(sideways.tolist()), period=4.0))
    return dataclasses.replace(scene, movers=(ball,)), pose, ball


def segment(scene: Scene, pose: torch.Tensor, times: list[float]):
    poses = from_velocities(pose, torch.tensor([[0.03, 0.0, 0.0, math.radians(1.0), 0.0, 0.0]] * (len(times) - 1)))
    view = render(scene, K, poses, HW, time=torch.tensor(times))
    return view, poses


def test_discard_flags_the_moving_ball_from_depth_alone():
    scene, pose, _ = scene_with_ball(0)
    view, poses = segment(scene, pose, [0.0, 0.3, 0.6, 0.9])
    result = discard_dynamic(view.depth, K.expand(4, 3, 3), poses, HW, sky_mask=view.sky_mask)
    truth = view.dynamic_mask
    flagged = result.dynamic
    assert truth.any()
    precision = (flagged & truth).sum() / flagged.sum()
    recall = (flagged & truth).sum() / truth.sum()
    static_kept = (result.keep_mask & ~truth).sum() / (~truth & (result.cell_depth > 0)).sum()
    assert precision >= 0.9 and recall >= 0.8 and static_kept >= 0.95
    s = result.stats
    assert s.inconsistent == int(flagged.sum()) and s.kept == int(result.keep_mask.sum())
    assert s.cells == 4 * HW[0] * HW[1] and s.external_mask == 0


def test_external_mask_and_sky_are_never_written():
    scene, pose = static_scene(1, "outdoor")
    view = render(scene, K, pose, HW)
    assert view.sky_mask.any()
    mask = torch.zeros_like(view.dynamic_mask)
    mask[:, 10:20, 10:20] = True
    mask &= ~view.sky_mask
    result = discard_dynamic(view.depth, K[None], pose[None], HW, dynamic_mask=mask, sky_mask=view.sky_mask)
    assert not result.keep_mask[mask].any() and not result.keep_mask[view.sky_mask].any()
    assert result.stats.external_mask == int(mask.sum()) and result.stats.sky_or_far == int(view.sky_mask.sum())
    assert torch.all(result.cell_depth[view.sky_mask] == 0)


def test_far_limit_drops_distant_cells():
    scene, pose = static_scene(3, "outdoor")
    view = render(scene, K, pose, HW)
    result = discard_dynamic(view.depth, K[None], pose[None], HW, DiscardConfig(far=5.0))
    assert not result.keep_mask[view.depth > 5.0].any()
    assert result.keep_mask[torch.isfinite(view.depth) & (view.depth < 4.5)].float().mean() > 0.95


def test_free_space_eviction_removes_an_object_that_left():
    scene, pose, ball = scene_with_ball(0)
    memory = LatentSpatialMemory(MemoryConfig(feature_dim=3, voxel_size=0.02))
    first = render(scene, K, pose, HW, time=0.0)  # a missed detection: the ball is written into the memory
    memory.write(first.rgb.permute(0, 3, 1, 2).float() / 255, first.depth.nan_to_num(posinf=0.0), K, pose)
    centre = torch.tensor(ball.path.position(0.0), dtype=torch.float32)
    near_ball = lambda: int(((memory.positions - centre).norm(dim=1) < 0.3 + 0.03).sum())  # noqa: E731
    ball_voxels = near_ball()
    assert ball_voxels > 20
    view, poses = segment(scene, pose, [1.0, 1.1, 1.2, 1.3])  # a quarter period later the ball is 1.5 m away
    before = len(memory)
    result = discard_dynamic(view.depth, K.expand(4, 3, 3), poses, HW, sky_mask=view.sky_mask, memory=memory)
    assert near_ball() == 0
    assert result.stats.evicted == before - len(memory)
    print(f"evicted {result.stats.evicted} of {before} voxels; {ball_voxels} were the ball's")
    assert result.stats.evicted <= ball_voxels + 0.05 * before  # the static scene stays


def test_bad_segments_raise_and_leave_the_memory_unchanged():
    scene, pose = static_scene(0)
    memory = memory_of_view(scene, pose)
    state = {k: v.clone() for k, v in memory.state_dict().items()}
    view = render(scene, K, pose, HW)
    nan_depth = view.depth.clone()
    nan_depth[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        discard_dynamic(nan_depth, K[None], pose[None], HW, memory=memory)
    with pytest.raises(ValueError, match="integer multiple"):
        discard_dynamic(view.depth, K[None], pose[None], (5, 7), memory=memory)
    with pytest.raises(ValueError, match="dynamic_mask"):
        discard_dynamic(view.depth, K[None], pose[None], HW, dynamic_mask=torch.ones(1, 3, 3, dtype=torch.bool))
    singular = pose.clone()
    singular[:3, :3] = 0
    with pytest.raises(ValueError, match="singular"):
        discard_dynamic(view.depth, K[None], singular[None], HW, memory=memory)
    for k, v in memory.state_dict().items():
        assert torch.equal(v, state[k])


def test_discard_at_pixel_resolution_pools_to_the_latent_grid():
    scene, pose = static_scene(0)
    big = (96, 96)
    K_big = intrinsics_from_fov(70.0, big)
    view = render(scene, K_big, pose, big)
    result = discard_dynamic(view.depth, K_big[None], pose[None], HW)
    assert result.keep_mask.shape == (1, *HW)
    small = render(scene, scale_intrinsics(K_big, big, HW), pose, HW)
    valid = result.cell_depth > 0
    assert valid.float().mean() > 0.9
    rel = ((result.cell_depth - small.depth).abs() / small.depth)[valid]
    assert float(np.median(rel.numpy())) < 0.02


@pytest.mark.parametrize("seed,kind", [(4, "indoor"), (5, "outdoor"), (6, "indoor")])
def test_static_geometry_is_never_flagged(seed, kind):
    """Each cell's nearest pixel is a real surface point, so a static scene contradicts no frame: silhouettes,
    thin shelf boards and grazing floors included (exact depth, the camera walking and turning)."""
    scene, pose = static_scene(seed, kind)
    poses = from_velocities(pose, torch.tensor([[0.04, 0.0, 0.08, math.radians(4.0), 0.0, 0.0]] * 7))
    big = (96, 96)
    K_big = intrinsics_from_fov(70.0, big)
    view = render(scene, K_big, poses, big, supersample=1)
    result = discard_dynamic(view.depth, K_big.expand(8, 3, 3), poses, HW, sky_mask=view.sky_mask)
    assert result.stats.kept > 0.5 * result.stats.cells and not result.dynamic.any()


def test_history_lets_single_frame_segments_find_movers():
    """Segments of one frame (the RL world) have no other frame of their own: the previous calls' frames vote."""
    scene, pose, _ = scene_with_ball(0)
    view, poses = segment(scene, pose, [0.0, 0.3, 0.6, 0.9])
    alone, history = [], None
    for j in range(4):
        result = discard_dynamic(view.depth[j:j + 1], K[None], poses[j:j + 1], HW, sky_mask=view.sky_mask[j:j + 1],
                                 history=history)
        history = result.history
        alone.append(discard_dynamic(view.depth[j:j + 1], K[None], poses[j:j + 1], HW).dynamic)
        assert history.depth.shape == (min(j + 1, DiscardConfig().history_frames), *HW)
        truth = view.dynamic_mask[j]
        if j:
            hits = (result.dynamic & truth).sum()
            assert hits >= 0.8 * truth.sum() and hits >= 0.9 * result.dynamic.sum()
    assert not torch.stack(alone).any()


def test_history_keeps_the_last_frames_and_bad_history_raises_before_eviction():
    scene, pose, _ = scene_with_ball(0)
    view, poses = segment(scene, pose, [0.0, 0.3, 0.6, 0.9])
    config = DiscardConfig(history_frames=3)
    first = discard_dynamic(view.depth[:2], K.expand(2, 3, 3), poses[:2], HW, config)
    second = discard_dynamic(view.depth[2:], K.expand(2, 3, 3), poses[2:], HW, config, history=first.history)
    assert torch.equal(second.history.depth[0], first.history.depth[1]) and second.history.cameras.shape == (3, 16)
    assert DiscardConfig(history_frames=0) and discard_dynamic(
        view.depth[:2], K.expand(2, 3, 3), poses[:2], HW, DiscardConfig(history_frames=0)).history.depth.shape[0] == 0
    memory = memory_of_view(scene, pose)
    before = len(memory)
    wrong = first.history._replace(depth=first.history.depth[:, :-1])
    with pytest.raises(ValueError, match="history"):
        discard_dynamic(view.depth[2:], K.expand(2, 3, 3), poses[2:], HW, history=wrong, memory=memory)
    with pytest.raises(TypeError, match="DiscardHistory"):
        discard_dynamic(view.depth[2:], K.expand(2, 3, 3), poses[2:], HW, history=(1, 2), memory=memory)
    assert len(memory) == before
    with pytest.raises(ValueError, match="grow_tolerance"):
        DiscardConfig(grow_tolerance=1.0)
    with pytest.raises(ValueError, match="history_frames"):
        DiscardConfig(history_frames=-1)


def test_grow_follows_continuous_depth_only():
    depth = torch.tensor([[[1.0, 1.01, 1.02, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0]]])
    flags = torch.zeros(1, 2, 5, dtype=torch.bool)
    flags[0, 0, 0] = True
    allowed = torch.ones_like(flags)
    allowed[0, 1, 0] = False
    one = grow(flags, depth, allowed, 1, 0.03)
    assert one.tolist() == [[[True, True, False, False, False], [False, False, False, False, False]]]
    many = grow(flags, depth, allowed, 10, 0.03)  # never across the 1.02 -> 2.0 step, never into a disallowed cell
    assert many.tolist() == [[[True, True, True, False, False], [False, True, True, True, True]]]
    assert torch.equal(grow(flags, depth, allowed, 0, 0.03), flags)


def test_the_discard_benchmark_small_mode(tmp_path):
    """The benchmark's small mode runs both methods on episodes and writes the documented JSON."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "dynamic_discard.py")
    out = tmp_path / "discard.json"
    subprocess.run([sys.executable, script, "--small", "--scenes", "2", "--out", str(out)], check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    report = json.loads(out.read_text())
    tune, test = report["tune_seeds"], report["report_seeds"]
    assert tune[1] < test[0] or test[1] < tune[0]  # disjoint ranges
    assert report["seeds"] == [test[0], test[0] + 1] and len(report["episodes"]) == 2
    for method in ("today", "new"):
        figures = report["summary"][method]["all"]
        assert set(figures) == {"precision", "recall", "static_kept"}
        assert figures["recall"]["low"] <= figures["recall"]["value"] <= figures["recall"]["high"]
        assert report["summary"][method]["ghost_voxels"] >= 0
    assert report["config"] == DiscardConfig().__dict__
