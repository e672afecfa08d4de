"""The ``mirage-env`` command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def _info(_: argparse.Namespace) -> None:
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
    }
    print(json.dumps(report, indent=2))


def _memory_demo(args: argparse.Namespace) -> None:
    from mirage_env.memory_demo import DemoConfig, run_memory_demo

    config = DemoConfig(seed=args.seed, kind=args.kind, steps=args.steps, size=args.size)
    summary = run_memory_demo(config, Path(args.out))
    print(f"wrote {summary['video']} ({summary['frames']} frames), {summary['contact_sheet']}; "
          f"memory: {summary['voxels']} voxels, {summary['bytes'] / 1e6:.2f} MB; "
          f"coverage on return to the start pose: {summary['return_coverage']:.1%}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirage-env", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="extension backends and devices")
    info.set_defaults(run=_info)
    demo = commands.add_parser("memory-demo", help="latent memory along a camera path in a simulator scene -> video")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--kind", choices=("indoor", "outdoor"), default="indoor")
    demo.add_argument("--steps", type=int, default=24, help="poses on the way out (the path then comes back)")
    demo.add_argument("--size", type=int, default=128, help="frame size in pixels (a multiple of 4)")
    demo.add_argument("--out", default="out/memory_demo.mp4", help=".mp4 or .gif")
    demo.set_defaults(run=_memory_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
