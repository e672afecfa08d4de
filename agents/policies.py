"""Policies for ``MirageEnv/Keys-v0``, batched: one action row ``(move, strafe, turn, look)`` per world.

A policy is reset for ``num_envs`` worlds, then maps the batched observation and ``blocked`` (bool [N]: the
world's last move was refused, ``info["blocked"]``) to int64 actions [N, 4]; see
:mod:`mirage_env.envs.actions` for the key groups. Scripted policies are written in key scripts
(:func:`~mirage_env.envs.actions.parse_keys`); their turns are sized in steps of ``step_deg`` degrees (a full turn
key for one step: ``turn_deg`` x frames per step, 12 by default).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from mirage_env.envs.actions import KEY_GROUPS, parse_keys

STEP_DEG = 12.0


class Policy(Protocol):
    def reset(self, num_envs: int, seed: int | None = None) -> None:
        """Start new episodes in every world."""

    def act(self, obs: Any, blocked: np.ndarray) -> np.ndarray:
        """Actions int64 [N, 4] for the observations of N worlds."""


class RandomPolicy:
    """Every key group uniform over {none, 1, 2}: the baseline."""

    def reset(self, num_envs: int, seed: int | None = None) -> None:
        self.num_envs, self.rng = num_envs, np.random.default_rng(seed)

    def act(self, obs: Any, blocked: np.ndarray) -> np.ndarray:
        return self.rng.integers(0, 3, (self.num_envs, len(KEY_GROUPS)))


class KeyScriptPolicy:
    """Plays a key script in a loop, the same in every world (open loop: ``blocked`` is ignored)."""

    def __init__(self, script: str) -> None:
        self.actions = np.stack(parse_keys(script))

    def reset(self, num_envs: int, seed: int | None = None) -> None:
        self.num_envs, self.t = num_envs, 0

    def act(self, obs: Any, blocked: np.ndarray) -> np.ndarray:
        action = self.actions[self.t % len(self.actions)]
        self.t += 1
        return np.tile(action, (self.num_envs, 1))


def orbit() -> KeyScriptPolicy:
    """Walk forward while turning right: a circle of about 1 m radius with the default speeds."""
    return KeyScriptPolicy("wl")


def loop_and_return(leg: int = 8, step_deg: float = STEP_DEG) -> KeyScriptPolicy:
    """Walk ``leg`` steps forward, turn around, walk back, turn around (revisits what it saw)."""
    half = round(180.0 / step_deg)
    return KeyScriptPolicy(f"w*{leg} j*{half} w*{leg} j*{half}")


class LawnMowerPolicy:
    """A hand-written explorer sweeping lanes: walk ``leg`` steps forward, U-turn while walking (a half circle,
    which shifts the next lane by about 2 m) and walk back, U-turning left and right in turn. A refused move starts
    a 90 degree turn on the spot (in the direction of the next U-turn) and a fresh lane."""

    def __init__(self, leg: int = 8, step_deg: float = STEP_DEG) -> None:
        self.leg, self.half, self.quarter = leg, round(180.0 / step_deg), round(90.0 / step_deg)
        self.forward, self.right, self.forward_right = parse_keys("w l wl")

    def reset(self, num_envs: int, seed: int | None = None) -> None:
        self.walked = np.zeros(num_envs, np.int64)  # steps of the current lane
        self.spin = np.zeros(num_envs, np.int64)  # steps left of a turn on the spot
        self.arc = np.zeros(num_envs, np.int64)  # steps left of a U-turn
        self.side = np.ones(num_envs, np.int64)  # 1: turn right, -1: left

    def act(self, obs: Any, blocked: np.ndarray) -> np.ndarray:
        return np.stack([self._act_one(i, bool(b)) for i, b in enumerate(blocked)])

    def _act_one(self, i: int, blocked: bool) -> np.ndarray:
        if blocked and not self.spin[i]:
            self.spin[i], self.arc[i], self.walked[i] = self.quarter, 0, 0
        if self.spin[i]:
            self.spin[i] -= 1
            return _mirror(self.right, self.side[i])
        if not self.arc[i] and self.walked[i] >= self.leg:
            self.arc[i] = self.half
        if self.arc[i]:
            self.arc[i] -= 1
            action = _mirror(self.forward_right, self.side[i])
            if not self.arc[i]:
                self.side[i], self.walked[i] = -self.side[i], 0
            return action
        self.walked[i] += 1
        return self.forward


def _mirror(action: np.ndarray, side: int) -> np.ndarray:
    """``action`` (turning right) for ``side`` (1: right, -1: left): left turns swap turn key 2 for 1."""
    if side > 0:
        return action
    mirrored = action.copy()
    mirrored[2] = 3 - action[2] if action[2] else 0
    return mirrored


SCRIPTED = ("orbit", "loop", "lawnmower")
POLICIES = ("random", *SCRIPTED)


def make_policy(name: str, step_deg: float = STEP_DEG) -> Policy:
    """A policy of :data:`POLICIES` by name; ``step_deg``: degrees turned by one step of a turn key."""
    if name == "random":
        return RandomPolicy()
    if name == "orbit":
        return orbit()
    if name == "loop":
        return loop_and_return(step_deg=step_deg)
    if name == "lawnmower":
        return LawnMowerPolicy(step_deg=step_deg)
    raise ValueError(f"unknown policy {name!r}; choose one of {POLICIES}")
