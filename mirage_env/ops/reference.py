"""Pure-PyTorch reference of every memory kernel.

This module is the specification: the compiled CPU and CUDA kernels in ``csrc/`` must return bitwise-identical
integer outputs (packed z-buffer keys, vote counts, lookups) and floating sums equal up to summation order.
Every function takes already-validated, contiguous tensors (see :mod:`mirage_env.ops.dispatch`).

Projection arithmetic, shared by all kernels and evaluated in float32 in exactly this order (no FMA)::

    xc = ((r00 * X + r01 * Y) + r02 * Z) + t0        (likewise yc, zc with rows 1 and 2)
    point is in front of the camera when zc > near
    u = fx * (xc / zc) + cx ;  v = fy * (yc / zc) + cy
    fu = floor(u + 0.5) ; fv = floor(v + 0.5)          (pixel centres at integer coordinates)
    inside when 0 <= fu < w and 0 <= fv < h            (compared in float, then cast to int)

``cameras`` is a float32 tensor [B, 16] per camera: the 12 entries of the world-to-camera 3x4 matrix
(row-major) followed by ``fx, fy, cx, cy``.
"""

from __future__ import annotations

import torch

EMPTY_KEY = torch.iinfo(torch.int64).max
"""Packed z-buffer value of a pixel that no point reaches."""

INDEX_BITS = 32
INDEX_MASK = (1 << INDEX_BITS) - 1


def _project(points: torch.Tensor, camera: torch.Tensor, h: int, w: int, near: float):
    """Project ``points`` [N, 3] with one packed camera [16]; returns (zc, px, py, inside)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    r = camera
    xc = ((x * r[0] + y * r[1]) + z * r[2]) + r[3]
    yc = ((x * r[4] + y * r[5]) + z * r[6]) + r[7]
    zc = ((x * r[8] + y * r[9]) + z * r[10]) + r[11]
    in_front = zc > near
    safe_z = torch.where(in_front, zc, torch.ones_like(zc))
    u = r[12] * (xc / safe_z) + r[14]
    v = r[13] * (yc / safe_z) + r[15]
    fu = torch.floor(u + 0.5)
    fv = torch.floor(v + 0.5)
    inside = in_front & (fu >= 0) & (fu < w) & (fv >= 0) & (fv < h)
    px = torch.where(inside, fu, torch.zeros_like(fu)).to(torch.int64)
    py = torch.where(inside, fv, torch.zeros_like(fv)).to(torch.int64)
    return zc, px, py, inside


def float_bits(values: torch.Tensor) -> torch.Tensor:
    """IEEE-754 bit pattern of non-negative float32 ``values`` as int64 (monotonic in the value)."""
    return values.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF


def bits_to_float(bits: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`float_bits` for values below 2**31."""
    return bits.to(torch.int32).view(torch.float32)


def project_zbuffer(points: torch.Tensor, cameras: torch.Tensor, h: int, w: int, near: float) -> torch.Tensor:
    """Splat points [N, 3] into B depth buffers of size h x w; nearest depth wins, lowest index breaks ties.

    Returns packed keys int64 [B, h * w]: ``float_bits(depth) << 32 | point_index``, or :data:`EMPTY_KEY`.
    """
    n = points.shape[0]
    out = torch.full((cameras.shape[0], h * w), EMPTY_KEY, dtype=torch.int64, device=points.device)
    if n == 0:
        return out
    index = torch.arange(n, dtype=torch.int64, device=points.device)
    for b in range(cameras.shape[0]):
        zc, px, py, inside = _project(points, cameras[b], h, w, near)
        keys = (float_bits(zc[inside]) << INDEX_BITS) | index[inside]
        out[b].scatter_reduce_(0, (py * w + px)[inside], keys, reduce="amin")
    return out


def window_depth_range(depths: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest and farthest valid (> 0) depth in the (2 radius + 1)^2 window of every pixel of [T, h, w].

    Windows are clipped at the border; a window without valid depth gives (+inf, -inf). Shared by every backend.
    """
    valid = depths > 0
    k = 2 * radius + 1
    inf = torch.full_like(depths, float("inf"))
    nearest = -torch.nn.functional.max_pool2d(-torch.where(valid, depths, inf)[:, None], k, 1, radius)[:, 0]
    farthest = torch.nn.functional.max_pool2d(torch.where(valid, depths, -inf)[:, None], k, 1, radius)[:, 0]
    return nearest.contiguous(), farthest.contiguous()


def depth_consistency(
    points: torch.Tensor,
    source_frame: torch.Tensor,
    near_depth: torch.Tensor,
    far_depth: torch.Tensor,
    cameras: torch.Tensor,
    margin: float,
    near: float,
) -> torch.Tensor:
    """Count, for each point, how it sits against the observed depth of T frames.

    ``near_depth`` and ``far_depth`` [T, h, w] are the window ranges of the observed depth maps (see
    :func:`window_depth_range`). A point is *visible* in frame t (t != source_frame[i]) when it projects inside
    the image onto a pixel whose window holds a valid depth. Among visible frames it is *in front* when
    ``zc < near_depth * (1 - margin)`` (free space: something it should hide was seen behind it) and *behind*
    when ``zc > far_depth * (1 + margin)`` (occluded).

    Returns int32 [N, 3]: (visible, in_front, behind) counts.
    """
    n = points.shape[0]
    counts = torch.zeros((n, 3), dtype=torch.int32, device=points.device)
    if n == 0:
        return counts
    t_frames, h, w = near_depth.shape
    lo = torch.tensor(1.0 - margin, dtype=torch.float32)
    hi = torch.tensor(1.0 + margin, dtype=torch.float32)
    for t in range(t_frames):
        zc, px, py, inside = _project(points, cameras[t], h, w, near)
        pixel = py * w + px
        nearest = near_depth[t].flatten()[pixel]
        seen = inside & (source_frame != t) & torch.isfinite(nearest)
        front = seen & (zc < nearest * lo)
        back = seen & (zc > far_depth[t].flatten()[pixel] * hi)
        counts[:, 0] += seen.to(torch.int32)
        counts[:, 1] += front.to(torch.int32)
        counts[:, 2] += back.to(torch.int32)
    return counts


def cell_stats(depth: torch.Tensor, sky: torch.Tensor | None, stride: int, far: float):
    """Statistics of every ``stride`` x ``stride`` pixel block (cell) of depth maps [T, H, W] (float32, no NaN).

    A pixel is *far* when its depth is infinite or above ``far`` (compared in float32) or ``sky`` [T, H, W] (bool)
    marks it; far pixels are *seen* at ``float32(far)``, pixels of depth 0 are not seen. Returns, per cell [T, h, w]:

    * ``mean`` float32: the sum of the block's depths in row-major order times ``float32(1 / stride**2)`` when
      every pixel has depth and none is far, else 0;
    * ``is_far`` bool: any pixel is far;
    * ``nearest`` float32: the smallest seen depth, +inf when no pixel is seen;
    * ``index`` int32: row-major position in the block of the first pixel seen at ``nearest`` (0 when none).
    """
    t, big_h, big_w = depth.shape
    h, w, n = big_h // stride, big_w // stride, stride * stride

    def blocks(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(t, h, stride, w, stride).permute(0, 1, 3, 2, 4).reshape(t, h, w, n)

    values = blocks(depth)
    limit = torch.tensor(far, dtype=torch.float32)
    is_far = ~(values < float("inf")) | (values > limit)
    if sky is not None:
        is_far |= blocks(sky)
    seen = torch.where(is_far, limit, values)
    seen = torch.where(seen > 0, seen, torch.full_like(seen, float("inf")))
    nearest = seen.amin(dim=-1)
    position = torch.arange(n, dtype=torch.int32, device=depth.device)
    index = torch.where(seen == nearest[..., None], position, torch.full_like(position, n)).amin(dim=-1)
    total = torch.zeros((t, h, w), dtype=torch.float32, device=depth.device)
    for k in range(n):
        total = total + values[..., k]
    complete = (~is_far & (values > 0)).all(dim=-1)
    mean = torch.where(complete, total * float(torch.tensor(1.0 / n, dtype=torch.float32)), torch.zeros_like(total))
    return mean, is_far.any(dim=-1), nearest, index


def segment_fuse(
    sorted_keys: torch.Tensor,
    order: torch.Tensor,
    positions: torch.Tensor,
    features: torch.Tensor,
    weights: torch.Tensor,
    store_keys: torch.Tensor,
    store_slots: torch.Tensor,
):
    """Reduce new points by voxel key and look the voxels up in the store.

    ``sorted_keys`` [M] are the new points' voxel keys sorted (stably) and ``order`` [M] the permutation that
    sorts them; ``positions`` [M, 3], ``features`` [M, C] (float32) and ``weights`` [M] are in the original order.
    ``store_keys`` [S] are the store's keys sorted ascending, ``store_slots`` [S] the slot of each.

    Returns ``(unique_keys [U], pos_sum [U, 3], feat_sum [U, C], weight_sum [U], slot [U])`` where the sums are
    weighted by ``weights`` and accumulated in input order inside each voxel, and ``slot`` is the store slot of
    the voxel or -1 when it is new.
    """
    unique_keys, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    segment = torch.repeat_interleave(torch.arange(unique_keys.numel(), device=sorted_keys.device), counts)
    w_sorted = weights[order]
    u = unique_keys.numel()
    pos_sum = torch.zeros((u, 3), dtype=torch.float32, device=positions.device)
    feat_sum = torch.zeros((u, features.shape[1]), dtype=torch.float32, device=features.device)
    pos_sum.index_add_(0, segment, positions[order] * w_sorted[:, None])
    feat_sum.index_add_(0, segment, features[order] * w_sorted[:, None])
    weight_sum = torch.zeros(u, dtype=torch.float32, device=weights.device).index_add_(0, segment, w_sorted)
    slot = torch.full((u,), -1, dtype=torch.int64, device=sorted_keys.device)
    if store_keys.numel():
        at = torch.searchsorted(store_keys, unique_keys).clamp_(max=store_keys.numel() - 1)
        found = store_keys[at] == unique_keys
        slot = torch.where(found, store_slots[at], slot)
    return unique_keys, pos_sum, feat_sum, weight_sum, slot
