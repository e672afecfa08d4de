"""The ``mirage-env`` command line.

Known errors (bad input, a missing or unwritable path, missing weights) print one line
``mirage-env: error: ...`` on stderr and exit with code 2; an interrupt exits with 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def _info(args: argparse.Namespace) -> None:
    from mirage_env import __version__
    from mirage_env.ops import backend_name, extension

    cpu = extension.load_module("cpu")
    cuda = extension.load_module("cuda")
    report = {
        "mirage_env": __version__,
        "torch": torch.__version__,
        "cpu_backend": backend_name("cpu"),
        "cpu_extension": None if cpu is None else {"openmp": cpu.has_openmp(), "max_threads": cpu.max_threads()},
        "cuda_extension": None if cuda is None else {"devices": cuda.device_count()},
        "torch_cuda_available": torch.cuda.is_available(),
        "devices": _devices(),
        "presets": _presets(),
        "weights": _weights(args.weights_dir),
    }
    print(json.dumps(report, indent=2))


def _devices() -> list[str]:
    cuda = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    return [f"cpu ({torch.get_num_threads()} threads)", *cuda]


def _presets() -> dict:
    from mirage_env.models import PRESETS, load_preset

    presets = {}
    for name in PRESETS:
        preset = load_preset(name)
        presets[name] = {"frame_hw": [preset.defaults["height"], preset.defaults["width"]],
                         "latent_channels": preset.latent_channels,
                         "strides": {"temporal": preset.temporal_stride, "spatial": preset.spatial_stride},
                         "shipped_weights": _shipped_status(name)}
    return presets


def _shipped_status(preset_name: str) -> str | None:
    """Where the package's trained weights for a preset are and whether they are complete (None: none ship)."""
    from mirage_env.models import MissingWeightsError
    from mirage_env.models.loading import shipped_weights_dir

    try:
        root = shipped_weights_dir(preset_name)
    except MissingWeightsError:
        return None
    return f"{root}: {_weights_status(root, preset_name)}"


def _weights(directories: list[str]) -> dict:
    """For every ``--weights-dir``, whether it serves each preset."""
    from mirage_env.models import PRESETS

    return {d: {name: _weights_status(Path(d), name) for name in PRESETS} for d in directories}


def _weights_status(root: Path, preset_name: str) -> str:
    from mirage_env.models import MissingWeightsError, load_preset
    from mirage_env.models.loading import PARTS, check_weights_dir
    from mirage_env.models.presets import check_compatible

    try:
        present = check_weights_dir(root, preset_name)
    except MissingWeightsError as error:
        missing = [p for part in PARTS if part.required or part.exists(root) for p in part.problems(root)]
        return "missing: " + (", ".join(missing) or str(error).splitlines()[0])
    try:
        for kind in ("transformer", "vae"):
            check_compatible(kind, json.loads((root / kind / "config.json").read_text()), load_preset(preset_name))
    except ValueError as error:
        return f"other preset: {error}"
    return "ok: " + ", ".join(sorted(present))


def _env_kwargs(args: argparse.Namespace, action_mode: str) -> dict:
    return {"preset": args.preset, "weights_dir": args.weights_dir, "device": args.device, "image_size": args.size,
            "latents_per_step": args.latents_per_step, "num_steps": args.num_steps, "scene_kind": args.kind,
            "action_mode": action_mode}


def _rollout(args: argparse.Namespace) -> None:
    from mirage_env.envs import CameraEnv
    from mirage_env.envs.rollout import RolloutSpec, run_rollout

    spec = RolloutSpec(drive=args.drive, steps=args.steps, seed=args.seed, keys=args.keys, poses_file=args.poses,
                       out=args.out, video_scale=args.video_scale, progress=not args.no_progress)
    env = CameraEnv(**_env_kwargs(args, "keys" if spec.drive == "keys" else "continuous"))
    m = run_rollout(env, spec)
    print(f"wrote {m['video']} ({m['frames']} frames, {m['steps']} steps), {m['contact_sheet']}, "
          f"{Path(m['video']).with_suffix('.json')}; {m['generated_frames_per_s']:.1f} generated frames/s; "
          f"memory: {m['memory']['voxels']} voxels, {m['memory']['bytes'] / 1e6:.2f} MB; "
          f"mean coverage {m['coverage_mean']:.1%}, blocked steps {m['blocked_steps']}")


def _play(args: argparse.Namespace) -> None:
    """``play``: a key script (``rollout --drive keys``) or, with ``--interactive``, keys from the keyboard."""
    if bool(args.keys) == args.interactive:
        raise ValueError("play takes a key script or --interactive (one of the two)")
    if not args.interactive:
        _rollout(args)
        return
    from mirage_env.envs.keyboard import play_interactive
    from mirage_env.envs.rollout import RolloutSpec

    spec = RolloutSpec(drive="interactive", seed=args.seed, out=args.out, video_scale=args.video_scale,
                       progress=not args.no_progress)
    m = play_interactive(_env_kwargs(args, "keys"), spec)
    print(f"wrote {m['video']} ({m['frames']} frames, {m['steps']} steps), {m['contact_sheet']}, "
          f"{Path(m['video']).with_suffix('.json')}")


def _memory_demo(args: argparse.Namespace) -> None:
    from mirage_env.memory_demo import DemoConfig, run_memory_demo

    config = DemoConfig(seed=args.seed, kind=args.kind, steps=args.steps, size=args.size)
    summary = run_memory_demo(config, Path(args.out))
    print(f"wrote {summary['video']} ({summary['frames']} frames), {summary['contact_sheet']}; "
          f"memory: {summary['voxels']} voxels, {summary['bytes'] / 1e6:.2f} MB; "
          f"coverage on return to the start pose: {summary['return_coverage']:.1%}")


def _env_parser() -> argparse.ArgumentParser:
    """Options shared by ``rollout`` and ``play``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--seed", type=int, default=0, help="scene, start pose and sampling seed")
    parser.add_argument("--kind", choices=("indoor", "outdoor", "any"), default="indoor", help="simulator scene")
    parser.add_argument("--preset", default="tiny", help="world-model preset")
    parser.add_argument("--weights-dir", default=None, help="local weights (default: the preset's built-in ones)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64, help="frame size in pixels (a multiple of 8 for tiny)")
    parser.add_argument("--latents-per-step", type=int, default=1, help="new latents per step (4 frames each)")
    parser.add_argument("--num-steps", type=int, default=4, help="denoising steps per segment")
    parser.add_argument("--video-scale", type=int, default=4, help="nearest-neighbour upscaling of the video")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _train(args: argparse.Namespace) -> None:
    from mirage_env.atomic import check_writable
    from mirage_env.train.recipes import run_recipe

    check_writable(args.out, folder=True)
    run_recipe(args)


def _convert(args: argparse.Namespace) -> None:
    from mirage_env.models.convert import convert_weights

    report = convert_weights(args.out, preset=args.preset, wan=args.wan, vace=args.vace, lora=args.lora,
                             lora_alpha=args.lora_alpha, lora_rank=args.lora_rank)
    print(json.dumps(report.to_dict(), indent=2))


def _add_convert(commands) -> None:
    convert = commands.add_parser("convert", help="original Wan2.2 / Mirage release checkpoints -> a weights folder "
                                                  "(see mirage_env.models.convert)")
    convert.add_argument("out", type=Path, help="weights folder to write (its other parts are kept)")
    convert.add_argument("--preset", default="wan2.2-ti2v-5b")
    convert.add_argument("--wan", type=Path, help="original Wan2.2-TI2V-5B folder (DiT shards, Wan2.2_VAE.pth)")
    convert.add_argument("--vace", type=Path, help="the release's step_NNNNNNN_vace.safetensors")
    convert.add_argument("--lora", type=Path, help="the release's step_NNNNNNN_lora.safetensors")
    convert.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA alpha (the file does not hold it)")
    convert.add_argument("--lora-rank", type=int, help="expected LoRA rank (default: read from the file)")
    convert.set_defaults(run=_convert)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirage-env", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="extension backends, devices, presets and weights")
    info.add_argument("--weights-dir", action="append", default=[], help="a weights directory to check (repeatable)")
    info.set_defaults(run=_info)
    demo = commands.add_parser("memory-demo", help="latent memory along a camera path in a simulator scene -> video")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--kind", choices=("indoor", "outdoor"), default="indoor")
    demo.add_argument("--steps", type=int, default=24, help="poses on the way out (the path then comes back)")
    demo.add_argument("--size", type=int, default=128, help="frame size in pixels (a multiple of 4)")
    demo.add_argument("--out", default="out/memory_demo.mp4", help=".mp4 or .gif")
    demo.set_defaults(run=_memory_demo)
    rollout = commands.add_parser("rollout", parents=[_env_parser()],
                                  help="drive the camera env -> video, contact sheet PNG and metrics JSON")
    rollout.add_argument("--drive", default="loop",
                         help="loop (default) / orbit / file (with --poses) / keys (with --keys) / random (agent)")
    rollout.add_argument("--steps", type=int, default=24, help="env steps (loop, orbit, random)")
    rollout.add_argument("--keys", default=None, help="key script for --drive keys, e.g. 'w*8 l*6 s*4'")
    rollout.add_argument("--poses", default=None, help="geometry.npz for --drive file (needs its frames)")
    rollout.add_argument("--out", default="out/rollout.mp4", help=".mp4 or .gif (the .png and .json go beside it)")
    rollout.set_defaults(run=_rollout)
    play = commands.add_parser("play", parents=[_env_parser()],
                               help="drive the camera with a key script or the keyboard -> video "
                                    "(see mirage_env.envs.actions)")
    play.add_argument("keys", nargs="?", help="w/s forward/back, a/d strafe, j/l turn, i/k look, . stay; "
                                              "'*N' repeats: 'w*8 wl*6 s*4'")
    play.add_argument("--interactive", action="store_true",
                      help="one step per key pressed, q quits: in a window where one can open (pygame), else "
                           "from the terminal (see mirage_env.envs.keyboard)")
    play.add_argument("--out", default="out/play.mp4", help=".mp4 or .gif")
    play.set_defaults(run=_play, drive="keys", steps=1, poses=None)
    train = commands.add_parser("train", help="train the tiny preset on simulator or real data "
                                              "(see mirage_env.train.recipes)")
    train.add_argument("recipe", choices=("vae", "tiny", "decoder"),
                       help="vae: the VAE only; tiny: VAE, DiT, add-on, LoRA, decoder; decoder: fine-tune the decoder "
                            "of a trained world model (--weights) on its own generated latents")
    train.add_argument("--weights", type=Path, help="the trained world model the decoder recipe fine-tunes")
    train.add_argument("--out", type=Path, default=Path("runs/tiny"))
    train.add_argument("--vae", type=Path, help="a trained VAE folder (skips VAE training)")
    train.add_argument("--vae-steps", type=int, default=3500)
    train.add_argument("--vae-image-steps", type=int, default=2000, help="of --vae-steps, single-frame steps first")
    train.add_argument("--dit-steps", type=int, default=9000)
    train.add_argument("--addon-steps", type=int, default=1500)
    train.add_argument("--lora-steps", type=int, default=500)
    train.add_argument("--decoder-steps", type=int, default=0,
                       help="decoder fine-tuning steps on the world model's generated latents (0: none)")
    train.add_argument("--decoder-rollouts", type=int, help="rollouts the decoder stage learns from")
    train.add_argument("--context-noise", type=float, help="largest sigma of the noise mixed into a sample's clean "
                                                           "context (default: SegmentData's)")
    train.add_argument("--context-swap", type=float, help="probability that a sample's first and preceding latents "
                                                          "come from another scene (default: SegmentData's)")
    train.add_argument("--data", type=Path, help="real sequences (docs/formats.md) for the DiT, add-on and LoRA stages")
    train.add_argument("--data-stride", type=int, default=1, help="use every n-th frame of the --data sequences")
    train.add_argument("--pool", type=int, help="teacher-forced segments in the world model's pool")
    train.add_argument("--batch-size", type=int, help="segments per world-model training step")
    train.add_argument("--vae-batch-size", type=int, help="clips per VAE step (twice as many single frames)")
    train.add_argument("--vae-pool", type=int, help="clips in the VAE's pool (twice as many single frames)")
    train.add_argument("--scenes", type=int, help="simulator scene seeds to train on (0 .. N-1)")
    train.add_argument("--adversarial-weight", type=float, default=0.0,
                       help="weight of the VAE decoder's patch-critic loss (0: none)")
    train.add_argument("--adversarial-start", type=float, default=0.5,
                       help="fraction of the VAE steps after which the critic joins")
    for stage in ("vae", "dit", "addon", "lora", "decoder"):
        train.add_argument(f"--{stage}-minutes", type=float, help=f"time limit of the {stage} stage")
    train.add_argument("--device", default="cpu", help="where to train (cpu, cuda)")
    train.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                       help="world-model mixed precision (default: accelerate launch's --mixed_precision, else fp32)")
    train.add_argument("--gradient-accumulation", type=int, default=1,
                       help="forward passes per step and process (each on its shard of the batch)")
    train.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute the DiT and branch blocks in backward (less memory)")
    train.add_argument("--workers", type=int, default=0, help="processes that render and prepare training data")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", action="store_true", help="continue from the checkpoints under --out")
    train.set_defaults(run=_train)
    _add_convert(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError) as error:  # bad input, user paths, missing weights: a message, not a traceback
        _exit(2, _error_line(error))
    except KeyboardInterrupt:
        _exit(130, "interrupted")


def _error_line(error: BaseException) -> str:
    """The first line of ``error``'s message (missing weights: with where to see what a weights folder needs)."""
    from mirage_env.models import MissingWeightsError

    lines = str(error).strip().splitlines() or [type(error).__name__]
    if isinstance(error, MissingWeightsError) and len(lines) > 1:
        return f"{lines[0]} (`mirage-env info --weights-dir DIR` lists what a weights folder needs)"
    return lines[0]


def _exit(code: int, message: str) -> None:
    print(f"mirage-env: error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
