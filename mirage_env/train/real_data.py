"""Training clips from real data in the Mirage layout: one folder per sequence under a dataset root.

::

    <root>/<sequence>/geometry.npz     depths, intrinsics, poses_c2w, optional frames and masks (docs/formats.md)
    <root>/<sequence>/frames/*.png     RGB frames (PNG or JPG, sorted by name) when geometry.npz has no frames
    <root>/<sequence>/video.mp4        or an mp4 (imageio's ffmpeg) when there is neither

RGB frames have the depth maps' size (the intrinsics are for that size), one per depth map. Each sequence is cut
into windows of ``frames`` frames taken every ``stride`` source frames, a window starting every ``hop`` source
frames; the windows of all sequences are put in one seeded order, so index -> clip is deterministic and
neighbouring indices come from different sequences. A window is cropped (centred, to the training aspect ratio)
and resized to the training size: RGB by area averaging; depth by the nearest sample to each output pixel centre
(the simulator's convention, geometry at pixel centres; pooling would invent depths between a foreground edge
and the background, and min-pooling would grow the foreground); dynamic masks by max pooling over the area each
output pixel covers (a pixel touched by a dynamic object is kept out of the memory). K is shifted by the crop and
rescaled with :func:`~mirage_env.geometry.scale_intrinsics`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mirage_env.geometry import scale_intrinsics
from mirage_env.geometry.camera_files import CameraSequence, load_geometry_npz
from mirage_env.train.clips import Clip

GEOMETRY_FILE = "geometry.npz"
FRAME_FOLDER = "frames"
VIDEO_FILE = "video.mp4"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_geometry(folder: Path) -> CameraSequence:
    """The checked ``geometry.npz`` of a sequence folder (ValueError naming the file when missing or malformed)."""
    path = folder / GEOMETRY_FILE
    if not path.is_file():
        raise ValueError(f"{path}: missing (every sequence folder needs a {GEOMETRY_FILE})")
    return load_geometry_npz(path)


def image_files(folder: Path) -> list[Path]:
    """The PNG/JPG files in ``folder/frames``, sorted by name (empty when there is no such folder)."""
    images = folder / FRAME_FOLDER
    if not images.is_dir():
        return []
    return sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def check_rgb(folder: Path, geometry: CameraSequence) -> None:
    """Raise ValueError naming the file unless the sequence has one RGB frame of the depth maps' size per depth map."""
    if geometry.frames is not None:  # load_geometry_npz checked their shape
        return
    t, h, w = geometry.depths.shape
    files = image_files(folder)
    if files:
        if len(files) != t:
            raise ValueError(f"{folder / FRAME_FOLDER}: {len(files)} images for {t} depth maps in {GEOMETRY_FILE}")
        for file in files:
            with Image.open(file) as image:
                if image.size != (w, h):
                    raise ValueError(f"{file}: {image.size[1]}x{image.size[0]} pixels, the depth maps are {h}x{w}")
        return
    video = folder / VIDEO_FILE
    if not video.is_file():
        raise ValueError(f"{folder}: no RGB frames ('frames' in {GEOMETRY_FILE}, {FRAME_FOLDER}/*.png|jpg or "
                         f"{VIDEO_FILE})")
    import imageio.v2 as imageio

    with imageio.get_reader(video, "ffmpeg") as reader:
        count, (width, height) = reader.count_frames(), reader.get_meta_data()["size"]
    if count != t:
        raise ValueError(f"{video}: {count} frames for {t} depth maps in {GEOMETRY_FILE}")
    if (height, width) != (h, w):
        raise ValueError(f"{video}: {height}x{width} pixels, the depth maps are {h}x{w}")


def read_rgb(folder: Path, geometry: CameraSequence, indices: list[int]) -> torch.Tensor:
    """uint8 [len(indices), H, W, 3]: the sequence's RGB frames at ``indices`` (ascending)."""
    if geometry.frames is not None:
        return geometry.frames[indices]
    files = image_files(folder)
    if files:
        images = []
        for i in indices:
            with Image.open(files[i]) as image:
                images.append(np.asarray(image.convert("RGB")))
        return torch.from_numpy(np.stack(images))
    import imageio.v2 as imageio

    wanted, frames = set(indices), {}
    with imageio.get_reader(folder / VIDEO_FILE, "ffmpeg") as reader:
        for i, frame in enumerate(reader):  # decode in order: seeking in an mp4 is not frame exact
            if i in wanted:
                frames[i] = np.asarray(frame)
            if i == indices[-1]:
                break
    return torch.from_numpy(np.stack([frames[i] for i in indices]))


def centre_crop(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest centred crop of ``src_hw`` with the aspect ratio of ``dst_hw``."""
    (h, w), (dh, dw) = src_hw, dst_hw
    height, width = min(h, round(w * dh / dw)), min(w, round(h * dw / dh))
    return (h - height) // 2, (w - width) // 2, height, width


def fit_window(frames: torch.Tensor, depth: torch.Tensor, masks: torch.Tensor, K: torch.Tensor,
               hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre-crop frames uint8 [T, H, W, 3], depth [T, H, W], masks bool [T, H, W] and K [3, 3] to the aspect of
    ``hw``, then resize: RGB by area averaging, depth by nearest pixel centre, masks by max pooling."""
    top, left, height, width = centre_crop(tuple(depth.shape[1:]), hw)
    rows, cols = slice(top, top + height), slice(left, left + width)
    K = K.to(torch.float64).clone()
    K[0, 2] -= left
    K[1, 2] -= top
    rgb = F.interpolate(frames[:, rows, cols].permute(0, 3, 1, 2).float(), size=hw, mode="area")
    rgb = rgb.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    depth = F.interpolate(depth[:, None, rows, cols].float(), size=hw, mode="nearest-exact")[:, 0]
    masks = F.adaptive_max_pool2d(masks[:, None, rows, cols].float(), hw)[:, 0] > 0
    return rgb, depth, masks, scale_intrinsics(K, (height, width), hw)


class RealClips:
    """Clips of ``frames`` frames at ``hw`` cut from the sequences under ``root``: a
    :data:`~mirage_env.train.clips.ClipSource` (indices wrap around). Every sequence is checked on construction;
    ``times`` are source frame indices / ``fps``."""

    def __init__(self, root: str | Path, frames: int, hw: tuple[int, int], stride: int = 1, hop: int | None = None,
                 fps: float = 16.0, seed: int = 0) -> None:
        if frames < 1 or stride < 1 or (hop is not None and hop < 1) or fps <= 0:
            raise ValueError("frames, stride and hop must be >= 1 and fps > 0")
        self.root, self.frames, self.hw, self.stride, self.fps = Path(root), frames, tuple(hw), stride, fps
        span = (frames - 1) * stride + 1
        if (self.root / GEOMETRY_FILE).is_file():
            raise ValueError(f"{self.root} is a sequence folder: pass the dataset root that holds one folder per "
                             "sequence")
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: not a folder")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise ValueError(f"{self.root}: no sequence folders (expected {self.root}/<sequence>/{GEOMETRY_FILE})")
        windows = []
        for folder in folders:
            geometry = load_geometry(folder)
            check_rgb(folder, geometry)
            for start in range(0, len(geometry) - span + 1, hop or span):
                K = geometry.intrinsics[start: start + span: stride]
                if not torch.allclose(K, K[0].expand_as(K), atol=1e-4):
                    raise ValueError(f"{folder / GEOMETRY_FILE}: intrinsics change within frames {start}.."
                                     f"{start + span - 1}; a clip has one K")
                windows.append((folder, start))
        if not windows:
            raise ValueError(f"{self.root}: no sequence has the {span} frames a clip of {frames} frames at stride "
                             f"{stride} spans")
        order = np.random.default_rng(seed).permutation(len(windows))
        self.windows: list[tuple[Path, int]] = [windows[i] for i in order]

    def __len__(self) -> int:
        return len(self.windows)

    def __call__(self, index: int) -> Clip:
        folder, start = self.windows[index % len(self.windows)]
        geometry = load_geometry(folder)
        indices = list(range(start, start + (self.frames - 1) * self.stride + 1, self.stride))
        depth = geometry.depths[indices]
        masks = geometry.masks[indices] if geometry.masks is not None else torch.zeros(depth.shape, dtype=torch.bool)
        frames, depth, masks, K = fit_window(read_rgb(folder, geometry, indices), depth, masks,
                                             geometry.intrinsics[start], self.hw)
        times = torch.tensor(indices, dtype=torch.float64) / self.fps
        return Clip(frames, depth, masks, K, geometry.poses_c2w[indices], times)
