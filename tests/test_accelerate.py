"""Training on several processes with accelerate: 2 launched CPU processes (DDP over gloo, the shipped ddp.yaml)
train what one process trains on the same global batch, and a SIGKILLed 2-process run resumes bit-identically."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import PartialState
from safetensors.torch import load_file

from mirage_env.train.trainer import Shard, TrainConfig, Trainer, read_metrics

CHILD = Path(__file__).resolve().parent / "accelerate_child.py"
CONFIGS = Path(__file__).resolve().parents[1] / "mirage_env" / "train" / "accelerate_configs"
DDP_CONFIG = CONFIGS / "ddp.yaml"
GLOBAL_BATCH = 8


class Regression(torch.nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.hidden = torch.nn.Linear(4, 16)
        self.dropout = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(16, 1)

    def forward(self, x):
        return self.out(self.dropout(torch.tanh(self.hidden(x))))


def regression_trainer(out: Path, accumulation: int = 1, dropout: float = 0.0, kill_at: int | None = None,
                       steps: int = 6) -> Trainer:
    """A network fitted to a fresh batch of ``GLOBAL_BATCH`` samples drawn from the generator at every step."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = Regression(dropout)

    def loss(step, generator, shard):
        x = torch.randn(GLOBAL_BATCH, 4, generator=generator)
        y = torch.sin(x.sum(dim=1, keepdim=True)) + 0.1 * torch.randn(GLOBAL_BATCH, 1, generator=generator)
        if step == kill_at and PartialState().is_main_process:
            os.kill(os.getpid(), signal.SIGKILL)
        rows = shard.rows(GLOBAL_BATCH)
        return F.mse_loss(module(x[rows]), y[rows])

    config = TrainConfig(steps=steps, lr=0.05, warmup=1, log_every=1, checkpoint_every=2,
                         gradient_accumulation=accumulation)
    return Trainer(module, loss, config, out)


def launch(out: Path, accumulation: int = 1, dropout: float = 0.0, kill_at: int = 0, resume: bool = False,
           config: Path = DDP_CONFIG, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``accelerate_child.py`` on 2 CPU processes with a shipped config (default DDP; torchrun, gloo on CPU)
    and extra launcher ``options``."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(port), *options,
               str(CHILD), str(out), str(accumulation), str(dropout), str(kill_at), str(int(resume))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def checkpoint(out: Path) -> tuple[dict, dict]:
    return load_file(str(out / "checkpoint" / "weights.safetensors")), json.loads(
        (out / "checkpoint" / "state.json").read_text())


def assert_trained_alike(one: Path, two: Path) -> None:
    """Two runs' checkpointed weights and logged losses agree to float tolerance."""
    weights = [checkpoint(out)[0] for out in (one, two)]
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=1e-5, atol=1e-6)
    losses = [[r["loss"] for r in read_metrics(out / "metrics.csv")] for out in (one, two)]
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-5, atol=1e-7)


def test_accumulation_steps_train_what_one_batch_trains(tmp_path):
    one, four = regression_trainer(tmp_path / "one"), regression_trainer(tmp_path / "four", accumulation=4)
    one.run(progress=False)
    four.run(progress=False)
    for name, param in one.params.items():
        torch.testing.assert_close(four.params[name], param, rtol=1e-5, atol=1e-6)


def test_a_batch_that_does_not_split_into_shards_is_refused():
    assert Shard(1, 4).rows(8) == slice(2, 4)
    with pytest.raises(ValueError, match="does not split into 3 equal shards"):
        Shard(0, 3).rows(8)
    with pytest.raises(ValueError, match="index must be in"):
        Shard(2, 2)
    with pytest.raises(ValueError, match="gradient_accumulation must be >= 1"):
        TrainConfig(steps=1, gradient_accumulation=0)


def test_trainers_of_other_precisions_follow_each_other_in_one_process(tmp_path):
    """The recipe trains the VAE at fp32, then the world model at --precision: accelerate's per-process state
    follows each trainer's precision."""
    for precision in ("fp32", "bf16", "fp32", "fp16"):
        trainer = regression_trainer(tmp_path / precision)
        trainer = Trainer(trainer.module, trainer.loss_fn, TrainConfig(steps=2, precision=precision), tmp_path / "p")
        assert trainer.accelerator.mixed_precision == {"fp32": "no"}.get(precision, precision)
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in trainer.run(progress=False))


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains_on_the_same_global_batch(tmp_path):
    """One process, batch 8 at once; 2 processes x 2 accumulation steps of 2 rows: the same weights and losses."""
    regression_trainer(tmp_path / "one").run(progress=False)
    run = launch(tmp_path / "two", accumulation=2)
    assert run.returncode == 0, run.stderr[-3000:]
    (one, _), state = checkpoint(tmp_path / "one"), checkpoint(tmp_path / "two")[1]
    assert len(state["global_rng_by_process"]) == 2  # it did run on two processes
    assert state["step"] == 6 and not all(torch.equal(one[n], regression_trainer(tmp_path / "x").params[n])
                                          for n in one)  # it trained
    assert_trained_alike(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_bit_identically(tmp_path):
    """Dropout draws from each process's own global RNG stream, which the checkpoint keeps per process."""
    assert launch(tmp_path / "straight", dropout=0.2).returncode == 0
    killed = launch(tmp_path / "resumed", dropout=0.2, kill_at=5)
    assert killed.returncode != 0
    assert checkpoint(tmp_path / "resumed")[1]["step"] == 4
    resumed = launch(tmp_path / "resumed", dropout=0.2, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight, resumed = checkpoint(tmp_path / "straight"), checkpoint(tmp_path / "resumed")
    assert resumed[1]["step"] == 6
    assert all(torch.equal(straight[0][n], resumed[0][n]) for n in straight[0])
    assert [r["step"] for r in read_metrics(tmp_path / "resumed" / "metrics.csv")] == list(range(1, 7))


def test_the_recipe_refuses_a_batch_that_does_not_split_before_it_writes(tmp_path, capsys):
    from mirage_env.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "vae", "--out", str(tmp_path / "run"), "--vae-batch-size", "3", "--gradient-accumulation", "2"])
    assert exit_info.value.code == 2
    assert "--vae-batch-size) of 3 does not split into" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
