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
from datetime import datetime
from typing import Any

import structlog
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from gatewatch.errors import ConfigError
from gatewatch.schemas import ALERT_DELIVERIES, ALERT_OUTBOX, ALERTS
from gatewatch.settings import AlertRule, RatioCondition, Settings
from gatewatch.streams import outputs as out
from gatewatch.streams.batch import BatchContext, utc_now
from gatewatch.streams.alert_outbox import Courier, OutboxEntry
from gatewatch.streams.logs import error_summary
from gatewatch.streams.sinks import Sink, build_sinks
from gatewatch.streams.sinks.config import DeltaSinkSettings
from gatewatch.streams.sinks.model import Alert, parse_iso
from gatewatch.transforms import alert_decision as D
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


def _alert_row(alert: Alert, now: datetime) -> dict[str, Any]:
    return {
        "dedup_key": alert.dedup_key, "rule": alert.rule, "group": dict(alert.group), "status": alert.status,
        "severity": alert.severity, "summary": alert.summary, "value": alert.value, "threshold": alert.threshold,
        "counts": dict(alert.counts), "window_start": alert.window_start, "window_end": alert.window_end,
        "started_at": alert.started_at, "ended_at": alert.ended_at, "updated_at": now,
        "event_id": D.event_id(alert), "alert": alert.to_json(),
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
        self.courier = Courier(self.tables, self.sinks, self.targets, clock)
        self.courier.load_last_sent(spark, self.firing)
        self.heavy: dict[str, bool] = {}  # rules aggregated by Spark (see ``measure``)
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
        latest = metrics.get("event_time")
        batch_max = None if latest is None else A.micros(parse_iso(latest))
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
            after = dict(self.firing)
            for alert in transitions:
                after.pop(alert.dedup_key, None)
                if alert.firing:
                    after[alert.dedup_key] = alert
            delivered = self.deliver(spark, fresh=entries, firing=after, safe=True)
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

    def measure(self, spark: SparkSession, max_time: datetime) -> dict[str, list[D.Measure]]:
        """Every rule's numbers per group and window, read from the stream tables.

        Each table is read once for all its rules (``alerts.scan``), in one
        Spark job, and the rows are counted here; a rule whose windows held
        more than ``max_rows_per_rule`` rows last time is aggregated by Spark
        (``alerts.windowed``) until they shrink to half that.
        """
        limit = self.settings.alerts.max_rows_per_rule
        rules = list(self.rules.values())
        measures: dict[str, list[D.Measure]] = {r.name: [] for r in rules}
        light = [i for i, r in enumerate(rules) if not self.heavy.get(r.name)]
        heavy = [r for r in rules if self.heavy.get(r.name)]
        if light:
            branches = [b for b in A.plan(rules) if set(b.rules) & set(light)]
            branches = [A.Branch(b.table, b.rows, tuple(i for i in b.rules if i in light)) for b in branches]
            frames = [self.tables[b.table].read(spark).transform(A.scan(b, rules, max_time)) for b in branches]
            scanned = A.union_all(frames).collect()
            for i in light:
                rows = list(D.rule_rows(i, rules[i], scanned))
                measures[rules[i].name] = D.measures_from_rows(rules[i], rows, max_time)
                self.heavy[rules[i].name] = len(rows) > limit
        if heavy:
            frames = [stream_frame(spark, self.tables, r.stream).transform(A.windowed(r, max_time))
                      .transform(A.relevant) for r in heavy]
            for row in A.union_all(frames).collect():
                measures[row["rule"]].append(D.Measure.from_row(row))
            for rule in heavy:
                self.heavy[rule.name] = sum(m.rows for m in measures[rule.name] if m.current) > limit // 2
        return measures

    def evaluate(self, spark: SparkSession, now: datetime) -> list[Alert]:
        """The transitions of every rule at the current event time."""
        if self.max_us is None:
            return []
        max_time = A.from_micros(self.max_us)
        measures = self.measure(spark, max_time)
        transitions: list[Alert] = []
        for name, rule in self.rules.items():
            firing = {k: a for k, a in self.firing.items() if a.rule == name}
            transitions += D.decide(rule, measures[name], firing, now=now, max_time=max_time)
        for alert in self.firing.values():
            if alert.rule not in self.rules:
                transitions.append(D.resolve(None, alert, None, now=now, max_time=max_time))
        return transitions

    def targets(self, rule_name: str) -> list[str]:
        """The sinks (other than ``delta``) a rule's alerts go to: its own list, or every configured sink."""
        rule = self.rules.get(rule_name)
        names = list(rule.sinks) if rule is not None and rule.sinks else [s.name for s in self.settings.sinks]
        return [n for n in names if n not in self.delta_sinks]

    def outbox_entries(self, transitions: Sequence[Alert], now: datetime) -> list[OutboxEntry]:
        """One pending outbox entry per transition and target sink."""
        return [
            OutboxEntry(D.event_id(a), sink, a.dedup_key, a.rule, a.status, a.to_json(), now)
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
                self.courier.forget(alert.dedup_key)

    # ------------------------------------------------------------------ delivery

    def deliver(self, spark: SparkSession | None = None, fresh: Sequence[OutboxEntry] = (), *,
                firing: Mapping[str, Alert] | None = None, safe: bool = False) -> dict[str, int]:
        """One delivery pass (``Courier.deliver``) under the lock.

        ``firing`` is the state to re-send from (default: the current one; the
        batch hook passes the state its transitions lead to). With ``safe``, a failure to read or record is logged instead of raised
        (the batch hook and the background pass: delivery never stops the stream).
        """
        with self.lock:
            try:
                return self.courier.deliver(spark or self.spark, self.firing if firing is None else firing, fresh)
            except Exception as err:  # noqa: BLE001 - see the docstring
                if not safe:
                    raise
                log.error("alert_delivery_pass_failed", error=error_summary(err))
                return {"delivered": 0, "failed": 0, "pending": None, "resent": 0}

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
                if self.courier.due(self.firing):
                    self.deliver(session, safe=True)
            except Exception as err:  # noqa: BLE001 - keep the ticker alive
                log.error("alert_delivery_tick_failed", error=error_summary(err))

    def close(self) -> None:
        """Stop the background deliveries and close the sinks."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=30)
            self._ticker = None
        for sink in self.sinks.values():
            sink.close()


def ensure_alert_tables(spark: SparkSession, settings: Settings, tables: Mapping[str, out.Table]) -> None:
    """Create the alerts, outbox and deliveries tables (and any other ``delta`` sink table) if needed."""
    for role, schema in STATE_TABLES.items():
        out.ensure_table(spark, tables[role], schema)
    for table in _delta_sink_tables(settings, tables["alerts"]):
        out.ensure_table(spark, table, ALERTS)


def deliver_once(spark: SparkSession, settings: Settings) -> dict[str, int]:
    """One delivery pass outside a running job (``gatewatch alerts deliver``).

    Do not run it while a job delivers to the same outbox: both could send
    an entry before either marks it delivered.
    """
    from gatewatch.streams.job import prepare_outputs

    tables = prepare_outputs(spark, settings)
    tables.update(alert_tables(settings))
    ensure_alert_tables(spark, settings, tables)
    alerting = Alerting(spark, settings, tables)
    try:
        return alerting.deliver()
    finally:
        alerting.close()
