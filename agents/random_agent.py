"""The random agent: one episode of uniformly random keys -> DIR/episode.mp4, .png and .json (see docs/agents.md).

    python agents/random_agent.py --out out/random --seed 0 --steps 48
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.episode import episode_parser, run_episode  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    return run_episode("random", episode_parser(__doc__).parse_args(argv))


if __name__ == "__main__":
    main()
