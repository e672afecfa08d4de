"""Fully sharded training (FSDP2) with the shipped fsdp.yaml on 2 launched CPU processes (gloo; accelerate has no
FSDP without GPUs, so the trainer shards with torch's fully_shard itself): it trains what one process trains on the
same global batch, a killed run resumes bit-identically, and its checkpoints are the one-process format both ways."""

from types import SimpleNamespace

import pytest
import torch
from accelerate import DistributedType
from test_accelerate import CONFIGS, assert_trained_alike, checkpoint, launch, regression_trainer

from mirage_env.train import trainer as trainer_module
from mirage_env.train.trainer import read_metrics

FSDP = {"config": CONFIGS / "fsdp.yaml", "options": ("--fsdp_transformer_layer_cls_to_wrap", "Linear")}
"""The shipped config, with the test network's blocks (its two Linear layers) as the shard units."""


def launch_fsdp(out, **kwargs):
    run = launch(out, **FSDP, **kwargs)
    assert run.returncode == 0 or kwargs.get("kill_at"), run.stderr[-3000:]
    return run


def test_the_shipped_fsdp_config_makes_one_shard_unit_per_block_of_the_world_model():
    """accelerate's wrap policy, with the shipped config's class names, on the tiny world model."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    from mirage_env.models.wan import from_preset

    lines = [line.strip().split(": ", 1) for line in (CONFIGS / "fsdp.yaml").read_text().splitlines()]
    fsdp = {line[0]: line[1] for line in lines if len(line) == 2 and line[0].startswith("fsdp_")}  # YAML's flat keys
    assert fsdp["fsdp_version"] == "2"
    model = from_preset("tiny", random_weights=True)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"],
                                            transformer_cls_names_to_wrap=fsdp["fsdp_transformer_layer_cls_to_wrap"])
    plugin.set_auto_wrap_policy(model)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    units = [name for name, module in model.named_modules() if policy(module)]
    dit, branch = model.transformer.dit, model.transformer.branch
    assert units == ([f"transformer.dit.blocks.{i}" for i in range(len(dit.blocks))]
                     + [f"transformer.branch.blocks.{i}" for i in range(len(branch.blocks))])
    assert {type(model.get_submodule(name)).__name__ for name in units} == {"WanTransformerBlock",
                                                                            "MemoryBranchBlock"}


@pytest.mark.slow
def test_two_fsdp_processes_train_what_one_process_trains_on_the_same_global_batch(tmp_path):
    """One process, batch 8 at once; 2 sharded processes x 2 accumulation steps of 2 rows: the same weights."""
    regression_trainer(tmp_path / "one").run(progress=False)
    run = launch_fsdp(tmp_path / "two", accumulation=2)
    # every parameter was sharded: process 1 holds the second half of hidden.weight [16, 4] and none of out.weight
    assert "process 1 sharded: {'hidden.weight': (8, 4), 'hidden.bias': (8,), 'out.weight': (0, 16)" in run.stdout
    state = checkpoint(tmp_path / "two")[1]
    assert state["step"] == 6 and len(state["global_rng_by_process"]) == 2
    assert_trained_alike(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_a_killed_fsdp_run_resumes_bit_identically(tmp_path):
    launch_fsdp(tmp_path / "straight", dropout=0.2)
    assert launch_fsdp(tmp_path / "resumed", dropout=0.2, kill_at=5).returncode != 0
    assert checkpoint(tmp_path / "resumed")[1]["step"] == 4
    launch_fsdp(tmp_path / "resumed", dropout=0.2, resume=True)
    straight, resumed = checkpoint(tmp_path / "straight"), checkpoint(tmp_path / "resumed")
    assert resumed[1]["step"] == 6
    assert all(torch.equal(straight[0][n], resumed[0][n]) for n in straight[0])
    assert [r["step"] for r in read_metrics(tmp_path / "resumed" / "metrics.csv")] == list(range(1, 7))


@pytest.mark.slow
def test_fsdp_and_one_process_resume_each_others_checkpoints(tmp_path):
    """A sharded run's checkpoint (killed at step 5) continues in one process, and a one-process checkpoint (step
    4) continues sharded: both end where one uninterrupted process ends (dropout off)."""
    regression_trainer(tmp_path / "straight").run(progress=False)
    launch_fsdp(tmp_path / "sharded_first", kill_at=5)
    with pytest.warns(UserWarning, match="lacks this process's global RNG states"):
        regression_trainer(tmp_path / "sharded_first").run(resume=True, progress=False)
    interrupted = regression_trainer(tmp_path / "one_first")
    loss = interrupted.loss_module.loss_fn

    def interrupt_at_step_5(step, generator, shard):
        if step == 5:
            raise KeyboardInterrupt
        return loss(step, generator, shard)

    interrupted.loss_module.loss_fn = interrupt_at_step_5
    with pytest.raises(KeyboardInterrupt):
        interrupted.run(progress=False)
    assert checkpoint(tmp_path / "one_first")[1]["step"] == 4
    launch_fsdp(tmp_path / "one_first", resume=True)
    straight = checkpoint(tmp_path / "straight")[0]
    for run in ("sharded_first", "one_first"):
        weights, state = checkpoint(tmp_path / run)
        assert state["step"] == 6
        for name in straight:
            torch.testing.assert_close(weights[name], straight[name], rtol=1e-5, atol=1e-6)


def test_the_recipe_refuses_an_fsdp_launch_before_it_writes(tmp_path, monkeypatch, capsys):
    from mirage_env.cli import main

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "vae", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "launch them with one process or DDP" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("engine, fsdp2, message", [(DistributedType.DEEPSPEED, False, "DeepSpeed's sharded"),
                                                    (DistributedType.FSDP, False, "set fsdp_version: 2")])
def test_deepspeed_and_fsdp1_are_refused_before_training(tmp_path, monkeypatch, engine, fsdp2, message):
    accelerator = SimpleNamespace(distributed_type=engine, is_fsdp2=fsdp2, device=torch.device("cpu"))
    monkeypatch.setattr(trainer_module, "training_accelerator", lambda precision, cpu: accelerator)
    with pytest.raises(ValueError, match=message):
        regression_trainer(tmp_path / "run")
    assert not (tmp_path / "run").exists()
