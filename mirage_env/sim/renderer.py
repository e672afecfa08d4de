"""Ray-cast renderer: RGB, exact z-depth, object ids and masks for a batch of pinhole cameras.

Cameras are rendered one after another (so a batch equals its single renders bit for bit). Per camera, each primitive
gets a screen rectangle, the projection of its bounds clipped to ``z >= NEAR``; primitives off screen are skipped.
The rest are ray-tested either in batches per ``TILE`` x ``TILE`` tile against the primitives overlapping the tile
(best for small images) or one by one on their rectangles, whichever ``TEST_OVERHEAD`` predicts is cheaper (both
give identical results). Visibility is resolved in float32 with one int32 key per pixel: the float32 bits of
``t + HUGE * miss`` with the low bits replaced by the primitive index, so the id rides along with a plain ``minimum``
(candidates within one key bucket, about 2^-15 relative for 256 primitives, tie-break by index). The winner's depth,
normal and texture point are then recomputed in float64 and depth is rounded to float32 once: it is the exact
z-depth of the visible surface to float32 precision. Hits beyond ``FAR`` count as sky.

Shading: ``albedo * (ambient + (1 - ambient) * max(0, n . light_dir))``; sky is a vertical gradient. No shadows.
Colour is anti-aliased by supersampling (``render(supersample=2)``: 2 x 2 rays per pixel, box filter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mirage_env.geometry.camera import camera_rays, scale_intrinsics
from mirage_env.geometry.checks import check_intrinsics, check_poses
from mirage_env.sim.primitives import (
    HUGE,
    NEAR,
    Box,
    Capsule,
    box_hit,
    box_entry,
    capsule_hit,
    capsule_normal,
    safe_directions,
    sphere_hit,
)
from mirage_env.sim.scene import Scene
from mirage_env.sim.textures import albedo

FAR = 1e5
_FAR_BITS = int(np.array(FAR, dtype=np.float32).view(np.int32))
_INF_BITS = int(np.array(np.inf, dtype=np.float32).view(np.int32))
TILE = 32  # tile size in pixels for batched ray tests
CHUNK = 1 << 15  # elements per temporary in batched tests: small enough for the allocator to reuse, not map anew
TEST_OVERHEAD = 16000  # fixed cost of one (batched) ray test call, in pixel tests; chooses tiled vs per-box tests
_CORNERS = np.array([[(c >> a) & 1 for a in range(3)] for c in range(8)], dtype=bool)
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])


@dataclass
class RenderOutput:
    """Rendered frames for B cameras; ``object_id`` is -1 on sky, movers have ids ``>= scene.n_static``."""

    rgb: torch.Tensor  # uint8 [B, h, w, 3]
    depth: torch.Tensor  # float32 [B, h, w], z-depth, +inf on sky
    dynamic_mask: torch.Tensor  # bool [B, h, w]
    sky_mask: torch.Tensor  # bool [B, h, w]
    object_id: torch.Tensor  # int32 [B, h, w]


@dataclass
class _Frame:
    """A scene's primitives at one time (numpy float64): boxes, then capsules, with each primitive's object id."""

    box_lo: np.ndarray  # [N, 3]
    box_hi: np.ndarray
    cap_center: np.ndarray  # [M, 3]
    cap_half_height: np.ndarray  # [M]
    cap_radius: np.ndarray
    prim_object: torch.Tensor  # [N + M] int64
    origin: torch.Tensor  # [3, n_objects] float64, subtracted from hit points before texturing


def _frame(scene: Scene, time: float) -> _Frame:
    tab = scene.tables
    boxes: list[Box] = []
    capsules: list[Capsule] = []
    box_obj, cap_obj = [], []
    origin = np.zeros((scene.n_static + len(scene.movers), 3))
    for k, mover in enumerate(scene.movers):
        obj = scene.n_static + k
        origin[obj] = mover.path.position(time)
        for part in mover.parts(time):
            (boxes if isinstance(part, Box) else capsules).append(part)
            (box_obj if isinstance(part, Box) else cap_obj).append(obj)
    return _Frame(
        box_lo=np.concatenate([tab.box_lo, np.array([b.lo for b in boxes]).reshape(-1, 3)]),
        box_hi=np.concatenate([tab.box_hi, np.array([b.hi for b in boxes]).reshape(-1, 3)]),
        cap_center=np.concatenate([tab.cap_center, np.array([c.center for c in capsules]).reshape(-1, 3)]),
        cap_half_height=np.concatenate([tab.cap_half_height, [c.half_height for c in capsules]]),
        cap_radius=np.concatenate([tab.cap_radius, [c.radius for c in capsules]]),
        prim_object=torch.from_numpy(np.concatenate([tab.box_object, box_obj, tab.cap_object, cap_obj]).astype(int)),
        origin=torch.from_numpy(origin.T.copy()),
    )


def screen_rects(lo: np.ndarray, hi: np.ndarray, K: np.ndarray, c2w: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Pixel rectangles [N, 4] ``(i0, i1, j0, j1)`` (exclusive ends) that hold every ray hitting the boxes [N, 3].

    The bound is the projection of each box clipped to camera ``z >= NEAR`` (corners in front plus edge crossings),
    widened by a pixel for rounding.
    """
    corners = np.where(_CORNERS, hi[:, None, :], lo[:, None, :])
    cam = (corners - c2w[:3, 3]) @ c2w[:3, :3]
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]
    crossing = (a[..., 2] - NEAR) * (b[..., 2] - NEAR) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(crossing, (NEAR - a[..., 2]) / (b[..., 2] - a[..., 2]), 0.0)
    points = np.concatenate([cam, a + s[..., None] * (b - a)], axis=1)
    valid = np.concatenate([cam[..., 2] >= NEAR, crossing], axis=1)
    z = np.where(valid, points[..., 2], 1.0)
    x, y = points[..., 0] / z, points[..., 1] / z
    u, v = K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]
    rect = []
    for coord, size in ((v, hw[0]), (u, hw[1])):
        lo_c = np.where(valid, coord, np.inf).min(1)
        hi_c = np.where(valid, coord, -np.inf).max(1)
        rect += [np.clip(np.floor(lo_c) - 1, 0, size), np.clip(np.floor(hi_c) + 2, 0, size)]
    return np.stack(rect, axis=1).astype(np.int64)


def _tiles(rects: np.ndarray, hw: tuple[int, int]) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """``TILE`` x ``TILE`` image tiles, each with the indices of the rectangles [N, 4] that overlap it."""
    ti, tj = np.arange(0, hw[0], TILE), np.arange(0, hw[1], TILE)
    rows = (rects[:, 0, None] < ti + TILE) & (rects[:, 1, None] > ti)
    cols = (rects[:, 2, None] < tj + TILE) & (rects[:, 3, None] > tj)
    return [((slice(i, i + TILE), slice(j, j + TILE)), np.nonzero(rows[:, a] & cols[:, b])[0])
            for a, i in enumerate(ti) for b, j in enumerate(tj)]


def _visible(frame: _Frame, origin: np.ndarray, d: torch.Tensor, K: np.ndarray, c2w: np.ndarray) -> torch.Tensor:
    """Index of the visible primitive per pixel [h, w] (int64) for rays d [3, h, w], -1 where none is hit by ``FAR``."""
    hw = tuple(d.shape[1:])
    dx, dy, dz = d.to(torch.float32)
    dd, dxz = dx * dx + dy * dy + dz * dz, dx * dx + dz * dz
    ix, iy, iz = dx.reciprocal(), dy.reciprocal(), dz.reciprocal()
    n_box = len(frame.box_lo)
    id_mask = (1 << max(1, (n_box + len(frame.cap_center) - 1).bit_length())) - 1
    key = torch.full(hw, _INF_BITS, dtype=torch.int32)
    box_lo, box_hi = (torch.from_numpy(c - origin).to(torch.float32) for c in (frame.box_lo, frame.box_hi))
    cap_rel = torch.from_numpy(origin - frame.cap_center).to(torch.float32)
    cap_hh, cap_r = (torch.from_numpy(x).to(torch.float32) for x in (frame.cap_half_height, frame.cap_radius))

    kind = np.r_[np.zeros(n_box, dtype=int), np.where(frame.cap_half_height == 0.0, 1, 2)]  # box, sphere, capsule

    def test(some: np.ndarray, at: tuple[slice, slice]) -> None:
        """Test primitives ``some`` (all of one kind) on the pixels ``at`` and fold them into ``key``."""
        i = torch.from_numpy(some)
        if kind[some[0]] == 0:
            t, miss = box_hit(box_lo[i].T[..., None, None], box_hi[i].T[..., None, None], (ix[at], iy[at], iz[at]))
        else:
            c, ray = i - n_box, (dx[at], dy[at], dz[at])
            rel, hh, r = cap_rel[c].T[..., None, None], cap_hh[c][:, None, None], cap_r[c][:, None, None]
            t, miss = sphere_hit(rel, r, ray, dd[at]) if kind[some[0]] == 1 else \
                capsule_hit(rel, hh, r, ray, dd[at], dxz[at])
        keys = (torch.add(t, miss, alpha=HUGE).view(torch.int32) & ~id_mask) | i.to(torch.int32)[:, None, None]
        torch.minimum(key[at], keys.amin(0), out=key[at])

    cap_lo = frame.cap_center - np.stack([frame.cap_radius, frame.cap_half_height + frame.cap_radius,
                                          frame.cap_radius], 1)
    cap_hi = 2 * frame.cap_center - cap_lo
    rects = screen_rects(np.concatenate([frame.box_lo, cap_lo]), np.concatenate([frame.box_hi, cap_hi]), K, c2w, hw)
    area = (rects[:, 1] - rects[:, 0]).clip(0) * (rects[:, 3] - rects[:, 2]).clip(0)
    shown = np.nonzero(area)[0]
    tiles = _tiles(rects[shown], hw)
    chunk = CHUNK // (TILE * TILE)
    tiled_cost = sum(len(m) * TILE * TILE + -(-len(m) // chunk) * TEST_OVERHEAD for _, m in tiles)
    if tiled_cost < area[shown].sum() + len(shown) * TEST_OVERHEAD:  # batched tests per tile
        for at, members in tiles:
            ids = shown[members]
            for group in (ids[kind[ids] == k] for k in range(3)):
                for start in range(0, len(group), chunk):
                    test(group[start:start + chunk], at)
    else:  # one primitive at a time, on its own rectangle
        for k in shown:
            i0, i1, j0, j1 = rects[k].tolist()
            test(np.array([k]), (slice(i0, i1), slice(j0, j1)))
    hit = (key & ~id_mask) < _FAR_BITS
    return torch.where(hit, (key & id_mask).to(torch.int64), -1)


def _surface(frame: _Frame, origin: torch.Tensor, d: torch.Tensor,
             prim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact float64 ray parameters [P] and unit normals [3, P] of rays d [3, P] on their visible primitives."""
    n_box = len(frame.box_lo)
    on_box = prim < n_box
    sel = None if bool(on_box.all()) else on_box.nonzero()[:, 0]  # None: every pixel shows a box
    ray, i = (d, prim) if sel is None else (d[:, sel], prim[sel])
    lo = torch.from_numpy(frame.box_lo.T)[:, i] - origin[:, None]
    hi = torch.from_numpy(frame.box_hi.T)[:, i] - origin[:, None]
    t, normal = box_entry(lo, hi, ray.reciprocal())
    if sel is None:
        return t, normal
    t_all = torch.empty(len(prim), dtype=torch.float64)
    normal_all = torch.empty(3, len(prim), dtype=torch.float64)
    t_all[sel], normal_all[:, sel] = t, normal
    sel = (~on_box).nonzero()[:, 0]
    ray, i = d[:, sel], prim[sel] - n_box
    rel = origin[:, None] - torch.from_numpy(frame.cap_center.T)[:, i]
    hh, r = torch.from_numpy(frame.cap_half_height)[i], torch.from_numpy(frame.cap_radius)[i]
    t = capsule_hit(rel, hh, r, ray, (ray * ray).sum(0), ray[0] * ray[0] + ray[2] * ray[2])[0]
    t_all[sel], normal_all[:, sel] = t, capsule_normal(rel, hh, t, ray)
    return t_all, normal_all


def _shade(scene: Scene, K: torch.Tensor, c2w: torch.Tensor, hw: tuple[int, int], time: float,
           colour: bool = True) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Linear RGB [3, h * w] in [0, 1] (None without ``colour``), depth [h * w] and object ids [h * w] of one
    camera, one ray per pixel."""
    origins, directions = camera_rays(K, c2w, hw)
    origin, d = origins[0], safe_directions(directions[0]).permute(2, 0, 1).contiguous()  # [3, h, w]
    frame = _frame(scene, time)
    prim = _visible(frame, origin.numpy(), d, K.to(torch.float64).numpy(), c2w.to(torch.float64).numpy()).reshape(-1)
    d = d.reshape(3, -1)
    pix = (prim >= 0).nonzero()[:, 0]
    d_pix = d[:, pix]
    t, normal = _surface(frame, origin, d_pix, prim[pix])
    obj = frame.prim_object[prim[pix]]
    rgb = _colour(scene, frame, origin, d, pix, t, normal, obj) if colour else None
    depth = torch.full((len(prim),), math.inf, dtype=torch.float32)
    depth[pix] = t.to(torch.float32)
    object_id = torch.full((len(prim),), -1, dtype=torch.int32)
    object_id[pix] = obj.to(torch.int32)
    return rgb, depth, object_id


def _colour(scene: Scene, frame: _Frame, origin: torch.Tensor, d: torch.Tensor, pix: torch.Tensor, t: torch.Tensor,
            normal: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """Lambert-shaded albedo at the hit pixels ``pix`` (hits at ``t`` along ``d``), the sky gradient elsewhere."""
    tab = scene.tables
    points = origin[:, None] + t * d[:, pix] - frame.origin[:, obj]
    color = albedo(points, normal, tab.texture[obj], tab.scale[obj], tab.color_a[:, obj], tab.color_b[:, obj],
                   tab.seed[obj])
    lambert = (normal * torch.tensor(scene.light_dir, dtype=torch.float64)[:, None]).sum(0).clamp_min(0.0)
    zenith, horizon = (torch.tensor(c, dtype=torch.float32)[:, None] for c in (scene.sky_zenith, scene.sky_horizon))
    rgb = torch.lerp(horizon, zenith, (-d[1] / (d * d).sum(0).sqrt()).clamp(0.0, 1.0).sqrt().to(torch.float32))
    rgb[:, pix] = color * (scene.ambient + (1.0 - scene.ambient) * lambert).to(torch.float32)
    return rgb


def _render_camera(scene: Scene, K: torch.Tensor, c2w: torch.Tensor, hw: tuple[int, int], time: float,
                   supersample: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB [h, w, 3] (the mean of ``supersample``^2 rays per pixel), depth [h, w] and object ids [h, w] (at pixel
    centres) of one camera."""
    h, w = hw
    rgb, depth, object_id = _shade(scene, K, c2w, hw, time, colour=supersample == 1)
    if supersample > 1:
        fine = (h * supersample, w * supersample)
        rgb = _shade(scene, scale_intrinsics(K, hw, fine), c2w, fine, time)[0].reshape(3, h, supersample, w, supersample)
        rgb = rgb.mean(dim=(2, 4))
    rgb = (rgb * 255.0 + 0.5).floor().clamp(0, 255).to(torch.uint8).reshape(3, h, w).permute(1, 2, 0)
    return rgb, depth.reshape(h, w), object_id.reshape(h, w)


def _batch(name: str, x: torch.Tensor, event_dims: int) -> torch.Tensor:
    if x.dim() == event_dims:
        return x[None]
    if x.dim() != event_dims + 1:
        raise ValueError(f"{name} must have {event_dims} or {event_dims + 1} dims, got shape {list(x.shape)}")
    return x


def _cameras(K: torch.Tensor, c2w: torch.Tensor, hw: tuple[int, int],
             time: float | torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor, float]], tuple[int, int]]:
    """Checked cameras ``(K, c2w, time)`` of a batch (batch-1 inputs broadcast) and the image size."""
    check_intrinsics(K)
    check_poses(c2w)
    if len(hw) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in hw):
        raise ValueError(f"hw must be two positive ints, got {hw}")
    times = torch.as_tensor(time, dtype=torch.float64).reshape(-1)
    if not bool(torch.isfinite(times).all()):
        raise ValueError("time must be finite")
    K, c2w = _batch("K", K.detach().cpu(), 2), _batch("c2w", c2w.detach().cpu(), 2)
    B = max(len(K), len(c2w), len(times))
    if any(n not in (1, B) for n in (len(K), len(c2w), len(times))):
        raise ValueError(f"batch sizes disagree: K {len(K)}, c2w {len(c2w)}, time {len(times)}")
    cameras = [(K[b % len(K)], c2w[b % len(c2w)], float(times[b % len(times)])) for b in range(B)]
    return cameras, (int(hw[0]), int(hw[1]))


def render(scene: Scene, K: torch.Tensor, c2w: torch.Tensor, hw: tuple[int, int],
           time: float | torch.Tensor = 0.0, supersample: int = 2) -> RenderOutput:
    """Render B cameras of image size ``hw = (h, w)``: ``K`` [3, 3] or [B, 3, 3], ``c2w`` [4, 4] or [B, 4, 4] and
    ``time`` (scene time of each camera in seconds: a float or [B]).

    Colour is anti-aliased: the mean of ``supersample`` x ``supersample`` rays spread over each pixel (as a camera
    integrates light over its pixel area; 1 = one ray through the pixel centre, the cheapest). Depth, masks and
    object ids are always those of the pixel-centre ray (:func:`render_depth` gives depth alone, without shading).

    Inputs of batch size 1 broadcast. Raises ValueError on invalid cameras, sizes or times. Runs on the CPU; the
    outputs are CPU tensors.
    """
    cameras, hw = _cameras(K, c2w, hw, time)
    if not (isinstance(supersample, (int, np.integer)) and supersample >= 1):
        raise ValueError(f"supersample must be an int >= 1, got {supersample!r}")
    frames = [_render_camera(scene, k, pose, hw, t, int(supersample)) for k, pose, t in cameras]
    rgb, depth, object_id = (torch.stack(x) for x in zip(*frames))
    return RenderOutput(rgb=rgb, depth=depth, dynamic_mask=object_id >= scene.n_static, sky_mask=object_id < 0,
                        object_id=object_id)


def render_depth(scene: Scene, K: torch.Tensor, c2w: torch.Tensor, hw: tuple[int, int],
                 time: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Z-depth [B, h, w] (inf = sky) of B cameras, equal to ``render(...).depth`` without texturing or shading any
    pixel. Arguments and errors as :func:`render`."""
    cameras, hw = _cameras(K, c2w, hw, time)
    return torch.stack([_shade(scene, k, pose, hw, t, colour=False)[1].reshape(hw) for k, pose, t in cameras])
