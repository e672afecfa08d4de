"""One world model per process and setting, shared by every env and vector env that asks for it.

Building a model takes seconds (and the real preset gigabytes), so envs get theirs from :func:`shared_model`,
keyed by preset, weights directory, device, dtype and seed. The models are used for inference only and never
changed by the envs, so their LoRA is fused into the base weights. Processes started by ``fork`` inherit models
built before the fork.

Torch's OpenMP threads do not survive ``fork`` (a forked child that runs a parallel region hangs), so envs created
in a forked child, e.g. workers of an ``"async"`` vector env, switch that child to one thread, as PyTorch's
DataLoader workers do.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mirage_env.config_checks import reject_renamed_keywords
from mirage_env.models import WorldModel, from_preset

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_MODELS: dict[tuple, WorldModel] = {}
_IMPORT_PID = os.getpid()


@reject_renamed_keywords
def shared_model(preset: str = "tiny", weights_dir: str | Path | None = None, device: str = "cpu",
                 dtype: str = "float32", model_seed: int = 0, random_weights: bool = False) -> WorldModel:
    """The model of preset ``preset`` with ``weights_dir`` (None: the preset's shipped weights; ``random_weights``:
    random weights from ``model_seed``), built once per process and shared."""
    if os.getpid() != _IMPORT_PID:
        torch.set_num_threads(1)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    key = (preset, None if weights_dir is None else str(Path(weights_dir).resolve()), str(device), dtype, model_seed,
           random_weights)
    if key not in _MODELS:
        _MODELS[key] = from_preset(preset, weights_dir, device=device, dtype=DTYPES[dtype], model_seed=model_seed,
                                   random_weights=random_weights, fuse_lora=True)
    return _MODELS[key]


def clear_model_cache() -> None:
    """Forget the shared models (their memory is freed once no env uses them)."""
    _MODELS.clear()
