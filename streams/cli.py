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


def _settings(args: argparse.Namespace):
    """Settings from --config, then the command's own flags, then --set overrides."""
    from gatewatch.streams.config import load_settings

    flags: list[str] = []
    if getattr(args, "source", None):
        flags += [f"sources.{i}.table={t}" for i, t in enumerate(args.source)]
    if getattr(args, "output", None):
        flags.append(f"output.location={args.output}")
    if getattr(args, "checkpoint", None):
        flags.append(f"checkpoint_root={args.checkpoint}")
    if getattr(args, "available_now", False):
        flags.append("trigger.mode=available_now")
    return load_settings(args.config, [*flags, *(args.set or [])])


def _cmd_run(args: argparse.Namespace) -> int:
    from gatewatch.errors import ConfigError
    from gatewatch.streams.job import Job
    from gatewatch.streams.spark import build_spark

    settings = _settings(args)
    if not settings.sources:
        raise ConfigError("sources", "at least one source table (--source or sources: in the config)")
    spark = build_spark(settings.spark)
    job = Job(spark, settings).start()
    try:
        job.wait()
    except KeyboardInterrupt:
        job.stop()
        raise
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the packaged conf/gatewatch.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="gatewatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gatewatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    setup = sub.add_parser("setup", help="fetch the Delta jars once into the local cache")
    setup.set_defaults(func=_cmd_setup)

    run = sub.add_parser("run", help="tail inference tables and write requests and quarantine")
    run.add_argument("--source", action="append", metavar="TABLE", help="a Delta path or catalog table (repeatable)")
    run.add_argument("--output", metavar="LOCATION", help="a directory, or catalog.schema")
    run.add_argument("--checkpoint", metavar="DIR", help="checkpoint root (one folder per source)")
    run.add_argument("--available-now", action="store_true", help="process what is there, then exit 0")
    _common(run)
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from gatewatch.streams.logs import configure

    configure(getattr(args, "log_format", "auto"))
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
