"""Child process of test_atomic_writes.py: runs one of its scenarios and SIGKILLs itself just before the N-th
file-system step of a save (``MIRAGE_KILL_AT=N``, counted from 1), or records the steps it takes (unset or 0).

    python tests/kill_child.py SCENARIO OUT_DIR

A step is one call of ``mirage_env.atomic.fsync_path``, ``os.replace``, ``os.rename`` or ``shutil.rmtree``. A
kill just before the fsync of a file first truncates that file to half its size, as a kill in the middle of
writing it would leave it. A run without a kill writes its steps to ``OUT_DIR/steps.json`` as [name, path...].
"""

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import mirage_env.atomic as atomic


def hook(name: str, function, steps: list, kill_at: int):
    def step(*paths, **options):
        steps.append([name, *map(str, paths)])
        if len(steps) == kill_at:
            if name == "fsync" and Path(paths[0]).is_file():
                os.truncate(paths[0], Path(paths[0]).stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return function(*paths, **options)
    return step


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    kill_at = int(os.environ.get("MIRAGE_KILL_AT") or 0)
    steps: list = []
    atomic.fsync_path = hook("fsync", atomic.fsync_path, steps, kill_at)
    os.replace = hook("replace", os.replace, steps, kill_at)
    os.rename = hook("rename", os.rename, steps, kill_at)
    shutil.rmtree = hook("rmtree", shutil.rmtree, steps, kill_at)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import test_atomic_writes

    getattr(test_atomic_writes, scenario)(out)
    if not kill_at:
        (out / "steps.json").write_text(json.dumps(steps))


if __name__ == "__main__":
    main()
