"""The quality ladder: how close every stage of the segment loop gets to the true frames, step by step.

Along a camera path in a held-out simulator scene, one world generates with its memory and a second one (same
model, same path, same noise seed) with the memory read zeroed. At every RL step the last frame of the step is
compared with the simulator's render at that pose and time, for each rung:

* ``vae``: the true frames of the step through the VAE (encoded as the world encodes a step: the frame before it,
  then its 4 frames): what a perfect generator would score;
* ``read``: the memory read at the step's last pose before generation, decoded alone (what the memory shows);
* ``generated``: the generator with the memory;
* ``zeroed``: the generator with the read zeroed (the ablation);
* ``first_frame``: the first true frame repeated (a generator that never moves);
* ``box_blur``: a 5 x 5 box blur of the true frame (high PSNR, low sharpness: why PSNR alone misleads).

Optional probe rungs ``denoised_<sigma>`` (``probe_sigmas``) split the generator's rung in two: the true latents of
the step noised to ``sigma``, then the denoiser's one-shot clean estimate (:meth:`WanWorldModel.predict_clean`),
with the same conditioning as the generator. Near the ``vae`` rung at low sigma and far below it at high sigma, the
denoiser can keep detail it is given but cannot make detail the conditioning does not carry; ``generated`` near
``denoised_1`` (the mean guess from pure noise) means sampling ends at that guess. The probe rung ``oracle_read``
(``probe_oracle``) is the generator, sampled as in the env, with a perfect memory: the read replaced by the step's true
latents on every cell. Near ``generated`` it says the model barely uses what the memory shows; near ``vae`` it says a
better memory would carry the picture.

Each rung gets PSNR, SSIM and the gradient energies behind the sharpness ratio
(:func:`mirage_env.metrics.sharpness_ratio`). Paths: ``walk`` (forward with a slight right turn, turning in
place where a wall blocks) and ``loop`` (the rollout's :func:`~mirage_env.geometry.trajectories.pan_path`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from mirage_env.geometry.trajectories import pan_path, walk_path
from mirage_env.metrics import box_blur, gradient_energy, psnr, ssim
from mirage_env.models.interface import SegmentRequest
from mirage_env.sim import render, scene_by_seed, start_pose
from mirage_env.video import to_uint8, to_unit
from mirage_env.world import World
from mirage_env.world.world import Conditioning, segment_request

RUNGS = ("vae", "read", "generated", "zeroed", "first_frame", "box_blur")
ORACLE_RUNG = "oracle_read"
PATHS = ("walk", "loop")
QUALITY_FIRST_SCENE = 300_000  # held-out scene seeds of the ladder (training uses seeds < 100_000)


@dataclass
class LadderEpisode:
    """Per-step metrics of one episode: ``metrics[rung][name]`` is a list over steps 1..N (rungs: :data:`RUNGS`, then
    any probe rungs; name: ``psnr``, ``ssim``, ``energy``), ``truth_energy`` the true frames' gradient energies;
    ``frames`` the uint8 [N + 1, H, W, 3] frames of the true, generated and zeroed rows (step 0 is the start
    frame)."""

    scene: int
    path: str
    metrics: dict[str, dict[str, list[float]]]
    truth_energy: list[float]
    frames: dict[str, torch.Tensor]


def camera_path(name: str, scene, start: torch.Tensor, frames: int) -> torch.Tensor:
    """The ``frames + 1`` pixel-frame poses of path ``name`` from ``start``."""
    if name == "walk":
        return walk_path(scene, start, frames, forward_m=0.03, yaw_deg=0.5)
    if name == "loop":
        return pan_path(scene, start, 2 * frames)[: frames + 1]
    raise ValueError(f"path must be one of {PATHS}, got {name!r}")


def probe_rung(sigma: float) -> str:
    """Name of the probe rung at noise level ``sigma``."""
    return f"denoised_{sigma:g}"


@torch.no_grad()
def ladder_episode(world: World, zeroed: World, scene_seed: int, path: str = "walk", steps: int = 24,
                   probe_sigmas: Sequence[float] = (), probe_oracle: bool = False) -> LadderEpisode:
    """Run both worlds (batch size 1; ``zeroed`` with ``WorldConfig(zero_memory=True)``) along ``path`` in scene
    ``scene_seed`` for ``steps`` RL steps and score every rung (see the module docstring), plus a probe rung per
    entry of ``probe_sigmas`` (needs a model with ``predict_clean``) and the ``oracle_read`` rung if
    ``probe_oracle``."""
    if world.batch_size != 1 or zeroed.batch_size != 1 or not zeroed.config.zero_memory:
        raise ValueError("the ladder needs two one-world Worlds, the second with zero_memory=True")
    if probe_sigmas and not hasattr(world.model, "predict_clean"):
        raise ValueError(f"probe rungs need a model with predict_clean, got {type(world.model).__name__}")
    model, f = world.model, world.frames_per_step
    scene = scene_by_seed(scene_seed)
    poses = camera_path(path, scene, start_pose(scene, scene_seed), steps * f)
    K, hw = world.default_intrinsics(), world.config.image_hw
    first = world.reset_in_scene(0, scene, poses[0], seed=scene_seed)
    zeroed.reset_in_scene(0, scene, poses[0], seed=scene_seed)
    rungs = RUNGS + tuple(probe_rung(sigma) for sigma in probe_sigmas) + ((ORACLE_RUNG,) if probe_oracle else ())
    metrics = {rung: {"psnr": [], "ssim": [], "energy": []} for rung in rungs}
    rows = {"truth": [first.image], "generated": [first.image], "zeroed": [first.image]}
    truth_energy = []
    previous = first.image
    for k in range(1, steps + 1):
        step_poses = poses[(k - 1) * f + 1: k * f + 1]
        times = torch.arange((k - 1) * f + 1, k * f + 1) / world.config.fps
        truth = render(scene, K.expand(f, 3, 3), step_poses, hw, time=times).rgb  # [f, H, W, 3]
        condition = world.step_condition(0, step_poses.double())  # before generation
        read = condition.read.features[-1]  # [C, h, w] at the step's last pose
        true_latents = model.encode(to_unit(torch.cat([previous[None], truth]))[None])
        probed = _probe(world, condition, true_latents, probe_sigmas, probe_oracle, scene_seed * 1000 + k)
        shown = {
            "read": to_uint8(model.decode(read[None, :, None]))[0, 0],
            "generated": world.step(step_poses[None]).frames[0, -1],
            "zeroed": zeroed.step(step_poses[None]).frames[0, -1],
            "vae": to_uint8(model.decode(true_latents))[0, -1],
            "first_frame": first.image,
            "box_blur": box_blur(truth[-1]),
            **probed,
        }
        target = truth[-1]
        for rung in rungs:
            metrics[rung]["psnr"].append(psnr(shown[rung], target))
            metrics[rung]["ssim"].append(ssim(shown[rung], target))
            metrics[rung]["energy"].append(float(gradient_energy(shown[rung])))
        truth_energy.append(float(gradient_energy(target)))
        rows["truth"].append(target)
        rows["generated"].append(shown["generated"])
        rows["zeroed"].append(shown["zeroed"])
        previous = target
    return LadderEpisode(scene_seed, path, metrics, truth_energy, {k: torch.stack(v) for k, v in rows.items()})


def oracle_request(request: SegmentRequest, true_latents: torch.Tensor) -> SegmentRequest:
    """``request`` with a perfect memory: the read of the new frames is their true latents [B, C, 1 + t, h, w] on
    every cell."""
    features, mask = request.memory_features.clone(), request.memory_mask.clone()
    features[:, :, 1:] = true_latents[:, :, 1:].to(features)
    mask[:, :, 1:] = 1
    return replace(request, memory_features=features, memory_mask=mask)


def _probe(world: World, condition: Conditioning, true_latents: torch.Tensor, sigmas: Sequence[float],
           oracle: bool, seed: int) -> dict[str, torch.Tensor]:
    """The probe rungs' last frames for the coming step of ``world``, conditioned as :meth:`World.step` will be
    (``condition``: :meth:`World.step_condition`)."""
    if not sigmas and not oracle:
        return {}
    request = segment_request(world.state(0).first_latent[None], [condition])
    generator = torch.Generator().manual_seed(seed)
    estimates = {probe_rung(sigma): world.model.predict_clean(request, true_latents, sigma, generator)
                 for sigma in sigmas}
    if oracle:
        estimates[ORACLE_RUNG] = world.model.generate(oracle_request(request, true_latents), [generator],
                                                      world.config.num_steps)
    return {rung: to_uint8(world.model.decode(latents))[0, -1] for rung, latents in estimates.items()}
