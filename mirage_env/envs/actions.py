"""Action spaces and their mapping to per-frame camera velocities.

Units: an action is held for every frame of a step. Translation is ``move_m`` metres per frame at full
action, rotation ``turn_deg`` degrees per frame (defaults 0.05 m and 3 deg; at 16 fps 0.8 m/s and 48 deg/s).
Axes follow OpenCV: x right, y down, z forward; positive yaw turns right, positive pitch looks up, positive roll
banks right. Pitch is clamped to ``[-max_pitch_deg, max_pitch_deg]``.

* :class:`ContinuousActions` (``MirageEnv/Camera-v0``): ``Box(-1, 1, (6,), float32)`` =
  ``(right, down, forward, yaw, pitch, roll)`` scaled by ``move_m`` / ``turn_deg``; translation in the camera
  frame (a free-flying camera). Values outside [-1, 1] are clipped; NaN/inf or a wrong shape raise ValueError.
* :class:`KeyActions` (``MirageEnv/Keys-v0``): ``MultiDiscrete([3, 3, 3, 3])``, one digit per key group:
  ``[move: 0 -, 1 forward, 2 back | strafe: 0 -, 1 left, 2 right | turn: 0 -, 1 left, 2 right |
  look: 0 -, 1 up, 2 down]``; all zeros = stay. Translation in the heading frame (yaw only), so looking up or
  down does not change the height, as in games. Out-of-range or non-integer values raise ValueError.

Key scripts (``mirage-env play``): whitespace-separated tokens ``KEYS[*N]``, KEYS being letters (optionally
joined by ``+``) held together for N steps: ``w``/``s`` forward/back, ``a``/``d`` strafe left/right, ``j``/``l`` turn left/right,
``i``/``k`` look up/down, ``.`` stay. ``"w*8 wl*6 s*4"`` = 8 steps forward, 6 forward while turning right, 4 back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces

from mirage_env.config_checks import check_number
from mirage_env.geometry.poses import euler_from_rotation, rotation_from_euler

KEYS = {"w": (0, 1), "s": (0, 2), "a": (1, 1), "d": (1, 2), "j": (2, 1), "l": (2, 2), "i": (3, 1), "k": (3, 2)}
KEY_GROUPS = ("move", "strafe", "turn", "look")
STAY = "."  # the key that holds still
ACTION_MODES = ("continuous", "keys")


@dataclass(frozen=True)
class ActionScale:
    """Speeds at full action: metres and degrees per frame, and the pitch limit in degrees."""

    move_m: float = 0.05
    turn_deg: float = 3.0
    max_pitch_deg: float = 80.0

    def __post_init__(self) -> None:
        check_number("move_m", self.move_m, 0.0)
        check_number("turn_deg", self.turn_deg, 0.0)
        check_number("max_pitch_deg", self.max_pitch_deg, 0.0, 90.0, low_open=True, high_open=True)


class ContinuousActions:
    """``Box(-1, 1, (6,))`` -> camera-frame velocity (see the module docstring)."""

    heading_frame = False

    def __init__(self, scale: ActionScale) -> None:
        self.scale = scale
        self.space = spaces.Box(-1.0, 1.0, (6,), np.float32)

    def velocity(self, action) -> np.ndarray:
        """Per-frame velocity [6] (m, m, m, rad, rad, rad); ValueError on a wrong shape or non-finite values."""
        a = _array(action, np.float64)
        if a.shape != (6,):
            raise ValueError(f"action must have shape (6,), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"action must be finite, got {a.tolist()}")
        return np.clip(a, -1.0, 1.0) * _units(self.scale)


class KeyActions:
    """``MultiDiscrete([3, 3, 3, 3])`` -> heading-frame velocity (see the module docstring)."""

    heading_frame = True

    def __init__(self, scale: ActionScale) -> None:
        self.scale = scale
        self.space = spaces.MultiDiscrete([3, 3, 3, 3])

    def velocity(self, action) -> np.ndarray:
        a = _array(action, None)
        if a.shape != (4,):
            raise ValueError(f"action must have shape (4,) (move, strafe, turn, look), got {a.shape}")
        if not (np.issubdtype(a.dtype, np.integer) or (np.issubdtype(a.dtype, np.floating)
                                                          and np.isfinite(a).all() and (a == np.round(a)).all())):
            raise ValueError(f"action must hold integers, got {a.tolist()}")
        if ((a < 0) | (a > 2)).any():
            raise ValueError(f"action values must be 0, 1 or 2 per key group {KEY_GROUPS}, got {a.tolist()}")
        sign = np.array([0.0, 1.0, -1.0])[a.astype(np.int64)]
        move, strafe, turn, look = sign
        # forward +z, strafe left -x, turn right +yaw (1 = left), look up +pitch
        return np.array([-strafe, 0.0, move, -turn, look, 0.0]) * _units(self.scale)


def _array(action, dtype) -> np.ndarray:
    try:
        return np.asarray(action, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"action must be an array of numbers, got {action!r}") from error


def _units(scale: ActionScale) -> np.ndarray:
    return np.array([scale.move_m] * 3 + [math.radians(scale.turn_deg)] * 3)


def make_actions(mode: str, scale: ActionScale) -> ContinuousActions | KeyActions:
    if mode == "continuous":
        return ContinuousActions(scale)
    if mode == "keys":
        return KeyActions(scale)
    raise ValueError(f"action_mode must be 'continuous' or 'keys', got {mode!r}")


def heading_to_camera(c2w: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """A heading-frame translation [3] (yaw only: level forward and right) expressed in the camera frame."""
    yaw, _, _ = euler_from_rotation(c2w[:3, :3])
    zero = torch.zeros((), dtype=c2w.dtype)
    return c2w[:3, :3].T @ (rotation_from_euler(yaw, zero, zero) @ translation)


def parse_keys(script: str) -> list[np.ndarray]:
    """Key script -> one :class:`KeyActions` action per step (see the module docstring); ValueError when malformed."""
    actions = []
    for token in script.split():
        keys, _, count = token.partition("*")
        try:
            n = int(count) if count else 1
        except ValueError:
            raise ValueError(f"key script token {token!r}: the repeat count must be an integer") from None
        if n < 1:
            raise ValueError(f"key script token {token!r}: the repeat count must be >= 1")
        action = np.zeros(4, dtype=np.int64)
        for key in keys.replace("+", ""):
            if key == STAY:
                continue
            if key not in KEYS:
                raise ValueError(f"key script token {token!r}: unknown key {key!r}; use one of "
                                 f"{''.join(KEYS)} or {STAY!r} (stay)")
            group, value = KEYS[key]
            if action[group] not in (0, value):
                raise ValueError(f"key script token {token!r}: conflicting keys for {KEY_GROUPS[group]}")
            action[group] = value
        actions += [action.copy() for _ in range(n)]
    if not actions:
        raise ValueError("key script is empty")
    return actions
