"""Live keyboard control of the Keys env (``mirage-env play --interactive``).

One key press is one step: the keys of key scripts (:mod:`mirage_env.envs.actions`: ``w``/``s`` forward/back,
``a``/``d`` strafe, ``j``/``l`` turn, ``i``/``k`` look, ``.`` stay), ``q`` quits; other keys are ignored. Where a
window can open, frames play in the ``render_mode="human"`` window and keys are read there; otherwise keys come
from the terminal, read one at a time without Enter or echo (cbreak mode, restored at the end; Ctrl-C still
interrupts), or from a pipe. The video, contact sheet and metrics are written at the end, as by ``play``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TextIO

import numpy as np

from mirage_env.envs.actions import KEYS, STAY, parse_keys
from mirage_env.envs.camera_env import CameraEnv
from mirage_env.envs.rollout import RolloutSpec, run_rollout
from mirage_env.envs.window import window_available

QUIT = "q"
HELP = "keys: w/s forward/back, a/d strafe, j/l turn, i/k look, . stay, q quit"


def key_actions(read_key: Callable[[], str]) -> Iterator[np.ndarray]:
    """One Keys action per key that ``read_key`` returns, until ``q``; keys that are not actions are skipped."""
    while (key := read_key()) != QUIT:
        if key in KEYS or key == STAY:
            yield parse_keys(key)[0]


@contextmanager
def terminal_keys(stream: TextIO) -> Iterator[Callable[[], str]]:
    """A function that reads the next character of ``stream`` (``q`` at the end of the input); a terminal is put
    in cbreak mode (no line buffering, no echo) until the context exits."""
    fd = stream.fileno()
    saved = None
    if os.isatty(fd) and sys.platform != "win32":
        import termios
        import tty

        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)

    def read_key() -> str:
        data = os.read(fd, 1)
        return data.decode("ascii", errors="replace") if data else QUIT

    try:
        yield read_key
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def play_interactive(env_kwargs: dict[str, Any], spec: RolloutSpec, stream: TextIO | None = None) -> dict:
    """Drive ``CameraEnv(action_mode="keys", **env_kwargs)`` from the keyboard until ``q`` (see the module
    docstring; ``stream``, default stdin, when no window can open); write the rollout files of ``spec`` (drive
    ``interactive``) and return its metrics."""
    window = window_available()
    env = CameraEnv(**{**env_kwargs, "action_mode": "keys", "render_mode": "human" if window else None})
    print(HELP + (" (in the window)" if window else ""), file=sys.stderr)
    try:
        with nullcontext(env.window.wait_key) if window else terminal_keys(stream or sys.stdin) as read_key:
            return run_rollout(env, spec, actions=key_actions(read_key))
    finally:
        env.close()
