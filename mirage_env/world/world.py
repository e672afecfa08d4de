"""The segment loop: camera -> memory read -> world model -> decode -> depth -> dynamic discard -> memory write.

:class:`World` runs B independent worlds that share one model; every segment of all B worlds is denoised and
decoded in batched forwards. One step generates ``latents_per_step`` new latent frames, that is
``temporal_stride * latents_per_step`` new pixel frames. The first latent of a segment is the previous segment's
last frame re-encoded (clean, re-imposed at every denoising step), so with ``latents_per_step=8`` a rollout has
33 + 32k frames as in Mirage, and with ``latents_per_step=1`` every step adds 4 frames (the RL setting).
Latent i of a segment sits at the pose of its pixel frame ``4 i``.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mirage_env.atomic import atomic_file
from mirage_env.config_checks import check_bool, check_choice, check_int, check_number, check_size
from mirage_env.geometry.camera import backproject_depth, intrinsics_from_fov, scale_intrinsics
from mirage_env.geometry.checks import check_float, check_intrinsics, check_poses, check_shape
from mirage_env.memory import LatentSpatialMemory, MemoryConfig, MemoryRead
from mirage_env.memory.append_only import AppendOnlyLatentMemory
from mirage_env.memory.discard import DiscardConfig, DiscardHistory, DiscardStats, discard_dynamic
from mirage_env.memory.latent_memory import MAX_CAPACITY, MEMORY_DTYPES
from mirage_env.memory.rgb_cache import RgbCacheConfig, RgbPointCache
from mirage_env.memory.voxels import pack_voxel_keys, voxel_coords
from mirage_env.models.depth import Cameras, DepthProvider, MemoryDepth, SimulatorDepth
from mirage_env.models.interface import SegmentRequest, WorldModel
from mirage_env.sim import Scene, render
from mirage_env.video import to_uint8, to_unit
from mirage_env.world.keyframes import KeyframeStore
from mirage_env.world.snapshots import SNAPSHOT_FORMAT, SNAPSHOT_VERSION, check_world_snapshot

MEMORY_KINDS = ("latent", "append", "rgb")


@dataclass(frozen=True)
class WorldConfig:
    """Settings of a :class:`World`.

    ``latents_per_step`` new latent frames per step (1 for RL, 8 for Mirage's 33 + 32k-frame chunks);
    ``num_steps`` denoising steps; ``preceding`` clean latents of context before the segment and ``references``
    retrieved keyframes; memory and discard settings as in :class:`MemoryConfig` and :class:`DiscardConfig`.

    ``memory`` chooses the memory kind: ``"latent"`` (the bounded, voxel-fused latent memory), ``"append"`` (the
    public release's append-only latent memory, :class:`AppendOnlyLatentMemory`) or ``"rgb"`` (an RGB point-cloud
    cache read by rendering and VAE encoding, :class:`RgbPointCache`). The last two are baselines for comparisons:
    they evict no free space, and snapshots (:meth:`World.save` / :meth:`World.load`) work with the latent memory
    only.
    """

    image_hw: tuple[int, int] = (64, 64)
    fov_deg: float = 70.0
    latents_per_step: int = 1
    num_steps: int = 4
    preceding: int = 1
    references: int = 2
    keyframes: int = 64
    fps: float = 16.0
    voxel_size: float = 0.05
    memory_capacity: int = 1 << 18
    memory_dtype: str = "float32"
    discard: DiscardConfig = field(default_factory=DiscardConfig)
    memory: str = "latent"
    zero_memory: bool = False  # ablation: the model is shown an empty memory read (the memory still runs)
    observed_weight: float = 16.0  # fusion weight of observed frames (the reset view); generated frames weigh 1

    def __post_init__(self) -> None:
        check_size("image_hw", self.image_hw)
        check_number("fov_deg", self.fov_deg, 0.0, 180.0, low_open=True, high_open=True)
        check_int("latents_per_step", self.latents_per_step, 1)
        check_int("num_steps", self.num_steps, 1)
        check_int("preceding", self.preceding, 0)
        check_int("references", self.references, 0)
        check_int("keyframes", self.keyframes, 1)
        check_number("fps", self.fps, 0.0, low_open=True)
        check_number("voxel_size", self.voxel_size, 0.0, low_open=True)
        check_int("memory_capacity", self.memory_capacity, 1, MAX_CAPACITY)
        check_choice("memory_dtype", self.memory_dtype, MEMORY_DTYPES)
        if not isinstance(self.discard, DiscardConfig):
            raise TypeError(f"discard must be a DiscardConfig, got {type(self.discard).__name__}")
        check_choice("memory", self.memory, MEMORY_KINDS)
        check_bool("zero_memory", self.zero_memory)
        check_number("observed_weight", self.observed_weight, 1.0)

    @classmethod
    def mirage_chunks(cls, **overrides) -> WorldConfig:
        """Mirage's long-rollout setting: 33-frame chunks (8 new latents), 20 denoising steps."""
        return cls(**{"latents_per_step": 8, "num_steps": 20, **overrides})


@dataclass
class InitialView:
    """What a world starts from: an RGB frame, its z-depth, intrinsics and camera-to-world pose.

    ``image`` uint8 [H, W, 3]; ``depth`` [H, W] (0 or inf where unknown or sky); ``K`` [3, 3] for that size;
    ``c2w`` [4, 4]; optional ``dynamic_mask`` bool [H, W] of pixels never to write into the memory.
    """

    image: torch.Tensor
    depth: torch.Tensor
    K: torch.Tensor
    c2w: torch.Tensor
    dynamic_mask: torch.Tensor | None = None


def check_view(view: InitialView, hw: tuple[int, int] | None = None, name: str = "view",
               labels: dict[str, str] | None = None) -> None:
    """``view`` must be an :class:`InitialView` of consistent tensors (of frame size ``hw`` when given): image uint8
    [H, W, 3], depth [H, W] without NaN or negative values, valid K [3, 3] and rigid c2w [4, 4], mask bool [H, W].
    Messages name a field ``<name>.<field>``, or as ``labels`` says (e.g. ``{"K": "intrinsics"}``)."""
    if not isinstance(view, InitialView):
        raise TypeError(f"{name} must be a mirage_env.world.InitialView, got {type(view).__name__}")

    def label(field_name: str) -> str:
        return (labels or {}).get(field_name, f"{name}.{field_name}")

    image = view.image
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{label('image')} must be a torch.Tensor, got {type(image).__name__}")
    want = "[H, W, 3]" if hw is None else f"[{hw[0]}, {hw[1]}, 3]"
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[2] != 3 or \
            (hw is not None and tuple(image.shape[:2]) != tuple(hw)):
        raise ValueError(f"{label('image')} must be uint8 {want}, got {image.dtype} {list(image.shape)}")
    h, w = image.shape[:2]
    check_float(label("depth"), view.depth)
    check_shape(label("depth"), view.depth, (h, w))
    if bool(torch.isnan(view.depth).any()) or bool((view.depth < 0).any()):
        raise ValueError(f"{label('depth')} contains NaN or negative values")
    for field_name, x, shape in (("K", view.K, (3, 3)), ("c2w", view.c2w, (4, 4))):
        check_float(label(field_name), x)
        check_shape(label(field_name), x, shape)
    check_intrinsics(view.K, label("K"))
    check_poses(view.c2w, label("c2w"))
    mask = view.dynamic_mask
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool
                             or tuple(mask.shape) != (h, w)):
        raise ValueError(f"{label('dynamic_mask')} must be a bool tensor [{h}, {w}]")


@dataclass
class StepTimings:
    """Milliseconds spent in each stage of the last step (summed over the batch). Wall-clock time is not part of
    a world's state, so all StepTimings compare equal (equal transitions keep equal infos)."""

    read: float = field(default=0.0, compare=False)
    denoise: float = field(default=0.0, compare=False)
    decode: float = field(default=0.0, compare=False)
    depth: float = field(default=0.0, compare=False)
    discard: float = field(default=0.0, compare=False)
    write: float = field(default=0.0, compare=False)

    @property
    def total(self) -> float:
        return self.read + self.denoise + self.decode + self.depth + self.discard + self.write


@dataclass
class Segment:
    """What one step produced for every world."""

    frames: torch.Tensor  # uint8 [B, F, H, W, 3], the new frames (on the CPU, whatever the model's device)
    latents: torch.Tensor  # [B, C, k, h, w], the new latents
    poses: torch.Tensor  # [B, F, 4, 4]
    covered: torch.Tensor  # bool [B, k, h, w], the cells of each new latent frame the memory covered before generation
    references: list[list[int]]  # per world, the frame indices of the keyframes used as references
    discard: list[DiscardStats]
    timings: StepTimings

    @property
    def coverage(self) -> torch.Tensor:
        """[B, k] fraction of each new latent frame the memory covered before generation."""
        return self.covered.float().mean(dim=(2, 3))


@dataclass
class Conditioning:
    """One world's conditioning for a segment (see :meth:`World.condition`)."""

    read: MemoryRead  # at the t target latent poses
    preceding: torch.Tensor | None  # [C, p, h, w]
    references: torch.Tensor | None  # [C, r, h, w]
    reference_frames: list[int]

    @property
    def context_shape(self) -> tuple[int, int]:
        return tuple(0 if x is None else x.shape[1] for x in (self.preceding, self.references))


def segment_request(first_latents: torch.Tensor, conditions: Sequence[Conditioning],
                    zero_memory: bool = False) -> SegmentRequest:
    """Batch the conditioning of several worlds (equal context shapes) with their first latents [B, C, 1, h, w];
    ``zero_memory`` shows the model an empty memory read (the ablation of the memory)."""
    def stacked(name: str) -> torch.Tensor | None:
        parts = [getattr(c, name) for c in conditions]
        return None if parts[0] is None else torch.stack(parts)

    features = torch.stack([c.read.features.permute(1, 0, 2, 3) for c in conditions]).float()
    mask = torch.stack([c.read.mask[None] for c in conditions]).float()
    if zero_memory:
        features, mask = torch.zeros_like(features), torch.zeros_like(mask)
    return SegmentRequest(
        first_latent=first_latents,
        memory_features=features,
        memory_mask=mask,
        preceding=stacked("preceding"),
        references=stacked("references"),
    )


@dataclass
class _State:
    """One world."""

    memory: LatentSpatialMemory | RgbPointCache
    K: torch.Tensor
    pose: torch.Tensor
    frame: int
    generator: torch.Generator
    first_latent: torch.Tensor  # [C, 1, h, w]
    history: list[torch.Tensor]  # recent latents [C, h, w], newest last
    history_frames: list[int]
    keyframes: KeyframeStore
    depth: DepthProvider
    discard_history: DiscardHistory | None = None  # recent frames the next discard compares with


def _timed(timings: StepTimings, stage: str):
    class _Timer:
        def __enter__(self):
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            setattr(timings, stage, getattr(timings, stage) + (time.perf_counter() - self.start) * 1e3)

    return _Timer()


class World:
    """B worlds sharing one :class:`~mirage_env.models.interface.WorldModel`, each with its own memory."""

    def __init__(self, model: WorldModel, config: WorldConfig = WorldConfig(), batch_size: int = 1) -> None:
        h, w = config.image_hw
        s = model.spatial_stride
        if h % s or w % s:
            raise ValueError(f"image_hw {config.image_hw} must be a multiple of the model's spatial stride {s}")
        self.model = model
        self.config = config
        self.batch_size = batch_size
        self.latent_hw = (h // s, w // s)
        self.frames_per_step = model.temporal_stride * config.latents_per_step
        self._states: list[_State | None] = [None] * batch_size

    # ------------------------------------------------------------------ set-up
    def default_intrinsics(self) -> torch.Tensor:
        """Intrinsics [3, 3] (float64) of ``image_hw`` with the configured horizontal field of view."""
        return intrinsics_from_fov(self.config.fov_deg, self.config.image_hw)

    def _new_memory(self) -> LatentSpatialMemory | RgbPointCache:
        device = self.model.device if hasattr(self.model, "device") else "cpu"
        if self.config.memory == "rgb":
            return RgbPointCache(RgbCacheConfig(voxel_size=self.config.voxel_size), self.model, device)
        config = MemoryConfig(feature_dim=self.model.latent_channels, voxel_size=self.config.voxel_size,
                              capacity=self.config.memory_capacity, dtype=self.config.memory_dtype)
        kind = AppendOnlyLatentMemory if self.config.memory == "append" else LatentSpatialMemory
        return kind(config, device)

    def reset(self, index: int, view: InitialView, seed: int | torch.Generator,
              depth: DepthProvider | None = None) -> None:
        """Start world ``index`` from ``view`` with an empty memory and RNG ``seed`` (a ``torch.Generator`` is used
        as given and drawn from, as diffusers pipelines use theirs).

        ``depth`` gives depth for generated frames (default :class:`MemoryDepth`: the memory's z-buffer where
        covered, far fill in holes; use ``SimulatorDepth(scene)`` when the world is a simulated scene).
        """
        check_view(view, self.config.image_hw)
        if isinstance(seed, torch.Generator):
            generator = seed
        elif isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            generator = torch.Generator().manual_seed(int(seed))
        else:
            raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
        memory = self._new_memory()
        latent = self.model.encode(to_unit(view.image)[None, None])[0]  # [C, 1, h, w]
        K = view.K.to(torch.float64)
        pose = view.c2w.to(torch.float64)
        state = _State(memory, K, pose, 0, generator, latent, [latent[:, 0]], [0],
                       KeyframeStore(self.config.keyframes), depth or MemoryDepth())
        self._write(state, latent, view.depth[None].float(), pose[None],
                    None if view.dynamic_mask is None else view.dynamic_mask[None], frame_indices=[0],
                    frames=to_unit(view.image)[None], weight=self.config.observed_weight)
        self._states[index] = state

    def reset_in_scene(self, index: int, scene: Scene, pose: torch.Tensor, seed: int) -> InitialView:
        """Start world ``index`` in a simulated scene at ``pose``: its render is the first frame (the scene's
        dynamic mask is kept out of the memory) and the scene gives depth for generated frames. Returns the view."""
        K = self.default_intrinsics()
        out = render(scene, K, pose, self.config.image_hw)
        view = InitialView(out.rgb[0], out.depth[0], K, pose, out.dynamic_mask[0])
        self.reset(index, view, seed, depth=SimulatorDepth(scene))
        return view

    def state(self, index: int) -> _State:
        state = self._states[index]
        if state is None:
            raise RuntimeError(f"world {index} has not been reset")
        return state

    @property
    def poses(self) -> torch.Tensor:
        """Current camera-to-world poses [B, 4, 4]."""
        return torch.stack([self.state(i).pose for i in range(self.batch_size)])

    def memory(self, index: int) -> LatentSpatialMemory | RgbPointCache:
        return self.state(index).memory

    # ------------------------------------------------------------------ the step
    def latent_poses(self, poses: torch.Tensor) -> torch.Tensor:
        """Poses of the new latent frames [B, k, 4, 4]: pixel frames 4, 8, ..., F of the segment."""
        return poses[:, self.model.temporal_stride - 1::self.model.temporal_stride]

    def condition(self, index: int, target_poses: torch.Tensor,
                  frame_poses: torch.Tensor | None = None) -> Conditioning:
        """What world ``index`` conditions a segment on: the memory read at the target latent poses [t, 4, 4]
        and the clean context (preceding latents, references retrieved by visible-voxel overlap).

        The RGB cache renders every pixel frame of the segment, so it needs ``frame_poses`` [1 + 4 (t - 1), 4, 4].
        """
        state = self.state(index)
        read = self._read(state, target_poses, frame_poses)
        history = state.history[:-1][-self.config.preceding:] if self.config.preceding else []
        preceding = torch.stack(history, dim=1) if history else None
        first_preceding = state.history_frames[-len(history) - 1] if history else state.history_frames[-1]
        visible = state.memory.keys[read.index[read.mask]]
        chosen = state.keyframes.retrieve(visible, self.config.references, exclude_after=first_preceding)
        references = torch.stack([state.keyframes.latents[j] for j in chosen], dim=1) if chosen else None
        return Conditioning(read, preceding, references, [state.keyframes.frame_index[j] for j in chosen])

    def observe(self, index: int, latents: torch.Tensor, depth: torch.Tensor, poses: torch.Tensor,
                dynamic_mask: torch.Tensor | None = None, next_first_latent: torch.Tensor | None = None,
                timings: StepTimings | None = None, frames: torch.Tensor | None = None) -> DiscardStats:
        """Advance world ``index`` by k latent frames [C, k, h, w] with pixel depth [k, H, W] at poses [k, 4, 4]:
        dynamic discard, memory write, keyframes and history. :meth:`step` calls it with generated latents;
        training calls it with ground-truth latents (teacher forcing), so both condition the same way.
        The RGB cache stores pixels: it needs the decoded ``frames`` [k, 3, H, W] of those latents."""
        state = self.state(index)
        k = latents.shape[1]
        stride = self.model.temporal_stride
        frame_indices = [state.frame + stride * (j + 1) for j in range(k)]
        stats = self._write(state, latents, depth, poses, dynamic_mask, frame_indices, timings, frames)
        state.pose = poses[-1]
        state.frame += stride * k
        if next_first_latent is not None:
            state.first_latent = next_first_latent
        state.history.extend(latents.unbind(1))
        state.history_frames.extend(frame_indices)
        keep = self.config.preceding + 1
        del state.history[:-keep], state.history_frames[:-keep]
        return stats

    def step_condition(self, index: int, poses: torch.Tensor) -> Conditioning:
        """What :meth:`step` conditions world ``index`` on along the float64 pixel-frame poses [F, 4, 4] of its next
        segment: the read at the current pose and the new latent poses, with the context (:meth:`condition`)."""
        pose = self.state(index).pose
        targets = torch.cat([pose[None], self.latent_poses(poses[None])[0]])
        return self.condition(index, targets, torch.cat([pose[None], poses]))

    def step(self, poses: torch.Tensor) -> Segment:
        """Generate the next segment of every world along ``poses`` [B, F, 4, 4] (one pose per new frame)."""
        b, k = self.batch_size, self.config.latents_per_step
        check_shape("poses", poses, (b, self.frames_per_step, 4, 4))
        check_poses(poses, "poses")
        states = [self.state(i) for i in range(b)]
        poses = poses.to(torch.float64)
        timings = StepTimings()
        latent_poses = self.latent_poses(poses)
        with _timed(timings, "read"):
            conditions = [self.step_condition(i, poses[i]) for i in range(b)]
        with _timed(timings, "denoise"):
            latents = self._generate(states, conditions)
        with _timed(timings, "decode"):
            frames = self.model.decode(latents)  # [B, 1 + F, 3, H, W]
            last = self.model.encode(frames[:, -1:])  # the next segment's clean first latent
        new_latents, new_frames = latents[:, :, 1:], frames[:, 1:]
        stride = self.model.temporal_stride
        discard_stats = []
        for i, state in enumerate(states):
            read = conditions[i].read
            with _timed(timings, "depth"):
                times = torch.tensor([(state.frame + stride * (j + 1)) / self.config.fps for j in range(k)])
                cameras = Cameras(state.K.expand(1, k, 3, 3), latent_poses[i][None], times[None].double())
                latent_frames = new_frames[i, stride - 1::stride]
                depth = state.depth(latent_frames[None], read.depth[1:][None], read.mask[1:][None], cameras)[0]
            discard_stats.append(self.observe(i, new_latents[i], depth, latent_poses[i], None, last[i], timings,
                                              latent_frames))
        covered = torch.stack([c.read.mask[1:] for c in conditions])
        return Segment(to_uint8(new_frames).cpu(), new_latents, poses, covered,
                       [c.reference_frames for c in conditions], discard_stats, timings)

    def _read(self, state: _State, target_poses: torch.Tensor, frame_poses: torch.Tensor | None) -> MemoryRead:
        """Read the memory at the latent poses [t, 4, 4]; the RGB cache renders and encodes the pixel frames."""
        if not isinstance(state.memory, RgbPointCache):
            K_latent = scale_intrinsics(state.K, self.config.image_hw, self.latent_hw)
            return state.memory.read(K_latent.expand(target_poses.shape[0], 3, 3), target_poses, self.latent_hw)
        if frame_poses is None:
            raise ValueError("the RGB cache renders every pixel frame: condition() needs frame_poses")
        return state.memory.read(state.K.expand(frame_poses.shape[0], 3, 3), frame_poses, self.config.image_hw)

    def _write(self, state: _State, latents: torch.Tensor, depth: torch.Tensor, poses: torch.Tensor,
               dynamic_mask: torch.Tensor | None, frame_indices: Sequence[int],
               timings: StepTimings | None = None, frames: torch.Tensor | None = None,
               weight: float = 1.0) -> DiscardStats:
        """Discard dynamic content, write latents [C, k, h, w] (the RGB cache: ``frames`` [k, 3, H, W]) with pixel
        depth [k, H, W] and fusion ``weight``, record keyframes. Geometry moves to the memory's device first."""
        timings = timings or StepTimings()
        k = latents.shape[1]
        device = state.memory.device
        depth, poses = depth.to(device), poses.to(device)
        dynamic_mask = None if dynamic_mask is None else dynamic_mask.to(device)
        K = state.K.to(device).expand(k, 3, 3)
        rgb = isinstance(state.memory, RgbPointCache)
        if rgb and frames is None:
            raise ValueError("the RGB cache stores pixels: observe() needs the decoded frames")
        with _timed(timings, "discard"):
            evicting = state.memory if self.config.memory == "latent" else None
            result = discard_dynamic(depth, K, poses, self.latent_hw, self.config.discard, dynamic_mask=dynamic_mask,
                                     memory=evicting, history=state.discard_history)
            state.discard_history = result.history
        with _timed(timings, "write"):
            K_latent = scale_intrinsics(K, self.config.image_hw, self.latent_hw)
            if rgb:
                state.memory.write(frames, depth.nan_to_num(posinf=0.0), K, poses, keep_mask=result.keep_mask)
            else:
                confidence = torch.full(result.keep_mask.shape, weight, device=device)
                state.memory.write(latents.permute(1, 0, 2, 3), result.cell_depth, K_latent, poses,
                                   keep_mask=result.keep_mask, confidence=confidence)
            points = backproject_depth(result.cell_depth, K_latent, poses)
            for j in range(k):
                keys = pack_voxel_keys(voxel_coords(points[j][result.keep_mask[j]], self.config.voxel_size))
                state.keyframes.add(latents[:, j], poses[j], keys, frame_indices[j])
        return result.stats

    def _generate(self, states: list[_State], conditions: list[Conditioning]) -> torch.Tensor:
        """Denoise all worlds, batching those whose context shapes agree."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, c in enumerate(conditions):
            groups.setdefault(c.context_shape, []).append(i)
        out: list[torch.Tensor | None] = [None] * len(states)
        for members in groups.values():
            request = segment_request(torch.stack([states[i].first_latent for i in members]),
                                      [conditions[i] for i in members], self.config.zero_memory)
            latents = self.model.generate(request, [states[i].generator for i in members], self.config.num_steps)
            for row, i in enumerate(members):
                out[i] = latents[row]
        return torch.stack(out)

    # ------------------------------------------------------------------ snapshots
    def state_dict(self, index: int) -> dict:
        """Everything world ``index`` needs to continue exactly: memory, camera, history, keyframes, RNG."""
        s = self.state(index)
        recent = {} if s.discard_history is None else {"discard_history": s.discard_history._asdict()}
        return {
            "format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION,
            "memory": s.memory.state_dict(), "K": s.K, "pose": s.pose, "frame": s.frame,
            "generator": s.generator.get_state(), "first_latent": s.first_latent,
            "history": list(s.history), "history_frames": list(s.history_frames),
            "keyframes": s.keyframes.state_dict(), **recent,
        }

    def load_state_dict(self, index: int, state: dict, depth: DepthProvider | None = None) -> None:
        """Restore world ``index`` from :meth:`state_dict` (e.g. to branch a rollout). A foreign, incomplete or
        inconsistent snapshot raises ValueError naming the problem (:func:`check_world_snapshot`); the world is
        then left as it was."""
        if self.config.memory != "latent":
            raise ValueError(f"snapshots need the latent memory, this world has memory={self.config.memory!r}")
        check_world_snapshot(state, (self.model.latent_channels, *self.latent_hw))
        memory = self._new_memory()
        memory.load_state_dict(state["memory"])
        generator = torch.Generator()
        generator.set_state(state["generator"])
        previous = self._states[index]
        provider = depth or (previous.depth if previous is not None else MemoryDepth())
        self._states[index] = _State(memory, state["K"].to(torch.float64), state["pose"].to(torch.float64),
                                     int(state["frame"]), generator, state["first_latent"], list(state["history"]),
                                     [int(f) for f in state["history_frames"]],
                                     KeyframeStore.from_state_dict(state["keyframes"]), provider,
                                     DiscardHistory(**state["discard_history"]) if "discard_history" in state else None)

    def save(self, index: int, path: str | Path) -> None:
        """Write world ``index`` to ``path`` atomically (torch.save of :meth:`state_dict`; tensors, lists and ints
        only)."""
        state = self.state_dict(index)
        with atomic_file(path) as temp:
            torch.save(state, temp)

    def load(self, index: int, path: str | Path, depth: DepthProvider | None = None) -> None:
        """Restore world ``index`` from a file written by :meth:`save`."""
        try:
            state = torch.load(path, weights_only=True)
        except Exception as error:  # torch raises several types for corrupt files
            raise ValueError(f"{path}: not a readable world snapshot ({error})") from error
        try:
            self.load_state_dict(index, state, depth)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
