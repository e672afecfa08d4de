"""Child of test_accelerate.py, run by ``accelerate launch``: trains its small regression network with the
global batch split over the launched processes, then prints the local shapes of its sharded (FSDP) parameters.

    accelerate launch ... tests/accelerate_child.py OUT_DIR ACCUMULATION DROPOUT KILL_AT RESUME

``KILL_AT`` > 0: the main process SIGKILLs itself when it reaches that step (the launcher then ends the others);
``RESUME`` 1 continues from the checkpoint in OUT_DIR.
"""

import sys
from pathlib import Path


def main() -> None:
    out, accumulation, dropout, kill_at, resume = sys.argv[1:6]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import test_accelerate

    trainer = test_accelerate.regression_trainer(Path(out), int(accumulation), float(dropout), int(kill_at) or None)
    trainer.run(resume=resume == "1", progress=False)
    shards = {name: tuple(p.to_local().shape) for name, p in trainer.params.items() if hasattr(p, "to_local")}
    print(f"process {trainer.accelerator.process_index} sharded: {shards}")


if __name__ == "__main__":
    main()
