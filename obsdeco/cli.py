"""The `obsdeco` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from obsdeco._version import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obsdeco",
        description="Watch AI agents in production: LLM calls, tokens, cost and latency.",
    )
    parser.add_argument("--version", action="version", version=f"obsdeco {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `obsdeco` console script."""
    parser = _parser()
    parser.parse_args(argv)
    parser.print_help(sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
