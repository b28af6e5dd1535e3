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
from gatewatch.settings import Settings, SourceSettings
from gatewatch.streams import outputs as out
from gatewatch.streams.logs import error_summary
from gatewatch.quarantine.contract import load_contract
from gatewatch.streams.parsers import load_parser_modules
from gatewatch.streams.batch import BatchContext, BatchHook, BatchStage, handle_batch
from gatewatch.streams.observe import Observer, ProgressListener, latest_commit
from gatewatch.streams.recovery import damaged_file, resume_version
from gatewatch.alerts.sinks.base import Sink
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


def alerting_enabled(settings: Settings) -> bool:
    """Alerting runs when it is enabled and there is at least one rule."""
    return settings.alerts.enabled and bool(settings.alerts.rules)


def explain(err: BaseException, source: str, checkpoint: str, index: int = 0) -> GatewatchError:
    """Turn a streaming failure into the named error a user can act on.

    ``index`` is the source's position in ``sources`` (the fix names its key).
    """
    text = str(err)
    if "DIFFERENT_DELTA_TABLE_READ_BY_STREAMING_SOURCE" in text:
        return SourceReplacedError(source, checkpoint, index)
    damaged = damaged_file(checkpoint)
    if damaged:
        return CheckpointCorruptError(checkpoint, f"{damaged} is damaged", index)
    if checkpoint in text and any(k in text for k in ("offsets", "commits", "metadata", "sources")) and any(
        k in text.lower() for k in ("parse", "corrupt", "invalid", "malformed", "unexpected", "eof", "json",
                                    "incomplete log file", "failed to read log file")
    ):
        return CheckpointCorruptError(checkpoint, error_summary(err, 200), index)
    return StreamFailedError(f"the query for source '{source}' failed: {error_summary(err, 400)}")


def start_query(
    spark: SparkSession,
    settings: Settings,
    table: SourceTable,
    tables: dict[str, out.Table],
    contract: Any | None,
    hooks: tuple[BatchHook, ...] = (),
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    stages: tuple[BatchStage, ...] = (),
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
        stages=stages,
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


def _restartable(rs: RunningSource) -> bool:
    """Whether a query stopped by a source schema change may restart.

    It may, unless it restarted ``MAX_SCHEMA_RESTARTS`` times in a row
    without reading a row (the schema change then is not one it can follow).
    """
    if any((p.get("numInputRows") or 0) > 0 for p in rs.query.recentProgress):
        rs.restarts = 0
    return rs.restarts < MAX_SCHEMA_RESTARTS


def _run_batch(ctx: BatchContext, batch, batch_id: int) -> None:
    handle_batch(ctx, batch, batch_id)


class Job:
    """All the queries of one gatewatch run.

    With alerting enabled and rules configured, the job also builds an
    ``Alerting`` (rules checked, alert tables created, state loaded), a
    stage of every batch (it evaluates and sends before the batch's writes),
    and starts its delivery with the queries. ``sinks`` replaces the sinks
    built from ``settings.sinks`` (the demo prints to its own stream). An ``Observer`` logs a ``progress``
    line per batch and keeps ``<checkpoint_root>/_status.json``.
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
        self.sources = [check_source(spark, s) for s in settings.sources]
        self.observer = Observer(settings.checkpoint_root, self.sources, functools.partial(latest_commit, spark))
        self.on_metrics = self._metrics_to(on_metrics)
        self.listener: ProgressListener | None = None
        load_parser_modules(settings)
        self.contract = load_contract(settings)
        self.tables = out.prepare_outputs(spark, settings)
        self.alerting = None
        self.stages: tuple[BatchStage, ...] = ()
        if alerting_enabled(settings):
            from gatewatch.alerts.engine import Alerting, alert_tables, ensure_alert_tables

            self.tables.update(alert_tables(settings))
            ensure_alert_tables(spark, settings, self.tables)
            self.alerting = Alerting(spark, settings, self.tables, sinks=sinks)
            self.stages = (self.alerting,)
        self.running: list[RunningSource] = []
        self.failures: dict[str, GatewatchError] = {}

    def start(self) -> Job:
        """Start one query per source (and the alert delivery, which first sends what is pending)."""
        if self.alerting is not None:
            self.alerting.start()
        self.observer.write()
        self.listener = ProgressListener(self.observer)
        try:
            self.spark.streams.addListener(self.listener)
        except Exception as err:  # noqa: BLE001 - without a listener the status still follows each batch
            log.warning("progress_listener_unavailable", error=str(err).splitlines()[0][:200])
            self.listener = None
        for t in self.sources:
            try:
                rs = start_query(self.spark, self.settings, t, self.tables, self.contract, self.hooks,
                                 self.on_metrics, self.stages)
            except Exception as err:
                self._close_listener()
                if isinstance(err, CheckpointCorruptError):
                    raise self._with_resume(err, t) from None
                raise
            self.running.append(rs)
            self.observer.attach(t.settings.source_name, rs.query)
        return self

    def _metrics_to(self, on_metrics: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
        def both(metrics: dict[str, Any]) -> None:
            self.observer.on_metrics(metrics)
            if on_metrics is not None:
                on_metrics(metrics)

        return both

    def _restart(self, rs: RunningSource) -> None:
        fresh = start_query(
            self.spark, self.settings, rs.table, self.tables, self.contract, self.hooks, self.on_metrics, self.stages
        )
        rs.query, rs.restarts = fresh.query, rs.restarts + 1
        self.observer.attach(rs.table.settings.source_name, rs.query, restarts=rs.restarts)

    def _explain(self, err: BaseException, rs: RunningSource) -> GatewatchError:
        """The named error of a failed query: a damaged checkpoint with where to resume, a vanished source."""
        failure = explain(err, rs.table.name, rs.checkpoint, self.sources.index(rs.table))
        if isinstance(failure, CheckpointCorruptError):
            return self._with_resume(failure, rs.table)
        if isinstance(failure, StreamFailedError):
            try:
                check_source(self.spark, rs.table.settings)
            except GatewatchError as gone:
                return gone
            except Exception:  # noqa: BLE001 - the original failure says more
                pass
        return failure

    def _with_resume(self, err: CheckpointCorruptError, table: SourceTable) -> CheckpointCorruptError:
        """``err`` naming the first source version not yet in the outputs (``latest`` when that is still to come)."""
        try:
            version: int | str | None
            version, partial = resume_version(self.spark, self.tables, table)
            newest = latest_commit(self.spark, table)
            if version is not None and newest is not None and version > newest[0]:
                version = "latest"
        except Exception:  # noqa: BLE001 - the message then says what to look for
            version, partial = None, False
        return CheckpointCorruptError(err.checkpoint, err.detail, self.sources.index(table), version, partial)

    def wait(self, poll_s: float = 1.0) -> None:
        """Wait until every query has ended; restart a query whose source gained a column.

        A failed query is logged with its source and the others go on. Once
        none is left running, the first failure is raised (exit code 1).
        """
        pending = list(self.running)
        try:
            self._wait(pending, poll_s)
        finally:
            if not any(rs.query.isActive for rs in self.running):
                self._close_listener()
                if self.alerting is not None:
                    self.alerting.close()
        if self.failures:
            raise next(iter(self.failures.values()))

    def _wait(self, pending: list[RunningSource], poll_s: float) -> None:
        while pending:
            for rs in list(pending):
                try:
                    finished = rs.query.awaitTermination(poll_s)
                except Exception as err:  # noqa: BLE001 - the query failed
                    if any(k in str(err) for k in SCHEMA_CHANGED) and _restartable(rs):
                        log.warning("source_schema_changed_restarting", source=rs.table.name)
                        self._restart(rs)
                        continue
                    failure = self._explain(err, rs)
                    log.error("query_failed", source=rs.table.name, error=str(failure))
                    self.failures[rs.table.name] = failure
                    self.observer.finish(rs.table.settings.source_name, "failed", str(failure), rs.query)
                    pending.remove(rs)
                    continue
                if finished:
                    self.observer.finish(rs.table.settings.source_name, "stopped", query=rs.query)
                    pending.remove(rs)

    def stop(self) -> None:
        """Stop every query (the current micro-batch completes first)."""
        for rs in self.running:
            if rs.query.isActive:
                rs.query.stop()
                self.observer.finish(rs.table.settings.source_name, "stopped", query=rs.query)
        self._close_listener()
        if self.alerting is not None:
            self.alerting.close()

    def _close_listener(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            self.spark.streams.removeListener(listener)
