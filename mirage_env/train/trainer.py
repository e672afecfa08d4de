"""A small, resumable training loop: AdamW on fp32 master weights, optional bf16 autocast, gradient clipping,
warm-up + cosine learning rate, safetensors checkpoints with a JSON state, a CSV metrics log and a progress bar.

Checkpoint layout (``out_dir/checkpoint/``): ``weights.safetensors`` (the trained parameters by name),
``optimizer.safetensors`` (AdamW moments by parameter name), ``state.json`` (step, config, generator state).
``out_dir/metrics.csv`` gets one row per logged step.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

LossFn = Callable[[int, torch.Generator], torch.Tensor]
"""(step, generator) -> scalar loss; draws its batch and noise from the generator only (reproducible)."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    warmup: int = 50
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 200
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; master weights stay fp32)
    max_seconds: float | None = None  # stop early after this long; the learning-rate schedule then runs on time

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.precision not in ("fp32", "bf16"):
            raise ValueError("steps >= 1, lr > 0 and precision in ('fp32', 'bf16') are required")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {self.max_seconds}")


def learning_rate(step: int, config: TrainConfig, time_used: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10 % of ``lr`` over the steps, or over ``max_seconds`` when the
    fraction ``time_used`` of that is further along (a run with a time limit still ends fully decayed)."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = max((step - config.warmup) / max(1, config.steps - config.warmup), time_used)
    return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


class Trainer:
    """Train the parameters of ``module`` that require grad on ``loss_fn``, checkpointing into ``out_dir``."""

    def __init__(self, module: torch.nn.Module, loss_fn: LossFn, config: TrainConfig, out_dir: str | Path) -> None:
        self.module = module
        self.loss_fn = loss_fn
        self.config = config
        self.out_dir = Path(out_dir)
        self.params = {name: p for name, p in module.named_parameters() if p.requires_grad}
        if not self.params:
            raise ValueError("the module has no trainable parameters")
        for name, p in self.params.items():
            if p.dtype != torch.float32:
                raise ValueError(f"trainable parameter {name} is {p.dtype}; master weights must be float32")
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def save_checkpoint(self) -> None:
        folder = self.checkpoint_dir
        folder.mkdir(parents=True, exist_ok=True)
        weights = {n: p.detach().contiguous().cpu() for n, p in self.params.items()}
        save_file(weights, str(folder / "weights.safetensors"))
        moments = {}
        for name, p in self.params.items():
            for key, value in self.optimizer.state.get(p, {}).items():
                moments[f"{name}::{key}"] = value.detach().reshape(value.shape).contiguous().cpu()
        save_file(moments, str(folder / "optimizer.safetensors"))
        state = {"step": self.step, "config": asdict(self.config),
                 "generator": self.generator.get_state().tolist()}
        (folder / "state.json").write_text(json.dumps(state))

    def load_checkpoint(self) -> None:
        """Restore weights, optimizer moments, step and generator from ``out_dir/checkpoint``."""
        folder = self.checkpoint_dir
        try:
            weights = load_file(str(folder / "weights.safetensors"))
            moments = load_file(str(folder / "optimizer.safetensors"))
            state = json.loads((folder / "state.json").read_text())
        except Exception as error:  # missing or corrupt files: say which checkpoint
            raise ValueError(f"{folder}: cannot resume from this checkpoint ({error})") from error
        missing = sorted(set(self.params) - set(weights))
        if missing:
            raise ValueError(f"{folder}: checkpoint lacks parameters {missing[:5]}")
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(weights[name])
        for name, p in self.params.items():
            entries = {key.split("::", 1)[1]: v for key, v in moments.items() if key.split("::", 1)[0] == name}
            if entries:
                self.optimizer.state[p] = {k: v.to(p.device) for k, v in entries.items()}
        self.step = int(state["step"])
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))

    def _log(self, row: dict) -> None:
        path = self.out_dir / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _log_window(self, rows: list[dict], window: list[float], lr: float, start: float, bar: tqdm) -> list[float]:
        """Log the mean loss of ``window`` (when it has any) and return an empty window."""
        if window:
            row = {"step": self.step, "loss": sum(window) / len(window), "lr": lr,
                   "seconds": round(time.perf_counter() - start, 2)}
            rows.append(row)
            self._log(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        return []

    def run(self, resume: bool = False, progress: bool = True) -> list[dict]:
        """Train until ``config.steps`` (or ``config.max_seconds``); returns the logged rows (step, loss, lr,
        seconds)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_dir.exists():
            self.load_checkpoint()
        rows, window, start, lr = [], [], time.perf_counter(), self.config.lr
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not progress, desc="train")
        self.module.train()
        limit = self.config.max_seconds
        while self.step < self.config.steps:
            time_used = 0.0 if limit is None else (time.perf_counter() - start) / limit
            if time_used >= 1.0:
                self._log_window(rows, window, lr, start, bar)
                self.save_checkpoint()
                break
            lr = learning_rate(self.step, self.config, time_used)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            device_type = next(iter(self.params.values())).device.type
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
                loss = self.loss_fn(self.step, self.generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {self.step}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.config.grad_clip)
            self.optimizer.step()
            self.step += 1
            window.append(loss.item())
            bar.update(1)
            if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                window = self._log_window(rows, window, lr, start, bar)
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self.save_checkpoint()
        bar.close()
        self.module.eval()
        return rows


def log_summary(out_dir: str | Path) -> dict:
    """Steps, first and final logged loss and training seconds over all runs (resumes included) of the metrics
    log in ``out_dir``; each run's ``seconds`` restart at 0, so the summary adds up every run's last value."""
    with (Path(out_dir) / "metrics.csv").open(newline="") as handle:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    if not rows:
        raise ValueError(f"{out_dir}/metrics.csv has no rows")
    seconds = sum(a["seconds"] for a, b in zip(rows, rows[1:]) if b["seconds"] < a["seconds"]) + rows[-1]["seconds"]
    return {"steps": int(rows[-1]["step"]), "first_loss": rows[0]["loss"], "final_loss": rows[-1]["loss"],
            "seconds": round(seconds, 2)}

