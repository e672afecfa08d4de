"""The window of ``render_mode="human"``: frames shown live with pygame (the ``human`` extra), as Gymnasium's own
envs do, and the keys pressed in it (``mirage-env play --interactive``).

A window needs pygame and a display: on Linux ``DISPLAY`` or ``WAYLAND_DISPLAY``, or an explicit
``SDL_VIDEODRIVER`` (``SDL_VIDEODRIVER=dummy`` opens a window nobody sees, for headless tests).
:func:`check_display` raises before anything is built when either is missing.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from gymnasium.error import DependencyNotInstalled

WINDOW_PX = 512  # frames are scaled up by the largest integer factor that keeps them within this size


class NoDisplayError(RuntimeError):
    """``render_mode="human"`` was asked for where no window can open."""


def check_display() -> None:
    """Raise unless a human window can open: :class:`DependencyNotInstalled` without pygame,
    :class:`NoDisplayError` on Linux without a display or ``SDL_VIDEODRIVER``."""
    try:
        import pygame  # noqa: F401
    except ImportError as error:
        raise DependencyNotInstalled('render_mode="human" needs pygame: pip install "mirage-env[human]"') from error
    variables = ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")
    if sys.platform.startswith("linux") and not any(os.environ.get(v) for v in variables):
        raise NoDisplayError('render_mode="human" needs a display, but DISPLAY and WAYLAND_DISPLAY are unset; use '
                             'render_mode="rgb_array" (or set SDL_VIDEODRIVER=dummy for a window nobody sees)')


def window_available() -> bool:
    """Whether a ``render_mode="human"`` window can open (pygame and a display)."""
    try:
        check_display()
    except (DependencyNotInstalled, NoDisplayError):
        return False
    return True


class HumanWindow:
    """A pygame window showing uint8 frames [H, W, 3], each for ``1 / fps`` seconds; it opens on the first frame,
    sized to it (scaled up to about :data:`WINDOW_PX`), and scales later frames to that size."""

    def __init__(self, fps: float, title: str = "mirage-env") -> None:
        check_display()
        self.fps = fps
        self.title = title
        self._screen = None
        self._clock = None

    @property
    def is_open(self) -> bool:
        return self._screen is not None

    def show(self, frames: np.ndarray) -> None:
        """Show frames [T, H, W, 3] one after the other at ``fps``."""
        import pygame

        for frame in frames:
            if self._screen is None:
                self._open(frame.shape[:2])
            surface = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
            self._screen.blit(pygame.transform.scale(surface, self._screen.get_size()), (0, 0))
            pygame.event.pump()
            pygame.display.flip()
            self._clock.tick(self.fps)

    def _open(self, hw: tuple[int, int]) -> None:
        import pygame

        pygame.display.init()  # the display alone: no audio device is opened
        scale = max(1, WINDOW_PX // max(hw))
        self._screen = pygame.display.set_mode((hw[1] * scale, hw[0] * scale))
        pygame.display.set_caption(self.title)
        self._clock = pygame.time.Clock()

    def wait_key(self) -> str:
        """The character of the next key pressed in the window (``"q"`` when the window is closed); keys pressed
        while frames played are read in order."""
        import pygame

        while True:
            event = pygame.event.wait()
            if event.type == pygame.QUIT:
                return "q"
            if event.type == pygame.KEYDOWN and event.unicode:
                return event.unicode
            if event.type in (pygame.VIDEOEXPOSE, pygame.WINDOWEXPOSED):
                pygame.display.flip()

    def close(self) -> None:
        if self._screen is not None:
            import pygame

            pygame.display.quit()
            self._screen = self._clock = None
