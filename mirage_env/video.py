"""Frames: uint8 <-> [-1, 1] conversion, mp4 (imageio-ffmpeg's bundled ffmpeg) or GIF videos, PNG contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mirage_env.atomic import atomic_file, check_writable


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1] (what the VAE takes)."""
    return images.movedim(-1, -3).float() / 127.5 - 1.0


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Float frames [..., 3, H, W] in [-1, 1] -> uint8 images [..., H, W, 3] (inverse of :func:`to_unit`)."""
    return ((frames.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).movedim(-3, -1)


def _as_frames(frames) -> np.ndarray:
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {array.dtype} {list(array.shape)}")
    return array


VIDEO_SUFFIXES = (".mp4", ".gif")


def check_video_path(path: str | Path) -> Path:
    """``path`` as a Path; raises ValueError unless its suffix is a format :func:`write_video` writes."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"unsupported video format {path.suffix!r} of {str(path)!r}: use .mp4 or .gif")
    return path


def check_video_outputs(path: str | Path) -> Path:
    """``path`` as a Path; raises ValueError unless it is a video path (:func:`check_video_path`) where the video
    and the ``.png`` and ``.json`` beside it (what rollouts and the memory demo write) can be written."""
    path = check_video_path(path)
    for file in (path, path.with_suffix(".png"), path.with_suffix(".json")):
        check_writable(file)
    return path


def write_video(path: str | Path, frames, fps: float = 16.0) -> Path:
    """Write uint8 frames [T, H, W, 3] to ``path`` atomically; the suffix picks the format (.mp4 or .gif)."""
    path = check_video_path(path)
    array = _as_frames(frames)
    with atomic_file(path) as temp:
        _write_frames(temp, array, fps)
    return path


def _write_frames(path: Path, array: np.ndarray, fps: float) -> None:
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in array]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return
    import imageio.v2 as imageio

    # libx264 with yuv420p needs even sizes: pad by edge replication.
    pad_h, pad_w = array.shape[1] % 2, array.shape[2] % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                            ffmpeg_log_level="error") as writer:
        for frame in array:
            writer.append_data(frame)


def contact_sheet(frames, columns: int = 8) -> np.ndarray:
    """Tile frames [T, H, W, 3] into one image, ``columns`` per row (empty tiles are black)."""
    array = _as_frames(frames)
    t, h, w, _ = array.shape
    rows = -(-t // columns)
    sheet = np.zeros((rows * h, min(columns, t) * w, 3), dtype=np.uint8)
    for i, frame in enumerate(array):
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = frame
    return sheet


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Save a uint8 HxWx3 image as PNG (atomically)."""
    path = Path(path)
    with atomic_file(path) as temp:
        Image.fromarray(image).save(temp)
    return path
