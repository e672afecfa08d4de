"""Scripted agents: one episode of ``orbit``, ``loop`` (loop and return) or ``lawnmower`` (the hand-written
explorer) -> DIR/episode.mp4, .png and .json (see agents/policies.py and docs/agents.md).

    python agents/scripted.py --policy lawnmower --out out/lawnmower --seed 0 --steps 48
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.episode import episode_parser, run_episode  # noqa: E402
from agents.policies import SCRIPTED  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = episode_parser(__doc__)
    parser.add_argument("--policy", choices=SCRIPTED, default="lawnmower")
    args = parser.parse_args(argv)
    return run_episode(args.policy, args)


if __name__ == "__main__":
    main()
