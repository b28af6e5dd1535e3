"""The streaming job: one query per source, one foreachBatch each, all writing the same outputs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from gatewatch.errors import (
    CheckpointCorruptError,
    GatewatchError,
    SourceReplacedError,
    StreamFailedError,
)
from gatewatch.schemas import QUARANTINE, REQUESTS, SAFETY_EVENTS, TOKEN_EVENTS
from gatewatch.settings import Settings, SourceSettings
from gatewatch.streams import outputs as out
from gatewatch.streams.parsers import load_parser_modules
from gatewatch.streams.batch import BatchContext, BatchHook, handle_batch
from gatewatch.streams.sinks.base import Sink
from gatewatch.streams.source import SourceTable, check_source, read_change_feed

log = structlog.get_logger("gatewatch.job")

SCHEMA_CHANGED = ("DELTA_SCHEMA_CHANGED", "DELTA_STREAMING_METADATA_EVOLUTION", "schema has changed")
MAX_SCHEMA_RESTARTS = 5


@dataclass
class RunningSource:
    """A started query and what it reads."""

    table: SourceTable
    checkpoint: str
    query: StreamingQuery
    restarts: int = 0


def checkpoint_for(settings: Settings, source: SourceSettings) -> str:
    """The checkpoint folder of one source: ``<checkpoint_root>/<source name>``."""
    return f"{settings.checkpoint_root.rstrip('/')}/{source.source_name}"


def load_contract(settings: Settings) -> Any | None:
    """The compiled expectation contract, or None when disabled."""
    if not settings.contract.enabled:
        return None
    from gatewatch.quarantine.contract import compile_suite, load_suite

    return compile_suite(load_suite(settings.contract.suite))


def prepare_outputs(spark: SparkSession, settings: Settings) -> dict[str, out.Table]:
    """Create the requests, quarantine and event tables if needed; return them by role."""
    o = settings.output
    tables = {
        "requests": out.table(o, o.requests_table),
        "quarantine": out.table(o, o.quarantine_table),
        "token_events": out.table(o, o.token_events_table),
        "safety_events": out.table(o, o.safety_events_table),
    }
    schemas = {"requests": REQUESTS, "quarantine": QUARANTINE, "token_events": TOKEN_EVENTS,
               "safety_events": SAFETY_EVENTS}
    for role, schema in schemas.items():
        out.ensure_table(spark, tables[role], schema)
    return tables


def alerting_enabled(settings: Settings) -> bool:
    """Alerting runs when it is enabled and there is at least one rule."""
    return settings.alerts.enabled and bool(settings.alerts.rules)


def explain(err: BaseException, source: str, checkpoint: str) -> GatewatchError:
    """Turn a streaming failure into the named error a user can act on."""
    text = str(err)
    if "DIFFERENT_DELTA_TABLE_READ_BY_STREAMING_SOURCE" in text:
        return SourceReplacedError(source, checkpoint)
    if checkpoint in text and any(k in text for k in ("offsets", "commits", "metadata", "sources")) and any(
        k in text.lower() for k in ("parse", "corrupt", "invalid", "malformed", "unexpected", "eof", "json")
    ):
        return CheckpointCorruptError(checkpoint, text.splitlines()[0][:200])
    first = next((line for line in text.splitlines() if line.strip()), text)
    return StreamFailedError(f"the query for source '{source}' failed: {first[:400]}")


def start_query(
    spark: SparkSession,
    settings: Settings,
    table: SourceTable,
    tables: dict[str, out.Table],
    contract: Any | None,
    hooks: tuple[BatchHook, ...] = (),
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
) -> RunningSource:
    """Start the streaming query of one source."""
    checkpoint = checkpoint_for(settings, table.settings)
    ctx = BatchContext(
        source=table.settings.source_name,
        app_id=out.checkpoint_app_id(checkpoint),
        requests=tables["requests"],
        quarantine=tables["quarantine"],
        contract=contract,
        hooks=hooks,
        token_events=tables.get("token_events"),
        safety_events=tables.get("safety_events"),
        on_metrics=on_metrics,
    )
    writer = (
        read_change_feed(spark, table)
        .writeStream.queryName(f"gatewatch-{table.settings.source_name}")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(functools.partial(_run_batch, ctx))
    )
    if settings.trigger.mode == "available_now":
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=settings.trigger.interval)
    try:
        query = writer.start()
    except Exception as err:  # noqa: BLE001 - translated into a named error
        raise explain(err, table.name, checkpoint) from None
    log.info("query_started", source=table.name, kind=table.kind, checkpoint=checkpoint, query_id=str(query.id))
    return RunningSource(table=table, checkpoint=checkpoint, query=query)


def _run_batch(ctx: BatchContext, batch, batch_id: int) -> None:
    handle_batch(ctx, batch, batch_id)


class Job:
    """All the queries of one gatewatch run.

    With alerting enabled and rules configured, the job also builds an
    ``Alerting`` (rules checked, alert tables created, state loaded) whose
    hook runs after each batch's writes, and starts its delivery with the
    queries. ``sinks`` replaces the sinks built from ``settings.sinks``
    (the demo prints to its own stream).
    """

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        hooks: tuple[BatchHook, ...] = (),
        on_metrics: Callable[[dict[str, Any]], None] | None = None,
        sinks: Sequence[Sink] | None = None,
    ) -> None:
        self.spark = spark
        self.settings = settings
        self.hooks = hooks
        self.on_metrics = on_metrics
        self.sources = [check_source(spark, s) for s in settings.sources]
        load_parser_modules(settings)
        self.contract = load_contract(settings)
        self.tables = prepare_outputs(spark, settings)
        self.alerting = None
        if alerting_enabled(settings):
            from gatewatch.streams.alerting import Alerting, alert_tables, ensure_alert_tables

            self.tables.update(alert_tables(settings))
            ensure_alert_tables(spark, settings, self.tables)
            self.alerting = Alerting(spark, settings, self.tables, sinks=sinks)
            self.hooks = (*self.hooks, self.alerting.hook)
        self.running: list[RunningSource] = []
        self.failures: dict[str, GatewatchError] = {}

    def start(self) -> Job:
        """Start one query per source (and the alert delivery, which first sends what is pending)."""
        if self.alerting is not None:
            self.alerting.start()
        self.running = [
            start_query(self.spark, self.settings, t, self.tables, self.contract, self.hooks, self.on_metrics)
            for t in self.sources
        ]
        return self

    def _restart(self, rs: RunningSource) -> None:
        fresh = start_query(
            self.spark, self.settings, rs.table, self.tables, self.contract, self.hooks, self.on_metrics
        )
        rs.query, rs.restarts = fresh.query, rs.restarts + 1

    def wait(self, poll_s: float = 1.0) -> None:
        """Wait until every query has ended; restart a query whose source gained a column.

        A failed query is logged with its source and the others go on. Once
        none is left running, the first failure is raised (exit code 1).
        """
        pending = list(self.running)
        try:
            self._wait(pending, poll_s)
        finally:
            if self.alerting is not None and not any(rs.query.isActive for rs in self.running):
                self.alerting.close()
        if self.failures:
            raise next(iter(self.failures.values()))

    def _wait(self, pending: list[RunningSource], poll_s: float) -> None:
        while pending:
            for rs in list(pending):
                try:
                    finished = rs.query.awaitTermination(poll_s)
                except Exception as err:  # noqa: BLE001 - the query failed
                    if any(k in str(err) for k in SCHEMA_CHANGED) and rs.restarts < MAX_SCHEMA_RESTARTS:
                        log.warning("source_schema_changed_restarting", source=rs.table.name)
                        self._restart(rs)
                        continue
                    failure = explain(err, rs.table.name, rs.checkpoint)
                    log.error("query_failed", source=rs.table.name, error=str(failure))
                    self.failures[rs.table.name] = failure
                    pending.remove(rs)
                    continue
                if finished:
                    pending.remove(rs)

    def stop(self) -> None:
        """Stop every query (the current micro-batch completes first)."""
        for rs in self.running:
            if rs.query.isActive:
                rs.query.stop()
        if self.alerting is not None:
            self.alerting.close()
