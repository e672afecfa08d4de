"""The ``wan`` backend: Wan2.2 VAE + DiT from diffusers, the Mirage memory branch, LoRA; presets ``tiny`` and
``wan2.2-ti2v-5b`` (see :func:`from_preset`).

Segment layout along latent time: ``[references | target | preceding]``. References, preceding latents and the
first target latent run at timestep 0; the other target latents share the scheduler's timestep (training draws one
sigma per frame). The branch input is ``concat(memory features, visibility latent * coverage)`` on the target frames
and zeros elsewhere. No classifier-free guidance (Mirage samples with CFG off).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from safetensors.torch import save_file
from torch import nn

from mirage_env.atomic import atomic_dir
from mirage_env.config_checks import reject_renamed_keywords
from mirage_env.models import lora as lora_ops
from mirage_env.models.addon import MemoryBranch, build_addon
from mirage_env.models.dit import MirageTransformer
from mirage_env.models.interface import SegmentRequest
from mirage_env.models.vae_inference import speed_up_vae_inference
from mirage_env.models.loading import (
    DIFFUSERS_WEIGHTS,
    MissingWeightsError,
    check_weights_dir,
    expected_files,
    shipped_weights_dir,
)
from mirage_env.models.manifest import verify_manifest
from mirage_env.models.presets import (
    Preset,
    build_transformer,
    build_vae,
    load_preset,
)
from mirage_env.models.sampler import (
    gaussian,
    make_scheduler,
    sample_segment,
    training_sigmas,
)
from mirage_env.models.text import TextEncoder
from mirage_env.models.weight_files import check_weight_files

SAVED_PARTS = ("transformer", "vae", "addon", "lora")
"""The parts of a weights folder :meth:`WanWorldModel.save_pretrained` writes (and replaces)."""


@dataclass
class _Segment:
    """Per-segment inputs that stay fixed over the denoising steps."""

    control: torch.Tensor  # [B, 2C, r + t + p, h, w]
    context: torch.Tensor  # [B, L, text_dim]
    references: torch.Tensor | None
    preceding: torch.Tensor | None


class WanWorldModel(nn.Module):
    """A :class:`~mirage_env.models.interface.WorldModel` built from diffusers' Wan2.2 classes."""

    def __init__(self, preset: Preset, vae: AutoencoderKLWan, transformer: MirageTransformer,
                 text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        self.preset = preset
        speed_up_vae_inference(vae)  # oneDNN convolutions at batch 1 and a cheaper RMS norm (see the module)
        self.vae = vae
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.latent_channels = int(vae.config.z_dim)
        self.temporal_stride = int(vae.config.scale_factor_temporal)
        self.spatial_stride = int(vae.config.scale_factor_spatial)
        shape = (1, self.latent_channels, 1, 1, 1)
        self.register_buffer("latents_mean", torch.tensor(vae.config.latents_mean).view(shape), persistent=False)
        self.register_buffer("latents_std", torch.tensor(vae.config.latents_std).view(shape), persistent=False)
        self._visibility: dict[tuple[int, int, int], torch.Tensor] = {}

    @property
    def dit(self) -> WanTransformer3DModel:
        """The Wan DiT (where LoRA goes)."""
        return self.transformer.dit

    @property
    def branch(self) -> MemoryBranch:
        """The memory branch (the add-on) with the learned null context."""
        return self.transformer.branch

    @property
    def device(self) -> torch.device:
        return self.latents_mean.device

    # ------------------------------------------------------------------ VAE
    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] in [-1, 1], T = 1 + 4k -> normalised latents [B, C, 1 + k, H / s, W / s] (posterior mode)."""
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be [B, T, 3, H, W], got {list(frames.shape)}")
        _, t, _, h, w = frames.shape
        if (t - 1) % self.temporal_stride or h % self.spatial_stride or w % self.spatial_stride:
            raise ValueError(f"frames {t}x{h}x{w}: T must be 1 + {self.temporal_stride}k and H, W multiples of "
                             f"{self.spatial_stride}")
        video = frames.permute(0, 2, 1, 3, 4).to(self.device, self.vae.dtype)
        z = self.vae.encode(video).latent_dist.mode().float()
        return (z - self.latents_mean) / self.latents_std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, C, t, h, w] -> frames [B, 1 + 4(t-1), 3, h s, w s] in [-1, 1]."""
        return self.decode_video(latents).float().permute(0, 2, 1, 3, 4).clamp(-1, 1)

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, C, t, h, w] -> the VAE's video [B, 3, 1 + 4(t-1), h s, w s], unclamped and with
        gradients (what :meth:`decode` returns before its layout change and clamp; training decodes through it)."""
        if latents.dim() != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be [B, {self.latent_channels}, t, h, w], got {list(latents.shape)}")
        z = latents.to(self.device).float() * self.latents_std + self.latents_mean
        return self.vae.decode(z.to(self.vae.dtype)).sample

    def visibility_latent(self, hw_latent: tuple[int, int], t: int) -> torch.Tensor:
        """Encoding of an all-ones video [C, t, h, w]: computed once per (h, w, t), then served from a cache."""
        key = (int(hw_latent[0]), int(hw_latent[1]), int(t))
        if key not in self._visibility:
            h, w, t = key
            ones = torch.ones(1, 1 + self.temporal_stride * (t - 1), 3, h * self.spatial_stride,
                              w * self.spatial_stride)
            self._visibility[key] = self.encode(ones)[0]
        return self._visibility[key].to(self.device)

    # ------------------------------------------------------------------ denoising
    def _segment(self, request: SegmentRequest) -> _Segment:
        request.check(self.latent_channels)
        first = request.first_latent
        b, _, _, h, w = first.shape
        t = request.num_frames
        coverage = request.memory_mask.to(self.device, torch.float32)
        target = torch.cat([request.memory_features.to(self.device, torch.float32),
                            self.visibility_latent((h, w), t) * coverage], dim=1)
        r, p = (0 if x is None else x.shape[2] for x in (request.references, request.preceding))
        control = F.pad(target, (0, 0, 0, 0, r, p))
        context = request.context
        if context is None:
            context = self.branch.null_context.unsqueeze(0).expand(b, -1, -1)
        elif context.shape[-1] != self.dit.config.text_dim:
            raise ValueError(f"context width {context.shape[-1]} != the DiT's text_dim {self.dit.config.text_dim}")
        clean = [None if x is None else x.to(self.device, torch.float32)
                 for x in (request.references, request.preceding)]
        return _Segment(control, context.to(self.device), *clean)

    def _velocity(self, segment: _Segment, target: torch.Tensor, target_timesteps: torch.Tensor) -> torch.Tensor:
        """Velocity of the target frames [B, C, t, h, w] at ``target_timesteps`` [B, t], context frames clean."""
        parts, times = [target], [target_timesteps]
        if segment.references is not None:
            parts.insert(0, segment.references)
            times.insert(0, target_timesteps.new_zeros(target.shape[0], segment.references.shape[2]))
        if segment.preceding is not None:
            parts.append(segment.preceding)
            times.append(target_timesteps.new_zeros(target.shape[0], segment.preceding.shape[2]))
        velocity = self.transformer(torch.cat(parts, dim=2), torch.cat(times, dim=1), segment.context,
                                    segment.control)
        r = 0 if segment.references is None else segment.references.shape[2]
        return velocity[:, :, r:r + target.shape[2]].float()

    @torch.no_grad()
    def generate(self, request: SegmentRequest, generator: torch.Generator, num_steps: int) -> torch.Tensor:
        """Target latents [B, C, t, h, w]; noise from ``generator`` only, so equal seeds give equal latents."""
        segment = self._segment(request)
        first = request.first_latent.to(self.device, torch.float32)
        b, c, _, h, w = first.shape
        t = request.num_frames
        noise = gaussian((b, c, t, h, w), generator, self.device)

        def velocity(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            times = torch.full((b, t), float(timestep), device=self.device)
            times[:, 0] = 0
            return self._velocity(segment, x, times)

        return sample_segment(velocity, first, noise, make_scheduler(self.preset.scheduler), num_steps)

    def training_loss(self, request: SegmentRequest, target: torch.Tensor, generator: torch.Generator,
                      batch_rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Flow-matching MSE on the velocity of target frames 1.. (per-frame sigma; frame 0 stays clean).

        ``batch_rows = (first, size)``: ``request`` and ``target`` are rows ``first ..`` of a batch of ``size``
        rows (one shard in data-parallel training); the sigmas and noise are drawn for the whole batch, so the
        shards together see the noise the whole batch would."""
        segment = self._segment(request)
        target = target.to(self.device, torch.float32)
        b, _, t = target.shape[:3]
        if target.shape != request.memory_features.shape or t < 2:
            raise ValueError(f"target must be shaped like memory_features with t >= 2, got {list(target.shape)}")
        first, size = batch_rows or (0, b)
        if not 0 <= first <= size - b:
            raise ValueError(f"batch_rows {batch_rows}: {b} rows from row {first} do not fit a batch of {size}")
        rows = slice(first, first + b)
        sigmas = training_sigmas((size, t), self.preset.scheduler["flow_shift"], generator, self.device)[rows]
        sigmas[:, 0] = 0
        noise = gaussian((size, *target.shape[1:]), generator, self.device)[rows]
        noisy = self._noised(request, target, sigmas, noise)
        velocity = self._velocity(segment, noisy, sigmas * self.preset.scheduler["num_train_timesteps"])
        return F.mse_loss(velocity[:, :, 1:], (noise - target)[:, :, 1:])

    @torch.no_grad()
    def predict_clean(self, request: SegmentRequest, target: torch.Tensor, sigma: float,
                      generator: torch.Generator) -> torch.Tensor:
        """The denoiser's one-shot estimate of the clean latents [B, C, t, h, w] from ``target`` noised to ``sigma``
        (frames 1..; frame 0 is the request's clean first latent): ``x_sigma - sigma * velocity``. A diagnostic of
        how much of a known target the model recovers at each noise level (``sigma = 1``: from pure noise, the
        model's mean guess given the conditioning alone)."""
        if not 0 <= sigma <= 1:
            raise ValueError(f"sigma must be in [0, 1], got {sigma}")
        segment = self._segment(request)
        target = target.to(self.device, torch.float32)
        if target.shape != request.memory_features.shape:
            raise ValueError(f"target must be shaped like memory_features {list(request.memory_features.shape)}, "
                             f"got {list(target.shape)}")
        sigmas = torch.full(target.shape[:1] + target.shape[2:3], float(sigma), device=self.device)
        sigmas[:, 0] = 0
        noisy = self._noised(request, target, sigmas, gaussian(tuple(target.shape), generator, self.device))
        velocity = self._velocity(segment, noisy, sigmas * self.preset.scheduler["num_train_timesteps"])
        return noisy - sigmas[:, None, :, None, None] * velocity

    def _noised(self, request: SegmentRequest, target: torch.Tensor, sigmas: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        """``(1 - sigma) target + sigma noise`` per frame (sigmas [B, t]), frame 0 the request's clean first latent."""
        s = sigmas[:, None, :, None, None]
        noisy = (1 - s) * target + s * noise
        noisy[:, :, :1] = request.first_latent.to(self.device, torch.float32)
        return noisy

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, weights_dir: str | Path) -> None:
        """Write the layout :func:`from_preset` reads: transformer/, vae/, addon/ and lora/ when the DiT has LoRA.
        These four parts of ``weights_dir`` are replaced atomically (:func:`mirage_env.atomic.atomic_dir`; a stale
        lora/ goes); its other entries (text_encoder/, tokenizer/) stay."""
        with atomic_dir(weights_dir, parts=SAVED_PARTS) as root:
            self.write_parts(root)

    def write_parts(self, root: Path) -> None:
        """Write the :data:`SAVED_PARTS` into the folder ``root`` (not atomically: callers write into a folder of
        :func:`~mirage_env.atomic.atomic_dir`). ValueError if the LoRA is fused (the base weights are then lost)."""
        base = {k: v.detach().contiguous().cpu() for k, v in lora_ops.base_state_dict(self.dit).items()}
        (root / "transformer").mkdir()
        self.dit.save_config(root / "transformer")
        save_file(base, str(root / "transformer" / DIFFUSERS_WEIGHTS))
        self.vae.save_pretrained(root / "vae")
        self.branch.save_pretrained(root / "addon")
        if lora_ops.has_lora(self.dit):
            lora_ops.save_lora(self.dit, root / "lora")


def _cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast parameters as diffusers' ``from_pretrained(torch_dtype=...)`` does: ``_keep_in_fp32_modules`` stay."""
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or ())
    for name, param in module.named_parameters():
        param.data = param.data.to(torch.float32 if keep.intersection(name.split(".")) else dtype)
    return module


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _fresh(build, seed: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> nn.Module:
    """A module with random weights drawn from ``seed`` (the global RNG is left untouched), created in ``dtype`` on
    ``device``: the 5B preset in bfloat16 never exists in float32, nor on the CPU when it is built for a GPU."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), _default_dtype(dtype), device:
        torch.manual_seed(seed)
        return _cast(build(), dtype)


@reject_renamed_keywords
def from_preset(name: str, weights_dir: str | Path | None = None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32, vae_dtype: torch.dtype = torch.float32,
                model_seed: int = 0, random_weights: bool = False, fuse_lora: bool = False) -> WanWorldModel:
    """Build the ``wan`` backend of preset ``name`` ("tiny" or "wan2.2-ti2v-5b").

    ``weights_dir`` holds the layout described in :mod:`mirage_env.models.loading`. Without it, ``tiny`` loads the
    trained weights shipped in the package (:func:`~mirage_env.models.loading.shipped_weights_dir`) and the real
    preset raises :class:`MissingWeightsError` listing the expected files. ``random_weights=True`` gives either
    preset random weights drawn from ``model_seed`` instead (the same model for the same seed; the starting point of
    training; for the real preset, timing runs), created directly in their dtype on ``device``. ``dtype`` applies
    to the DiT and the branch (bfloat16 suits the real model on a GPU), ``vae_dtype`` to the VAE. A fresh branch
    copies its blocks from the DiT and has zero output projections (no effect until trained). LoRA found in
    ``lora/`` is loaded and enabled;
    ``fuse_lora=True`` folds it into the base weights (as diffusers' ``fuse_lora``: inference only, the same outputs
    up to float rounding, and half the DiT's matrix products at small batches), otherwise it stays separate (see
    :mod:`mirage_env.models.lora`).

    Before anything loads, a folder with a ``manifest.json`` (the shipped one has one) must match it
    (:mod:`mirage_env.models.manifest`), and every part's config and tensors must fit the preset
    (:mod:`mirage_env.models.weight_files`); both raise ValueError naming the file.
    """
    preset = load_preset(name)
    text_encoder, lora_dir, branch = None, None, None
    if random_weights and weights_dir is not None:
        raise ValueError("random_weights=True draws fresh weights: pass it without weights_dir")
    if weights_dir is None and not random_weights:
        if name != "tiny":
            raise MissingWeightsError(f"preset {name!r} needs weights_dir.\n" + expected_files(None, name))
        weights_dir = shipped_weights_dir(name)
    if weights_dir is None:
        dit = _fresh(lambda: build_transformer(preset), model_seed, dtype, device)
        vae = _fresh(lambda: build_vae(preset), model_seed + 1, vae_dtype, device)
    else:
        root = Path(weights_dir)
        present = check_weights_dir(root, name)
        verify_manifest(root)
        check_weight_files(root, present, preset)
        dit = WanTransformer3DModel.from_pretrained(root / "transformer", torch_dtype=dtype, local_files_only=True)
        vae = AutoencoderKLWan.from_pretrained(root / "vae", torch_dtype=vae_dtype, local_files_only=True)
        if "addon" in present:
            branch = MemoryBranch.from_pretrained(root / "addon", torch_dtype=dtype, local_files_only=True)
        if "text_encoder" in present:
            text_encoder = TextEncoder(root / "text_encoder", root / "tokenizer", device, dtype)
            if text_encoder.dim != preset.transformer["text_dim"]:
                raise ValueError(f"text encoder width {text_encoder.dim} != DiT text_dim "
                                 f"{preset.transformer['text_dim']}")
        lora_dir = root / "lora" if "lora" in present else None
    if branch is None:
        branch = _fresh(lambda: build_addon(preset), model_seed + 2, dit.dtype, dit.device)
        branch.init_from_dit(dit)
    model = WanWorldModel(preset, vae, MirageTransformer(dit, branch), text_encoder)
    if lora_dir is not None:
        lora_ops.load_lora(model.dit, lora_dir)
        if fuse_lora:
            lora_ops.merge_lora(model.dit)
    return model.to(device).eval()
