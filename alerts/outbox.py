"""Delivering alert transitions: the outbox, each sink's send, the attempt log, Alertmanager re-sends.

The outbox (a Delta table) holds one row per transition and sink, written
``pending`` by the batch that found the transition. A delivery pass sends
pending rows in order, records every attempt in the deliveries table and
marks rows ``delivered``, or ``failed`` when the sink answered that the
request can never succeed (a 400). A sink that fails otherwise is taken as
down for the rest of the pass: its rows stay pending, in order, for a later
pass. Then firing alerts are re-sent to each Alertmanager sink when due
(Alertmanager resolves an alert that is not re-sent).

Delivery is at least once: a crash between a send and the MERGE that marks
it sends it again on the next pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from gatewatch.schemas import ALERT_DELIVERIES, ALERT_OUTBOX
from gatewatch.streams import outputs as out
from gatewatch.streams.delta_sql import update_set
from gatewatch.alerts.sinks import AlertmanagerSink, Sink
from gatewatch.alerts.sinks.model import Alert
from gatewatch.alerts import decide as D
from gatewatch.alerts import windows as A

log = structlog.get_logger("gatewatch.alerting")


@dataclass(frozen=True)
class OutboxEntry:
    """One transition for one sink, as the outbox holds it."""

    event_id: str
    sink: str
    dedup_key: str
    rule: str
    status: str
    alert: str
    created_at: datetime
    attempts: int = 0

    def row(self, update: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The outbox row: pending, or as a delivery attempt left it (``update``, a ``Sent.updates`` value)."""
        row = {"event_id": self.event_id, "sink": self.sink, "dedup_key": self.dedup_key, "rule": self.rule,
               "status": self.status, "alert": self.alert, "created_at": self.created_at,
               "delivery_status": "pending", "attempts": self.attempts, "delivered_at": None, "last_error": None}
        if update is not None:
            row.update({k: update[k] for k in ("delivery_status", "attempts", "delivered_at", "last_error")})
        return row


def no_deliveries() -> dict[str, int]:
    """The counts of a delivery round that did nothing: ``delivered``, ``failed``, ``pending``, ``resent``."""
    return {"delivered": 0, "failed": 0, "pending": 0, "resent": 0}


@dataclass
class Sent:
    """What one round of sends did: counts, the attempt records, the outbox status of each entry tried."""

    counts: dict[str, int]
    records: list[dict[str, Any]]
    updates: dict[tuple[str, str], dict[str, Any]]
    """By ``(event_id, sink)``: ``delivery_status``, ``attempts``, ``delivered_at``, ``last_error``."""


class Courier:
    """Sends outbox entries and Alertmanager re-sends, and records what happened.

    Not thread-safe: the caller (``Alerting``) holds its lock around every call.

    Args:
        tables: ``outbox`` and ``deliveries`` by role.
        sinks: the sinks by name.
        targets: the sink names a rule's alerts go to.
        clock: the wall clock of attempts.
    """

    def __init__(self, tables: Mapping[str, out.Table], sinks: Mapping[str, Sink],
                 targets: Callable[[str], list[str]], clock: Callable[[], datetime]) -> None:
        self.tables = tables
        self.sinks = sinks
        self.targets = targets
        self.clock = clock
        self.last_sent: dict[tuple[str, str], datetime] = {}
        self.pending: int | None = None  # unknown until a pass reads the outbox

    def load_last_sent(self, spark: SparkSession, firing: Mapping[str, Alert]) -> None:
        """When each firing alert last reached each sink, from the deliveries table (for re-sends)."""
        if not firing or not any(isinstance(s, AlertmanagerSink) for s in self.sinks.values()):
            return
        rows = (
            self.tables["deliveries"].read(spark)
            .where(F.col("ok") & (F.col("status") == "firing") & F.col("dedup_key").isin(*firing))
            .groupBy("dedup_key", "sink").agg(F.max(F.unix_micros("at")).alias("at"))
            .collect()
        )
        self.last_sent = {(r["dedup_key"], r["sink"]): A.from_micros(r["at"]) for r in rows}

    def forget(self, dedup_key: str) -> None:
        """Drop the re-send bookkeeping of an alert that resolved."""
        for key in [k for k in self.last_sent if k[0] == dedup_key]:
            del self.last_sent[key]

    def _read_pending(self, spark: SparkSession) -> list[OutboxEntry]:
        if self.pending is None and not self.tables["outbox"].holds_rows(spark):  # not read yet: a new outbox
            return []
        rows = (
            self.tables["outbox"].read(spark).where(F.col("delivery_status") == "pending")
            .orderBy("created_at", "event_id", "sink").collect()
        )
        return [
            OutboxEntry(r["event_id"], r["sink"], r["dedup_key"], r["rule"], r["status"], r["alert"],
                        r["created_at"], r["attempts"] or 0)
            for r in rows
        ]

    def deliver(self, spark: SparkSession, firing: Mapping[str, Alert],
                fresh: Sequence[OutboxEntry] = ()) -> dict[str, int]:
        """Send pending outbox entries in order, then re-send ``firing`` alerts to Alertmanager when due.

        Args:
            spark: the session to read and write with.
            firing: the firing alerts by dedup key.
            fresh: entries just appended; when nothing older is pending, they
                are sent without reading the outbox back.

        Returns:
            Counts: ``delivered``, ``failed`` (permanently), ``pending`` (left), ``resent``.
        """
        try:
            return self._deliver(spark, firing, list(fresh))
        except Exception:
            self.pending = None  # read the outbox back next time
            raise

    def _deliver(self, spark: SparkSession, firing: Mapping[str, Alert], fresh: list[OutboxEntry]) -> dict[str, int]:
        entries = fresh if self.pending == 0 else self._read_pending(spark)
        sent = self.send(entries, firing)
        self._write_results(spark, sent.records, list(sent.updates.values()))
        self.pending = sent.counts["pending"]
        return sent.counts

    def send(self, entries: Sequence[OutboxEntry], firing: Mapping[str, Alert]) -> Sent:
        """Send ``entries`` in order, then re-send ``firing`` alerts to Alertmanager when due; read and write nothing.

        A sink that fails (not permanently) is taken as down for the rest of
        the round: its later entries are left pending without a try.
        """
        down: set[str] = set()
        records: list[dict[str, Any]] = []
        updates: dict[tuple[str, str], dict[str, Any]] = {}
        left: set[tuple[str, str]] = set()
        counts = no_deliveries()
        for entry in entries:
            sink = self.sinks.get(entry.sink)
            if sink is None or entry.sink in down:
                if sink is None:
                    log.warning("alert_sink_not_configured", sink=entry.sink, dedup_key=entry.dedup_key)
                left.add((entry.dedup_key, entry.sink))
                counts["pending"] += 1
                continue
            alert = Alert.from_json(entry.alert)
            result = sink.deliver(alert)
            at = self.clock()
            attempt = entry.attempts + 1
            records.append(self._record(entry.event_id, alert, result, "outbox", attempt, at))
            if result.ok:
                state, counts["delivered"] = "delivered", counts["delivered"] + 1
                if alert.firing:
                    self.last_sent[(alert.dedup_key, entry.sink)] = at
            elif result.permanent:
                state, counts["failed"] = "failed", counts["failed"] + 1
            else:
                state, counts["pending"] = "pending", counts["pending"] + 1
                down.add(entry.sink)
                left.add((entry.dedup_key, entry.sink))
            updates[(entry.event_id, entry.sink)] = {
                "event_id": entry.event_id, "sink": entry.sink, "delivery_status": state, "attempts": attempt,
                "delivered_at": at if result.ok else None, "last_error": result.error}
        moved = {entry.dedup_key for entry in entries}  # a transition in this round: no re-send on top
        for alert in list(firing.values()):
            for name in self.targets(alert.rule):
                sink = self.sinks.get(name)
                sent_now = (alert.dedup_key, name) in left or alert.dedup_key in moved
                if not isinstance(sink, AlertmanagerSink) or name in down or sent_now:
                    continue
                now = self.clock()
                if not sink.needs_resend(alert, self.last_sent.get((alert.dedup_key, name)), now):
                    continue
                result = sink.deliver(alert)
                records.append(self._record(D.event_id(alert), alert, result, "resend", 0, now))
                if result.ok:
                    self.last_sent[(alert.dedup_key, name)] = now
                    counts["resent"] += 1
                else:
                    down.add(name)
        return Sent(counts, records, updates)

    @staticmethod
    def _record(event_id: str, alert: Alert, result, kind: str, attempt: int, at: datetime) -> dict[str, Any]:
        return {"event_id": event_id, "dedup_key": alert.dedup_key, "sink": result.sink, "status": alert.status,
                "kind": kind, "attempt": attempt, "ok": result.ok, "permanent": result.permanent,
                "requests": result.attempts, "http_status": result.http_status, "error": result.error,
                "response_body": result.response_body, "duration_ms": float(result.duration_ms), "at": at}

    def record(self, spark: SparkSession, records: Sequence[dict[str, Any]]) -> None:
        """Append delivery attempt records to the deliveries table."""
        if records:
            out.append_plain(out.local_rows(spark, records, ALERT_DELIVERIES), self.tables["deliveries"])

    def _write_results(self, spark: SparkSession, records: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
        self.record(spark, records)
        if updates:
            schema = StructType([ALERT_OUTBOX[c] for c in ("event_id", "sink", "delivery_status", "attempts",
                                                           "delivered_at", "last_error")])
            self.tables["outbox"].merge(
                out.local_rows(spark, updates, schema), "t.event_id = s.event_id AND t.sink = s.sink",
                matched=update_set(("delivery_status", "attempts", "delivered_at", "last_error")), not_matched=None)

    def due(self, firing: Mapping[str, Alert]) -> bool:
        """Whether a delivery pass has work: pending entries, or a firing alert due for an Alertmanager re-send."""
        if self.pending != 0:
            return True
        now = self.clock()
        return any(
            isinstance(sink := self.sinks.get(name), AlertmanagerSink)
            and sink.needs_resend(alert, self.last_sent.get((alert.dedup_key, name)), now)
            for alert in list(firing.values())
            for name in self.targets(alert.rule)
        )
