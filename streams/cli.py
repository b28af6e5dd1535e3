"""The ``gatewatch`` command line: every user error becomes one line and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gatewatch import __version__
from gatewatch.errors import GatewatchError


def _cmd_setup(args: argparse.Namespace) -> int:
    from gatewatch.streams.spark import check_java, fetch_jars

    check_java()
    folder = fetch_jars(quiet=True)
    print(f"Delta jars ready in {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="gatewatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gatewatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    setup = sub.add_parser("setup", help="fetch the Delta jars once into the local cache")
    setup.set_defaults(func=_cmd_setup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GatewatchError as err:
        print(f"gatewatch: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("gatewatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
