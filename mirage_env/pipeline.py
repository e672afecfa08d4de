"""``MiragePipeline``: the Mirage world model as a diffusers pipeline, for video without an env.

Components (``model_index.json``): ``transformer`` (diffusers' ``WanTransformer3DModel``, the DiT, LoRA inside it
as a peft adapter), ``addon`` (:class:`~mirage_env.models.addon.MemoryBranch`: memory branch and learned null
context), ``vae`` (``AutoencoderKLWan``) and ``scheduler`` (``UniPCMultistepScheduler``, flow prediction); the config
also holds the ``preset`` the weights belong to. A saved pipeline is the weights folder that
:func:`mirage_env.models.from_preset` reads (``transformer/``, ``vae/``, ``addon/``, ``lora/``) plus
``model_index.json`` and ``scheduler/`` (docs/formats.md), so an env loads it too (``weights_dir=``).

Why ``from_pretrained`` / ``save_pretrained`` are our own: diffusers' would save the peft-wrapped DiT with adapter
keys mixed into its weights and skip ``lora/``, its Hub download refuses a component from outside diffusers
(``addon``), and ours run the checks of ``from_preset`` (manifest, shapes against the preset). The rest is
diffusers': ``model_index.json`` (``register_modules``), ``to``, ``progress_bar``, ``enable_model_cpu_offload``.

A call starts a :class:`~mirage_env.world.World` from a view and steps it along the trajectory, one
:meth:`~mirage_env.world.World.step` per segment: the segment loop the env and the CLI rollouts run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKLWan, DiffusionPipeline, UniPCMultistepScheduler, WanTransformer3DModel
from diffusers.utils import BaseOutput
from diffusers.video_processor import VideoProcessor
from huggingface_hub import snapshot_download
from huggingface_hub.utils import HFValidationError, validate_repo_id

from mirage_env.atomic import atomic_dir
from mirage_env.envs.starts import fit_view
from mirage_env.geometry.checks import check_poses, check_shape
from mirage_env.models import lora as lora_ops
from mirage_env.models.addon import MemoryBranch, check_addon
from mirage_env.models.dit import MirageTransformer
from mirage_env.models.presets import check_compatible, load_preset
from mirage_env.models.sampler import make_scheduler
from mirage_env.models.wan import WanWorldModel
from mirage_env.models.wan import from_preset as build_world_model
from mirage_env.world import InitialView, World, WorldConfig, check_view

OUTPUT_TYPES = ("np", "pt", "pil")
COMPONENTS = {"transformer": WanTransformer3DModel, "addon": MemoryBranch, "vae": AutoencoderKLWan,
              "scheduler": UniPCMultistepScheduler}
_VIEW_LABELS = {"image": "image", "depth": "depth", "K": "intrinsics", "c2w": "pose"}


@dataclass
class MiragePipelineOutput(BaseOutput):
    """``frames``: the start frame, then one frame per trajectory pose, for a batch of one video: ``"np"`` float32
    [1, F, H, W, 3] in [0, 1], ``"pt"`` float32 [1, F, 3, H, W] in [0, 1], ``"pil"`` a list holding one list of
    F PIL images (as diffusers' video pipelines return them)."""

    frames: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]]


class MiragePipeline(DiffusionPipeline):
    """Video from a start view (image, depth, intrinsics, pose) along a camera trajectory, with Mirage's memory.

    Build it with :meth:`from_pretrained` (a saved pipeline folder or a Hub repo id), :meth:`from_preset` (the
    preset's weights, e.g. the shipped tiny ones) or :meth:`from_world_model`.
    """

    model_cpu_offload_seq = "transformer->vae"
    # ``addon`` runs beside the transformer at every denoising step, so it stays out of the sequence (as diffusers'
    # ControlNet pipelines keep their controlnet out): it is onloaded when called and offloaded after the call.

    def __init__(self, transformer: WanTransformer3DModel, addon: MemoryBranch, vae: AutoencoderKLWan,
                 scheduler: UniPCMultistepScheduler, preset: str = "tiny") -> None:
        super().__init__()
        spec = load_preset(preset)
        for name, value in (("transformer", transformer), ("addon", addon), ("vae", vae), ("scheduler", scheduler)):
            if not isinstance(value, COMPONENTS[name]):
                raise TypeError(f"{name} must be a {COMPONENTS[name].__name__}, got {type(value).__name__}")
        check_compatible("transformer", dict(transformer.config), spec)
        check_compatible("vae", dict(vae.config), spec)
        check_addon(addon, spec)
        self.register_modules(transformer=transformer, addon=addon, vae=vae, scheduler=scheduler)
        self.register_to_config(preset=preset)
        self.video_processor = VideoProcessor(do_resize=False, do_normalize=False)
        self._model: WanWorldModel | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_world_model(cls, model: WanWorldModel,
                         scheduler: UniPCMultistepScheduler | None = None) -> MiragePipeline:
        """The pipeline of a :class:`~mirage_env.models.wan.WanWorldModel` (sharing its modules); the scheduler
        defaults to the preset's."""
        scheduler = scheduler if scheduler is not None else make_scheduler(model.preset.scheduler)
        return cls(model.dit, model.branch, model.vae, scheduler, model.preset.name)

    @classmethod
    def from_preset(cls, name: str = "tiny", weights_dir: str | os.PathLike | None = None,
                    torch_dtype: torch.dtype = torch.float32, vae_dtype: torch.dtype = torch.float32,
                    model_seed: int = 0, random_weights: bool = False) -> MiragePipeline:
        """The pipeline of :func:`mirage_env.models.from_preset` (``weights_dir`` None: the weights the preset ships;
        ``random_weights``: random ones from ``model_seed``); ``torch_dtype`` for the DiT and the add-on."""
        return cls.from_world_model(build_world_model(name, weights_dir, dtype=torch_dtype, vae_dtype=vae_dtype,
                                                      model_seed=model_seed, random_weights=random_weights))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        torch_dtype: torch.dtype = torch.float32, vae_dtype: torch.dtype = torch.float32,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        token: str | bool | None = None, local_files_only: bool = False) -> MiragePipeline:
        """Load a folder written by :meth:`save_pretrained`, or a Hub repo id holding one.

        An existing folder, an ``os.PathLike`` or a string that is not of the form ``owner/name`` is a local path
        and never touches the network (FileNotFoundError when missing). A string ``owner/name`` that is not a local
        folder is downloaded with ``huggingface_hub.snapshot_download`` (``revision``, ``cache_dir``, ``token``,
        ``local_files_only`` go to it). The weights load through :func:`mirage_env.models.from_preset`, with its
        checks; ``torch_dtype`` applies to the DiT and the add-on, ``vae_dtype`` to the VAE.
        """
        root = _pipeline_folder(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                                local_files_only=local_files_only)
        preset = read_model_index(root)["preset"]
        model = build_world_model(preset, root, dtype=torch_dtype, vae_dtype=vae_dtype)
        scheduler = UniPCMultistepScheduler.from_pretrained(root / "scheduler", local_files_only=True)
        return cls.from_world_model(model, scheduler)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the whole pipeline to ``save_directory`` (replaced atomically: the folder appears complete or not
        at all, see :func:`mirage_env.atomic.atomic_dir`): ``model_index.json``, ``scheduler/`` and the weights
        folder of :meth:`WanWorldModel.save_pretrained`. ValueError, before anything is written, if the LoRA was
        fused (:meth:`fuse_lora`), since the base weights are then lost."""
        model = self._world_model()
        lora_ops.base_state_dict(model.dit)  # raises on a fused LoRA
        with atomic_dir(save_directory) as root:
            model.write_parts(root)
            self.scheduler.save_pretrained(root / "scheduler")
            self.save_config(root)

    def fuse_lora(self) -> None:
        """Fold the LoRA into the DiT's base weights (as diffusers' ``fuse_lora`` and the envs' shared models do:
        faster, the same frames up to float rounding; the pipeline can then no longer be saved)."""
        lora_ops.merge_lora(self.transformer)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(self, image: PIL.Image.Image | np.ndarray | torch.Tensor, depth: np.ndarray | torch.Tensor,
                 intrinsics: np.ndarray | torch.Tensor, pose: np.ndarray | torch.Tensor,
                 trajectory: np.ndarray | torch.Tensor, height: int | None = None, width: int | None = None,
                 num_inference_steps: int | None = None, latents_per_step: int | None = None,
                 generator: torch.Generator | None = None, output_type: str = "np",
                 return_dict: bool = True) -> MiragePipelineOutput | tuple:
        """Generate the frames seen along ``trajectory`` from a start view.

        Args:
            image: the start frame, uint8 [H, W, 3] (array or tensor) or a PIL image.
            depth: its z-depth [H, W] (float; 0 or inf where unknown or sky).
            intrinsics: K [3, 3] of that frame size; ``pose``: its camera-to-world transform [4, 4].
            trajectory: camera-to-world poses [N, 4, 4], one per generated frame; N must be a multiple of the
                frames per segment, ``4 * latents_per_step``.
            height, width: frame size (default the image's; otherwise the view is resized, intrinsics scaled).
            num_inference_steps: denoising steps per segment (default the preset's ``mirage_steps``).
            latents_per_step: new latent frames per segment (default the preset's chunk: 8, 33-frame chunks).
            generator: the noise source (default: a seed drawn from torch's global RNG).
            output_type: "np", "pt" or "pil" (see :class:`MiragePipelineOutput`).
            return_dict: False returns ``(frames,)``.

        Returns the start frame and N generated frames. Bad input raises TypeError / ValueError naming the argument
        before anything is generated.
        """
        config, view, trajectory = self.check_inputs(image, depth, intrinsics, pose, trajectory, height, width,
                                                     num_inference_steps, latents_per_step, generator, output_type)
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        world = World(self._world_model(self._execution_device), config)
        world.reset(0, view, generator)
        frames = [view.image[None]]
        with self.progress_bar(total=len(trajectory) // world.frames_per_step) as progress_bar:
            for poses in trajectory.split(world.frames_per_step):
                frames.append(world.step(poses[None]).frames[0].cpu())
                progress_bar.update()
        self.maybe_free_model_hooks()
        video = torch.cat(frames)[None].permute(0, 4, 1, 2, 3).float() / 255  # [1, 3, F, H, W] in [0, 1]
        frames = self.video_processor.postprocess_video(video, output_type=output_type)
        return MiragePipelineOutput(frames=frames) if return_dict else (frames,)

    def check_inputs(self, image, depth, intrinsics, pose, trajectory, height, width, num_inference_steps,
                     latents_per_step, generator, output_type) -> tuple[WorldConfig, InitialView, torch.Tensor]:
        """The world config, start view and trajectory (float64 [N, 4, 4]) of a call; TypeError / ValueError naming
        the argument otherwise."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if not isinstance(self.scheduler, UniPCMultistepScheduler):
            raise TypeError(f"the scheduler must be a UniPCMultistepScheduler, got {type(self.scheduler).__name__}")
        defaults = load_preset(self.config.preset).defaults
        stride = int(self.vae.config.scale_factor_temporal)
        view = InitialView(_image_tensor(image), _tensor("depth", depth), _tensor("intrinsics", intrinsics),
                           _tensor("pose", pose))
        check_view(view, labels=_VIEW_LABELS)
        size = (view.image.shape[0] if height is None else height, view.image.shape[1] if width is None else width)
        if num_inference_steps is None:
            num_inference_steps = int(defaults["mirage_steps"])
        if latents_per_step is None:
            latents_per_step = (int(defaults["mirage_chunk_frames"]) - 1) // stride
        config = WorldConfig(image_hw=size, num_steps=num_inference_steps, latents_per_step=latents_per_step)
        spatial = int(self.vae.config.scale_factor_spatial)
        if size[0] % spatial or size[1] % spatial:
            raise ValueError(f"height and width must be multiples of {spatial}, got {size[0]} x {size[1]}; "
                             "pass height= and width= to resize the start view")
        trajectory = _tensor("trajectory", trajectory)
        check_shape("trajectory", trajectory, (None, 4, 4))
        per_segment = stride * config.latents_per_step
        if len(trajectory) == 0 or len(trajectory) % per_segment:
            raise ValueError(f"trajectory has {len(trajectory)} poses; it needs a positive multiple of the frames per "
                             f"segment, {stride} * latents_per_step = {per_segment} (pad it with its last pose)")
        check_poses(trajectory, "trajectory")
        return config, fit_view(view, size), trajectory.to(torch.float64)

    def _world_model(self, device: torch.device | None = None) -> WanWorldModel:
        """The world model on the pipeline's components, sampling with its scheduler's config; with ``device``,
        its own buffers moved there (the components are moved by ``to`` or the offload hooks)."""
        model = self._model
        if model is None or model.vae is not self.vae or model.dit is not self.transformer \
                or model.branch is not self.addon:
            model = WanWorldModel(load_preset(self.config.preset), self.vae, MirageTransformer(self.transformer,
                                                                                               self.addon))
            self._model = model
        model.preset = dataclasses.replace(model.preset, scheduler=dict(self.scheduler.config))
        if device is not None:
            for name, buffer in model.named_buffers(recurse=False):
                setattr(model, name, buffer.to(device))
        return model


def read_model_index(root: Path) -> dict:
    """The ``model_index.json`` of a saved MiragePipeline; ValueError naming the file if it is not one."""
    path = root / DiffusionPipeline.config_name
    if not path.is_file():
        raise FileNotFoundError(f"{root} has no {path.name}: not a saved MiragePipeline (a weights folder of "
                                "from_preset loads with MiragePipeline.from_preset(name, weights_dir=...))")
    try:
        index = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(index, dict) or index.get("_class_name") != MiragePipeline.__name__:
        found = index.get("_class_name") if isinstance(index, dict) else None
        raise ValueError(f"{path}: a {found!r} pipeline, not a {MiragePipeline.__name__}")
    wrong = [name for name, kind in COMPONENTS.items()
             if not isinstance(index.get(name), list) or index[name][-1:] != [kind.__name__]]
    if wrong or not isinstance(index.get("preset"), str):
        raise ValueError(f"{path}: components {wrong or ''} or the preset name are missing or of another class")
    return index


def _pipeline_folder(name_or_path: str | os.PathLike, **hub: object) -> Path:
    """A local folder as is; a Hub repo id (a string ``owner/name`` that is no local folder) downloaded."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file, not a saved pipeline folder")
    if not isinstance(name_or_path, str) or name_or_path.count("/") != 1 or name_or_path.startswith((".", "~")):
        raise FileNotFoundError(f"pipeline folder {path} does not exist")
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise FileNotFoundError(f"pipeline folder {path} does not exist (nor is it a Hub repo id)") from None
    return Path(snapshot_download(name_or_path, **hub))


def _tensor(name: str, value: object) -> torch.Tensor:
    """An array or tensor argument as a CPU tensor (where the world keeps cameras and views)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.cpu()
    raise TypeError(f"{name} must be a numpy array or torch.Tensor, got {type(value).__name__}")


def _image_tensor(image: object) -> torch.Tensor:
    if isinstance(image, PIL.Image.Image):
        return torch.from_numpy(np.array(image.convert("RGB")))
    return _tensor("image", image)
