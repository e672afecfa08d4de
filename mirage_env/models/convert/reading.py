"""Tensor files as the converter reads them: safetensors (headers first, tensors on demand) or PyTorch pickles
through ``torch.load(weights_only=True)`` only, with the wrapper prefixes of training scripts stripped.

A pickle that needs full unpickling (Python objects beyond tensors and plain containers: unpickling it could run
any code) raises :class:`PickleRefusedError`; nothing falls back to ``weights_only=False``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from mirage_env.models.weight_files import Shapes, read_shapes

PREFIXES = ("module.", "model.diffusion_model.", "model.", "pipe.vace.", "pipe.dit.", "vace.")
"""Wrapper prefixes stripped from every key (repeatedly, in any order): DDP's ``module.``, the original Wan
``model.diffusion_model.``, and the Mirage release's ``pipe.vace.`` / ``pipe.dit.`` / ``vace.`` / ``model.``."""

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class PickleRefusedError(ValueError):
    """A pickled checkpoint holds more than tensors; loading it would need full (unsafe) unpickling."""


def strip_prefixes(key: str) -> str:
    """``key`` without the wrapper prefixes of :data:`PREFIXES`."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


@dataclass(frozen=True)
class TensorFile:
    """One checkpoint file: its tensor names (prefixes stripped) and shapes, and the tensors on demand."""

    path: Path
    shapes: Shapes  # stripped name -> shape
    stored: dict[str, str]  # stripped name -> name in the file

    @classmethod
    def open(cls, path: str | Path) -> TensorFile:
        """Read the names and shapes of ``path`` (a safetensors header, or a pickle loaded weights-only)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        if path.suffix in SAFETENSORS_SUFFIXES:
            stored_shapes = read_shapes(path)
        elif path.suffix in PICKLE_SUFFIXES:
            stored_shapes = {name: tuple(t.shape) for name, t in load_pickle(path).items()}
        else:
            raise ValueError(f"checkpoint {path}: unknown kind {path.suffix!r}; expected one of "
                             f"{SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES}")
        stored: dict[str, str] = {}
        for name in stored_shapes:
            key = strip_prefixes(name)
            if key in stored:
                raise ValueError(f"checkpoint {path}: {stored[key]!r} and {name!r} are the same tensor {key!r} "
                                 f"once the prefixes {PREFIXES} are stripped")
            stored[key] = name
        return cls(path, {key: stored_shapes[name] for key, name in stored.items()}, stored)

    def tensors(self) -> dict[str, torch.Tensor]:
        """All tensors under their stripped names (pickles are memory-mapped where their format allows)."""
        if self.path.suffix in SAFETENSORS_SUFFIXES:
            with safe_open(str(self.path), framework="pt") as handle:
                return {key: handle.get_tensor(name) for key, name in self.stored.items()}
        state = load_pickle(self.path)
        return {key: state[name] for key, name in self.stored.items()}


def load_pickle(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict through ``torch.load(weights_only=True)``; :class:`PickleRefusedError` if it needs
    more, ValueError if it is not a flat mapping of names to tensors."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:  # files in the pre-zip format cannot be memory-mapped
            if "mmap" not in str(error):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise PickleRefusedError(
            f"{path}: refusing to unpickle it, it holds Python objects beyond tensors (unpickling those can run "
            f"arbitrary code; only torch.load(weights_only=True) is used). Re-save its state dict as safetensors "
            f"where you trust the file. ({str(error).splitlines()[0]})") from None
    except (RuntimeError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt? ({error})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{path}: not a state dict (a flat mapping of names to tensors)")
    return state
