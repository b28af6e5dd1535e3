"""The streaming job: one query per group of sources, one foreachBatch each, all writing the same outputs.

The sources without a ``group`` share one query (Spark unions their change
feeds and keeps each one's offsets in the query's checkpoint), so a trigger
pays a micro-batch's fixed cost once, however many endpoints the job tails.
One more query keeps the event tables up with requests (``streams.events``).

Over Spark Connect (serverless, standard access mode, ``--remote``) each
batch runs in a Python process of the server: the batch function gets only
what it needs to write (the tables, the contract), never the job's objects.
The job's own work follows the queries from its listener, which runs here:
the progress lines and status file as on classic Spark, the live display
fed from each batch's input rows, and the alerting evaluated after each
batch with rows (``Alerting.evaluate``) instead of inside it.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from gatewatch.errors import (
    CheckpointCorruptError,
    CheckpointLayoutError,
    GatewatchError,
    SourceReplacedError,
    SourcesChangedError,
    StreamFailedError,
)
from gatewatch.settings import Settings, SourceSettings
from gatewatch.streams import outputs as out
from gatewatch.streams.logs import error_summary
from gatewatch.quarantine.contract import load_contract_soon
from gatewatch.streams.parsers import load_parser_modules
from gatewatch.streams.batch import BatchContext, BatchHook, BatchStage, handle_batch
from gatewatch.streams.observe import Observer, ProgressListener, latest_commit, source_index
from gatewatch.streams.events import start_events_query, starting_version
from gatewatch.streams.recovery import damaged_file, replaced_source, resume_version
from gatewatch.alerts.sinks.base import Sink
from gatewatch.streams.source import QueryGroup, SourceTable, check_source, has_offsets, query_groups, read_change_feeds
from gatewatch.streams.spark import compact_own_files, is_connect, start_writer

log = structlog.get_logger("gatewatch.job")

SCHEMA_CHANGED = ("DELTA_SCHEMA_CHANGED", "DELTA_STREAMING_METADATA_EVOLUTION", "schema has changed")
SOURCES_CHANGED = "sources in the checkpoint offsets and now there are"
"""Spark's words when a query's sources differ from its checkpoint's."""
MAX_SCHEMA_RESTARTS = 5


@dataclass
class RunningQuery:
    """A started query and the sources it reads."""

    group: QueryGroup
    query: StreamingQuery
    restarts: int = 0

    @property
    def checkpoint(self) -> str:
        """The query's checkpoint folder."""
        return self.group.checkpoint

    @property
    def table(self) -> SourceTable:
        """The query's first source (its only one, unless it reads a group)."""
        return self.group.tables[0]


def checkpoint_for(settings: Settings, source: SourceSettings) -> str:
    """The checkpoint folder of the query that reads ``source``."""
    tables = [SourceTable(settings=s, kind="gateway", is_path=False) for s in settings.sources]
    for group in query_groups(tables, settings.checkpoint_root):
        if any(t.settings == source for t in group.tables):
            return group.checkpoint
    raise KeyError(source.table)


def check_layout(groups: Sequence[QueryGroup], checkpoint_root: str) -> None:
    """Refuse to read a source in a new query of several when it has a checkpoint of its own.

    Raises:
        CheckpointLayoutError: naming the source, its own checkpoint and the fix.
    """
    root = checkpoint_root.rstrip("/")
    for group in groups:
        if len(group.tables) < 2 or has_offsets(group.checkpoint):
            continue
        for index, table in zip(group.indexes, group.tables):
            own = f"{root}/{table.settings.source_name}"
            if own != group.checkpoint and has_offsets(own):
                raise CheckpointLayoutError(table.name, index, own, group.name, group.checkpoint)


def alerting_enabled(settings: Settings) -> bool:
    """Alerting runs when it is enabled and there is at least one rule."""
    return settings.alerts.enabled and bool(settings.alerts.rules)


def explain(err: BaseException, source: str, checkpoint: str, index: int = 0) -> GatewatchError:
    """Turn a streaming failure into the named error a user can act on.

    ``index`` is the source's position in ``sources`` (the fix names its key).
    """
    text = str(err)
    if SOURCES_CHANGED in text:
        detail = re.search(r"There are \[?(\d+)\]? sources in the checkpoint offsets and now there are \[?(\d+)\]?", text)
        what = f"it read {detail.group(1)}, the config now gives {detail.group(2)}" if detail else "Spark keeps one offset per source"
        return SourcesChangedError(source, checkpoint, what)
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
    group: QueryGroup,
    tables: dict[str, out.Table],
    contract: Any | None,
    hooks: tuple[BatchHook, ...] = (),
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    stages: tuple[BatchStage, ...] = (),
) -> RunningQuery:
    """Start the streaming query of one group of sources.

    Over Spark Connect the batch function runs in the server's Python
    process: ``hooks``, ``on_metrics`` and ``stages``, which live in this
    one, are refused (the ``Job`` follows the query from its listener instead).
    """
    if is_connect(spark) and (hooks or on_metrics or stages):
        raise ValueError("over Spark Connect a batch runs in the server's Python process: no hooks, "
                         "on_metrics or stages (see Job)")
    ctx = BatchContext(
        source=group.name,
        app_id=out.checkpoint_app_id(group.checkpoint),
        requests=tables["requests"],
        quarantine=tables["quarantine"],
        contract=contract,
        hooks=hooks,
        stages=stages,
        on_metrics=on_metrics,
        source_names=group.source_names,
        token_events=tables.get("token_events"),
        safety_events=tables.get("safety_events"),
        events_inline=settings.trigger.mode == "available_now",
    )
    writer = (
        read_change_feeds(spark, group)
        .writeStream.queryName(f"gatewatch-{group.name}")
        .option("checkpointLocation", group.checkpoint)
        .foreachBatch(functools.partial(_run_batch, ctx))
    )
    if settings.trigger.mode == "available_now":
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=settings.trigger.interval)
    try:
        query = start_writer(writer, group.name)
    except Exception as err:  # noqa: BLE001 - translated into a named error
        raise explain(err, _label(group), group.checkpoint, group.indexes[0]) from None
    for table in group.tables:
        log.info("query_started", source=table.name, kind=table.kind, query=group.name, checkpoint=group.checkpoint,
                 query_id=str(query.id))
    return RunningQuery(group=group, query=query)


def _label(group: QueryGroup) -> str:
    """How an error names a query's source: the table, or the group of several."""
    return group.tables[0].name if len(group.tables) == 1 else group.name


def _restartable(rq: RunningQuery) -> bool:
    """Whether a query stopped by a source schema change may restart.

    It may, unless it restarted ``MAX_SCHEMA_RESTARTS`` times in a row
    without reading a row (the schema change then is not one it can follow).
    """
    if any((p.get("numInputRows") or 0) > 0 for p in rq.query.recentProgress):
        rq.restarts = 0
    return rq.restarts < MAX_SCHEMA_RESTARTS


class _Phases:
    """Times steps into a dict: ``with phases("name_s"): ...`` adds the step's seconds under its name."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.began = time.monotonic()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.into[name] = round(self.into.get(name, 0.0) + time.monotonic() - started, 3)


def _run_batch(ctx: BatchContext, batch, batch_id: int) -> None:
    handle_batch(ctx, batch, batch_id)


class Job:
    """All the queries of one gatewatch run.

    One query per group of sources (``source.query_groups``: every
    ungrouped source in one), and one that keeps the event tables up with
    requests. With alerting enabled and rules configured, the job also
    builds an ``Alerting`` (rules checked, alert tables created, state
    loaded), a stage of every batch (it evaluates and sends before the
    batch's writes), and starts its delivery with the queries. ``sinks``
    replaces the sinks built from ``settings.sinks`` (the demo prints to its
    own stream). An ``Observer`` logs a ``progress`` line per source and batch
    and keeps ``<checkpoint_root>/_status.json``.
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
        self.remote = is_connect(spark)
        """The batches run in a Spark Connect server's Python process, not in this one."""
        if self.remote and hooks:
            raise ValueError("batch hooks run in the job's process: not over Spark Connect")
        self.hooks = hooks
        self.user_metrics = on_metrics
        self.phases: dict[str, float] = {}
        """Seconds each step of the job's start took (logged in ``job_ready``)."""
        clock = _Phases(self.phases)
        contract = load_contract_soon(settings)  # read while the sources are checked
        with clock("sources_s"):
            self.sources = [check_source(spark, s) for s in settings.sources]
            self.groups = query_groups(self.sources, settings.checkpoint_root)
            check_layout(self.groups, settings.checkpoint_root)
        self.observer = Observer(settings.checkpoint_root, self.sources, functools.partial(latest_commit, spark))
        self.on_metrics = self._metrics_to(on_metrics)
        self.listener: ProgressListener | None = None
        with clock("contract_s"):
            load_parser_modules(settings)
            self.contract = contract()
        created: set[str] = set()  # tables created empty now: the start need not read them
        with clock("outputs_s"):
            self.tables = out.prepare_outputs(spark, settings, created)
        written = {t.ref for t in self.tables.values()}
        self.alerting = None
        self.stages: tuple[BatchStage, ...] = ()
        if alerting_enabled(settings):
            from gatewatch.alerts.engine import Alerting, alert_tables, ensure_alert_tables

            with clock("alert_tables_s"):
                self.tables.update(alert_tables(settings))
                written.update(t.ref for t in ensure_alert_tables(spark, settings, self.tables, created))
        self._restore_compaction = compact_own_files(spark, settings.spark) if written <= created else None
        """Undoes the session setting made for a job whose tables are all new (``streams.spark.compact_own_files``);
        made before the alerting starts the sessions of its own, which copy it."""
        if alerting_enabled(settings):
            with clock("alerting_s"):
                self.alerting = Alerting(spark, settings, self.tables, sinks=sinks, empty=created)
            self.stages = (self.alerting,)
        with clock("events_start_s"):
            self.events_start = starting_version(spark, settings, self.tables)
        self.running: list[RunningQuery] = []
        self.events: StreamingQuery | None = None
        self.failures: dict[str, GatewatchError] = {}

    @property
    def available_now(self) -> bool:
        """True when the run drains what is there and exits."""
        return self.settings.trigger.mode == "available_now"

    def start(self) -> Job:
        """Start one query per group of sources (and the alert delivery, which first sends what is pending)."""
        clock = _Phases(self.phases)
        if self.alerting is not None:
            with clock("alerts_pending_s"):
                self.alerting.start(evaluate=self.remote)
        self.observer.write()
        self.listener = ProgressListener(self.observer, then=self._followed if self.remote else None)
        try:
            self.spark.streams.addListener(self.listener)
        except Exception as err:  # noqa: BLE001 - without a listener the status still follows each batch
            log.warning("progress_listener_unavailable", error=str(err).splitlines()[0][:200])
            self.listener = None
        if not self.available_now:
            self.events = start_events_query(self.spark, self.settings, self.tables, available_now=False,
                                             start=self.events_start)
        for group in self.groups:
            try:
                rq = self._start_query(group)
            except Exception as err:
                self._close_listener()
                self._stop_events()
                self._restore_session()
                if isinstance(err, (CheckpointCorruptError, SourcesChangedError)):
                    raise self._with_resume(err, group) from None
                raise
            self.running.append(rq)
            self.observer.attach([t.settings.source_name for t in group.tables], rq.query)
        self.phases["queries_start_s"] = round(time.monotonic() - clock.began, 3)
        log.info("job_ready", **self.phases)
        return self

    def _start_query(self, group: QueryGroup) -> RunningQuery:
        if self.remote:  # the batch function gets nothing of this process (see the module docstring)
            return start_query(self.spark, self.settings, group, self.tables, self.contract)
        return start_query(self.spark, self.settings, group, self.tables, self.contract, self.hooks,
                           self.on_metrics, self.stages)

    def _followed(self, progress: dict[str, Any]) -> None:
        """A progress event of a query, over Spark Connect: poke the alerting, feed the live display."""
        queries = {str(rq.query.id): rq for rq in list(self.running)}
        rq = queries.get(str(progress.get("id")))
        if rq is None or not progress.get("numInputRows"):
            return
        if self.alerting is not None:
            self.alerting.poke()
        if self.user_metrics is not None:
            sources = progress.get("sources") or []
            for position, table in enumerate(rq.group.tables):
                index = source_index(progress, table.name, position)
                rows = (sources[index].get("numInputRows") if index < len(sources) else None) or 0
                self.user_metrics({"source": table.settings.source_name, "batch_id": progress.get("batchId"),
                                   "rows": int(rows)})

    def _metrics_to(self, on_metrics: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
        def both(metrics: dict[str, Any]) -> None:
            self.observer.on_metrics(metrics)
            if on_metrics is not None:
                on_metrics(metrics)

        return both

    def _restart(self, rq: RunningQuery) -> None:
        fresh = self._start_query(rq.group)
        rq.query, rq.restarts = fresh.query, rq.restarts + 1
        self.observer.attach([t.settings.source_name for t in rq.group.tables], rq.query, restarts=rq.restarts)

    def _explain(self, err: BaseException, rq: RunningQuery) -> GatewatchError:
        """The named error of a failed query: a damaged checkpoint with where to resume, a vanished source."""
        group = rq.group
        failure = explain(err, _label(group), group.checkpoint, group.indexes[0])
        if isinstance(failure, SourceReplacedError) and len(group.tables) > 1:
            replaced = replaced_source(self.spark, group)
            failure = SourcesChangedError(
                group.name, group.checkpoint,
                f"source '{group.tables[replaced].name if replaced is not None else '?'}' was dropped and recreated")
        if isinstance(failure, (CheckpointCorruptError, SourcesChangedError)):
            return self._with_resume(failure, group)
        if isinstance(failure, StreamFailedError):
            for table in group.tables:
                try:
                    check_source(self.spark, table.settings)
                except GatewatchError as gone:
                    return gone
                except Exception:  # noqa: BLE001 - the original failure says more
                    pass
        return failure

    def _with_resume(self, err: GatewatchError, group: QueryGroup) -> GatewatchError:
        """``err`` naming where each source of the query resumes on a new checkpoint (``latest`` when still to come)."""
        resumes = []
        for index, table in zip(group.indexes, group.tables):
            try:
                version: int | str | None
                version, partial = resume_version(self.spark, self.tables, table)
                newest = latest_commit(self.spark, table)
                if version is not None and newest is not None and version > newest[0]:
                    version = "latest"
                if version is None and table.settings.starting_version != "earliest":
                    version = table.settings.starting_version
            except Exception:  # noqa: BLE001 - the message then says what to look for
                version, partial = None, False
            resumes.append((index, version, partial))
        if isinstance(err, SourcesChangedError):
            detail = str(err).split(" (", 1)[1].split(").", 1)[0] if " (" in str(err) else "its sources changed"
            return SourcesChangedError(err.query, err.checkpoint, detail, tuple(resumes))
        assert isinstance(err, CheckpointCorruptError)
        first, *more = resumes
        return CheckpointCorruptError(err.checkpoint, err.detail, first[0], first[1], first[2], tuple(more))

    def wait(self, poll_s: float = 1.0) -> None:
        """Wait until every query has ended; restart a query whose source gained a column.

        A failed query is logged with its sources and the others go on. Once
        none is left running (with ``available_now``, the events query then
        brings the event tables up to date), the first failure is raised
        (exit code 1).
        """
        pending = list(self.running)
        try:
            self._wait(pending, poll_s)
            if self.available_now and not self.failures:
                began = time.monotonic()
                self.events = start_events_query(self.spark, self.settings, self.tables, available_now=True,
                                                 start=self.events_start)
                self.events.awaitTermination()
                log.info("events_caught_up", duration_s=round(time.monotonic() - began, 3))
            if self.remote and self.alerting is not None and not self.failures:
                self.alerting.evaluate()  # the last batches' rows
        finally:
            if not any(rq.query.isActive for rq in self.running):
                self._close()
        if self.failures:
            raise next(iter(self.failures.values()))

    def _wait(self, pending: list[RunningQuery], poll_s: float) -> None:
        while pending:
            for rq in list(pending):
                names = [t.settings.source_name for t in rq.group.tables]
                try:
                    finished = rq.query.awaitTermination(poll_s)
                except Exception as err:  # noqa: BLE001 - the query failed
                    if any(k in str(err) for k in SCHEMA_CHANGED) and _restartable(rq):
                        log.warning("source_schema_changed_restarting", source=_label(rq.group), query=rq.group.name)
                        self._restart(rq)
                        continue
                    failure = self._explain(err, rq)
                    log.error("query_failed", source=_label(rq.group), query=rq.group.name, error=str(failure))
                    self.failures[rq.group.name] = failure
                    self.observer.finish(names, "failed", str(failure), rq.query)
                    pending.remove(rq)
                    continue
                if finished:
                    self.observer.finish(names, "stopped", query=rq.query)
                    pending.remove(rq)

    def flush_events(self) -> None:
        """Bring the event tables up to what requests hold now (tests and the demo; a running job does it on its cadence)."""
        if self.events is not None and self.events.isActive:
            self.events.processAllAvailable()

    def stop(self) -> None:
        """Stop every query (the current micro-batch completes first)."""
        for rq in self.running:
            if rq.query.isActive:
                rq.query.stop()
                self.observer.finish([t.settings.source_name for t in rq.group.tables], "stopped", query=rq.query)
        self._close()

    def _close(self) -> None:
        """Let go of what the job holds beside its queries: the events query, the listener, the alerting, and the
        session setting made at its start."""
        self._stop_events()
        self._close_listener()
        if self.alerting is not None:
            self.alerting.close()
        self._restore_session()

    def _restore_session(self) -> None:
        restore, self._restore_compaction = self._restore_compaction, None
        if restore is not None:
            restore()

    def _stop_events(self) -> None:
        events, self.events = self.events, None
        if events is not None and events.isActive:
            events.stop()

    def _close_listener(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            self.spark.streams.removeListener(listener)
