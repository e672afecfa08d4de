"""Atomic writes: files and folders appear complete or not at all, also when the writer is SIGKILLed at any
step of a save (real subprocesses, see kill_child.py), and a killed training run resumes bit-identically."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mirage_env.atomic import atomic_dir, atomic_file, backup_dir, check_writable, recover_dir, write_text
from mirage_env.geometry import intrinsics_from_fov
from mirage_env.memory import LatentSpatialMemory, MemoryConfig
from mirage_env.train.trainer import TrainConfig, Trainer, read_metrics
from mirage_env.video import write_video

CHILD = Path(__file__).resolve().parent / "kill_child.py"


def run_child(scenario: str, out: Path, kill_at: int = 0) -> int:
    """Run ``scenario`` in a fresh interpreter, killed before its ``kill_at``-th file-system step (0: never)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MIRAGE_KILL_AT": str(kill_at), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(CHILD), scenario, str(out)], env=env, timeout=300).returncode


def trace(scenario: str, out: Path) -> list[list[str]]:
    """The file-system steps ``scenario`` takes when nothing kills it."""
    assert run_child(scenario, out) == 0
    return json.loads((out / "steps.json").read_text())


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or p.name.endswith(".old"))


# ---------------------------------------------------------------------- scenarios (run in the child)
class Noisy(torch.nn.Module):
    """Eight weights seen through dropout (torch's global RNG) and fitted to targets drawn from the generator."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(8))
        self.dropout = torch.nn.Dropout(0.25)


def tiny_trainer(out_dir: Path, steps: int = 6) -> Trainer:
    module = Noisy()

    def loss(step, generator, shard):
        target = torch.linspace(-1, 1, 8) + 0.1 * torch.randn(8, generator=generator)
        return (module.dropout(module.w) - target).pow(2).sum()

    config = TrainConfig(steps=steps, lr=0.05, warmup=1, log_every=1, checkpoint_every=2)
    return Trainer(module, loss, config, out_dir)


def train_scenario(out: Path) -> None:
    tiny_trainer(out).run(progress=False)


def frames(count: int, value: int) -> np.ndarray:
    return np.full((count, 16, 16, 3), value, np.uint8)


def video_scenario(out: Path) -> None:
    """The second video over the first (which the test wrote)."""
    write_video(out / "rollout.mp4", frames(6, 200), fps=4)


def video_killed_mid_write_scenario(out: Path) -> None:
    """The second video, killed after its third frame went to the encoder."""
    from imageio.plugins.ffmpeg import FfmpegFormat

    append, written = FfmpegFormat.Writer._append_data, []

    def append_then_die(self, *args, **kwargs):
        append(self, *args, **kwargs)
        written.append(1)
        if len(written) == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    FfmpegFormat.Writer._append_data = append_then_die
    video_scenario(out)


def memory(seed: int) -> LatentSpatialMemory:
    generator = torch.Generator().manual_seed(seed)
    memory = LatentSpatialMemory(MemoryConfig(feature_dim=4, voxel_size=0.1))
    memory.write(torch.randn(1, 4, 8, 8, generator=generator), torch.full((1, 8, 8), 2.0 + seed),
                 intrinsics_from_fov(60.0, (8, 8)), torch.eye(4))
    return memory


def memory_scenario(out: Path) -> None:
    memory(1).save(out / "memory.safetensors")


# ---------------------------------------------------------------------- kills
@pytest.mark.slow
def test_a_kill_at_any_step_of_a_checkpoint_save_resumes_bit_identically(tmp_path):
    straight = tiny_trainer(tmp_path / "straight")
    straight.run(progress=False)
    expected_losses = [row["loss"] for row in read_metrics(tmp_path / "straight" / "metrics.csv")]
    steps = trace("train_scenario", tmp_path / "trace")
    in_temp = [".checkpoint.tmp-" in step[1] for step in steps]
    first = [i for i in range(1, len(steps)) if in_temp[i] and not in_temp[i - 1]][1]  # step 4's save: step 2's exists
    last = next(i for i in range(first, len(steps)) if steps[i][0] == "rmtree")
    switch = next(i for i in range(first, last) if steps[i][0] == "rename" and ".checkpoint.tmp-" in steps[i][1])
    assert last - first >= 8  # 3 files, the folder, 2 renames, 2 folder fsyncs, the backup's removal
    for kill_at in range(first + 1, last + 3):  # before each step of the save, and once it is done
        out = tmp_path / f"kill_{kill_at}"
        assert run_child("train_scenario", out, kill_at) == -signal.SIGKILL
        resumed = tiny_trainer(out)
        rows = resumed.run(resume=True, progress=False)
        assert rows[0]["step"] == (5 if kill_at > switch + 1 else 3), steps[kill_at - 1]
        assert torch.equal(resumed.module.w, straight.module.w), steps[kill_at - 1]
        assert [row["loss"] for row in read_metrics(out / "metrics.csv")] == expected_losses
        assert leftovers(out) == []


@pytest.mark.slow
def test_a_killed_video_write_leaves_the_previous_video(tmp_path):
    import imageio.v2 as imageio

    write_video(tmp_path / "trace" / "rollout.mp4", frames(3, 50), fps=4)
    steps = trace("video_scenario", tmp_path / "trace")
    assert [s[0] for s in steps] == ["fsync", "replace", "fsync"]
    for kill_at in (1, 2, 3):
        out = tmp_path / f"kill_{kill_at}"
        first = write_video(out / "rollout.mp4", frames(3, 50), fps=4).read_bytes()
        assert run_child("video_scenario", out, kill_at) == -signal.SIGKILL
        if kill_at < 3:
            assert (out / "rollout.mp4").read_bytes() == first
        else:
            assert len(imageio.mimread(out / "rollout.mp4")) == 6
    out = tmp_path / "mid_write"
    first = write_video(out / "rollout.mp4", frames(3, 50), fps=4).read_bytes()
    assert run_child("video_killed_mid_write_scenario", out) == -signal.SIGKILL
    assert (out / "rollout.mp4").read_bytes() == first


@pytest.mark.slow
def test_a_killed_memory_save_leaves_the_previous_snapshot(tmp_path):
    steps = trace("memory_scenario", tmp_path / "trace")
    assert [s[0] for s in steps] == ["fsync", "replace", "fsync"]
    for kill_at in (1, 2, 3):
        out = tmp_path / f"kill_{kill_at}"
        out.mkdir()
        memory(0).save(out / "memory.safetensors")
        assert run_child("memory_scenario", out, kill_at) == -signal.SIGKILL
        expected = memory(1 if kill_at == 3 else 0).state_dict()
        loaded = LatentSpatialMemory.load(out / "memory.safetensors").state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in expected.items())


# ---------------------------------------------------------------------- in-process failures and recovery
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError), atomic_file(path) as temp:
        temp.write_text("half")
        raise RuntimeError
    assert path.read_text() == "old" and leftovers(tmp_path) == []
    assert write_text(path, "new").read_text() == "new" and leftovers(tmp_path) == []


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path):
    folder = tmp_path / "weights"
    with atomic_dir(folder) as temp:
        (temp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(folder) as temp:
        (temp / "a.txt").write_text("new")
        raise RuntimeError
    assert [p.name for p in folder.iterdir()] == ["a.txt"] and (folder / "a.txt").read_text() == "old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("final_renamed", [False, True])
def test_recover_dir_finishes_an_interrupted_switch(tmp_path, final_renamed):
    folder, backup = tmp_path / "checkpoint", backup_dir(tmp_path / "checkpoint")
    backup.mkdir()
    (backup / "state.json").write_text("old")
    (tmp_path / ".checkpoint.tmp-0000").mkdir()
    if final_renamed:
        folder.mkdir()
        (folder / "state.json").write_text("new")
    recover_dir(folder)
    assert (folder / "state.json").read_text() == ("new" if final_renamed else "old")
    assert leftovers(tmp_path) == []


def test_parts_carry_the_old_folders_other_entries_over(tmp_path):
    folder = tmp_path / "weights"
    with atomic_dir(folder) as temp:
        for name in ("text_encoder", "lora"):
            (temp / name).mkdir()
            (temp / name / "config.json").write_text(name)
    with atomic_dir(folder, parts=("transformer", "lora")) as temp:
        (temp / "transformer").mkdir()
    assert sorted(p.name for p in folder.iterdir()) == ["text_encoder", "transformer"]
    assert (folder / "text_encoder" / "config.json").read_text() == "text_encoder"


def test_save_pretrained_replaces_its_parts_and_keeps_the_text_encoder(tmp_path):
    from mirage_env.models import from_preset

    folder = tmp_path / "weights"
    for part, file in (("text_encoder", "config.json"), ("lora", "stale.safetensors")):
        (folder / part).mkdir(parents=True)
        (folder / part / file).write_text("{}")
    from_preset("tiny", model_seed=3, random_weights=True).save_pretrained(folder)
    assert (folder / "text_encoder" / "config.json").read_text() == "{}"
    assert not (folder / "lora" / "stale.safetensors").exists() and (folder / "transformer" / "config.json").exists()
    assert leftovers(tmp_path) == [] and leftovers(folder) == []


def test_export_failure_keeps_the_previous_export(tmp_path, monkeypatch):
    from mirage_env.models import from_preset
    from mirage_env.train import export

    model = from_preset("tiny", model_seed=3, random_weights=True)
    model.save_pretrained(tmp_path / "full")
    export.export_weights(tmp_path / "full", tmp_path / "half")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "half").rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        export.export_weights(tmp_path / "full", tmp_path / "half", dtype=torch.bfloat16)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "half").rglob("*") if p.is_file()}
    assert after == before and leftovers(tmp_path) == []


def test_check_writable_names_the_problem(tmp_path):
    (tmp_path / "file").write_text("")
    (tmp_path / "x.mp4").mkdir()
    assert check_writable(tmp_path / "new" / "deeper" / "a.mp4") == tmp_path / "new" / "deeper" / "a.mp4"
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "a.mp4")
    with pytest.raises(ValueError, match="a folder of that name exists"):
        check_writable(tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="a file of that name exists"):
        check_writable(tmp_path / "file", folder=True)
