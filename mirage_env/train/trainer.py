"""A small, resumable training loop on Hugging Face ``accelerate``: AdamW on fp32 master weights, mixed precision
(bf16 or fp16 autocast), gradient accumulation, gradient clipping, warm-up + cosine learning rate, data-parallel
processes (DDP or FSDP2, ``accelerate launch``), atomic safetensors checkpoints with a JSON state, a CSV metrics log,
TensorBoard scalars and a progress bar.

Data parallelism: every step's global batch is split into ``processes x gradient_accumulation`` equal
:class:`Shard` s; each process computes its shards one after another (accumulating gradients) and DDP averages the
gradients over processes. Every process draws the whole global batch's randomness from the same generator state
and computes only its shard's rows, so N processes train what one process with the same global batch trains (to
float tolerance). Only the main process writes files.

Fully sharded (FSDP2: an accelerate FSDP config): each process holds a slice of every parameter and AdamW moment.
accelerate shards the module on GPUs; on CPU processes (gloo), where accelerate has no FSDP, the trainer shards it
itself with the launcher's settings (:func:`mirage_env.train.sharding.shard_blocks`). Checkpoints gather the whole
tensors into the same files, so a checkpoint resumes under any engine and process count.

Checkpoint layout (``out_dir/checkpoint/``, one folder switched in atomically by :func:`mirage_env.atomic.atomic_dir`,
so a kill at any point leaves the previous checkpoint or the new one, whole): ``weights.safetensors`` (the trained
parameters by name), ``optimizer.safetensors`` (AdamW moments by parameter name), ``state.json`` (step, config, the
loss generator's state and torch's global RNG states, which dropout draws from). ``out_dir/metrics.csv`` holds one
row per logged step (rewritten atomically at every log; a resume drops the rows after the checkpoint's step), and
``out_dir/tensorboard/`` the same loss and lr as TensorBoard scalars. A resumed run ends with the weights an
uninterrupted run with the same number of processes ends with, bit for bit; ``out_dir`` must be on a file system
that every process sees.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, DistributedType, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast, gather_object
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from mirage_env.atomic import atomic_dir, recover_dir, remove_temps, write_text
from mirage_env.train.sharding import fsdp_launched, full_tensor, gradient_sync_off, shard_blocks, shard_like

METRICS_FIELDS = ("step", "loss", "lr", "seconds")

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
"""``TrainConfig.precision`` -> accelerate's ``mixed_precision``."""

ENGINES = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU, DistributedType.FSDP)
"""The accelerate engines the trainer runs: one process, DDP and FSDP2 (not DeepSpeed)."""


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` equal parts of a step's global batch: the rows one forward pass computes (one
    process's part, or one gradient-accumulation micro-step of it)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"a shard's index must be in [0, count), got index {self.index} of {self.count}")

    def rows(self, batch_size: int) -> slice:
        """The rows of this shard in a global batch of ``batch_size``; raises ValueError unless it splits evenly."""
        if batch_size % self.count:
            raise ValueError(f"a global batch of {batch_size} does not split into {self.count} equal shards "
                             "(processes x gradient_accumulation); choose a batch size divisible by that")
        size = batch_size // self.count
        return slice(self.index * size, (self.index + 1) * size)


LossFn = Callable[[int, torch.Generator, Shard], torch.Tensor]
"""(step, generator, shard) -> the mean loss over the shard's rows of the step's global batch. It draws the whole
global batch's randomness from the generator whatever the shard (every shard of a step starts from the same
generator state and must leave it in the same state) and computes only the shard's rows."""


class LossModule(nn.Module):
    """``module`` with the loss function as its forward: what accelerate prepares (DDP, autocast) is a module's
    forward, and a loss function calls its model's own methods."""

    def __init__(self, module: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, step: int, generator: torch.Generator, shard: Shard) -> torch.Tensor:
        return self.loss_fn(step, generator, shard)


def training_accelerator(precision: str, cpu: bool) -> Accelerator:
    """This process's ``Accelerator`` (process group and device from ``accelerate launch``, or one process).

    accelerate keeps one state per process: a trainer at another precision than the previous one (the recipe
    trains the VAE at fp32 and the world model at ``--precision``) starts that state afresh; the process group
    stays. Its gradient-accumulation count is shared by all accelerators of the process too, so the trainer
    divides its losses itself. DDP looks for unused parameters: the VAE's critic idles before
    ``adversarial_start``."""
    mixed_precision = PRECISIONS[precision]
    if AcceleratorState._shared_state.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


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
    checkpoint_every: int = 100
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" (accelerate's autocast; master weights stay fp32)
    max_seconds: float | None = None  # stop early after this long; the learning-rate schedule then runs on time
    gradient_accumulation: int = 1  # forward passes per step and process, each on its shard of the batch

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.precision not in PRECISIONS:
            raise ValueError(f"steps >= 1, lr > 0 and precision in {tuple(PRECISIONS)} are required")
        if self.gradient_accumulation < 1:
            raise ValueError(f"gradient_accumulation must be >= 1, got {self.gradient_accumulation}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {self.max_seconds}")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError(f"log_every and checkpoint_every must be >= 1, got {self.log_every} and "
                             f"{self.checkpoint_every}")


def learning_rate(step: int, config: TrainConfig, time_used: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10 % of ``lr`` over the steps, or over ``max_seconds`` when the
    fraction ``time_used`` of that is further along (a run with a time limit still ends fully decayed)."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = max((step - config.warmup) / max(1, config.steps - config.warmup), time_used)
    return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters of ``module`` that require grad, by name; raises ValueError when there are none or one is not
    float32 (the master weights)."""
    params = {name: p for name, p in module.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the module has no trainable parameters")
    for name, p in params.items():
        if p.dtype != torch.float32:
            raise ValueError(f"trainable parameter {name} is {p.dtype}; master weights must be float32")
    return params


class Trainer:
    """Train the parameters of ``module`` that require grad on ``loss_fn``, checkpointing into ``out_dir``.

    The trainer runs under accelerate (one process, or each process of ``accelerate launch``): ``module`` must be
    on this process's device (``Accelerator().device``; a CPU module trains on the CPU). :meth:`run` draws torch's
    global RNG (dropout) from a stream seeded with ``config.seed`` (offset by the process index) and restores the
    caller's RNG state afterwards."""

    def __init__(self, module: torch.nn.Module, loss_fn: LossFn, config: TrainConfig, out_dir: str | Path) -> None:
        self.module = module
        self.loss_fn = loss_fn
        self.config = config
        self.out_dir = Path(out_dir)
        self.params = trainable_parameters(module)
        device = next(iter(self.params.values())).device
        self.accelerator = training_accelerator(config.precision, device.type == "cpu")
        engine = self.accelerator.distributed_type
        if engine not in ENGINES:
            raise ValueError(f"accelerate runs {engine}; the trainer runs one process, DDP or FSDP2 (DeepSpeed's "
                             "sharded checkpoints are not supported: use an FSDP config)")
        if engine == DistributedType.FSDP and not self.accelerator.is_fsdp2:
            raise ValueError("accelerate runs FSDP1; the trainer shards with FSDP2 only: set fsdp_version: 2")
        if device.type != "cpu" and device != self.accelerator.device:
            raise ValueError(f"the module is on {device}, but this process trains on {self.accelerator.device}")
        loss_module = LossModule(module, loss_fn)
        # accelerate has FSDP only for accelerator devices: CPU processes launched with an FSDP config shard here
        self.shards_itself = engine == DistributedType.MULTI_CPU and fsdp_launched()
        if self.shards_itself:
            shard_blocks(loss_module)
            self.params = trainable_parameters(module)
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        if self.shards_itself:
            self.loss_module, self.prepared_optimizer = loss_module, self.accelerator.prepare(self.optimizer)
        else:
            self.loss_module, self.prepared_optimizer = self.accelerator.prepare(loss_module, self.optimizer)
        self.params = trainable_parameters(module)  # FSDP swaps the parameters for sharded ones
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.rows: list[dict] = []  # every logged row up to ``step``, over all runs of this out_dir
        self.global_rng: dict[str, torch.Tensor] | None = None  # restored by load_checkpoint, applied by run

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.csv"

    @property
    def is_main(self) -> bool:
        """Whether this is the process that writes the checkpoint, metrics and TensorBoard files."""
        return self.accelerator.is_main_process

    def _cuda_devices(self) -> list[int]:
        return sorted({p.device.index for p in self.params.values() if p.device.type == "cuda"})

    def save_checkpoint(self) -> None:
        """Write weights, optimizer moments and state as one checkpoint folder, switched in atomically (the main
        process writes; every process gives its RNG states)."""
        rng_by_process = gather_object([{d: rng.tolist() for d, rng in self._global_rng_states().items()}])
        weights, moments = {}, {}
        for name, p in self.params.items():  # every process gathers sharded tensors; the main one keeps them
            tensors = {name: p} | {f"{name}::{key}": v for key, v in self.optimizer.state.get(p, {}).items()}
            for key, tensor in tensors.items():
                whole = full_tensor(tensor.detach())
                if self.is_main:
                    (weights if key == name else moments)[key] = whole.contiguous().cpu()
        if self.is_main:
            state = {"step": self.step, "config": asdict(self.config),
                     "generator": self.generator.get_state().tolist(), "global_rng": rng_by_process[0]}
            if len(rng_by_process) > 1:
                state["global_rng_by_process"] = rng_by_process
            if self.accelerator.scaler is not None:
                state["grad_scaler"] = self.accelerator.scaler.state_dict()
            with atomic_dir(self.checkpoint_dir) as folder:
                save_file(weights, str(folder / "weights.safetensors"))
                save_file(moments, str(folder / "optimizer.safetensors"))
                (folder / "state.json").write_text(json.dumps(state))
        self.accelerator.wait_for_everyone()

    def _recover(self) -> None:
        """Finish or undo a checkpoint switch a kill interrupted (the main process), then let every process on."""
        if self.is_main:
            recover_dir(self.checkpoint_dir)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self) -> None:
        """Restore weights, optimizer moments, step, generator and RNG states from ``out_dir/checkpoint`` and the
        metrics rows up to its step; a missing or corrupt file raises ValueError naming it (nothing changed).
        Every process reads the tensors one at a time from the memory-mapped files and keeps its slice of sharded
        ones."""
        folder = self.checkpoint_dir
        self._recover()
        weights = _read(folder / "weights.safetensors", _open_safetensors)
        moments = _read(folder / "optimizer.safetensors", _open_safetensors)
        state = _read(folder / "state.json", lambda path: _check_state(json.loads(path.read_text())))
        missing = sorted(set(self.params) - set(weights.keys()))
        if missing:
            raise ValueError(f"{folder}: checkpoint lacks parameters {missing[:5]}")
        misshapen = [n for n, p in self.params.items() if list(weights.get_slice(n).get_shape()) != list(p.shape)]
        if misshapen:
            raise ValueError(f"{folder}: checkpoint parameters {misshapen[:5]} have other shapes than the module's")
        rows = _read(self.metrics_path, read_metrics) if self.metrics_path.exists() else []
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(shard_like(weights.get_tensor(name), p))
        moment_keys: dict[str, list[str]] = {}
        for key in moments.keys():
            moment_keys.setdefault(key.split("::", 1)[0], []).append(key)
        for name, p in self.params.items():
            if name in moment_keys:
                self.optimizer.state[p] = {key.split("::", 1)[1]: shard_like(moments.get_tensor(key), p)
                                           for key in moment_keys[name]}
        self.step = int(state["step"])
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.rows = [row for row in rows if row["step"] <= self.step]
        if self.accelerator.scaler is not None and "grad_scaler" in state:
            self.accelerator.scaler.load_state_dict(state["grad_scaler"])
        rng = self._saved_global_rng(state)
        if rng is not None:
            self.global_rng = {d: torch.tensor(v, dtype=torch.uint8) for d, v in rng.items()}
        else:
            warnings.warn(f"{folder} lacks this process's global RNG states (an older checkpoint, or another number "
                          "of processes): dropout draws will differ from an uninterrupted run", stacklevel=2)

    def _saved_global_rng(self, state: dict) -> dict | None:
        """This process's global RNG states in a checkpoint state, None when it has none for this process count."""
        processes = self.accelerator.num_processes
        by_process = state.get("global_rng_by_process", [state["global_rng"]] if "global_rng" in state else [])
        return by_process[self.accelerator.process_index] if len(by_process) == processes else None

    def _global_rng_states(self) -> dict[str, torch.Tensor]:
        states = {"cpu": torch.get_rng_state()}
        states.update({f"cuda:{i}": torch.cuda.get_rng_state(i) for i in self._cuda_devices()})
        return states

    def _start_global_rng(self) -> None:
        """Seed torch's global RNG with ``config.seed`` (each process its own stream), or restore the loaded
        checkpoint's states."""
        if self.global_rng is None:
            seed = self.config.seed + 1_000_003 * self.accelerator.process_index
            torch.random.default_generator.manual_seed(seed)
            for i in self._cuda_devices():
                with torch.cuda.device(i):
                    torch.cuda.manual_seed(seed)
            return
        for device, rng in self.global_rng.items():
            if device == "cpu":
                torch.set_rng_state(rng)
            else:
                torch.cuda.set_rng_state(rng, device)

    def _log(self, row: dict, board) -> None:
        self.rows.append(row)
        if self.is_main:
            write_text(self.metrics_path, metrics_csv(self.rows))
            board.add_scalar("train/loss", row["loss"], row["step"])
            board.add_scalar("train/lr", row["lr"], row["step"])

    def _log_window(self, rows: list[dict], window: list[float], lr: float, start: float, bar: tqdm,
                    board) -> list[float]:
        """Log the mean loss of ``window`` (when it has any) and return an empty window."""
        if window:
            row = {"step": self.step, "loss": sum(window) / len(window), "lr": lr,
                   "seconds": round(time.perf_counter() - start, 2)}
            rows.append(row)
            self._log(row, board)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        return []

    def run(self, resume: bool = False, progress: bool = True) -> list[dict]:
        """Train until ``config.steps`` (or ``config.max_seconds``); returns the rows logged by this run (step,
        loss, lr, seconds)."""
        from torch.utils.tensorboard import SummaryWriter

        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            if self.is_main:
                remove_temps(self.metrics_path)
            self._recover()
            if self.checkpoint_dir.exists():
                self.load_checkpoint()
                if self.is_main:
                    write_text(self.metrics_path, metrics_csv(self.rows))
        # purge_step: TensorBoard hides the rows a killed run logged after the checkpoint
        board = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.step + 1) if self.is_main else None
        with torch.random.fork_rng(devices=self._cuda_devices()), board or contextlib.nullcontext():
            self._start_global_rng()
            return self._train(board, progress and self.is_main)

    def _time_used(self, start: float) -> float:
        """The fraction of ``max_seconds`` used, as the main process measures it (all processes agree)."""
        if self.config.max_seconds is None:
            return 0.0
        used = torch.tensor([(time.perf_counter() - start) / self.config.max_seconds], dtype=torch.float64)
        return float(broadcast(used.to(self.accelerator.device))[0])

    def _no_sync(self) -> contextlib.AbstractContextManager:
        """Backward passes that accumulate gradients without reducing them over the processes."""
        if self.shards_itself:  # accelerate's no_sync knows FSDP2 only when accelerate sharded the module
            return gradient_sync_off(self.loss_module)
        return self.accelerator.no_sync(self.loss_module)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for a module the trainer sharded itself (accelerate's prepare adds it to the others)."""
        return self.accelerator.autocast() if self.shards_itself else contextlib.nullcontext()

    def _forward_backward(self) -> torch.Tensor:
        """Forward and backward of this process's shards of the step's batch; returns the batch's mean loss over
        all processes."""
        accumulation = self.config.gradient_accumulation
        shards = self.accelerator.num_processes * accumulation
        first_shard = self.accelerator.process_index * accumulation
        start_state = self.generator.get_state()
        total = torch.zeros((), device=self.accelerator.device)
        for micro in range(accumulation):
            self.generator.set_state(start_state)  # every shard sees the same global batch
            syncing = micro == accumulation - 1
            with contextlib.nullcontext() if syncing else self._no_sync():
                with self._autocast():
                    loss = self.loss_module(self.step, self.generator, Shard(first_shard + micro, shards))
                self.accelerator.backward(loss / accumulation)
            total = total + loss.detach()
        return self.accelerator.reduce(total / accumulation, "mean")

    def _train(self, board, progress: bool) -> list[dict]:
        rows, window, start, lr = [], [], time.perf_counter(), self.config.lr
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not progress, desc="train")
        self.module.train()
        while self.step < self.config.steps:
            time_used = self._time_used(start)
            if time_used >= 1.0:
                self._log_window(rows, window, lr, start, bar, board)
                self.save_checkpoint()
                break
            lr = learning_rate(self.step, self.config, time_used)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._forward_backward()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {self.step}")
            self.accelerator.clip_grad_norm_(list(self.params.values()), self.config.grad_clip)
            self.prepared_optimizer.step()
            self.step += 1
            window.append(loss.item())
            bar.update(1)
            if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                window = self._log_window(rows, window, lr, start, bar, board)
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self.save_checkpoint()
        bar.close()
        self.module.eval()
        self.global_rng = self._global_rng_states()  # a later run() of this trainer continues the stream
        return rows


def _read(path: Path, reader: Callable[[Path], object]):
    """``reader(path)``; any failure becomes a ValueError naming the file."""
    try:
        return reader(path)
    except Exception as error:  # missing, truncated or foreign files raise many types
        raise ValueError(f"{path}: cannot resume from this checkpoint ({type(error).__name__}: {error})") from error


def _open_safetensors(path: Path):
    """A lazy reader of a safetensors file (its header checked now, tensors read on ``get_tensor``)."""
    return safe_open(str(path), framework="pt", device="cpu")


def _check_state(state: dict) -> dict:
    missing = [key for key in ("step", "generator") if key not in state]
    if missing:
        raise KeyError(f"state lacks {missing}")
    return state


def metrics_csv(rows: list[dict]) -> str:
    """The metrics log as CSV text (header and one line per row)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=METRICS_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics log (numbers as floats, ``step`` as int)."""
    with Path(path).open(newline="") as handle:
        return [{k: int(v) if k == "step" else float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def log(message: str) -> None:
    """A progress line with the wall-clock time, from the main process (unbuffered: a killed run's log shows how
    far it came)."""
    if PartialState().is_main_process:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def log_summary(out_dir: str | Path) -> dict:
    """Steps, first and final logged loss and training seconds over all runs (resumes included) of the metrics
    log in ``out_dir``; each run's ``seconds`` restart at 0, so the summary adds up every run's last value."""
    rows = read_metrics(Path(out_dir) / "metrics.csv")
    if not rows:
        raise ValueError(f"{out_dir}/metrics.csv has no rows")
    seconds = sum(a["seconds"] for a, b in zip(rows, rows[1:]) if b["seconds"] < a["seconds"]) + rows[-1]["seconds"]
    return {"steps": int(rows[-1]["step"]), "first_loss": rows[0]["loss"], "final_loss": rows[-1]["loss"],
            "seconds": round(seconds, 2)}

