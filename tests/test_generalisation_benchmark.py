"""benchmarks/generalisation.py scores training-pool entries and unseen-scene entries of the same recipe."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_generalisation_benchmark_scores_both_sets(tmp_path):
    out = tmp_path / "generalisation.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(BENCHMARKS / "generalisation.py"), "--samples", "2", "--draws", "1",
                             "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"training pool", "unseen scenes"}
    losses = [row["mean"] for row in report["results"].values()]
    assert all(0 < loss < 10 for loss in losses) and losses[0] != losses[1]
    assert report["unseen_over_training"] == losses[1] / losses[0]
