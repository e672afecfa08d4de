"""render_mode="human" (a pygame window, on SDL's dummy video driver here: see conftest.py), the errors where no
window can open, and ``mirage-env play --interactive`` (keys from the window, a terminal or a pipe)."""

import json
import os
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import DependencyNotInstalled

import mirage_env.envs
from mirage_env.envs import ENV_IDS, CameraVectorEnv
from mirage_env.cli import main
from mirage_env.envs import camera_env as camera_env_module
from mirage_env.envs.actions import parse_keys
from mirage_env.envs.keyboard import key_actions, play_interactive, terminal_keys
from mirage_env.envs.rollout import RolloutSpec
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


# ---------------------------------------------------------------------- mirage-env play --interactive
def pipe_of(data: bytes) -> int:
    """A file descriptor that reads ``data`` and then the end of the input."""
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    return read


@pytest.fixture
def stdin(monkeypatch):
    """``stdin(data)`` makes ``sys.stdin`` a pipe that reads ``data``."""
    opened = []

    def feed(data: bytes) -> None:
        opened.append(open(pipe_of(data)))
        monkeypatch.setattr(sys, "stdin", opened[-1])

    yield feed
    for stream in opened:
        stream.close()


def test_each_action_key_is_one_step_until_q():
    keys = iter("wx.l\nqd")
    assert [a.tolist() for a in key_actions(lambda: next(keys))] == [parse_keys(k)[0].tolist() for k in "w.l"]


def test_a_terminal_reads_keys_without_enter_or_echo_and_is_restored():
    termios = pytest.importorskip("termios")
    master, slave = os.openpty()
    with os.fdopen(slave) as stream:
        before = termios.tcgetattr(slave)
        with terminal_keys(stream) as read_key:
            flags = termios.tcgetattr(slave)[3]
            assert not flags & termios.ICANON and not flags & termios.ECHO  # cbreak: key by key, no echo
            os.write(master, b"wl")
            assert (read_key(), read_key()) == ("w", "l")
        assert termios.tcgetattr(slave) == before
    os.close(master)


def test_piped_keys_end_with_the_input():
    with open(pipe_of(b"w.")) as stream, terminal_keys(stream) as read_key:
        assert [read_key() for _ in range(3)] == ["w", ".", "q"]


def per_step(path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timings_ms"} for r in json.loads(path.read_text())["per_step"]]


def test_interactive_play_from_the_terminal_equals_the_key_script(tmp_path, stdin, no_display):
    stdin(b"w?l\nd.q")
    main(["play", "--interactive", "--num-steps", "1", "--out", str(tmp_path / "live.gif"), "--no-progress"])
    main(["play", "w l d .", "--num-steps", "1", "--out", str(tmp_path / "script.gif"), "--no-progress"])
    live = json.loads((tmp_path / "live.json").read_text())
    assert live["spec"]["drive"] == "interactive" and live["steps"] == 4 and live["frames"] == 1 + 4 * 4
    assert per_step(tmp_path / "live.json") == per_step(tmp_path / "script.json")
    assert (tmp_path / "live.gif").read_bytes() == (tmp_path / "script.gif").read_bytes()


def test_interactive_play_reads_keys_in_the_window_until_it_is_closed(tmp_path):
    pygame = pytest.importorskip("pygame")
    pygame.display.init()  # the queue takes events once the display is up; the window opens on it
    for key in "wxl":
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, unicode=key, key=0))
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    spec = RolloutSpec(drive="interactive", out=str(tmp_path / "play.mp4"), progress=False)
    metrics = play_interactive({"num_steps": 1}, spec)
    assert metrics["steps"] == 2 and metrics["env"]["action_mode"] == "keys"
    assert (tmp_path / "play.mp4").stat().st_size > 0 and not pygame.display.get_init()  # closed at the end


def test_play_takes_a_script_or_interactive_and_quitting_at_once_writes_nothing(tmp_path, stdin, no_display,
                                                                                capsys):
    for argv in (["play"], ["play", "w", "--interactive"]):
        with pytest.raises(SystemExit):
            main([*argv, "--out", str(tmp_path / "x.gif")])
        assert "a key script or --interactive" in capsys.readouterr().err
    stdin(b"q")
    with pytest.raises(SystemExit):
        main(["play", "--interactive", "--num-steps", "1", "--out", str(tmp_path / "q.gif"), "--no-progress"])
    assert "ended before its first step" in capsys.readouterr().err and not list(tmp_path.iterdir())
