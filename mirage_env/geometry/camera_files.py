"""Readers and writers for camera files: Mirage ``geometry.npz`` and RealEstate10K camera txt.

``geometry.npz`` (the layout of the Mirage release, documented in docs/formats.md):

=============  ====================  =========================================================================
key            shape / dtype         meaning
=============  ====================  =========================================================================
depths         [T, H, W] float32     z-depth per frame; 0 = no depth (inf is accepted as sky), no NaN or < 0
intrinsics     [T, 3, 3] or [3, 3]   K in pixels of the depth maps (pixel centres at integers)
poses_c2w      [T, 4, 4]             OpenCV camera-to-world
frames         [T, H, W, 3] uint8    optional RGB frames (integers in [0, 255] accepted; floats refused)
masks          [T, H, W] bool/int    optional dynamic-object masks (non-zero = dynamic; floats refused)
=============  ====================  =========================================================================
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mirage_env.atomic import atomic_file
from mirage_env.config_checks import check_size
from mirage_env.geometry.camera import invert_pose
from mirage_env.geometry.checks import check_intrinsics, check_poses


@dataclass
class CameraSequence:
    """A posed sequence: intrinsics [T, 3, 3], poses [T, 4, 4], optional depths, frames and dynamic masks."""

    intrinsics: torch.Tensor
    poses_c2w: torch.Tensor
    depths: torch.Tensor | None = None
    frames: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    timestamps: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.poses_c2w.shape[0]


def _require(data, key: str, path: Path) -> np.ndarray:
    if key not in data:
        raise ValueError(f"{path}: missing array {key!r} (found {sorted(data.keys())})")
    return data[key]


def _numbers(data, key: str, path: Path, dtype: type) -> torch.Tensor:
    """Array ``key`` of real numbers as a tensor of ``dtype``."""
    array = _require(data, key, path)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"{path}: {key} must hold numbers, got {array.dtype}")
    return torch.from_numpy(np.asarray(array, dtype=dtype))


def _frames(array: np.ndarray, path: Path) -> torch.Tensor:
    """RGB frames as uint8; integers within [0, 255] are taken as they are, anything else is refused (never cast)."""
    if array.dtype != np.uint8:
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{path}: frames must be uint8 RGB (0-255), got {array.dtype}; convert them before "
                             "saving, e.g. (frames * 255).round().clip(0, 255).astype(np.uint8) for floats in [0, 1]")
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 255:
            raise ValueError(f"{path}: frames hold values outside [0, 255] ({low} .. {high}); convert them to uint8 "
                             "RGB before saving")
    return torch.from_numpy(array.astype(np.uint8))


def _masks(array: np.ndarray, path: Path) -> torch.Tensor:
    """Dynamic masks as bool (non-zero = dynamic); floats are refused (NaN would count as dynamic)."""
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path}: masks must be bool or integers (non-zero = dynamic), got {array.dtype}")
    return torch.from_numpy(array.astype(bool))


def load_geometry_npz(path: str | Path) -> CameraSequence:
    """Read a Mirage ``geometry.npz``; raises ValueError naming the file and the problem when it is malformed:
    missing arrays, shapes that disagree, invalid intrinsics or poses, NaN or negative depth, frames that are not
    uint8 (or integers within [0, 255]), float masks."""
    path = Path(path)
    try:
        data = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from error
    depths = _numbers(data, "depths", path, np.float32)
    intrinsics = _numbers(data, "intrinsics", path, np.float64)
    poses = _numbers(data, "poses_c2w", path, np.float64)
    if depths.dim() != 3:
        raise ValueError(f"{path}: depths must be [T, H, W], got {list(depths.shape)}")
    if depths.numel() == 0:
        raise ValueError(f"{path}: depths must hold at least one frame of at least one pixel, got "
                         f"{list(depths.shape)}")
    t = depths.shape[0]
    if intrinsics.dim() == 2:
        intrinsics = intrinsics.expand(t, 3, 3).clone()
    if poses.shape != (t, 4, 4) or intrinsics.shape != (t, 3, 3):
        raise ValueError(f"{path}: expected poses_c2w [{t}, 4, 4] and intrinsics [{t}, 3, 3] or [3, 3], got "
                         f"{list(poses.shape)} and {list(intrinsics.shape)}")
    check_intrinsics(intrinsics, f"{path}: intrinsics")
    check_poses(poses, f"{path}: poses_c2w")
    if bool(torch.isnan(depths).any()) or bool((depths < 0).any()):
        raise ValueError(f"{path}: depths contain NaN or negative values")
    frames = _frames(data["frames"], path) if "frames" in data else None
    masks = _masks(data["masks"], path) if "masks" in data else None
    for name, array, tail in (("frames", frames, 4), ("masks", masks, 3)):
        if array is not None and (array.dim() != tail or tuple(array.shape[:3]) != tuple(depths.shape)):
            raise ValueError(f"{path}: {name} must match depths {list(depths.shape)}, got {list(array.shape)}")
    if frames is not None and frames.shape[3] != 3:
        raise ValueError(f"{path}: frames must be RGB [T, H, W, 3], got {list(frames.shape)}")
    return CameraSequence(intrinsics, poses, depths, frames, masks)


def save_geometry_npz(path: str | Path, sequence: CameraSequence) -> None:
    """Write ``sequence`` in the ``geometry.npz`` layout (depths are required), atomically."""
    if sequence.depths is None:
        raise ValueError("geometry.npz needs depths")
    arrays = {
        "depths": sequence.depths.cpu().numpy().astype(np.float32),
        "intrinsics": sequence.intrinsics.cpu().numpy().astype(np.float32),
        "poses_c2w": sequence.poses_c2w.cpu().numpy().astype(np.float32),
    }
    if sequence.frames is not None:
        arrays["frames"] = sequence.frames.cpu().numpy().astype(np.uint8)
    if sequence.masks is not None:
        arrays["masks"] = sequence.masks.cpu().numpy().astype(bool)
    with atomic_file(path) as temp, open(temp, "wb") as handle:  # a handle: numpy appends ".npz" to bare names
        np.savez_compressed(handle, **arrays)


def load_realestate10k(path: str | Path, image_hw: tuple[int, int]) -> CameraSequence:
    """Read a RealEstate10K camera file for images of size ``image_hw``.

    Line 1 is the video URL; each further line is ``timestamp fx fy cx cy k1 k2`` (intrinsics normalised by the
    image width/height, continuous coordinates with the image centre at 0.5) followed by the 12 entries of the
    3x4 world-to-camera matrix, row-major. The principal point is shifted by half a pixel into mirage_env's
    pixel-centre convention.
    """
    path = Path(path)
    h, w = check_size("image_hw", image_hw)
    rows = [line.split() for line in path.read_text().splitlines()[1:] if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no camera lines after the URL line")
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{path}: camera lines must hold 19 numbers ({error})") from error
    if values.ndim != 2 or values.shape[1] != 19:
        raise ValueError(f"{path}: each camera line must hold 19 numbers, got {values.shape[-1]}")
    if not np.isfinite(values[:, 0]).all():
        raise ValueError(f"{path}: timestamps must be finite")
    t = values.shape[0]
    intrinsics = torch.zeros(t, 3, 3, dtype=torch.float64)
    intrinsics[:, 0, 0] = torch.from_numpy(values[:, 1] * w)
    intrinsics[:, 1, 1] = torch.from_numpy(values[:, 2] * h)
    intrinsics[:, 0, 2] = torch.from_numpy(values[:, 3] * w - 0.5)
    intrinsics[:, 1, 2] = torch.from_numpy(values[:, 4] * h - 0.5)
    intrinsics[:, 2, 2] = 1.0
    w2c = torch.eye(4, dtype=torch.float64).repeat(t, 1, 1)
    w2c[:, :3, :4] = torch.from_numpy(values[:, 7:19].reshape(t, 3, 4))
    check_poses(w2c, f"{path}: world-to-camera matrices")
    check_intrinsics(intrinsics, f"{path}: intrinsics")
    return CameraSequence(intrinsics, invert_pose(w2c), timestamps=torch.from_numpy(values[:, 0]))
