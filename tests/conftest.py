"""Fixtures shared by several test modules."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mirage_env.models import from_preset

# The agents/ scripts live beside the package, not in it. Appending the repository root (not prepending) makes
# them importable while ``mirage_env`` still resolves to the installed package, with its built extension.
sys.path.append(str(Path(__file__).resolve().parents[1]))
# render_mode="human" windows open on SDL's dummy video driver: nobody sees them, and no display is needed.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the module (the envs are small; frames compared across processes match)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def memory_model():
    """The tiny preset with a random (not zero) memory-branch output: the untrained branch has no effect, so the
    camera would not change the frames (see test_envs.test_an_action_changes_the_next_frame...)."""
    model = from_preset("tiny", model_seed=0, random_weights=True)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, module in model.branch.named_modules():
            if name.endswith("proj_out"):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.05)
    return model


@pytest.fixture
def run_benchmark(tmp_path):
    """Run ``benchmarks/<name>.py`` with ``args`` and ``--out`` in a temporary folder, on one thread, in a fresh
    process (as a user runs it); returns the JSON it wrote."""
    def run(name: str, *args: str) -> dict:
        out = tmp_path / f"{name}.json"
        script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        result = subprocess.run([sys.executable, str(script), *args, "--out", str(out)], capture_output=True,
                                text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(out.read_text())

    return run
