"""benchmarks/memory_ops.py runs at a small size: its synthetic memory is a valid memory state and the extension
agrees with the reference on every op it times."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_memory_ops_benchmark_runs_and_finds_extension_equal_to_reference(tmp_path):
    out = tmp_path / "memory_ops.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(BENCHMARKS / "memory_ops.py"), "--points", "3000", "--repeat", "1",
                             "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["op"].split()[0] for row in rows] == ["project_zbuffer", "depth_consistency", "segment_fuse",
                                                     "LatentSpatialMemory.read"]
    assert all(row["equal"] for row in rows)
