"""render_mode="human" (a pygame window, on SDL's dummy video driver here: see conftest.py) and the errors where no
window can open."""

import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import DependencyNotInstalled

import mirage_env.envs
from mirage_env.envs import ENV_IDS, CameraVectorEnv
from mirage_env.envs import camera_env as camera_env_module
from mirage_env.envs.window import WINDOW_PX, NoDisplayError

CAMERA, KEYS = ENV_IDS
FAST = {"num_steps": 1}
pytestmark = pytest.mark.usefixtures("one_thread")


def shown() -> np.ndarray:
    """The image in the pygame window, uint8 [H, W, 3]."""
    import pygame

    return pygame.surfarray.array3d(pygame.display.get_surface()).swapaxes(0, 1)


@pytest.fixture
def no_display(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    for variable in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def nothing_built(monkeypatch):
    """Fails the test if the env gets as far as building its worlds."""
    def build(*args, **kwargs):
        raise AssertionError("the worlds were built before the render mode was checked")

    monkeypatch.setattr(camera_env_module, "CameraWorlds", build)


def test_the_envs_declare_human_and_rgb_array():
    for env in (gym.make(CAMERA, **FAST), gym.make(KEYS, **FAST), CameraVectorEnv(num_envs=1, **FAST)):
        assert set(env.metadata["render_modes"]) == {"human", "rgb_array"} and env.metadata["render_fps"] == 16
    with pytest.raises(ValueError, match="render_mode must be None or one of"):
        mirage_env.envs.CameraEnv(render_mode="ansi", **FAST)


def test_human_mode_without_a_display_is_a_clear_error_before_anything_is_built(no_display, nothing_built):
    pytest.importorskip("pygame")
    with pytest.raises(NoDisplayError, match="DISPLAY and WAYLAND_DISPLAY are unset"):
        gym.make(CAMERA, render_mode="human", **FAST)


def test_human_mode_without_pygame_names_the_extra(monkeypatch, nothing_built):
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame now raises ImportError
    with pytest.raises(DependencyNotInstalled, match=r"pygame: pip install \"mirage-env\[human\]\""):
        gym.make(KEYS, render_mode="human", **FAST)


def test_human_mode_plays_every_frame_of_a_step_in_the_window_and_close_closes_it(monkeypatch):
    pygame = pytest.importorskip("pygame")
    env = gym.make(KEYS, render_mode="human", **FAST)
    window = env.unwrapped.window
    played = []
    show = window.show
    monkeypatch.setattr(window, "show", lambda frames: (played.append(frames.copy()), show(frames)))
    _, info = env.reset(seed=0)
    assert window.is_open and len(played) == 1 and np.array_equal(played[0], info["frames"][:1])
    _, _, _, _, info = env.step(np.array([1, 0, 2, 0]))
    assert np.array_equal(played[1], info["frames"]) and len(played[1]) == 4  # the step's frames, in order
    scale = WINDOW_PX // 64
    assert shown().shape == (WINDOW_PX, WINDOW_PX, 3)
    assert np.array_equal(shown()[::scale, ::scale], info["frames"][-1])  # nearest-neighbour upscaling
    assert env.render() is None and np.array_equal(played[2], info["frames"][-1:])
    env.close()
    assert not window.is_open and not pygame.display.get_init()


def test_the_human_vector_env_tiles_its_worlds_in_one_window():
    pytest.importorskip("pygame")
    envs = CameraVectorEnv(num_envs=2, render_mode="human", action_mode="keys", **FAST)
    envs.reset(seed=0)
    _, _, _, _, infos = envs.step(np.array([[1, 0, 0, 0], [0, 0, 1, 0]]))
    scale = WINDOW_PX // 128
    expected = np.concatenate([infos["frames"][0, -1], infos["frames"][1, -1]], axis=1)  # two columns
    assert np.array_equal(shown()[::scale, ::scale], expected)
    assert envs.render() is None
    envs.close()
    assert not envs.window.is_open
