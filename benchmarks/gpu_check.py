"""GPU check: the CUDA kernels, the real-size model, the vector env and training on one accelerator, one command.

    python benchmarks/gpu_check.py                        # a CUDA machine: about 8 minutes on one H200
    python benchmarks/gpu_check.py --quick                # the CPU, small sizes, under a minute: tests this script
    python benchmarks/gpu_check.py --quick --device cuda  # the small sizes on the GPU: a first look in seconds
    python benchmarks/gpu_check.py --sections kernels real_size --chunks 4

First a preamble records the machine (device name, driver from ``nvidia-smi``, torch and CUDA versions, the
compiled modules) and, on CUDA, checks that ``mirage_env._C_cuda`` imports and runs on this GPU's architecture
(:data:`BUILD_HINT` says how to build it). Then four sections; each one's failure is recorded and the next runs:

a. ``kernels``: projection/z-buffer, depth consistency, segment fuse and ``LatentSpatialMemory.read`` at N points
   (1e6, 1e7, 5e7) on the same inputs through the CUDA extension, the CPU extension and the PyTorch reference (on
   the checked device). Integer outputs (z-buffer keys, vote counts, voxel keys and slots, read index, mask, depth
   bits and gathered features) must be bitwise equal to the CPU extension's; fused sums within float tolerance.
   Time per call (best of ``--repeat``) and its traffic (bytes of the inputs and outputs, once each) as a fraction
   of the device's copy bandwidth, measured with ``Tensor.copy_`` in the same run.
b. ``real_size``: ``wan2.2-ti2v-5b`` with random bfloat16 weights (:mod:`real_size_smoke`), 33-frame chunks at
   704x1280 with 20 denoising steps through the whole segment loop. After one warm-up chunk (1 step), one chunk each
   with the bounded latent memory, the RGB point-cloud cache (render + VAE encode) and the append-only memory, from
   the same start: seconds, peak CUDA memory, cache bytes, and the latent-vs-RGB end-to-end ratio beside the
   paper's 10.57x. The latent world runs ``--chunks`` (10) chunks to show whether time and memory stay flat.
c. ``vector_env``: frames/s of the tiny env's batched vector env on the device at N = 1, 8, 64, 256
   (:func:`env_throughput.measure`), N = 8 over N = 1 against the 3x target, and where it saturates.
d. ``training``: steps/s of the tiny recipe's stages (VAE, then DiT, add-on, LoRA on a pool of teacher-forced
   segments) on the device, with the GPU command's batch sizes and bf16 autocast for the world-model stages.

``--quick`` shrinks every size (tiny preset at 32x32, N = 1e4 and 1e5 points, N = 1 and 2 envs, 3 training steps).
Writes ``--out``/gpu_check.json and gpu_check.md after every section (atomic; ``"complete"`` becomes true at the
end). Without CUDA and without ``--quick`` it exits with a message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import torch
from env_throughput import ENV_ID
from env_throughput import measure as measure_envs
from measure import best_of, synthetic_memory
from real_size_smoke import build_model, run_chunk, run_memory, start_world
from roofline import copy_bandwidth, frustum_points

from mirage_env.atomic import write_text
from mirage_env.geometry import intrinsics_from_fov, pack_cameras
from mirage_env.geometry.trajectories import from_velocities
from mirage_env.memory import LatentSpatialMemory
from mirage_env.models import from_preset
from mirage_env.models.presets import build_vae, load_preset
from mirage_env.ops import extension, reference
from mirage_env.train.segments import SegmentData, SegmentPool, flow_loss_fn
from mirage_env.train.stages import prepare_stage
from mirage_env.train.trainer import Shard, TrainConfig, Trainer
from mirage_env.train.vae import VaeData, VaeWithCritic, vae_loss_fn, vae_pools
from mirage_env.world import WorldConfig

SECTIONS = ("kernels", "real_size", "vector_env", "training")
PAPER_SPEEDUP = 10.57  # Mirage: end to end, latent memory vs an RGB point-cloud cache, 704x1280
PAPER_CACHE_RATIO = 55.0  # Mirage: RGB cache bytes over latent memory bytes
ENV_TARGET = 3.0  # frames/s of N = 8 over N = 1
FEATURES = 48  # the real preset's latent channels
KERNEL_HW = (44, 80)  # the latent grid of 704x1280
KERNEL_CAMERAS = 9  # the latent frames of a 33-frame chunk
DEPTH_FRAMES = 8
READ_VOXEL = 0.002  # metres: the synthetic memory's voxels, small enough that nearly every point is its own voxel
BUILD_HINT = ("build it for this GPU from the repository root: MIRAGE_ENV_CUDA=1 MIRAGE_ENV_CUDA_ARCH={arch} "
              "python setup.py build_ext --inplace (or MIRAGE_ENV_CUDA=1 MIRAGE_ENV_CUDA_ARCH={arch} pip install .); "
              "setup.py reads MIRAGE_ENV_CUDA_ARCH (default 80,90: sm_80 and sm_90 machine code, PTX for 90) and needs "
              "nvcc (CUDA_HOME or PATH)")


@dataclass(frozen=True)
class Plan:
    """The sizes of one run (full or ``--quick``)."""

    sizes: tuple[int, ...]  # kernel points
    repeat: int
    copy_mib: int
    preset: str
    hw: tuple[int, int]
    frames: int
    steps: int
    chunks: int
    env_sizes: tuple[int, ...]
    env_steps: int
    env_rounds: int
    train_steps: int
    batch_size: int  # world-model stages
    pool: int
    vae_batch_size: int
    vae_pool: int


FULL = Plan(sizes=(1_000_000, 10_000_000, 50_000_000), repeat=3, copy_mib=1024, preset="wan2.2-ti2v-5b",
            hw=(704, 1280), frames=33, steps=20, chunks=10, env_sizes=(1, 8, 64, 256), env_steps=1, env_rounds=3,
            train_steps=20, batch_size=64, pool=32, vae_batch_size=32, vae_pool=64)
QUICK = Plan(sizes=(10_000, 100_000), repeat=1, copy_mib=16, preset="tiny", hw=(32, 32), frames=33, steps=2,
             chunks=3, env_sizes=(1, 2), env_steps=1, env_rounds=1, train_steps=3, batch_size=2, pool=2,
             vae_batch_size=2, vae_pool=2)


# ---------------------------------------------------------------------------------------------------- preamble
def nvidia_smi() -> str | None:
    """``name, driver, memory`` of the GPUs from nvidia-smi, or None where it is absent."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    result = subprocess.run(query, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else f"nvidia-smi failed: {result.stderr.strip()}"


def compiled_archs(path: str) -> list[str] | None:
    """The sm_/compute_ targets a compiled module carries (cuobjdump), or None without cuobjdump."""
    if shutil.which("cuobjdump") is None:
        return None
    listed = ""
    for flag in ("--list-elf", "--list-ptx"):
        listed += subprocess.run(["cuobjdump", flag, path], capture_output=True, text=True).stdout
    return sorted(set(re.findall(r"(?:sm|compute)_\d+", listed)))


def environment(device: torch.device) -> dict:
    """What the figures were measured on, and what was compiled."""
    cpu, cuda = extension.load_module("cpu"), extension.load_module("cuda")
    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda, "python":
            platform.python_version(), "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "nvidia_smi": nvidia_smi(),
            "extension": {"cpu": None if cpu is None else {"file": cpu.__file__, "openmp": cpu.has_openmp(),
                                                            "max_threads": cpu.max_threads()},
                          "cuda": None if cuda is None else {"file": cuda.__file__,
                                                             "device_count": cuda.device_count(),
                                                             "archs": compiled_archs(cuda.__file__)}}}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        info.update(device_name=torch.cuda.get_device_name(device), capability=f"sm_{major}{minor}",
                    device_memory_bytes=torch.cuda.get_device_properties(device).total_memory)
    return info


def check_cuda_build(device: torch.device) -> dict:
    """``{"ok": ...}``: _C_cuda imports and its z-buffer on this GPU equals the reference's (the launch fails where
    the module has no code for the GPU's architecture); the error says how to build it."""
    major, minor = torch.cuda.get_device_capability(device)
    hint = BUILD_HINT.format(arch=f"{major}{minor}")
    module = extension.load_module("cuda")
    if module is None:
        return {"ok": False, "error": "mirage_env._C_cuda does not import", "how_to_build": hint}
    inputs = kernel_inputs(1000, torch.Generator().manual_seed(0))["project_zbuffer"]
    try:
        args = to_device(inputs, device)
        equal = torch.equal(extension.project_zbuffer(module, *args).cpu(), reference.project_zbuffer(*args).cpu())
    except RuntimeError as error:
        return {"ok": False, "error": f"_C_cuda does not run on sm_{major}{minor}: {error}", "how_to_build": hint}
    return {"ok": equal, "error": None if equal else "_C_cuda's z-buffer differs from the reference",
            "how_to_build": hint}


# ---------------------------------------------------------------------------------------------------- a. kernels
def kernel_inputs(n: int, generator: torch.Generator) -> dict[str, tuple]:
    """CPU inputs of every kernel at ``n`` points: points in the view frustum of a chunk's cameras at the latent grid
    of 704x1280, depth maps of a segment, ``n`` new points to fuse into a store of n / 4 voxels."""
    h, w = KERNEL_HW
    K = intrinsics_from_fov(70.0, KERNEL_HW)
    turn = torch.tensor([[0.0, 0.0, 0.0, 0.01, 0.0, 0.0]] * (KERNEL_CAMERAS - 1))
    poses = from_velocities(torch.eye(4, dtype=torch.float64), turn)
    cameras = pack_cameras(K.expand(KERNEL_CAMERAS, 3, 3), poses)
    points = frustum_points(n, K, KERNEL_HW, generator)
    depths = torch.rand(DEPTH_FRAMES, h, w, generator=generator) * 8 + 1
    source = torch.randint(-1, DEPTH_FRAMES, (n,), generator=generator, dtype=torch.int32)
    keys = torch.randint(0, max(n // 4, 1), (n,), generator=generator)
    sorted_keys, order = torch.sort(keys, stable=True)
    store_keys = torch.unique(torch.randint(0, max(n // 2, 1), (max(n // 4, 1),), generator=generator))
    return {
        "project_zbuffer": (points, cameras, h, w, 0.01),
        "depth_consistency": (points, source, *reference.window_depth_range(depths, 1), cameras[:DEPTH_FRAMES],
                              0.05, 0.01),
        "segment_fuse": (sorted_keys, order, points, torch.randn(n, FEATURES, generator=generator), torch.rand(n),
                         store_keys, torch.arange(store_keys.numel())),
    }


def to_device(args: tuple, device: torch.device) -> tuple:
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)


def nbytes(values) -> int:
    """Bytes of the tensors in ``values`` (nested tuples)."""
    if isinstance(values, torch.Tensor):
        return values.numel() * values.element_size()
    if isinstance(values, (tuple, list)):
        return sum(nbytes(v) for v in values)
    return 0


@contextlib.contextmanager
def backend(name: str):
    """``MIRAGE_ENV_BACKEND=name`` for the calls inside (the dispatch reads it at every call)."""
    previous = os.environ.get("MIRAGE_ENV_BACKEND")
    os.environ["MIRAGE_ENV_BACKEND"] = name
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MIRAGE_ENV_BACKEND"]
        else:
            os.environ["MIRAGE_ENV_BACKEND"] = previous


@dataclass
class Call:
    """One kernel call on one backend: ``run()`` and the tensors it reads (for its traffic)."""

    run: Callable[[], object]
    reads: tuple
    device: torch.device


def kernel_calls(n: int, generator: torch.Generator, device: torch.device) -> dict[str, dict[str, Call]]:
    """Per operation, per backend (the reference on ``device``, the CPU extension, the CUDA extension when ``device``
    is a GPU and it is built), a call on that backend's copy of the same inputs."""
    cpu = torch.device("cpu")
    backends = {"cpu extension": (extension.load_module("cpu"), cpu)}
    if device.type == "cuda":
        backends["cuda extension"] = (extension.load_module("cuda"), device)
    inputs = kernel_inputs(n, generator)
    calls: dict[str, dict[str, Call]] = {}
    for op, args in inputs.items():
        copies = {cpu: args, device: to_device(args, device)}
        calls[op] = {"reference": Call(lambda f=getattr(reference, op), a=copies[device]: f(*a), copies[device],
                                       device)}
        for name, (module, where) in backends.items():
            if module is not None:
                calls[op][name] = Call(lambda f=getattr(extension, op), m=module, a=copies[where]: f(m, *a),
                                       copies[where], where)
    memories = {cpu: synthetic_memory(FEATURES, READ_VOXEL, inputs["project_zbuffer"][0], generator)}
    if device != cpu:
        memories[device] = LatentSpatialMemory(memories[cpu].config, device)
        memories[device].load_state_dict(memories[cpu].state_dict())
    K = intrinsics_from_fov(70.0, KERNEL_HW).expand(KERNEL_CAMERAS, 3, 3)
    poses = from_velocities(torch.eye(4, dtype=torch.float64),
                            torch.tensor([[0.0, 0.0, 0.0, 0.01, 0.0, 0.0]] * (KERNEL_CAMERAS - 1)))

    def read(memory: LatentSpatialMemory, choice: str) -> Call:
        def run() -> tuple:
            with backend(choice):
                return tuple(memory.read(K, poses, KERNEL_HW))
        return Call(run, (memory.positions, memory.features), memory.device)

    calls["memory_read"] = {"reference": read(memories[device], "reference")}
    for name, (module, where) in backends.items():
        if module is not None:
            calls["memory_read"][name] = read(memories[where], "extension")
    return calls


EXACT_FIELDS = {"project_zbuffer": "all", "depth_consistency": "all", "memory_read": "all",
                "segment_fuse": (0, 4)}  # unique keys and store slots; the sums (1-3) within tolerance


def compare(op: str, outputs: dict[str, tuple]) -> dict:
    """Every backend's outputs against the CPU extension's: integer outputs bitwise, sums within tolerance."""
    base_name = "cpu extension" if "cpu extension" in outputs else "reference"
    base = [t.cpu() for t in _fields(outputs[base_name])]
    exact = EXACT_FIELDS[op]
    result = {"against": base_name}
    for name, out in outputs.items():
        if name == base_name:
            continue
        fields = [t.cpu() for t in _fields(out)]
        bitwise = all(torch.equal(a, b) for i, (a, b) in enumerate(zip(fields, base)) if exact == "all" or i in exact)
        row = {"bitwise_equal": bitwise}
        if exact != "all":
            floats = [(a, b) for i, (a, b) in enumerate(zip(fields, base)) if i not in exact]
            row["max_abs_diff"] = max(float((a - b).abs().max()) if a.numel() else 0.0 for a, b in floats)
            row["within_tolerance"] = all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in floats)
        result[name] = row
    return result


def _fields(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def kernels(plan: Plan, device: torch.device) -> dict:
    """Section a."""
    copy = {"cpu": copy_bandwidth(plan.copy_mib, plan.repeat, torch.device("cpu"))}
    if device.type == "cuda":
        copy["cuda"] = copy_bandwidth(plan.copy_mib, plan.repeat, device)
    rows = []
    for n in plan.sizes:
        for op, calls in kernel_calls(n, torch.Generator().manual_seed(n), device).items():
            outputs, timings = {}, {}
            for name, call in calls.items():
                stats, outputs[name] = best_of(call.run, plan.repeat, call.device)
                traffic = nbytes(call.reads) + nbytes(outputs[name])
                gb_per_s = traffic / (stats["ms"] * 1e-3) / 1e9
                timings[name] = {"ms": stats["ms"], "median_ms": stats["median_ms"], "traffic_bytes": traffic,
                                 "gb_per_s": gb_per_s, "fraction_of_copy": gb_per_s / copy[call.device.type]}
            row = {"op": op, "points": n, "timings": timings, "equality": compare(op, outputs)}
            if "cuda extension" not in calls:
                row["cuda extension"] = ("skipped: no CUDA device" if device.type != "cuda"
                                         else "skipped: mirage_env._C_cuda is not built")
            rows.append(row)
    exact = all(r["equality"][k]["bitwise_equal"] for r in rows for k in r["equality"] if k != "against")
    return {"copy_gb_per_s": copy, "rows": rows, "all_integer_outputs_bitwise_equal": exact,
            "hw": list(KERNEL_HW), "cameras": KERNEL_CAMERAS, "depth_frames": DEPTH_FRAMES, "features": FEATURES}


# ---------------------------------------------------------------------------------------------------- b. real size
def real_size(plan: Plan, device: torch.device) -> dict:
    """Section b."""
    model, build_seconds = build_model(plan.preset, device, torch.bfloat16, torch.bfloat16)
    with torch.no_grad():
        warm_up = run_chunk(start_world(model, plan.hw, plan.frames, 1, "latent"))
        runs = {kind: run_memory(model, plan.hw, plan.frames, plan.steps, kind, plan.chunks if kind == "latent" else 1)
                for kind in ("latent", "rgb", "append")}
    latent, rgb = runs["latent"]["chunks"], runs["rgb"]["chunks"]
    series = latent[1:] or latent
    peak_key = "peak_cuda_bytes" if device.type == "cuda" else "peak_rss_bytes"
    return {
        "preset": plan.preset, "image_hw": list(plan.hw), "frames": plan.frames, "steps": plan.steps,
        "dtype": "bfloat16 (DiT, branch and VAE)", "build_seconds": build_seconds, "warm_up_chunk": warm_up,
        "runs": runs,
        "end_to_end_rgb_over_latent": rgb[0]["seconds"] / latent[0]["seconds"],
        "read_rgb_over_latent": rgb[0]["stage_ms"]["read"] / max(latent[0]["stage_ms"]["read"], 1e-9),
        "cache_bytes_rgb_over_latent": rgb[0]["memory_bytes"] / latent[0]["memory_bytes"],
        "paper_end_to_end": PAPER_SPEEDUP, "paper_cache_ratio": PAPER_CACHE_RATIO,
        "latent_flatness": {"chunks_compared": [2, len(latent)] if len(latent) > 1 else [1, 1],
                            "seconds_last_over_first": series[-1]["seconds"] / series[0]["seconds"],
                            "peak_last_over_first": series[-1][peak_key] / series[0][peak_key],
                            "memory_bytes_last_over_first": series[-1]["memory_bytes"] / series[0]["memory_bytes"]},
    }


# ---------------------------------------------------------------------------------------------------- c. vector env
def vector_env(plan: Plan, device: torch.device) -> dict:
    """Section c."""
    makers = {n: (lambda n=n: gym.make_vec(ENV_ID, num_envs=n, device=str(device))) for n in plan.env_sizes}
    rows = measure_envs({f"N = {n}": make for n, make in makers.items()}, plan.env_steps, plan.env_rounds)
    fps = {n: rows[f"N = {n}"]["frames_per_s"] for n in plan.env_sizes}
    best = max(fps.values())
    return {"rows": rows, "frames_per_s": fps, "speedup_over_n1": {n: f / fps[1] for n, f in fps.items()} if 1 in fps
            else None, "n8_over_n1": fps[8] / fps[1] if 8 in fps and 1 in fps else None, "target_n8_over_n1":
            ENV_TARGET, "saturates_at": min(n for n, f in fps.items() if f >= 0.9 * best)}


# ---------------------------------------------------------------------------------------------------- d. training
def steps_per_second(module: torch.nn.Module, loss_fn, steps: int, precision: str, out_dir: Path) -> dict:
    """Run ``steps`` trainer steps; steps/s over the steps after the first (the loss is stamped at each step's start;
    the trainer reads every loss back, so on CUDA each step has finished when the next starts)."""
    stamps: list[float] = []

    def timed(step: int, generator: torch.Generator, shard: Shard) -> torch.Tensor:
        stamps.append(time.perf_counter())
        return loss_fn(step, generator, shard)

    config = TrainConfig(steps=steps, warmup=1, precision=precision, log_every=steps, checkpoint_every=steps)
    begin = time.perf_counter()
    Trainer(module, timed, config, out_dir).run(progress=False)
    return {"steps": steps, "precision": precision, "steps_per_s": (len(stamps) - 2) / (stamps[-1] - stamps[1]),
            "seconds_with_start_and_checkpoint": time.perf_counter() - begin}


def training(plan: Plan, device: torch.device) -> dict:
    """Section d."""
    if plan.train_steps < 3:
        raise ValueError("training throughput needs at least 3 steps")
    precision = "bf16" if device.type == "cuda" else "fp32"
    stages = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = VaeData(pool=plan.vae_pool, batch_size=plan.vae_batch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            vae = VaeWithCritic(build_vae(load_preset("tiny"))).to(device)
        clips, images = vae_pools(data, seed=0)
        for i in range(clips.size):  # rendered before the clock starts: the figure is the training step's
            clips[i]
        stages["vae"] = steps_per_second(vae, vae_loss_fn(vae, clips, data, images), plan.train_steps, "fp32",
                                         Path(tmp) / "vae")
        model = from_preset("tiny", random_weights=True, device=device)
        pool = SegmentPool(model, SegmentData(pool=plan.pool, batch_size=plan.batch_size), WorldConfig(), seed=0)
        begin = time.perf_counter()
        pool.shape_groups()  # makes every teacher-forced entry
        pool_seconds = time.perf_counter() - begin
        for stage in ("dit", "addon", "lora"):
            prepare_stage(model, stage)
            stages[stage] = steps_per_second(model, flow_loss_fn(model, pool), plan.train_steps, precision,
                                             Path(tmp) / stage)
    return {"stages": stages, "batch_size": plan.batch_size, "vae_batch_size": plan.vae_batch_size,
            "pool": plan.pool, "pool_seconds": pool_seconds}


# ---------------------------------------------------------------------------------------------------- the report
def run_section(name: str, fn: Callable[[Plan, torch.device], dict], plan: Plan, device: torch.device) -> dict:
    """A section's result; an exception is recorded (the remaining sections still run: the device time is scarce)."""
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
    begin = time.perf_counter()
    try:
        result = {"ok": True, **fn(plan, device)}
    except Exception as error:  # noqa: BLE001 - any failure of a section is a finding to record, not a crash
        result = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        print(result["traceback"], file=sys.stderr, flush=True)
    result["seconds"] = time.perf_counter() - begin
    return result


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def markdown(report: dict) -> str:
    """The human summary of a report."""
    env = report["environment"]
    state = "complete" if report["complete"] else "partial"
    lines = [f"# GPU check ({'quick' if report['quick'] else 'full'}, {state})",
             "", f"device: {env.get('device_name', env['device'])}; driver: {env['nvidia_smi']}; torch {env['torch']}, "
             f"CUDA {env['cuda']}; _C_cuda check: {_build_check(report)}", ""]
    sections = report["sections"]
    for name in SECTIONS:
        if name not in sections:
            continue
        s = sections[name]
        lines.append(f"## {name} ({s['seconds']:.0f} s)")
        if not s["ok"]:
            lines += ["", f"FAILED: {s['error']}", ""]
            continue
        lines.append("")
        lines += SECTION_TABLES[name](s)
        lines.append("")
    return "\n".join(lines)


def _build_check(report: dict) -> str:
    check = report.get("build_check")
    if check is None:
        return "not run (no CUDA device)"
    return "passed" if check["ok"] else f"FAILED: {check['error']} ({check['how_to_build']})"


def _kernel_table(s: dict) -> list[str]:
    copy = ", ".join(f"{k} {v:.1f} GB/s" for k, v in s["copy_gb_per_s"].items())
    lines = [f"copy bandwidth: {copy}; all integer outputs bitwise equal: {s['all_integer_outputs_bitwise_equal']}",
             "", "| op | N | backend | ms | GB/s | of copy | equal to " + s["rows"][0]["equality"]["against"] + " |",
             "|---|---:|---|---:|---:|---:|---|"]
    for r in s["rows"]:
        for name, t in r["timings"].items():
            eq = r["equality"].get(name)
            shown = "(base)" if eq is None else (f"bitwise {eq['bitwise_equal']}" + (
                f", sums within tolerance {eq['within_tolerance']} (max diff {eq['max_abs_diff']:.2g})"
                if "within_tolerance" in eq else ""))
            lines.append(f"| {r['op']} | {r['points']:,} | {name} | {t['ms']:.2f} | {t['gb_per_s']:.1f} | "
                         f"{t['fraction_of_copy']:.0%} | {shown} |")
    return lines


def _real_size_table(s: dict) -> list[str]:
    peak = "peak_cuda_bytes" if "peak_cuda_bytes" in s["warm_up_chunk"] else "peak_rss_bytes"
    lines = [f"{s['preset']} at {s['image_hw'][0]}x{s['image_hw'][1]}, {s['frames']} frames, {s['steps']} steps, "
             f"{s['dtype']}; build {s['build_seconds']:.0f} s", "",
             "| memory | chunk | seconds | read ms | peak | memory held |", "|---|---:|---:|---:|---:|---:|"]
    for kind, run in s["runs"].items():
        for i, c in enumerate(run["chunks"]):
            lines.append(f"| {kind} | {i + 1} | {c['seconds']:.2f} | {c['stage_ms']['read']:.1f} | {_gib(c[peak])} | "
                         f"{c['memory_bytes'] / 2**20:.2f} MiB |")
    f = s["latent_flatness"]
    lines += ["", f"end to end, RGB cache over latent memory (chunk 1): **{s['end_to_end_rgb_over_latent']:.2f}x** "
              f"(paper: {s['paper_end_to_end']}x); read stage {s['read_rgb_over_latent']:.1f}x; cache bytes "
              f"{s['cache_bytes_rgb_over_latent']:.1f}x (paper: {s['paper_cache_ratio']:.0f}x)",
              f"latent memory, chunk {f['chunks_compared'][1]} over chunk {f['chunks_compared'][0]}: seconds "
              f"{f['seconds_last_over_first']:.2f}x, peak {f['peak_last_over_first']:.2f}x, memory held "
              f"{f['memory_bytes_last_over_first']:.2f}x"]
    return lines


def _env_table(s: dict) -> list[str]:
    lines = ["| N | frames/s | vs N = 1 |", "|---:|---:|---:|"]
    for n, fps in s["frames_per_s"].items():
        ratio = s["speedup_over_n1"][n] if s["speedup_over_n1"] else float("nan")
        lines.append(f"| {n} | {fps:.1f} | {ratio:.2f}x |")
    n8 = "n/a" if s["n8_over_n1"] is None else f"{s['n8_over_n1']:.2f}x"
    return lines + ["", f"N = 8 over N = 1: {n8} (target {s['target_n8_over_n1']:.0f}x); within 10 % of the best "
                        f"from N = {s['saturates_at']}"]


def _training_table(s: dict) -> list[str]:
    lines = [f"world-model batch {s['batch_size']}, VAE batch {s['vae_batch_size']}, pool {s['pool']} segments "
             f"(made in {s['pool_seconds']:.1f} s)", "", "| stage | precision | steps | steps/s |",
             "|---|---|---:|---:|"]
    for stage, r in s["stages"].items():
        lines.append(f"| {stage} | {r['precision']} | {r['steps']} | {r['steps_per_s']:.2f} |")
    return lines


SECTION_TABLES = {"kernels": _kernel_table, "real_size": _real_size_table, "vector_env": _env_table,
                  "training": _training_table}
RUNS = {"kernels": kernels, "real_size": real_size, "vector_env": vector_env, "training": training}


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "gpu_check.json", json.dumps(report, indent=2, default=str))
    write_text(out / "gpu_check.md", markdown(report))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU by default): tests the script")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --quick")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="kernel points (overrides the plan)")
    parser.add_argument("--chunks", type=int, default=None, help="latent-memory chunks of section b")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps of section b")
    parser.add_argument("--allow-reference", action="store_true",
                        help="continue when _C_cuda fails its check (CUDA ops then run on the PyTorch reference)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.quick else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA device (torch.cuda.is_available() is False); run with --quick to "
                         "check the script on the CPU")
    overrides = {k: v for k, v in (("sizes", tuple(args.sizes or ())), ("chunks", args.chunks),
                                   ("steps", args.steps)) if v}
    if any(v < 1 for v in (*overrides.get("sizes", ()), overrides.get("chunks", 1), overrides.get("steps", 1))):
        raise SystemExit("--sizes, --chunks and --steps must be >= 1")
    plan = Plan(**{**asdict(QUICK if args.quick else FULL), **overrides})
    report = {"quick": args.quick, "complete": False, "plan": asdict(plan), "environment": environment(device),
              "sections": {}}
    if device.type == "cuda":
        report["build_check"] = check_cuda_build(device)
        if not report["build_check"]["ok"] and not args.allow_reference:
            write_report(report, args.out)
            raise SystemExit(f"{report['build_check']['error']}\n{report['build_check']['how_to_build']}")
    for name in args.sections:
        report["sections"][name] = run_section(name, RUNS[name], plan, device)
        write_report(report, args.out)
    report["complete"] = True
    write_report(report, args.out)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
