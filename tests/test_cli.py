"""The command line's errors: --out is checked before any work, known errors print one line and exit with 2."""

import os

import pytest

from mirage_env.cli import main


@pytest.fixture
def no_env(monkeypatch):
    """Fail the test when a command gets as far as building a camera env."""
    def refuse(*args, **kwargs):
        raise AssertionError("the env was built before --out was checked")

    monkeypatch.setattr("mirage_env.envs.CameraEnv", refuse)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder holding a file ``file``, a folder ``x.mp4`` and a folder ``sheet.png``."""
    (tmp_path / "file").write_text("")
    (tmp_path / "x.mp4").mkdir()
    (tmp_path / "sheet.png").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error_of(argv: list[str], capsys) -> str:
    """The one-line message of a command that must fail with exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mirage-env: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("out, message", [
    ("file/rollout.mp4", "'file' is a file, not a folder"),
    ("x.mp4", "'x.mp4': a folder of that name exists"),
    ("sheet.mp4", "'sheet.png': a folder of that name exists"),  # the contact sheet beside the video
    ("rollout.avi", "unsupported video format '.avi'"),
])
def test_rollout_and_play_check_out_before_the_env_is_built(workdir, no_env, capsys, out, message):
    assert message in error_of(["rollout", "--out", out, "--no-progress"], capsys)
    assert message in error_of(["play", "w*2", "--out", out, "--no-progress"], capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_out_folder_is_reported(workdir, no_env, capsys):
    (workdir / "locked").mkdir(mode=0o500)
    assert "no write permission in 'locked'" in error_of(["rollout", "--out", "locked/r.mp4"], capsys)


def test_memory_demo_and_train_check_out_first(workdir, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr("mirage_env.memory_demo.sample_scene", refuse)
    monkeypatch.setattr("mirage_env.train.recipes.run_recipe", refuse)
    assert "'file' is a file, not a folder" in error_of(["memory-demo", "--out", "file/demo.gif"], capsys)
    assert "'file': a file of that name exists" in error_of(["train", "vae", "--out", "file"], capsys)


def test_known_errors_print_one_line(workdir, capsys):
    assert "weights directory missing does not exist" in error_of(
        ["rollout", "--weights-dir", "missing", "--out", "r.mp4", "--no-progress"], capsys)
    assert "key" in error_of(["play", "w*x", "--out", "r.mp4", "--no-progress"], capsys)
    assert "missing_vae" in error_of(["train", "tiny", "--vae", "missing_vae", "--out", "run"], capsys)
