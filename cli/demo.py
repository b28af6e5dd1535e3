"""``gatewatch demo``: the whole job on a laptop, with nothing but local Spark and Delta.

Creates two local inference tables the way Databricks creates them (one in
the AI Gateway schema, one in the legacy payload schema), starts the job on
both with a one-second trigger, writes generated traffic of every outcome,
malformed rows among it, in several commits while the queries run, shows
each micro-batch as it lands, and ends with a summary read back from the
output tables. Then, with the packaged alert rules on, it writes a spike of
blocks by Databricks' own safety layers (AI Gateway guardrails, Unity AI
Gateway service policies) on chat-prod and calm traffic after it, and prints
the alerts firing and resolving (through the console sink).
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from gatewatch.cli.tables import format_table
from gatewatch.settings import (
    AlertSettings,
    OutputSettings,
    Settings,
    SourceSettings,
    SparkSettings,
    TriggerSettings,
)


@dataclass(frozen=True)
class DemoSource:
    """One demo inference table: its endpoint and its schema."""

    endpoint: str
    kind: str  # gateway | legacy

    def path(self, root: Path) -> Path:
        """Where the table lives under the demo folder."""
        return root / "inference" / f"{self.endpoint.replace('-', '_')}_payload"


DEMO_SOURCES: tuple[DemoSource, ...] = (DemoSource("chat-prod", "gateway"), DemoSource("agent-prod", "legacy"))


SPIKE_ENDPOINT = "chat-prod"


def demo_settings(root: Path, interval: str = "1 second") -> Settings:
    """Settings of the demo job: both tables, outputs and checkpoints under ``root``, the packaged alert rules."""
    from gatewatch.streams.config import read_rules

    return Settings(
        alerts=AlertSettings(rules=read_rules(), deliver_interval_s=0),
        sinks=({"name": "console", "type": "console"},),
        sources=tuple(
            SourceSettings(table=str(s.path(root)), endpoint=s.endpoint, max_files_per_trigger=1) for s in DEMO_SOURCES
        ),
        output=OutputSettings(location=str(root / "output")),
        checkpoint_root=str(root / "checkpoints"),
        trigger=TriggerSettings(mode="processing_time", interval=interval),
        spark=SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="2g"),
    )


@dataclass
class Progress:
    """Prints one line per micro-batch as the job reports it."""

    out: TextIO = sys.stdout
    batches: int = 0
    rows: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, m: dict[str, Any]) -> None:
        if not m.get("rows"):
            return
        with self.lock:
            self.batches += 1
            self.rows += m["rows"]
            outcomes = " ".join(f"{k}={v}" for k, v in sorted(m["outcomes"].items()))
            reasons = " ".join(f"{k}={v}" for k, v in sorted(m["quarantine_reasons"].items())) or "-"
            print(
                f"  batch {m['batch_id']:>3} {m['source']:<20} {m['rows']:>5} rows in {m['duration_s']:>5.1f}s"
                f" | {outcomes} | quarantined: {reasons}",
                file=self.out,
                flush=True,
            )


def run_demo(
    root: Path,
    *,
    commits: int = 5,
    rows_per_commit: int = 400,
    seed: int = 7,
    out: TextIO = sys.stdout,
    spark: SparkSession | None = None,
) -> dict[str, Any]:
    """Run the demo end to end; return the summary it printed."""
    from gatewatch.traffic import generate as traffic
    from gatewatch.streams.job import Job
    from gatewatch.streams.spark import build_spark

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    settings = demo_settings(root)
    say = _printer(out)
    say(f"gatewatch demo: local Spark and Delta Lake under {root}/")
    spark = spark or build_spark(settings.spark, app_name="gatewatch-demo")
    for s in DEMO_SOURCES:
        traffic.create_inference_table(spark, str(s.path(root)), kind=s.kind)
        say(f"  created inference table {s.path(root)} ({s.kind} schema, change data feed on)")

    from gatewatch.alerts.sinks import ConsoleSink
    from gatewatch.alerts.sinks.config import ConsoleSinkSettings

    progress = Progress(out=out)
    console = ConsoleSink(ConsoleSinkSettings(name="console"), stream=out)
    job = Job(spark, settings, on_metrics=progress, sinks=[console]).start()
    say("  streaming: one query reading both tables, 1 second trigger")
    inserted: set[str] = set()
    started = time.monotonic()
    try:
        for i in range(commits):
            for j, s in enumerate(DEMO_SOURCES):
                generated = traffic.generate(rows_per_commit, seed=seed * 1000 + i * 10 + j, endpoints=(s.endpoint,))
                rows = [g.row for g in generated]
                if s.kind == "legacy":
                    rows = traffic.to_legacy(rows)
                traffic.write_rows(spark, str(s.path(root)), rows, kind=s.kind)
                inserted |= {g.row["databricks_request_id"] for g in generated}
            say(f"  commit {i + 1}/{commits}: {rows_per_commit} rows into each table")
        for rs in job.running:
            rs.query.processAllAvailable()
        elapsed = time.monotonic() - started
        summary = summarize(spark, settings, inserted)
        summary["seconds"] = round(elapsed, 1)
        _print_summary(summary, progress, say)
        summary["alerts"] = _alert_phase(spark, root, job, seed, rows_per_commit, inserted, say)
    finally:
        job.stop()
    from gatewatch.views.report import write_report

    summary["report"] = str(write_report(settings, root / "report.html", spark=spark))
    say(f"\nReport (charts of the output tables, opens offline): {summary['report']}")
    return summary


def _alert_phase(spark: SparkSession, root: Path, job: Any, seed: int, rows: int, inserted: set[str],
                 say: Callable[[str], None]) -> list[dict[str, Any]]:
    """A guardrail spike on chat-prod, then calm traffic past the window: its alerts fire, then resolve.

    The spike's blocks are by AI Gateway guardrails and Unity AI Gateway
    service policies, so ``databricks_safety_spike`` fires (and, blocks being
    blocks, ``content_filter_spike`` too), once each, and both resolve.
    """
    from datetime import timedelta

    from gatewatch.streams import outputs
    from gatewatch.traffic import generate as traffic

    def commit(generated_by_source: dict[DemoSource, list]) -> None:
        for s, generated in generated_by_source.items():
            rows_ = [g.row for g in generated]
            traffic.write_rows(spark, str(s.path(root)), traffic.to_legacy(rows_) if s.kind == "legacy" else rows_,
                               kind=s.kind)
            inserted.update(g.row["databricks_request_id"] for g in generated)
        for rs in job.running:
            rs.query.processAllAvailable()

    chat = next(s for s in DEMO_SOURCES if s.endpoint == SPIKE_ENDPOINT)
    start = traffic.DEFAULT_START
    say()
    say(f"Alerts: a guardrail spike on {SPIKE_ENDPOINT} ten minutes (event time) after that traffic")
    commit({chat: traffic.spike(max(60, rows // 4), endpoint=SPIKE_ENDPOINT, seed=seed * 1000 + 901,
                                start=start + timedelta(minutes=10), layer="databricks")})
    say("Alerts: calm traffic on both endpoints another fifteen minutes later")
    commit({s: traffic.generate(rows, seed=seed * 1000 + 911 + j, endpoints=(s.endpoint,),
                                start=start + timedelta(minutes=25)) for j, s in enumerate(DEMO_SOURCES)})
    settings = job.settings
    table = outputs.table(settings.output, settings.output.alerts_table).read(spark)
    states = [r.asDict() for r in table.select("rule", "group", "status", "started_at", "ended_at").collect()]
    say(f"Alert state is in {settings.output.location}/{settings.output.alerts_table}; deliveries in "
        f"{settings.output.outbox_table} and {settings.output.deliveries_table}.")
    return states


def summarize(spark: SparkSession, settings: Settings, inserted: set[str]) -> dict[str, Any]:
    """Counts read back from the output tables."""
    from gatewatch.streams import outputs

    requests = outputs.table(settings.output, settings.output.requests_table).read(spark)
    quarantine = outputs.table(settings.output, settings.output.quarantine_table).read(spark)
    by_outcome = {r["outcome"]: r["n"] for r in requests.groupBy("outcome").agg(F.count("*").alias("n")).collect()}
    by_reason = {r["reason"]: r["n"] for r in quarantine.groupBy("reason").agg(F.count("*").alias("n")).collect()}
    tokens = [
        r.asDict()
        for r in requests.groupBy("endpoint")
        .agg(
            F.count("*").alias("requests"),
            F.sum("input_tokens").alias("input_tokens"),
            F.sum("output_tokens").alias("output_tokens"),
            F.sum("total_tokens").alias("total_tokens"),
            F.sum(F.col("blocked").cast("int")).alias("blocked"),
        )
        .orderBy("endpoint")
        .collect()
    ]
    ids = [r[0] for r in requests.select("databricks_request_id").union(quarantine.select("databricks_request_id")).collect()]
    return {
        "inserted": len(inserted),
        "requests": sum(by_outcome.values()),
        "quarantined": sum(by_reason.values()),
        "duplicates": len(ids) - len(set(ids)),
        "missing": len(inserted - set(ids)),
        "by_outcome": by_outcome,
        "by_reason": by_reason,
        "tokens_by_endpoint": tokens,
        "output": settings.output.location,
    }


def _printer(out: TextIO) -> Callable[[str], None]:
    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    return say


def _print_summary(s: dict[str, Any], progress: Progress, say: Callable[[str], None]) -> None:
    say()
    say(f"Summary ({progress.batches} micro-batches, {s['seconds']}s)")
    say(
        f"  inserted {s['inserted']:,} rows -> {s['requests']:,} requests + {s['quarantined']:,} quarantined"
        f" ({s['missing']} missing, {s['duplicates']} duplicated)"
    )
    say()
    say(format_table(["outcome", "requests"], sorted(s["by_outcome"].items())))
    say()
    say(format_table(["quarantine reason", "rows"], sorted(s["by_reason"].items())))
    say()
    say(
        format_table(
            ["endpoint", "requests", "blocked", "input tokens", "output tokens", "total tokens"],
            [
                [t["endpoint"], t["requests"], t["blocked"], t["input_tokens"], t["output_tokens"], t["total_tokens"]]
                for t in s["tokens_by_endpoint"]
            ],
        )
    )
    say()
    say(f"Tables are in {s['output']}/ (requests, quarantine); read them with any Delta reader.")
