"""Alerting inside the job: evaluate the rules after each micro-batch, keep alert state, deliver through an outbox.

One ``Alerting`` per job, shared by the queries of all its sources (a lock
serialises them). After a batch's outputs are written, its ``hook``:

1. moves the event-time clock to the latest ``request_time`` processed;
2. evaluates every rule over its stream table (only the rows its windows
   need) and compares the result with the firing alerts (``transforms.alerts``);
3. appends each fire/resolve transition to the outbox, one row per sink,
   ``pending`` (an idempotent append under the batch's app id and batch id);
4. delivers pending outbox entries, records every attempt in the deliveries
   table and marks entries ``delivered`` (or ``failed`` when the sink said
   the request can never succeed); a sink that is down keeps its entries
   pending for a later pass. Firing alerts are re-sent to Alertmanager when
   due. A delivery problem is logged and never fails the batch;
5. merges the transitions into the alerts table (one row per dedup key,
   under the batch's idempotent-DML guard).

The outbox append comes before the state MERGE: a batch retried after a
crash between the two recomputes the same transitions, skips the append
(already committed) and completes the MERGE. The state, the event-time clock
and the last send per alert and sink are cached in memory but always loaded
from the tables at start, so a restart neither re-fires nor forgets an alert.

The ``delta`` sink type is the alerts table itself; a ``delta`` sink naming
another ``table`` also gets every transition appended there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from gatewatch.errors import ConfigError
from gatewatch.schemas import ALERT_DELIVERIES, ALERT_OUTBOX, ALERTS
from gatewatch.settings import AlertRule, RatioCondition, Settings
from gatewatch.streams import outputs as out
from gatewatch.streams.batch import BatchContext, utc_now
from gatewatch.streams.sinks import AlertmanagerSink, Sink, build_sinks
from gatewatch.streams.sinks.config import DeltaSinkSettings
from gatewatch.streams.sinks.model import Alert
from gatewatch.transforms import alerts as A

log = structlog.get_logger("gatewatch.alerting")

STATE_TABLES = {"alerts": ALERTS, "outbox": ALERT_OUTBOX, "deliveries": ALERT_DELIVERIES}


def alert_tables(settings: Settings) -> dict[str, out.Table]:
    """The alerts, outbox and deliveries tables of ``settings.output``, by role."""
    o = settings.output
    return {
        "alerts": out.table(o, o.alerts_table),
        "outbox": out.table(o, o.outbox_table),
        "deliveries": out.table(o, o.deliveries_table),
    }


def _delta_sink_tables(settings: Settings, alerts: out.Table) -> list[out.Table]:
    from gatewatch.streams.source import is_path

    found = []
    for sink in settings.sinks:
        if isinstance(sink, DeltaSinkSettings) and sink.table:
            table = out.Table(ref=sink.table, is_path=is_path(sink.table))
            if table.ref != alerts.ref:
                found.append(table)
    return found


def stream_frame(spark: SparkSession, tables: Mapping[str, out.Table], stream: str) -> DataFrame:
    """The table (or, for ``rows``, the union of requests and quarantine) a rule's stream reads."""
    if stream == "rows":
        return A.rows_stream(tables["requests"].read(spark), tables["quarantine"].read(spark))
    return tables[stream].read(spark)


def check_rules(spark: SparkSession, rules: Sequence[AlertRule], tables: Mapping[str, out.Table]) -> None:
    """Analyse every rule's SQL (``where``, ``condition.numerator``) against its stream's columns.

    Raises:
        ConfigError: naming the rule's key (``alerts.rules.1.where``) and Spark's reason.
    """
    for i, rule in enumerate(rules):
        frame = stream_frame(spark, tables, rule.stream).limit(0)
        checks = [("where", rule.where)]
        if isinstance(rule.condition, RatioCondition):
            checks.append(("condition.numerator", rule.condition.numerator))
        for key, text in checks:
            if text is None:
                continue
            try:
                frame.where(F.expr(text)).schema  # noqa: B018 - analysis is the check
            except PySparkException as err:
                reason = str(err).strip().splitlines()[0][:300]
                raise ConfigError(f"alerts.rules.{i}.{key}",
                                  f"a Spark SQL condition over the columns of the {rule.stream} stream", reason) from None


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

    def row(self) -> dict[str, Any]:
        """The outbox row (pending)."""
        return {"event_id": self.event_id, "sink": self.sink, "dedup_key": self.dedup_key, "rule": self.rule,
                "status": self.status, "alert": self.alert, "created_at": self.created_at,
                "delivery_status": "pending", "attempts": self.attempts, "delivered_at": None, "last_error": None}


def _alert_row(alert: Alert, now: datetime) -> dict[str, Any]:
    return {
        "dedup_key": alert.dedup_key, "rule": alert.rule, "group": dict(alert.group), "status": alert.status,
        "severity": alert.severity, "summary": alert.summary, "value": alert.value, "threshold": alert.threshold,
        "counts": dict(alert.counts), "window_start": alert.window_start, "window_end": alert.window_end,
        "started_at": alert.started_at, "ended_at": alert.ended_at, "updated_at": now,
        "event_id": A.event_id(alert), "alert": alert.to_json(),
    }


class Alerting:
    """The alerting of one job: rules, state, outbox, delivery (see the module docstring).

    Args:
        spark: the job's session (start-up reads, the background deliveries).
        settings: rules, sinks and output tables.
        tables: the job's tables by role: ``requests``, ``quarantine``,
            ``token_events``, ``safety_events``, ``alerts``, ``outbox``, ``deliveries``.
        sinks: the sinks to deliver to (default: ``build_sinks(settings.sinks)``).
        clock: the wall clock of transitions and deliveries.
    """

    def __init__(self, spark: SparkSession, settings: Settings, tables: Mapping[str, out.Table], *,
                 sinks: Sequence[Sink] | None = None, clock=utc_now) -> None:
        self.spark = spark
        self.settings = settings
        self.rules = {r.name: r for r in settings.alerts.rules}
        self.tables = dict(tables)
        self.clock = clock
        check_rules(spark, settings.alerts.rules, self.tables)
        self.sinks: dict[str, Sink] = {s.name: s for s in (build_sinks(settings.sinks) if sinks is None else sinks)}
        self.delta_sinks = {s.name for s in settings.sinks if isinstance(s, DeltaSinkSettings)}
        self.extra_tables = _delta_sink_tables(settings, self.tables["alerts"])
        self.lock = threading.RLock()
        self.firing: dict[str, Alert] = self._load_firing()
        self.max_us: int | None = self._load_clock()
        self.last_sent: dict[tuple[str, str], datetime] = self._load_last_sent()
        self.pending: int | None = None  # unknown until a pass reads the outbox
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # ------------------------------------------------------------------ start-up state

    def _load_firing(self) -> dict[str, Alert]:
        rows = self.tables["alerts"].read(self.spark).where(F.col("status") == "firing").select("alert").collect()
        alerts = [Alert.from_json(r["alert"]) for r in rows]
        return {a.dedup_key: a for a in alerts}

    def _load_clock(self) -> int | None:
        times = self.tables["requests"].read(self.spark).select("request_time").unionByName(
            self.tables["quarantine"].read(self.spark).select("request_time")
        )
        return times.agg(F.max(F.unix_micros("request_time"))).first()[0]

    def _load_last_sent(self) -> dict[tuple[str, str], datetime]:
        if not self.firing or not any(isinstance(s, AlertmanagerSink) for s in self.sinks.values()):
            return {}
        rows = (
            self.tables["deliveries"].read(self.spark)
            .where(F.col("ok") & (F.col("status") == "firing") & F.col("dedup_key").isin(*self.firing))
            .groupBy("dedup_key", "sink").agg(F.max(F.unix_micros("at")).alias("at"))
            .collect()
        )
        return {(r["dedup_key"], r["sink"]): A.from_micros(r["at"]) for r in rows}

    # ------------------------------------------------------------------ the batch hook

    def hook(self, ctx: BatchContext, parsed: DataFrame, batch_id: int, metrics: dict[str, Any]) -> None:
        """The ``BatchHook``: evaluate, fill the outbox, deliver, merge the state (see the module docstring)."""
        started = time.monotonic()
        spark = parsed.sparkSession
        timings: dict[str, float] = {}

        def lap(name: str) -> None:
            timings[name] = round(time.monotonic() - started - sum(timings.values()), 3)

        if not metrics.get("rows"):  # nothing new: neither the windows nor the clock changed
            metrics["alerts"] = {"fired": 0, "resolved": 0, "firing": len(self.firing)}
            return
        batch_max = parsed.agg(F.max(F.unix_micros("request_time"))).first()[0]
        lap("clock_s")
        with self.lock:
            if batch_max is not None and (self.max_us is None or batch_max > self.max_us):
                self.max_us = batch_max
            now = ctx.clock()
            transitions = self.evaluate(spark, now)
            lap("evaluate_s")
            entries = self.outbox_entries(transitions, now)
            if entries:
                rows = [e.row() for e in entries]
                out.append(spark.createDataFrame(rows, ALERT_OUTBOX), self.tables["outbox"], ctx.app_id, batch_id)
            if transitions and self.extra_tables:
                history = spark.createDataFrame([_alert_row(a, now) for a in transitions], ALERTS)
                for table in self.extra_tables:
                    out.append(history, table, ctx.app_id, batch_id)
            lap("outbox_s")
            delivered = self.deliver(spark, fresh=entries, safe=True)
            lap("deliver_s")
            if transitions:
                self.merge_state(spark, transitions, now, ctx.app_id, batch_id)
            lap("merge_s")
        metrics["alerts"] = {
            "fired": sum(a.firing for a in transitions),
            "resolved": sum(not a.firing for a in transitions),
            "firing": len(self.firing),
            **delivered,
            "seconds": round(time.monotonic() - started, 3),
            **timings,
        }

    def evaluate(self, spark: SparkSession, now: datetime) -> list[Alert]:
        """The transitions of every rule at the current event time (one Spark job for all rules)."""
        if self.max_us is None:
            return []
        max_time = A.from_micros(self.max_us)
        frames = [stream_frame(spark, self.tables, r.stream).transform(A.windowed(r, max_time)).transform(A.relevant)
                  for r in self.rules.values()]
        measures: dict[str, list[A.Measure]] = {name: [] for name in self.rules}
        if frames:
            union = frames[0]
            for frame in frames[1:]:
                union = union.unionByName(frame)
            for row in union.collect():
                measures[row["rule"]].append(A.Measure.from_row(row))
        transitions: list[Alert] = []
        for name, rule in self.rules.items():
            firing = {k: a for k, a in self.firing.items() if a.rule == name}
            transitions += A.decide(rule, measures[name], firing, now=now, max_time=max_time)
        for alert in self.firing.values():
            if alert.rule not in self.rules:
                transitions.append(A.resolve(None, alert, None, now=now, max_time=max_time))
        return transitions

    def targets(self, rule_name: str) -> list[str]:
        """The sinks (other than ``delta``) a rule's alerts go to: its own list, or every configured sink."""
        rule = self.rules.get(rule_name)
        names = list(rule.sinks) if rule is not None and rule.sinks else [s.name for s in self.settings.sinks]
        return [n for n in names if n not in self.delta_sinks]

    def outbox_entries(self, transitions: Sequence[Alert], now: datetime) -> list[OutboxEntry]:
        """One pending outbox entry per transition and target sink."""
        return [
            OutboxEntry(A.event_id(a), sink, a.dedup_key, a.rule, a.status, a.to_json(), now)
            for a in transitions
            for sink in self.targets(a.rule)
        ]

    def merge_state(self, spark: SparkSession, transitions: Sequence[Alert], now: datetime, app_id: str,
                    batch_id: int) -> None:
        """Upsert the transitions into the alerts table (once per app id and batch id); update the cache."""
        source = spark.createDataFrame([_alert_row(a, now) for a in transitions], ALERTS)
        with out.idempotent_dml(spark, app_id, batch_id):
            (
                self.tables["alerts"].delta(spark).alias("t")
                .merge(source.alias("s"), "t.dedup_key = s.dedup_key")
                .whenMatchedUpdateAll()
                .whenNotMatchedInsertAll()
                .execute()
            )
        for alert in transitions:
            if alert.firing:
                self.firing[alert.dedup_key] = alert
            else:
                self.firing.pop(alert.dedup_key, None)
                for key in [k for k in self.last_sent if k[0] == alert.dedup_key]:
                    del self.last_sent[key]

    # ------------------------------------------------------------------ delivery

    def _read_pending(self, spark: SparkSession) -> list[OutboxEntry]:
        rows = (
            self.tables["outbox"].read(spark).where(F.col("delivery_status") == "pending")
            .orderBy("created_at", "event_id", "sink").collect()
        )
        return [
            OutboxEntry(r["event_id"], r["sink"], r["dedup_key"], r["rule"], r["status"], r["alert"],
                        r["created_at"], r["attempts"] or 0)
            for r in rows
        ]

    def deliver(self, spark: SparkSession | None = None, fresh: Sequence[OutboxEntry] | None = None, *,
                safe: bool = False) -> dict[str, int]:
        """Send pending outbox entries in order, then re-send firing alerts to Alertmanager when due.

        Args:
            spark: the session to read and write with (default: the job's).
            fresh: entries just appended; when nothing older is pending, they
                are sent without reading the outbox back.
            safe: log a failure to read or record instead of raising (the batch hook).

        Returns:
            Counts: ``delivered``, ``failed`` (permanently), ``pending`` (left), ``resent``.
        """
        spark = spark or self.spark
        with self.lock:
            try:
                return self._deliver(spark, list(fresh or ()))
            except Exception as err:  # noqa: BLE001 - a delivery problem must not stop the stream
                if not safe:
                    raise
                self.pending = None
                log.error("alert_delivery_pass_failed", error=str(err).splitlines()[0][:300])
                return {"delivered": 0, "failed": 0, "pending": -1, "resent": 0}

    def _deliver(self, spark: SparkSession, fresh: list[OutboxEntry]) -> dict[str, int]:
        entries = fresh if self.pending == 0 else self._read_pending(spark)
        down: set[str] = set()
        records: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        left: set[tuple[str, str]] = set()
        counts = {"delivered": 0, "failed": 0, "pending": 0, "resent": 0}
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
            updates.append({"event_id": entry.event_id, "sink": entry.sink, "delivery_status": state,
                            "attempts": attempt, "delivered_at": at if result.ok else None,
                            "last_error": result.error})
        for alert in list(self.firing.values()):
            for name in self.targets(alert.rule):
                sink = self.sinks.get(name)
                if not isinstance(sink, AlertmanagerSink) or name in down or (alert.dedup_key, name) in left:
                    continue
                now = self.clock()
                if not sink.needs_resend(alert, self.last_sent.get((alert.dedup_key, name)), now):
                    continue
                result = sink.deliver(alert)
                records.append(self._record(A.event_id(alert), alert, result, "resend", 0, now))
                if result.ok:
                    self.last_sent[(alert.dedup_key, name)] = now
                    counts["resent"] += 1
                else:
                    down.add(name)
        self._write_results(spark, records, updates)
        self.pending = counts["pending"]
        return counts

    @staticmethod
    def _record(event_id: str, alert: Alert, result, kind: str, attempt: int, at: datetime) -> dict[str, Any]:
        return {"event_id": event_id, "dedup_key": alert.dedup_key, "sink": result.sink, "status": alert.status,
                "kind": kind, "attempt": attempt, "ok": result.ok, "permanent": result.permanent,
                "requests": result.attempts, "http_status": result.http_status, "error": result.error,
                "response_body": result.response_body, "duration_ms": float(result.duration_ms), "at": at}

    def _write_results(self, spark: SparkSession, records: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
        if records:
            _append(spark.createDataFrame(records, ALERT_DELIVERIES), self.tables["deliveries"])
        if updates:
            schema = StructType([ALERT_OUTBOX[c] for c in ("event_id", "sink", "delivery_status", "attempts",
                                                           "delivered_at", "last_error")])
            source = spark.createDataFrame(updates, schema)
            (
                self.tables["outbox"].delta(spark).alias("t")
                .merge(source.alias("s"), "t.event_id = s.event_id AND t.sink = s.sink")
                .whenMatchedUpdate(set={c: f"s.{c}" for c in ("delivery_status", "attempts", "delivered_at",
                                                                "last_error")})
                .execute()
            )

    def due(self) -> bool:
        """Whether a delivery pass has work: pending entries, or a firing alert due for an Alertmanager re-send."""
        if self.pending != 0:
            return True
        now = self.clock()
        return any(
            isinstance(sink := self.sinks.get(name), AlertmanagerSink)
            and sink.needs_resend(alert, self.last_sent.get((alert.dedup_key, name)), now)
            for alert in list(self.firing.values())
            for name in self.targets(alert.rule)
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Deliver what a previous run left pending, then keep delivering between batches in the background."""
        self.deliver(safe=True)
        interval = self.settings.alerts.deliver_interval_s
        if interval > 0 and self._ticker is None:
            session = self.spark.newSession()
            self._ticker = threading.Thread(target=self._tick, args=(session, interval), name="gatewatch-alerts",
                                            daemon=True)
            self._ticker.start()

    def _tick(self, session: SparkSession, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if self.due():
                    self.deliver(session, safe=True)
            except Exception as err:  # noqa: BLE001 - keep the ticker alive
                log.error("alert_delivery_tick_failed", error=str(err).splitlines()[0][:300])

    def close(self) -> None:
        """Stop the background deliveries and close the sinks."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=30)
            self._ticker = None
        for sink in self.sinks.values():
            sink.close()


def _append(df: DataFrame, target: out.Table) -> None:
    """A plain append (delivery records are not tied to a micro-batch)."""
    writer = df.write.format("delta").mode("append")
    writer.save(target.ref) if target.is_path else writer.saveAsTable(target.ref)


def ensure_alert_tables(spark: SparkSession, settings: Settings, tables: Mapping[str, out.Table]) -> None:
    """Create the alerts, outbox and deliveries tables (and any other ``delta`` sink table) if needed."""
    for role, schema in STATE_TABLES.items():
        out.ensure_table(spark, tables[role], schema)
    for table in _delta_sink_tables(settings, tables["alerts"]):
        out.ensure_table(spark, table, ALERTS)
