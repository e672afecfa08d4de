"""MiragePipeline on the shipped tiny weights: the env's frames, save / load, bad inputs, output types, offload."""

import json
import math

import gymnasium as gym
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

import mirage_env.pipeline as pipeline_module
from mirage_env.envs.registration import NAMESPACE
from mirage_env.geometry.camera import intrinsics_from_fov
from mirage_env.geometry.trajectories import from_velocities
from mirage_env.models.loading import shipped_weights_dir
from mirage_env.pipeline import MiragePipeline
from mirage_env.sim import render, sample_scene, start_pose
from mirage_env.world import InitialView

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = {"latents_per_step": 1, "num_inference_steps": 2}  # 4 frames per segment


def start_view(hw=(64, 64), seed=3):
    scene = sample_scene(seed, "indoor")
    pose = start_pose(scene, seed)
    K = intrinsics_from_fov(70.0, hw)
    out = render(scene, K, pose, hw)
    return {"image": out.rgb[0], "depth": out.depth[0], "intrinsics": K, "pose": pose}


def walk(pose: torch.Tensor, frames: int) -> torch.Tensor:
    """Poses [frames, 4, 4] after ``pose``: forward 5 cm and a 2 degree turn per frame."""
    velocity = torch.tensor([[0.0, 0.0, 0.05, math.radians(2.0), 0.0, 0.0]] * frames)
    return from_velocities(pose, velocity)[1:]


@pytest.fixture(scope="module")
def view():
    return start_view()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline") / "tiny"
    MiragePipeline.from_preset("tiny").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(saved):
    pipe = MiragePipeline.from_pretrained(saved)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, view, trajectory, seed=0, **kwargs):
    kwargs = {**FAST, "generator": torch.Generator().manual_seed(seed), **kwargs}
    return pipe(**view, trajectory=trajectory, **kwargs).frames


def as_uint8(frames: np.ndarray) -> np.ndarray:
    return np.round(frames * 255).astype(np.uint8)


def test_from_pretrained_generates_the_frames_of_the_env(saved, view):
    """The env loads the saved pipeline folder as its weights (LoRA fused, as the envs' shared models are) and
    follows the trajectory with step_poses; the pipeline with the env's world seed gives the same uint8 frames."""
    trajectory = walk(view["pose"], 12)
    env = gym.make(f"{NAMESPACE}/Camera-v0", weights_dir=str(saved), latents_per_step=1, num_steps=2)
    start = InitialView(view["image"], view["depth"], view["intrinsics"], view["pose"])
    _, info = env.reset(seed=5, options={"view": start})
    world_seed = env.unwrapped.core.world.state(0).generator.initial_seed()
    env_frames = [info["frames"][:1]] + [env.unwrapped.step_poses(poses)[4]["frames"]
                                         for poses in trajectory.split(4)]
    env_frames = np.concatenate(env_frames)

    pipe = MiragePipeline.from_pretrained(saved)
    pipe.set_progress_bar_config(disable=True)
    pipe.fuse_lora()
    frames = generate(pipe, view, trajectory, seed=world_seed)
    assert frames.shape == (1, 13, 64, 64, 3)
    assert np.array_equal(as_uint8(frames[0]), env_frames)  # bitwise, after the [0, 1] float conversion
    assert not np.array_equal(env_frames[1], env_frames[-1])  # the camera moved: the frames are not all one
    with pytest.raises(ValueError, match="merged"):  # the base weights are gone once fused
        pipe.save_pretrained(saved.parent / "fused")
    assert not (saved.parent / "fused").exists()


def test_save_and_load_round_trip(pipe, saved, view, tmp_path):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == "MiragePipeline" and index["preset"] == "tiny"
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    assert index["addon"] == ["mirage_env.models.addon", "MemoryBranch"]
    assert sorted(p.name for p in saved.iterdir()) == ["addon", "lora", "model_index.json", "scheduler",
                                                       "transformer", "vae"]
    pipe.save_pretrained(tmp_path / "again")
    again = MiragePipeline.from_pretrained(tmp_path / "again")
    for name in ("transformer", "addon", "vae"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(again, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert dict(again.scheduler.config) == dict(pipe.scheduler.config)
    again.set_progress_bar_config(disable=True)
    trajectory = walk(view["pose"], 4)
    original = MiragePipeline.from_preset("tiny")  # the shipped weights, never saved
    original.set_progress_bar_config(disable=True)
    assert np.array_equal(generate(again, view, trajectory), generate(original, view, trajectory))


def test_save_is_atomic(pipe, tmp_path, monkeypatch):
    target = tmp_path / "pipe"
    pipe.save_pretrained(target)
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(pipe.scheduler), "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        pipe.save_pretrained(target)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before  # the old folder, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary leftovers
    with pytest.raises(OSError):
        pipe.save_pretrained(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_output_types(pipe, view):
    trajectory = walk(view["pose"], 4)
    np_frames = generate(pipe, view, trajectory)
    assert np_frames.dtype == np.float32 and np_frames.shape == (1, 5, 64, 64, 3)
    assert np.array_equal(as_uint8(np_frames[0, 0]), view["image"].numpy())  # frame 0 is the start frame
    pt_frames = generate(pipe, view, trajectory, output_type="pt")
    assert isinstance(pt_frames, torch.Tensor) and pt_frames.shape == (1, 5, 3, 64, 64)
    assert np.array_equal(pt_frames.permute(0, 1, 3, 4, 2).numpy(), np_frames)
    pil_frames = generate(pipe, view, trajectory, output_type="pil")
    assert len(pil_frames) == 1 and len(pil_frames[0]) == 5 and isinstance(pil_frames[0][0], PIL.Image.Image)
    assert np.array_equal(np.stack([np.asarray(f) for f in pil_frames[0]]), as_uint8(np_frames[0]))
    (frames,) = pipe(**view, trajectory=trajectory, generator=torch.Generator().manual_seed(0), return_dict=False,
                     **FAST)
    assert np.array_equal(frames, np_frames)
    # numpy inputs and a PIL image give the same frames
    arrays = {"image": PIL.Image.fromarray(view["image"].numpy()),
              **{k: view[k].numpy() for k in ("depth", "intrinsics", "pose")}}
    assert np.array_equal(generate(pipe, arrays, trajectory.numpy()), np_frames)
    assert not np.array_equal(generate(pipe, view, trajectory, seed=1), np_frames)  # the generator matters


def test_views_of_another_size_are_resized(pipe):
    big = start_view((96, 128))
    frames = generate(pipe, big, walk(big["pose"], 4), height=64, width=64)
    assert frames.shape == (1, 5, 64, 64, 3)
    with pytest.raises(ValueError, match="multiples of 8"):
        generate(pipe, big, walk(big["pose"], 4), height=60, width=64)


def bad_calls(view):
    singular = view["pose"].clone()
    singular[:3, :3] = 0
    bad_trajectory = walk(view["pose"], 4)
    bad_trajectory[2, :3, :3] *= 2
    return [
        ({"depth": view["depth"] * float("nan")}, ValueError, "depth contains NaN"),
        ({"depth": view["depth"][:32]}, ValueError, r"depth must have shape \[64, 64\]"),
        ({"pose": singular}, ValueError, "pose is singular"),
        ({"pose": view["pose"][:3]}, ValueError, r"pose must have shape \[4, 4\]"),
        ({"intrinsics": view["intrinsics"][:2]}, ValueError, r"intrinsics must have shape \[3, 3\]"),
        ({"image": view["image"][..., :2]}, ValueError, "image must be uint8"),
        ({"image": view["image"].float()}, ValueError, "image must be uint8"),
        ({"image": view["image"].tolist()}, TypeError, "image must be a numpy array or torch.Tensor"),
        ({"trajectory": walk(view["pose"], 5)}, ValueError, "trajectory has 5 poses"),
        ({"trajectory": walk(view["pose"], 4)[:, :3]}, ValueError, r"trajectory must have shape \[\*, 4, 4\]"),
        ({"trajectory": bad_trajectory}, ValueError, "trajectory rotation is not orthonormal"),
        ({"output_type": "latent"}, ValueError, "output_type must be one of"),
        ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
        ({"num_inference_steps": 0}, ValueError, "num_steps"),
    ]


def test_bad_inputs_are_refused_before_anything_runs(pipe, view):
    for change, error, message in bad_calls(view):
        generator = torch.Generator().manual_seed(0)
        state = generator.get_state()
        kwargs = {**view, "trajectory": walk(view["pose"], 4), **FAST, "generator": generator, **change}
        with pytest.raises(error, match=message):
            pipe(**kwargs)
        assert torch.equal(generator.get_state(), state), change  # no noise was drawn


def test_the_scheduler_component_is_the_sampler(view):
    pipe = MiragePipeline.from_preset("tiny")
    pipe.set_progress_bar_config(disable=True)
    trajectory = walk(view["pose"], 4)
    default = generate(pipe, view, trajectory)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=2.0)
    assert not np.array_equal(generate(pipe, view, trajectory), default)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler()
    with pytest.raises(TypeError, match="UniPCMultistepScheduler"):
        generate(pipe, view, trajectory)


def test_components_must_fit_the_preset(pipe):
    with pytest.raises(ValueError, match="do not match preset 'wan2.2-ti2v-5b'"):
        MiragePipeline(**pipe.components, preset="wan2.2-ti2v-5b")
    with pytest.raises(TypeError, match="scheduler must be a UniPCMultistepScheduler"):
        MiragePipeline(**{**pipe.components, "scheduler": FlowMatchEulerDiscreteScheduler()})


def test_model_cpu_offload(view):
    """Without an accelerator diffusers refuses offload; with the CPU named as the execution device the hooks run
    (the DiT's too, whose forward the Mirage transformer never calls) and the frames stay the same."""
    pipe = MiragePipeline.from_preset("tiny")
    pipe.set_progress_bar_config(disable=True)
    trajectory = walk(view["pose"], 8)
    plain = generate(pipe, view, trajectory)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="requires accelerator"):
            pipe.enable_model_cpu_offload()
    pipe.enable_model_cpu_offload(device="cpu")
    hook = pipe.transformer._hf_hook
    calls = []
    original = hook.pre_forward
    hook.pre_forward = lambda module, *args, **kwargs: calls.append(1) or original(module, *args, **kwargs)
    assert np.array_equal(generate(pipe, view, trajectory), plain)
    assert len(calls) == 2 * FAST["num_inference_steps"]  # once per denoising step of each segment


def test_local_paths_never_reach_the_hub(saved, monkeypatch):
    asked = []

    def fake_download(repo_id, **kwargs):
        asked.append((repo_id, kwargs))
        return str(saved)

    monkeypatch.setattr(pipeline_module, "snapshot_download", fake_download)
    MiragePipeline.from_pretrained(str(saved))
    for missing in (saved.parent / "missing", str(saved.parent / "missing"), "./missing/pipe", "no-such-folder"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            MiragePipeline.from_pretrained(missing)
    assert asked == []
    MiragePipeline.from_pretrained("someone/mirage-tiny", revision="v1", local_files_only=True)
    assert asked == [("someone/mirage-tiny", {"revision": "v1", "cache_dir": None, "token": None,
                                               "local_files_only": True})]


def test_folders_that_are_not_a_saved_pipeline(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="from_preset"):
        MiragePipeline.from_pretrained(shipped_weights_dir("tiny"))  # weights without model_index.json
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ValueError, match="'WanPipeline' pipeline, not a MiragePipeline"):
        MiragePipeline.from_pretrained(other)
