"""Frame metrics and the revisit protocol used by the quality benchmarks and the shipped-weights test.

Revisit: in a held-out simulator scene the camera turns away for ``out_steps`` RL steps, comes back along the
same path and rests at its start pose for ``rest_steps`` steps, so the last frame is taken at the first frame's
pose. The rest matters because of the VAE: a latent frame stands for 4 pixel frames, and while the camera turns at
6 degrees per frame the tiny VAE reconstructs even the true frames at only about 16 dB against the first frame
(24.7 dB when the camera is still), which would cap every memory alike. Three numbers per episode:

* revisit PSNR / SSIM: the returned frame vs the initial frame (memory consistency);
* ground-truth PSNR: every generated latent-aligned frame vs the simulator's render at the same pose and time, on the
  latent cells the memory covered before the frame was generated (agreement with the true scene where the memory
  had something to say);
* VAE bound: the true frames of the last segment through the VAE (encoded as the world encodes a segment: the frame
  before it alone, then its frames), the last one vs the first frame: what a perfect generator would score.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mirage_env.geometry.trajectories import from_velocities, loop_and_return
from mirage_env.metrics import psnr, ssim
from mirage_env.sim import render, scene_by_seed, start_pose
from mirage_env.video import to_uint8, to_unit
from mirage_env.world import World

HELD_OUT_FIRST_SCENE = 200_000  # scene seeds from here on are never used for training (training uses < 100_000)


def revisit_episode(world: World, scene_seed: int, out_steps: int = 4, yaw_deg: float = 6.0,
                    rest_steps: int = 1) -> dict:
    """Run the revisit protocol in world 0 of ``world`` (batch size 1) in scene ``scene_seed``; returns the
    episode's metrics and its first and returned frames (uint8 [H, W, 3])."""
    if world.batch_size != 1:
        raise ValueError("the revisit protocol runs one world (batch_size=1)")
    scene = scene_by_seed(scene_seed)
    pose = start_pose(scene, scene_seed)
    K, hw = world.default_intrinsics(), world.config.image_hw
    first = world.reset_in_scene(0, scene, pose, seed=scene_seed)
    velocity = torch.tensor([[0.0, 0.0, 0.0, math.radians(yaw_deg), 0.0, 0.0]] * world.frames_per_step * out_steps)
    path = loop_and_return(from_velocities(pose, velocity))[1:]
    path = torch.cat([path, path[-1:].expand(world.frames_per_step * rest_steps, 4, 4)])
    gt_psnr, frame, stride = [], 0, world.model.temporal_stride
    for poses in path.split(world.frames_per_step):
        latent_poses = poses[stride - 1::stride]
        segment = world.step(poses[None])
        covered = segment.covered[0]  # what the memory showed before generating
        frame += world.frames_per_step
        times = frame - world.frames_per_step + torch.arange(stride, world.frames_per_step + 1, stride)
        truth = render(scene, K.expand(len(latent_poses), 3, 3), latent_poses, hw, time=times / world.config.fps)
        mask = F.interpolate(covered[:, None].float(), size=hw, mode="nearest")[:, 0] > 0
        if mask.any():
            gt_psnr.append(psnr(segment.frames[0, stride - 1::stride], truth.rgb, mask))
    returned = segment.frames[0, -1]
    last = path[-world.frames_per_step - 1:]
    truth = render(scene, K.expand(len(last), 3, 3), last, hw, time=torch.arange(frame - len(last) + 1, frame + 1)
                   / world.config.fps)
    through_vae = to_uint8(world.model.decode(world.model.encode(to_unit(truth.rgb)[None])))[0, -1]
    return {"scene": scene_seed, "revisit_psnr": psnr(returned, first.image),
            "revisit_ssim": ssim(returned, first.image), "gt_psnr_covered": sum(gt_psnr) / max(1, len(gt_psnr)),
            "vae_bound_psnr": psnr(through_vae, first.image), "first": first.image, "returned": returned}
