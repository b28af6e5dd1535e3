"""The alerts table: one row per dedup key, kept up to date in the background and reconciled at start.

The outbox is the durable record of every transition with a sink to go to:
a batch appends it before the batch completes. The alerts table follows:
``StateWriter`` merges transitions into it on its own thread, so a batch
does not wait for that MERGE. A transition reaches the table once whatever
happens: the MERGE only replaces a row with a transition at least as new
(``updated_at``), so merging one twice changes nothing, and ``load_state``
at start takes, for each dedup key, the newest of the table's row and the
key's latest outbox entry, then merges what the table missed. A transition
with no outbox entry (its rule's only sinks are Delta tables) is merged by
its batch instead, before the batch completes.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from gatewatch.schemas import ALERTS
from gatewatch.streams import outputs as out
from gatewatch.streams.logs import error_summary
from gatewatch.alerts.sinks.model import Alert
from gatewatch.alerts import decide as D

log = structlog.get_logger("gatewatch.alerting")

RETRY_S = 5.0
"""How long the writer waits before retrying a MERGE that failed."""


def alert_row(alert: Alert, now: datetime) -> dict[str, Any]:
    """The alerts table row of ``alert`` as of ``now``."""
    return {
        "dedup_key": alert.dedup_key, "rule": alert.rule, "group": dict(alert.group), "status": alert.status,
        "severity": alert.severity, "summary": alert.summary, "value": alert.value, "threshold": alert.threshold,
        "counts": dict(alert.counts), "window_start": alert.window_start, "window_end": alert.window_end,
        "started_at": alert.started_at, "ended_at": alert.ended_at, "updated_at": now,
        "event_id": D.event_id(alert), "alert": alert.to_json(),
    }


def merge_rows(spark: SparkSession, table: out.Table, rows: Sequence[dict[str, Any]],
               created: Collection[str] = ()) -> None:
    """Upsert alert rows by dedup key; a row replaces one no newer than itself (so a repeat changes nothing).

    ``rows`` hold one row per key. Into a table without a row (asked, or
    known from ``created``: ``Table.holds_rows``) they are appended:
    nothing can match, and a MERGE (its join, two jobs and its planning)
    took seconds of a job's first alert. A repeat then merges.
    """
    frame = out.local_rows(spark, rows, ALERTS)
    if not table.holds_rows(spark, created):
        out.append_plain(frame, table)
        return
    table.merge(frame, "t.dedup_key = s.dedup_key", matched_condition="s.updated_at >= t.updated_at")


def load_state(spark: SparkSession, tables: Mapping[str, out.Table], empty: Collection[str] = ()) -> dict[str, Alert]:
    """The firing alerts by dedup key, from the alerts table and the outbox entries it has not caught up with.

    Transitions the table missed (a run stopped before its writer merged
    them) are merged now. A table whose ``ref`` is in ``empty`` (created
    empty at this start) is not read.
    """
    newest = {r["dedup_key"]: (r["updated_at"], r["alert"], True)
              for r in (tables["alerts"].read(spark).select("dedup_key", "updated_at", "alert").collect()
                        if tables["alerts"].holds_rows(spark, empty) else [])}
    latest = (
        tables["outbox"].read(spark)
        .withColumn("_n", F.row_number().over(Window.partitionBy("dedup_key")
                                              .orderBy(F.col("created_at").desc(), F.col("event_id").desc())))
        .where(F.col("_n") == 1)
        .select("dedup_key", "created_at", "alert")
        .collect()
    ) if tables["outbox"].holds_rows(spark, empty) else []
    for r in latest:
        known = newest.get(r["dedup_key"])
        if known is None or r["created_at"] > known[0]:
            newest[r["dedup_key"]] = (r["created_at"], r["alert"], False)
    firing: dict[str, Alert] = {}
    missed: list[dict[str, Any]] = []
    for at, text, in_table in newest.values():
        alert = Alert.from_json(text)
        if alert.firing:
            firing[alert.dedup_key] = alert
        if not in_table:
            missed.append(alert_row(alert, at))
    if missed:
        merge_rows(spark, tables["alerts"], missed)
        log.info("alert_state_caught_up", transitions=len(missed))
    return firing


class StateWriter:
    """Merges transitions into the alerts table on its own thread, in the order they were decided.

    Args:
        spark: the session to merge with.
        table: the alerts table.
        empty: the ``ref`` of each table created empty at this start: into
            the alerts table among them the first write appends without
            asking it (``merge_rows``). Only this writer writes the keys of
            rules with an outbox sink.

    A MERGE that fails is logged and retried after ``RETRY_S``.
    """

    def __init__(self, spark: SparkSession, table: out.Table, empty: Collection[str] = ()) -> None:
        self.spark = spark
        self.table = table
        self._empty = empty
        self._queue: list[dict[str, Any]] = []
        self._busy = False
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="gatewatch-alert-state", daemon=True)
        self._thread.start()

    def put(self, transitions: Sequence[Alert], now: datetime) -> None:
        """Queue transitions decided at ``now`` for the table."""
        if not transitions:
            return
        with self._cond:
            self._queue += [alert_row(a, now) for a in transitions]
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is merged; False when ``timeout`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Merge what is queued (waiting at most ``timeout``), then stop the thread."""
        if not self.flush(timeout):
            log.error("alert_state_not_merged", transitions=len(self._queue))
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if self._stopping and not self._queue:
                    return
                rows, self._queue, self._busy = self._queue, [], True
            latest: dict[str, dict[str, Any]] = {}
            for row in rows:  # in decision order: the last transition of a key wins
                latest[row["dedup_key"]] = row
            created, self._empty = self._empty, ()  # a later write, a retry too, asks the table
            try:
                merge_rows(self.spark, self.table, list(latest.values()), created)
                failed = None
            except Exception as err:  # noqa: BLE001 - retried; the outbox keeps the transitions meanwhile
                failed = err
                log.error("alert_state_merge_failed", error=error_summary(err), retry_in_s=RETRY_S)
            with self._cond:
                if failed is not None and self._stopping:
                    log.error("alert_state_not_merged", transitions=len(rows))  # the outbox has them: see load_state
                    failed = None
                if failed is not None:
                    self._queue = rows + self._queue
                self._busy = False
                self._cond.notify_all()
                if failed is not None:
                    self._cond.wait(RETRY_S)
