"""The ``gatewatch`` command line: every user error becomes one line and an exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gatewatch import __version__
from gatewatch.errors import GatewatchError


def _cmd_setup(args: argparse.Namespace) -> int:
    from gatewatch.streams.spark import build_class_archive, check_java, class_archive, fetch_jars

    check_java()
    folder = fetch_jars(quiet=True)
    print(f"Delta jars ready in {folder}")
    if args.class_archive:
        made = class_archive()
        if made is None or not made.exists():
            print("Making the JVM class archive (once, about half a minute) ...", flush=True)
            made = build_class_archive(quiet=True)
        if made is not None:
            print(f"JVM class archive ready in {made}")
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
    if getattr(args, "remote", None):
        flags.append(f"spark.remote={json.dumps(args.remote)}")
    for flag, key in (("wheel", "wheel"), ("config_path", "config_path"), ("name", "name"), ("compute", "compute")):
        if getattr(args, flag, None):
            flags.append(f"deploy.{key}={json.dumps(getattr(args, flag))}")  # JSON: always a YAML string
    return load_settings(args.config, [*flags, *(args.set or [])])


def _cmd_run(args: argparse.Namespace) -> int:
    from gatewatch.cli.progress import live_run
    from gatewatch.errors import ConfigError
    from gatewatch.streams.job import Job
    from gatewatch.streams.spark import build_spark

    settings = _settings(args)
    if not settings.sources:
        raise ConfigError("sources", "at least one source table (--source or sources: in the config)")
    spark = build_spark(settings.spark)
    with live_run(spark, settings, args.log_format) as on_metrics:  # a terminal: live progress
        job = Job(spark, settings, on_metrics=on_metrics).start()
        try:
            job.wait()
        except KeyboardInterrupt:
            job.stop()
            raise
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gatewatch.cli.demo import run_demo
    from gatewatch.streams.logs import configure

    configure(args.log_format, level="WARNING")  # the demo prints its own progress
    summary = run_demo(Path(args.dir), commits=args.commits, rows_per_commit=args.rows)
    return 0 if summary["missing"] == 0 and summary["duplicates"] == 0 else 1


def _cmd_quarantine_summary(args: argparse.Namespace) -> int:
    from gatewatch.quarantine.replay import summary
    from gatewatch.cli.tables import format_table
    from gatewatch.streams.spark import build_spark

    settings = _settings(args)
    spark = build_spark(settings.spark, app_name="gatewatch-quarantine")
    rows = summary(spark, settings)
    if not rows:
        print("No open quarantined rows.")
        return 0
    print(
        format_table(
            ["reason", "fingerprint", "rows", "first seen", "last seen", "sample ids"],
            [
                [r["reason"], r["shape_fingerprint"] or "-", r["rows"], _ts(r["first_seen"]), _ts(r["last_seen"]),
                 ", ".join(i for i in r["sample_ids"] if i)]
                for r in rows
            ],
        )
    )
    print(f"\n{sum(r['rows'] for r in rows):,} open rows. Fix or add a parser, then: gatewatch replay --dry-run")
    return 0


def _ts(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _cmd_replay(args: argparse.Namespace) -> int:
    from gatewatch.cli.progress import live_tasks
    from gatewatch.quarantine.replay import replay
    from gatewatch.cli.tables import format_table
    from gatewatch.streams.spark import build_spark

    settings = _settings(args)
    spark = build_spark(settings.spark, app_name="gatewatch-replay")
    with live_tasks(spark, "replay"):  # a terminal: Spark tasks done, live
        result = replay(spark, settings, dry_run=args.dry_run, fingerprint=args.fingerprint, reason=args.reason)
    if not result.considered:
        print("No open quarantined rows match.")
        return 0
    print(
        format_table(
            ["fingerprint", "rows", "resolved" if not result.dry_run else "would resolve", "still failing as", "parser"],
            [
                [r["fingerprint"] or "-", r["rows"], r["would_resolve"] or 0, ", ".join(r["still_failing_as"]) or "-",
                 r["parser"] or "-"]
                for r in result.by_fingerprint
            ],
        )
    )
    verb = "would move" if result.dry_run else "moved"
    print(
        f"\n{verb} {result.resolved:,} of {result.considered:,} rows into requests; {result.still_open:,} stay open."
        + (" Nothing was written (dry run)." if result.dry_run else "")
    )
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    """``gatewatch validate``: the shipped and candidate parsers on a snapshot; exit 1 on an unaccepted change."""
    from pathlib import Path

    from gatewatch.cli.validation import format_report
    from gatewatch.quarantine.validate import validate
    from gatewatch.streams.spark import build_spark

    settings = _settings(args)
    spark = build_spark(settings.spark, app_name="gatewatch-validate")
    report = validate(spark, settings, candidates=args.parsers or (), version=args.version,
                      timestamp=args.timestamp, sample=args.sample, accept=args.accept or ())
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(report.to_json() + "\n")
    return 0 if report.passed else 1


def _cmd_advise(args: argparse.Namespace) -> int:
    """``gatewatch advise``: the idle served entities now, one lookup per endpoint."""
    from gatewatch.alerts.advise import Advisor, sdk_lookup
    from gatewatch.cli.deploy import workspace_client
    from gatewatch.cli.validation import format_idle
    from gatewatch.streams import outputs
    from gatewatch.streams.spark import build_spark

    settings = _settings(args)
    lookup = sdk_lookup(workspace_client())
    spark = build_spark(settings.spark, app_name="gatewatch-advise")
    o = settings.output
    tables = {"requests": outputs.table(o, o.requests_table), "quarantine": outputs.table(o, o.quarantine_table)}
    advisor = Advisor(settings, tables, lookup=lookup)
    found = [i for rule in advisor.rules.values() for i in advisor.idle(spark, rule, advisor.clock())[0]]
    print(format_idle(found))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from gatewatch.views.report import write_report

    settings = _settings(args)
    path = write_report(settings, args.html, since=args.since, until=args.until, endpoints=args.endpoint or ())
    print(f"Report written to {path}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from gatewatch.cli.tables import format_status
    from gatewatch.streams.observe import read_status, status_path

    root = _settings(args).checkpoint_root
    status = read_status(root)
    if status is None:
        print(f"No status yet: no job has run with checkpoint root {root} ({status_path(root)} does not exist).",
              file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 1 if any(s.get("state") == "failed" for s in status.get("sources", {}).values()) else 0


def _cmd_alerts_deliver(args: argparse.Namespace) -> int:
    from gatewatch.alerts.engine import deliver_once
    from gatewatch.streams.spark import build_spark

    settings = _settings(args)
    spark = build_spark(settings.spark, app_name="gatewatch-alerts")
    counts = deliver_once(spark, settings)
    print(
        f"delivered {counts['delivered']:,}, failed permanently {counts['failed']:,}, "
        f"re-sent {counts['resent']:,}; {counts['pending']:,} still pending."
    )
    return 0 if counts["pending"] == 0 else 1


def _cmd_deploy(args: argparse.Namespace) -> int:
    import structlog

    from gatewatch.cli.deploy import dashboard_next_to_job, deploy, workspace_client

    settings = _settings(args)
    elsewhere = [item.split("=", 1)[0] for item in args.set or [] if not item.startswith(("deploy.", "trigger.mode="))]
    if elsewhere:
        structlog.get_logger("gatewatch.deploy").warning(
            "deploy.overrides_not_deployed", keys=elsewhere,
            hint="the job reads deploy.config_path without them; put them in that file or in deploy.run_args",
        )
    if args.dry_run:
        result = deploy(settings, None, dry_run=True)
        print(json.dumps(result.settings, sort_keys=True, indent=2))
        board = dashboard_next_to_job(settings, None, result.name, dry_run=True)
        if board is not None:  # a second JSON document: the dashboard
            print(json.dumps(board, sort_keys=True, indent=2))
        return 0
    client = workspace_client()
    result = deploy(settings, client)
    host = (client.config.host or "").rstrip("/")
    print(f"{result.action} job {result.job_id} '{result.name}'" + (f": {host}/jobs/{result.job_id}" if host else ""))
    board = dashboard_next_to_job(settings, client, result.name)
    if board is not None:
        print(f"{board.action} and published dashboard {board.dashboard_id} '{board.display_name}'"
              + (f" ({board.path})" if board.path else ""))
    return 0


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", metavar="LOCATION", help="a directory, or catalog.schema")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the packaged conf/gatewatch.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    p.add_argument("--remote", metavar="sc://HOST:PORT",
                   help="run on a Spark Connect server (default: SPARK_REMOTE, else local Spark)")


def _cmd_connect_server(args: argparse.Namespace) -> int:
    import subprocess

    from gatewatch.streams.spark import check_java, connect_server_command

    check_java()
    command = connect_server_command(args.port, host=args.host, master=args.master)
    print(f"gatewatch: Spark Connect server with Delta on sc://{args.host}:{args.port} (Ctrl-C stops it)",
          file=sys.stderr)
    return subprocess.call(command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="gatewatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gatewatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    setup = sub.add_parser("setup", help="fetch the Delta jars and make the JVM class archive, once, into the local cache")
    setup.add_argument("--no-class-archive", dest="class_archive", action="store_false",
                       help="do not make the JVM class archive local Spark starts from (~200 MB; ready ~3 s sooner)")
    setup.set_defaults(func=_cmd_setup)

    cs = sub.add_parser("connect-server", help="start a local Spark Connect server with Delta (foreground)")
    cs.add_argument("--port", type=int, default=15002, help="port to listen on (default: 15002)")
    cs.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    cs.add_argument("--master", default="local[2]", help="Spark master of the server (default: local[2])")
    cs.set_defaults(func=_cmd_connect_server)

    run = sub.add_parser("run", help="tail inference tables and write requests and quarantine")
    run.add_argument("--source", action="append", metavar="TABLE", help="a Delta path or catalog table (repeatable)")
    _output(run)
    run.add_argument("--checkpoint", metavar="DIR", help="checkpoint root (one folder per source)")
    run.add_argument("--available-now", action="store_true", help="process what is there, then exit 0")
    _common(run)
    run.set_defaults(func=_cmd_run)

    quarantine = sub.add_parser("quarantine", help="inspect the quarantine table")
    qsub = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="COMMAND")
    qsummary = qsub.add_parser("summary", help="open rows by reason and shape fingerprint")
    _output(qsummary)
    _common(qsummary)
    qsummary.set_defaults(func=_cmd_quarantine_summary)

    rp = sub.add_parser("replay", help="re-run open quarantined rows through the current parsers and contract")
    rp.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    rp.add_argument("--fingerprint", metavar="F", help="only rows of this shape fingerprint")
    rp.add_argument("--reason", metavar="R", help="only rows of this reason")
    _output(rp)
    _common(rp)
    rp.set_defaults(func=_cmd_replay)

    va = sub.add_parser("validate", help="compare the shipped and candidate parsers on a snapshot of a source table")
    va.add_argument("--source", action="append", metavar="TABLE", help="the inference table (Delta path or catalog table)")
    at = va.add_mutually_exclusive_group()
    at.add_argument("--version", type=int, metavar="N", help="the table version to read (default: the latest)")
    at.add_argument("--timestamp", metavar="T", help="the table as of this time, e.g. 2026-11-30T08:00:00Z")
    va.add_argument("--sample", type=int, metavar="N", help="compare N rows (the same N on every run) instead of all")
    va.add_argument("--parsers", action="append", metavar="MODULE", help="a candidate parser module or .py file, "
                    "loaded on top of the shipped parsers (repeatable)")
    va.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    va.add_argument("--accept", action="append", metavar="ID", help="a change that is intended (an id of the "
                    "report, or all; repeatable): it does not fail the run")
    _common(va)
    va.set_defaults(func=_cmd_validate)

    ad = sub.add_parser("advise", help="list served entities kept provisioned with no traffic, and how to remove them")
    _output(ad)
    _common(ad)
    ad.set_defaults(func=_cmd_advise)

    rpt = sub.add_parser("report", help="the dashboard's views as one self-contained HTML page")
    _output(rpt)
    rpt.add_argument("--html", metavar="FILE", required=True, help="the page to write")
    rpt.add_argument("--since", metavar="WHEN", help="from: 24h, 7d, ... before now, or an ISO date (default: all)")
    rpt.add_argument("--until", metavar="WHEN", help="to (exclusive): the same forms (default: now)")
    rpt.add_argument("--endpoint", action="append", metavar="E", help="only this endpoint (repeatable)")
    _common(rpt)
    rpt.set_defaults(func=_cmd_report)

    status = sub.add_parser("status", help="each source of a running or the last job: state, last batch, lag")
    status.add_argument("--checkpoint-root", "--checkpoint", dest="checkpoint", metavar="DIR",
                        help="the job's checkpoint root (default: from the config)")
    status.add_argument("--json", action="store_true", help="print the status file as JSON")
    _common(status)
    status.set_defaults(func=_cmd_status)

    alerts = sub.add_parser("alerts", help="alert delivery")
    asub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    adeliver = asub.add_parser("deliver", help="send pending outbox entries to their sinks now (job stopped)")
    _output(adeliver)
    _common(adeliver)
    adeliver.set_defaults(func=_cmd_alerts_deliver)

    dp = sub.add_parser("deploy", help="create or update the Databricks job that runs gatewatch from its wheel")
    dp.add_argument("--wheel", metavar="PATH_OR_URI", help="the wheel on the workspace: /Volumes/..., /Workspace/..., "
                    "dbfs:/... or a cloud URI (deploy.wheel)")
    dp.add_argument("--config-path", metavar="PATH", help="where the job reads this config on the workspace "
                    "(deploy.config_path)")
    dp.add_argument("--name", metavar="JOB_NAME", help="the job's name (deploy.name; default gatewatch-<config name>)")
    dp.add_argument("--compute", choices=("cluster", "serverless"), help="a job cluster or serverless (deploy.compute)")
    dp.add_argument("--dry-run", action="store_true", help="print the job settings as JSON (then the dashboard's, "
                    "with deploy.dashboard.warehouse_id set); contact no workspace")
    _common(dp)
    dp.set_defaults(func=_cmd_deploy)

    demo = sub.add_parser("demo", help="run the job on local generated traffic and print a summary")
    demo.add_argument("--dir", default="demo-output", help="working folder, emptied first (default: demo-output)")
    demo.add_argument("--commits", type=int, default=5, help="commits written into each table (default: 5)")
    demo.add_argument("--rows", type=int, default=400, help="rows per commit (default: 400)")
    demo.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from gatewatch.streams.logs import configure

    configure(getattr(args, "log_format", "auto"))
    running = _local_spark()
    try:
        try:
            return int(args.func(args) or 0)
        finally:  # before the last line, whatever it is
            _stop_spark_started_since(running)
    except GatewatchError as err:
        print(f"gatewatch: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("gatewatch: interrupted", file=sys.stderr)
        return 130


def _local_spark() -> object | None:
    """The classic Spark running in this process, if any (never a Spark Connect session: no JVM here)."""
    if "pyspark" not in sys.modules:  # a command that needs no Spark never imports it
        return None
    from pyspark import SparkContext

    return SparkContext._active_spark_context


def _stop_spark_started_since(running: object | None) -> None:
    """Stop the local Spark the command started, so the JVM's last words come before the command's last line.

    Left running, the JVM goes down with the Python process, and a listener
    call still on its way back into Python prints a Java stack trace after
    the command's result or its one-line error. A session that was running
    before the command (a Databricks cluster's, a caller's) is not the
    command's to stop.
    """
    started = _local_spark()
    if started is None or started is running:
        return
    try:
        started.stop()
    except Exception:  # noqa: BLE001 - on the way out: nothing left to tell the user
        pass


def job_main() -> None:
    """Entry point of the Databricks wheel task (``gatewatch-job``): fails the task when the command fails.

    The task calls the entry point and ignores what it returns, so a non-zero
    exit code is raised as ``SystemExit`` instead of returned.
    """
    code = main()
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    sys.exit(main())
