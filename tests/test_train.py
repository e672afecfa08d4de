"""Training: clips, the resumable trainer and the VAE recipe (a few CPU steps)."""

import csv
import json
import time

import pytest
import torch

from mirage_env.models.presets import build_vae, load_preset
from mirage_env.train import ClipConfig, TrainConfig, Trainer, sample_clip
from mirage_env.train.trainer import Shard, read_metrics
from mirage_env.train.vae import (
    ClipPool,
    VaeData,
    VaeWithCritic,
    reconstruction_psnr,
    reconstruction_scores,
    set_latent_statistics,
    vae_loss_fn,
)


def test_clips_are_deterministic_and_revisit_their_start():
    config = ClipConfig(frames=9, scenes=4)
    a, b = sample_clip(3, config), sample_clip(3, config)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.poses, b.poses)
    assert a.frames.shape == (9, 64, 64, 3) and a.depth.shape == (9, 64, 64) and a.dynamic.dtype == torch.bool
    assert torch.allclose(a.poses[0], a.poses[-1])  # out and back
    assert not torch.equal(sample_clip(4, config).frames, a.frames)


def test_one_way_clips_keep_walking():
    """The VAE's clips must not return: a 5-frame out-and-back clip ends where it started, and a VAE trained on
    those learns to decode a latent's frames from the first frame."""
    poses = [sample_clip(i, ClipConfig(frames=5, scenes=4, returning=False)).poses for i in range(4)]
    travel = [(p[1:, :3, :] - p[:-1, :3, :]).abs().amax(dim=(1, 2)) for p in poses]
    assert all(bool((t > 0).all()) for t in travel)  # every frame moves (translation, rotation or both)
    assert not any(torch.allclose(p[0], p[-1]) for p in poses)


class Quadratic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(8))


def quadratic_loss(module):
    def loss(step, generator, shard):
        target = torch.linspace(-1, 1, 8) + 0.01 * torch.randn(8, generator=generator)
        return (module.w - target).pow(2).sum()
    return loss


def test_trainer_reduces_the_loss_and_logs(tmp_path):
    module = Quadratic()
    rows = Trainer(module, quadratic_loss(module), TrainConfig(steps=60, lr=0.1, warmup=1, log_every=10),
                   tmp_path).run(progress=False)
    assert rows[-1]["loss"] < 0.1 * rows[0]["loss"]
    with (tmp_path / "metrics.csv").open() as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [10, 20, 30, 40, 50, 60]


def test_resume_after_a_crash_continues_exactly(tmp_path):
    """Crashed after step 8, resumed from the checkpoint of step 6: the same weights, losses and log rows as
    an uninterrupted run (the rows of steps 7 and 8 are not repeated), in CSV and TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TrainConfig(steps=12, lr=0.05, warmup=2, log_every=1, checkpoint_every=6)
    straight = Quadratic()
    Trainer(straight, quadratic_loss(straight), config, tmp_path / "a").run(progress=False)

    crashed = Quadratic()

    def crash_at_step_8(step, generator, shard):
        if step == 8:
            raise KeyboardInterrupt
        return quadratic_loss(crashed)(step, generator, shard)

    with pytest.raises(KeyboardInterrupt):
        Trainer(crashed, crash_at_step_8, config, tmp_path / "b").run(progress=False)
    # TensorBoard reads a folder's event files in name order: time in whole seconds, then a per-process counter
    # (which sorts "10" before "9"). A real resume starts in a later second; so does this one.
    time.sleep(1.05)
    resumed = Quadratic()
    trainer = Trainer(resumed, quadratic_loss(resumed), config, tmp_path / "b")
    assert trainer.run(resume=True, progress=False)[0]["step"] == 7
    assert trainer.step == 12
    assert torch.equal(resumed.w, straight.w)
    logs = [read_metrics(tmp_path / run / "metrics.csv") for run in ("a", "b")]
    assert [r["step"] for r in logs[1]] == list(range(1, 13))
    assert [r["loss"] for r in logs[1]] == [r["loss"] for r in logs[0]]
    for tag in ("train/loss", "train/lr"):
        board = EventAccumulator(str(tmp_path / "b" / "tensorboard"))
        board.Reload()
        assert [event.step for event in board.Scalars(tag)] == list(range(1, 13))


@pytest.mark.parametrize("name", ["weights.safetensors", "optimizer.safetensors", "state.json"])
def test_a_truncated_checkpoint_file_is_named_and_nothing_changes(tmp_path, name):
    module = Quadratic()
    Trainer(module, quadratic_loss(module), TrainConfig(steps=2, checkpoint_every=1), tmp_path).run(progress=False)
    file = tmp_path / "checkpoint" / name
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    fresh = Quadratic()
    with pytest.raises(ValueError, match=f"{name}: cannot resume"):
        Trainer(fresh, quadratic_loss(fresh), TrainConfig(steps=4), tmp_path).run(resume=True, progress=False)
    assert torch.equal(fresh.w, torch.zeros(8))


def test_a_checkpoint_of_another_shape_is_refused_before_loading(tmp_path):
    module = Quadratic()
    Trainer(module, quadratic_loss(module), TrainConfig(steps=2), tmp_path).run(progress=False)
    other = Quadratic()
    other.w = torch.nn.Parameter(torch.zeros(9))
    with pytest.raises(ValueError, match=r"\['w'\] have other shapes"):
        Trainer(other, lambda step, generator, shard: other.w.sum(), TrainConfig(steps=4), tmp_path).load_checkpoint()
    assert torch.equal(other.w, torch.zeros(9))


def test_a_checkpoint_without_global_rng_states_loads_with_a_warning(tmp_path):
    module = Quadratic()
    Trainer(module, quadratic_loss(module), TrainConfig(steps=2), tmp_path).run(progress=False)
    state_file = tmp_path / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    del state["global_rng"]
    state_file.write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="dropout draws will differ"):
        Trainer(module, quadratic_loss(module), TrainConfig(steps=2), tmp_path).load_checkpoint()


def test_train_config_rejects_zero_intervals():
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(steps=10, checkpoint_every=0)
    with pytest.raises(ValueError, match="log_every"):
        TrainConfig(steps=10, log_every=0)


def test_trainer_rejects_frozen_or_half_precision_modules(tmp_path):
    module = Quadratic().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        Trainer(module, quadratic_loss(module), TrainConfig(steps=1), tmp_path)
    module = Quadratic().to(torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        Trainer(module, quadratic_loss(module), TrainConfig(steps=1), tmp_path)


def test_a_few_vae_steps_reduce_the_loss_and_set_statistics(tmp_path):
    torch.manual_seed(0)
    vae = build_vae(load_preset("tiny"))
    data = VaeData(frames=5, pool=4, batch_size=2)
    pool = ClipPool(ClipConfig(frames=5, scenes=4), data.pool, seed=0)
    video = torch.cat([pool.batch(torch.Generator().manual_seed(9), 2)])
    before = reconstruction_psnr(vae, video).mean()
    model = VaeWithCritic(vae)
    rows = Trainer(model, vae_loss_fn(model, pool, data), TrainConfig(steps=30, lr=2e-3, warmup=1, log_every=10),
                   tmp_path).run(progress=False)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert reconstruction_psnr(vae, video).mean() > before
    later_psnr, later_sharpness = reconstruction_scores(vae, video, first=1)  # the second latent's frames only
    assert later_psnr.mean().item() == pytest.approx(reconstruction_psnr(vae, video).view(2, 5)[:, 1:].mean().item(),
                                                     rel=1e-5)
    assert 0 < later_sharpness < 2
    set_latent_statistics(vae, pool, clips=4)
    assert len(vae.config.latents_std) == vae.config.z_dim and min(vae.config.latents_std) > 0


def test_the_patch_critic_trains_beside_the_vae_on_its_own_objective(tmp_path):
    from mirage_env.train.discriminator import PatchDiscriminator

    torch.manual_seed(0)
    model = VaeWithCritic(build_vae(load_preset("tiny")), PatchDiscriminator(channels=8))
    data = VaeData(frames=5, pool=2, batch_size=1, adversarial_weight=0.5, adversarial_start=1)
    pool = ClipPool(ClipConfig(frames=5, scenes=2), data.pool, seed=0)
    critic_before = [p.clone() for p in model.critic.parameters()]
    loss = vae_loss_fn(model, pool, data)
    reconstruction_only = loss(0, torch.Generator().manual_seed(1), Shard())  # before adversarial_start: no critic
    total = loss(1, torch.Generator().manual_seed(1), Shard())
    assert total.item() != reconstruction_only.item()
    Trainer(model, loss, TrainConfig(steps=3, lr=1e-3, warmup=1), tmp_path).run(progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, model.critic.parameters()))
    with pytest.raises(ValueError, match="critic"):
        vae_loss_fn(VaeWithCritic(model.vae), pool, data)


def test_sharpness_ratio_penalises_blur_that_psnr_rewards():
    from mirage_env.metrics import box_blur, psnr, sharpness_ratio

    truth = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    blurred = box_blur(truth)
    assert sharpness_ratio(truth, truth) == pytest.approx(1.0)
    assert sharpness_ratio(blurred, truth) < 0.2
    shifted = truth.roll(1, dims=-2)
    assert psnr(blurred, truth) > psnr(shifted, truth)  # PSNR prefers the blur ...
    assert sharpness_ratio(shifted, truth) > 0.9  # ... the sharpness ratio does not


@pytest.fixture(scope="module")
def segment_pool():
    from mirage_env.models import from_preset
    from mirage_env.train.segments import SegmentData, SegmentPool
    from mirage_env.world import WorldConfig

    model = from_preset("tiny", model_seed=0, random_weights=True)
    return SegmentPool(model, SegmentData(latents=4, max_target=2, pool=3, batch_size=2), WorldConfig(), seed=0)


def test_teacher_forced_segments_condition_like_the_world(segment_pool):
    for i in range(3):
        request, target = segment_pool[i]
        request.check(segment_pool.model.latent_channels)
        assert target.shape == request.memory_features.shape and target.shape[2] >= 2
        assert torch.equal(request.first_latent, target[:, :, :1])
    assert any(float(segment_pool[i][0].memory_mask.mean()) > 0 for i in range(3))  # the memory is read


def test_the_observed_context_is_encoded_in_the_code_of_the_worlds_own_steps(segment_pool):
    from mirage_env.train.segments import encode_as_stepped, teacher_forced
    from mirage_env.video import to_unit

    model, clip = segment_pool.model, segment_pool.clips(0)
    video = to_unit(clip.frames)  # 1 + 4 * 4 frames
    stepped = encode_as_stepped(model, video, 1)
    for j in range(4):  # step j's latent comes from a segment starting at its first frame alone
        assert torch.allclose(stepped[:, j], model.encode(video[None, 4 * j: 4 * j + 5])[0, :, 1], atol=1e-5)
    whole = model.encode(video[None])[0, :, 1:]
    assert torch.allclose(encode_as_stepped(model, video, 4), whole, atol=1e-5)  # one step of 4 latents
    assert torch.allclose(encode_as_stepped(model, video, 3)[:, 3], model.encode(video[None, 12:])[0, :, 1], atol=1e-5)
    assert not torch.allclose(stepped[:, 2], whole[:, 2], atol=1e-3)  # the two codes differ
    request, _ = teacher_forced(model, clip, 3, 1, segment_pool.world)
    assert torch.allclose(request.preceding[0, :, 0], stepped[:, 1], atol=1e-5)  # what the world observed


def test_context_corruption_noises_only_the_clean_context(segment_pool):
    from mirage_env.train.segments import corrupt_context

    request, _ = segment_pool[0]
    assert torch.equal(corrupt_context(request, torch.zeros(1), torch.Generator()).first_latent, request.first_latent)
    noised = corrupt_context(request, torch.ones(1), torch.Generator().manual_seed(0))
    assert noised.memory_features is request.memory_features and noised.memory_mask is request.memory_mask
    assert abs(float(noised.first_latent.std()) - 1.0) < 0.3  # sigma 1: pure noise
    assert not torch.allclose(noised.first_latent, request.first_latent)


def test_a_batch_shares_shapes_and_a_swap_shows_another_entrys_first_latent_with_its_own_memory(segment_pool):
    from dataclasses import replace

    from mirage_env.train.segments import flow_loss_fn

    shown = []

    class Recorder:
        def training_loss(self, request, target, generator, batch_rows=None):
            shown.append((request, target))
            return torch.zeros(())

    swapping = replace(segment_pool.data, context_swap=1.0, context_noise=0.0, reference_dropout=0.0, pool=6)
    pool = type(segment_pool)(segment_pool.model, swapping, segment_pool.world, segment_pool.seed)
    for i in range(3):  # each entry and a twin of the same shapes with another first latent
        request, target = segment_pool[i]
        pool.samples[i] = (request, target)
        pool.samples[i + 3] = (replace(request, first_latent=request.first_latent + 1), target + 1)
    loss = flow_loss_fn(Recorder(), pool)
    for step in range(4):
        loss(step, torch.Generator().manual_seed(step), Shard())
    entries = [pool[i] for i in range(swapping.pool)]
    for request, target in shown:
        for row in range(target.shape[0]):
            own = next(r for r, t in entries if torch.equal(t[0], target[row]))
            assert torch.equal(request.memory_features[row], own.memory_features[0])
            assert not torch.equal(request.first_latent[row], own.first_latent[0])
            assert any(torch.equal(request.first_latent[row], r.first_latent[0]) for r, _ in entries)


@pytest.mark.parametrize("stage", ["addon", "lora", "dit"])
def test_a_few_steps_of_each_stage_reduce_the_loss_and_resume(segment_pool, stage, tmp_path):
    from mirage_env.models import from_preset
    from mirage_env.train.segments import flow_loss_fn
    from mirage_env.train.stages import prepare_stage

    model = from_preset("tiny", model_seed=0, random_weights=True)
    trainable = prepare_stage(model, stage)
    assert trainable > 0
    branch_trains = all(p.requires_grad for p in model.branch.parameters())
    assert branch_trains == (stage in ("dit", "addon"))  # the DiT's pre-training includes the branch
    frozen_vae = [p.clone() for p in model.vae.parameters()]
    config = TrainConfig(steps=40, lr=3e-3, warmup=1, log_every=10, checkpoint_every=20)
    trainer = Trainer(model, flow_loss_fn(model, segment_pool), config, tmp_path)
    rows = trainer.run(progress=False)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all(torch.equal(a, b) for a, b in zip(frozen_vae, model.vae.parameters()))
    resumed = Trainer(model, flow_loss_fn(model, segment_pool), TrainConfig(**{**config.__dict__, "steps": 45}),
                      tmp_path)
    resumed.run(resume=True, progress=False)
    assert resumed.step == 45


def test_a_crashed_lora_stage_resumes_to_the_same_weights(segment_pool, tmp_path):
    """LoRA's dropout draws from torch's global RNG: the checkpoint keeps its state, so resuming matches."""
    from mirage_env.models import from_preset
    from mirage_env.train.segments import flow_loss_fn
    from mirage_env.train.stages import prepare_stage

    def lora_trainer(out, crash_at=None):
        model = from_preset("tiny", model_seed=0, random_weights=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # LoRA's initial weights
            prepare_stage(model, "lora")
        loss = flow_loss_fn(model, segment_pool)

        def maybe_crash(step, generator, shard):
            if step == crash_at:
                raise KeyboardInterrupt
            return loss(step, generator, shard)

        return Trainer(model, maybe_crash, TrainConfig(steps=4, lr=3e-3, warmup=1, checkpoint_every=2), out)

    straight = lora_trainer(tmp_path / "a")
    straight.run(progress=False)
    with pytest.raises(KeyboardInterrupt):
        lora_trainer(tmp_path / "b", crash_at=3).run(progress=False)
    resumed = lora_trainer(tmp_path / "b")
    resumed.run(resume=True, progress=False)
    assert all(torch.equal(p, resumed.params[n]) for n, p in straight.params.items())


def _gradients(model, loss, shards):
    """Mean over ``shards`` of each shard's loss gradient, every shard from the same generator state; and the
    generator states after each shard."""
    model.zero_grad(set_to_none=True)
    ends = []
    for shard in shards:
        generator = torch.Generator().manual_seed(5)
        loss(0, generator, shard).backward()
        ends.append(generator.get_state())
    assert all(torch.equal(end, ends[0]) for end in ends)  # every shard draws the whole batch
    return {n: p.grad / len(shards) for n, p in model.named_parameters() if p.requires_grad}, ends[0]


def test_the_shards_of_a_flow_matching_batch_average_to_the_whole_batch(segment_pool):
    from mirage_env.models import from_preset
    from mirage_env.train.segments import flow_loss_fn
    from mirage_env.train.stages import prepare_stage

    model = from_preset("tiny", model_seed=0, random_weights=True)
    prepare_stage(model, "dit")
    loss = flow_loss_fn(model, segment_pool)
    whole, end = _gradients(model, loss, [Shard()])
    halves, halves_end = _gradients(model, loss, [Shard(0, 2), Shard(1, 2)])
    assert torch.equal(end, halves_end)
    for name, grad in whole.items():
        torch.testing.assert_close(halves[name], grad, rtol=1e-4, atol=1e-6)


def test_the_shards_of_a_vae_batch_average_to_the_whole_batch():
    torch.manual_seed(0)
    model = VaeWithCritic(build_vae(load_preset("tiny")))
    data = VaeData(frames=5, pool=2, batch_size=2)
    loss = vae_loss_fn(model, ClipPool(ClipConfig(frames=5, scenes=2), data.pool, seed=0), data)
    whole, _ = _gradients(model, loss, [Shard()])
    halves, _ = _gradients(model, loss, [Shard(0, 2), Shard(1, 2)])
    for name, grad in whole.items():
        torch.testing.assert_close(halves[name], grad, rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_recomputes_the_blocks_and_keeps_the_gradients(segment_pool):
    from mirage_env.models import from_preset
    from mirage_env.train.segments import flow_loss_fn
    from mirage_env.train.stages import enable_gradient_checkpointing, prepare_stage

    model = from_preset("tiny", model_seed=0, random_weights=True)
    prepare_stage(model, "dit")
    loss = flow_loss_fn(model, segment_pool)
    calls = []
    for block in (model.dit.blocks[0], model.branch.blocks[0]):
        block.register_forward_pre_hook(lambda module, args: calls.append(module))
    plain, _ = _gradients(model, loss, [Shard()])
    assert len(calls) == 2
    enable_gradient_checkpointing(model)
    checkpointed, _ = _gradients(model, loss, [Shard()])
    assert len(calls) == 6  # each block ran again in the backward pass
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7)


def test_export_halves_storage_and_loads_back_at_float32(tmp_path):
    from mirage_env.models import from_preset
    from mirage_env.train.export import export_weights

    model = from_preset("tiny", model_seed=3, random_weights=True)
    model.save_pretrained(tmp_path / "full")
    export_weights(tmp_path / "full", tmp_path / "half")
    size = {name: sum(f.stat().st_size for f in (tmp_path / name).rglob("*.safetensors")) for name in ("full", "half")}
    assert size["half"] < 0.55 * size["full"]
    loaded = from_preset("tiny", weights_dir=tmp_path / "half")
    for (name, a), b in zip(model.transformer.state_dict().items(), loaded.transformer.state_dict().values()):
        assert b.dtype == torch.float32 and torch.equal(a.half().float(), b), name
    from mirage_env.models.manifest import verify_manifest

    assert verify_manifest(tmp_path / "half")  # the exporter writes the manifest from_preset verifies
    (tmp_path / "half" / "vae" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="vae/config.json has"):
        from_preset("tiny", weights_dir=tmp_path / "half")
