"""The token-usage and safety event tables, kept up with requests by a query of their own.

A running job's micro-batch writes requests (and quarantine) only; the
events are derived from requests (``transforms.events``) by one more
streaming query of the job, which reads the requests table's change feed
every ``output.events_interval`` (one commit per event table per interval
instead of two per micro-batch). Inserted requests are appended to the
event tables once per (app id, batch id); requests updated by a MERGE
(their source rows were updated) replace their events by MERGE (merging the
same rows again changes nothing).

With ``available_now`` each micro-batch writes its requests' events itself,
from the rows it holds (reading them back later cost a run of 1M rows 12.8 s
of its 98 s), and marks its requests commit so (``outputs.batch_marker``);
this query skips the changes of marked commits. The job still runs it once
its source queries have ended, for what an earlier running job left to it,
so the events hold every request when the run exits. A batch of it whose
versions (from its checkpoint's offsets) are all marked, or changed no row
(the table's creation, its properties, compaction), reads no change at all:
the history says there is nothing to write (reading 1M requests'
changes only to skip them took 2.3 s).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Any

import structlog
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from gatewatch.schemas import SAFETY_EVENTS, TOKEN_EVENTS
from gatewatch.settings import Settings
from gatewatch.streams import outputs as out
from gatewatch.streams.recovery import batch_offsets
from gatewatch.streams.source import has_offsets
from gatewatch.streams.spark import in_parallel, start_writer
from gatewatch.transforms.events import safety_events, token_events

log = structlog.get_logger("gatewatch.events")

QUERY = "_events"
"""The events query's name under the checkpoint root."""

EVENT_INPUTS: tuple[str, ...] = tuple(dict.fromkeys(
    [f.name for f in TOKEN_EVENTS.fields]
    + [f.name for f in SAFETY_EVENTS.fields if f.name not in ("stage", "category", "severity", "filtered", "detected")]
    + ["safety_flags"]
))
"""The requests columns ``token_events`` and ``safety_events`` read (the flag's fields come from ``safety_flags``)."""

EVENT_ROWS_PER_FILE = 2_000_000
"""An events batch of at most this many requests writes one file per event table (an event is a narrow row,
~50 bytes): several files would be merged again at once by auto compaction, a second write of the same rows."""

CDF = {"delta.enableChangeDataFeed": "true"}
"""The property the requests table needs for the events query to read its changes."""


@dataclass(frozen=True)
class EventsContext:
    """Where the events query writes."""

    app_id: str
    token_events: out.Table
    safety_events: out.Table
    requests: out.Table | None = None
    """The table whose changes the query reads: its commits marked ``events`` are skipped (None: none is)."""
    checkpoint: str | None = None
    """The query's checkpoint: its offsets tell a batch's versions (None: the batch's changes are counted instead)."""
    start: int | None = None
    """The version a new checkpoint starts at (``starting_version``): where its first batch begins."""


def checkpoint(settings: Settings) -> str:
    """The events query's checkpoint: ``<checkpoint_root>/_events``."""
    return f"{settings.checkpoint_root.rstrip('/')}/{QUERY}"


def handle_events_batch(ctx: EventsContext, batch: DataFrame, batch_id: int) -> dict[str, Any]:
    """Write the events of one batch of the requests change feed, once.

    Inserted requests append their events; updated ones (``update_postimage``)
    replace theirs by MERGE: token events by request id, safety events by
    request id, stage and category. Only the columns the events read are
    read (``EVENT_INPUTS``); the batch is counted by change type (a count
    reads no column of the rows) and each event table is written by one
    scan of its own, the two in parallel. A batch whose versions
    (``batch_versions``) were all marked or changed no row reads nothing.
    """
    started = time.monotonic()
    spark = batch.sparkSession
    span = set(batch_versions(ctx, batch_id) or ()) if ctx.requests is not None else set()
    marked = out.versions_with_events(spark, ctx.requests, span, or_no_rows=True) if span else set()
    if span and marked == span:
        metrics = {"batch_id": batch_id, "requests": 0, "skipped_commits": len(span), "read": False,
                   "duration_s": round(time.monotonic() - started, 3)}
        log.info("events_batch", **metrics)
        return metrics
    changes = batch.groupBy("_change_type", "_commit_version").count().collect()
    versions = {int(r["_commit_version"]) for r in changes if r["_change_type"] == "insert"}
    written = marked & versions  # the versions in the batch's span were looked up above, any other is now
    if versions - span and ctx.requests is not None:
        written |= out.versions_with_events(spark, ctx.requests, versions - span)
    counts: dict[str, int] = {}
    for r in changes:
        if not (r["_change_type"] == "insert" and r["_commit_version"] in written):
            counts[r["_change_type"]] = counts.get(r["_change_type"], 0) + r["count"]
    counted = time.monotonic()
    rows = batch.where(F.col("_change_type").isin("insert", "update_postimage"))
    if written:  # their micro-batches wrote these requests' events (``streams.batch.events_with_requests``)
        rows = rows.where(~F.col("_commit_version").isin(*sorted(written)))
    rows = rows.select(*EVENT_INPUTS)
    tokens, safety = rows.transform(token_events), rows.transform(safety_events)
    if counts.get("update_postimage"):  # merging the same rows twice changes nothing: a retried batch is safe
        _merge(ctx.token_events, tokens, ("databricks_request_id",))
        _merge(ctx.safety_events, safety.dropDuplicates(["databricks_request_id", "stage", "category"]),
               ("databricks_request_id", "stage", "category"))
    elif counts.get("insert"):
        in_parallel(
            spark,
            functools.partial(out.append, tokens, ctx.token_events, ctx.app_id, batch_id, counts["insert"],
                              EVENT_ROWS_PER_FILE),
            functools.partial(out.append, safety, ctx.safety_events, ctx.app_id, batch_id, counts["insert"],
                              EVENT_ROWS_PER_FILE),
        )
    metrics = {"batch_id": batch_id, "requests": counts.get("insert", 0) + counts.get("update_postimage", 0),
               "skipped_commits": len(written), "read": True,
               "duration_s": round(time.monotonic() - started, 3), "count_s": round(counted - started, 3),
               "write_s": round(time.monotonic() - counted, 3)}
    log.info("events_batch", **metrics)
    return metrics


def batch_versions(ctx: EventsContext, batch_id: int) -> range | None:
    """The requests versions batch ``batch_id`` of the events query may hold changes of (None: not known).

    From the query's checkpoint: the batch's end offset (``offsets/<batch_id>``)
    and the one before it (or, for batch 0, the version a new checkpoint
    starts at). A Delta offset names a version and a file index in it
    (``-1``: none of that version read yet), so the range runs from the
    version the batch starts in to the last one it reads (at least the
    versions it holds). An offset inside an initial snapshot, or one that
    cannot be read, gives None.
    """
    if ctx.checkpoint is None:
        return None
    end = batch_offsets(ctx.checkpoint, batch_id)
    if batch_id > 0:
        before = batch_offsets(ctx.checkpoint, batch_id - 1)
        first = _version(before[0]) if before and len(before) == 1 else None
    else:
        first = ctx.start
    if first is None or not end or len(end) != 1 or _version(end[0]) is None:
        return None
    last = end[0]["reservoirVersion"] - (1 if end[0].get("index") == -1 else 0)
    return range(first, last + 1)


def _version(offset: dict) -> int | None:
    """The version a Delta source offset names, unless it lies inside an initial snapshot (or is not Delta's)."""
    version = offset.get("reservoirVersion")
    if not isinstance(version, int) or offset.get("isStartingVersion") is not False:
        return None
    return version


def _merge(table: out.Table, rows: DataFrame, keys: tuple[str, ...]) -> None:
    table.merge(rows, " AND ".join(f"t.{k} <=> s.{k}" for k in keys))


def _run(ctx: EventsContext, batch: DataFrame, batch_id: int) -> None:
    handle_events_batch(ctx, batch, batch_id)


def starting_version(spark: SparkSession, settings: Settings, tables: dict[str, out.Table]) -> int | None:
    """Where a new events checkpoint starts: the requests table's version now (None: the checkpoint decides).

    Taken when the job starts, before its queries write: the requests
    written before hold their events already, those written after are read.
    """
    if has_offsets(checkpoint(settings)):
        return None
    return tables["requests"].latest_version(spark)


def events_context(settings: Settings, tables: dict[str, out.Table]) -> EventsContext:
    """Where the events query writes, with the app id kept in its checkpoint."""
    return EventsContext(app_id=out.checkpoint_app_id(checkpoint(settings)), token_events=tables["token_events"],
                         safety_events=tables["safety_events"], requests=tables["requests"])


def query_context(settings: Settings, tables: dict[str, out.Table], start: int | None) -> EventsContext:
    """The context of the running query: ``events_context`` with its checkpoint's offsets to read."""
    return dataclasses.replace(events_context(settings, tables), checkpoint=checkpoint(settings), start=start)


def start_events_query(spark: SparkSession, settings: Settings, tables: dict[str, out.Table], *,
                       available_now: bool, start: int | None) -> StreamingQuery:
    """Start the query that derives the event tables from the requests table's change feed.

    ``start`` is ``starting_version``'s answer, taken when the job started.
    """
    where = checkpoint(settings)
    requests = tables["requests"]
    reader = spark.readStream.format("delta").option("readChangeFeed", "true")
    if start is not None:
        reader = reader.option("startingVersion", str(start))
    feed = reader.load(requests.ref) if requests.is_path else reader.table(requests.ref)
    ctx = query_context(settings, tables, start)
    writer = (feed.writeStream.queryName("gatewatch-events").option("checkpointLocation", where)
              .foreachBatch(functools.partial(_run, ctx)))
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=settings.output.events_interval)
    query = start_writer(writer, QUERY)
    log.info("events_query_started", checkpoint=where, interval=None if available_now else settings.output.events_interval)
    return query
