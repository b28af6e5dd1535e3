"""Alerting inside the job: evaluate the rules with each micro-batch, keep alert state, deliver through an outbox.

One ``Alerting`` per job, shared by the queries of all its sources (a lock
serialises them). It is a batch stage (``streams.batch``):

1. **Before the batch's writes** (``before_writes``) it moves the event-time
   clock to the latest ``request_time`` of the batch. **Alongside the
   writes** (the ticket's first write) it adds the batch's rows to each
   rule's running counts per group and window (``alert_decision`` cells),
   decides the fire/resolve transitions against the firing alerts and,
   when nothing older waits in the outbox, sends them at once. The counts
   come from the batch's own rows (a large batch's aggregated by Spark per
   time bucket first: ``batch_counts``), so an alert does not wait for the
   batch's writes nor re-read the tables.
2. **Then, still alongside the writes**, it records the
   transitions: appended to the outbox, one row per sink, with how the send
   went (``delivered``, ``failed`` when the sink said the request can never
   succeed, or ``pending`` for a later pass), or appended ``pending`` and
   sent in order by a delivery pass when older entries wait; every attempt
   goes to the deliveries table. The outbox append is idempotent per (app
   id, batch id). Then the transitions are queued for the alerts table (one
   row per dedup key), which ``alert_state.StateWriter`` merges in the
   background; at start the state is the newest of that table and the
   outbox (``alert_state.load_state``), so a transition the table missed is
   neither lost nor re-fired. Delivery is at least once: a crash after a
   send and before the outbox append sends it again.
3. **After the writes** (``after_writes``), when the running counts could
   not be trusted before them (the first batch of a run whose tables
   already held rows, the batch after a failure, a batch that replaced
   rows by MERGE, or every ``alerts.recount_interval_s``), it counts every
   rule's windows from the tables instead, then decides, sends and records
   as above.

A failed batch drops the running counts and reloads the firing alerts
(``load_state``), so its retry recounts from the tables. The state, the
event-time clock and the last send per alert and sink are kept in memory but
always loaded from the tables at start, so a restart neither re-fires nor
forgets an alert. A delivery problem is logged and never fails the batch;
firing alerts are re-sent to Alertmanager when due (Alertmanager resolves
an alert that is not re-sent), and a background pass retries pending
entries between batches.

Over Spark Connect (serverless, standard access mode, ``--remote``) a
batch runs in a Python process the server starts, which shares no memory
with the job: there the alerting is not a batch stage. The job calls
``poke`` when one of its queries committed a batch (its listener runs in
the job's process), and ``evaluate`` counts every rule's windows from the
tables, decides, sends and records as in step 3, on the job's own thread:
one state for every query of the job, kept where the sinks are called.

The ``delta`` sink type is the alerts table itself; a ``delta`` sink naming
another ``table`` also gets every transition appended there.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow.compute as pc
import structlog
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from gatewatch.errors import ConfigError
from gatewatch.schemas import ALERT_DELIVERIES, ALERT_OUTBOX, ALERTS
from gatewatch.settings import Settings
from gatewatch.alerts.advise import Advisor
from gatewatch.alerts.rules import AlertRule, RatioCondition
from gatewatch.streams import outputs as out
from gatewatch.streams.batch import BatchContext, utc_now
from gatewatch.alerts.outbox import Courier, OutboxEntry, no_deliveries
from gatewatch.alerts.state import StateWriter, alert_row, load_state, merge_rows
from gatewatch.streams.logs import error_summary, quiet_spark_errors
from gatewatch.streams.spark import in_parallel, own_session
from gatewatch.alerts.sinks import Sink, build_sinks
from gatewatch.alerts.sinks.config import DeltaSinkSettings
from gatewatch.alerts.sinks.model import Alert, parse_iso
from gatewatch.alerts import decide as D
from gatewatch.alerts import windows as A
from gatewatch.transforms.events import safety_events, token_events


log = structlog.get_logger("gatewatch.alerting")

STATE_TABLES = {"alerts": ALERTS, "outbox": ALERT_OUTBOX, "deliveries": ALERT_DELIVERIES}


@dataclass
class Ticket:
    """One batch's way through the alerting: its transitions, their sends and the recording still to do."""

    app_id: str
    batch_id: int
    now: datetime
    generation: int
    evaluated: bool = False
    """Evaluated before the writes, from the running counts."""
    transitions: list[Alert] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Outbox rows to append."""
    entries: list[OutboxEntry] | None = None
    """Entries a delivery pass sends after the append (older entries wait); None: sent already."""
    records: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=no_deliveries)
    timings: dict[str, float] = field(default_factory=dict)
    writes: list[Callable[[], None]] = field(default_factory=list)
    """The recording, run alongside the batch's writes (each callable in its own thread)."""
    recording: bool = False
    """A recording (``Alerting._write``) is due or under way: the batch counts in ``Alerting.inflight``."""


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
    roles = ("requests", "quarantine") if stream == "rows" else (stream,)
    return stream_of({role: read_role(spark, tables, role) for role in roles}, stream)


def read_role(spark: SparkSession, tables: Mapping[str, out.Table], role: str) -> DataFrame:
    """The rows of one role as the rules count them: a table, or token and safety events derived from requests.

    The event tables follow requests on their own cadence (``streams.events``);
    derived from requests, a recount sees every request the moment it is written.
    """
    if role == "token_events":
        return tables["requests"].read(spark).transform(token_events)
    if role == "safety_events":
        return tables["requests"].read(spark).transform(safety_events)
    return tables[role].read(spark)


def stream_of(frames: Mapping[str, DataFrame], stream: str) -> DataFrame:
    """A rule's stream from frames by role: that frame, or for ``rows`` requests and quarantine together."""
    if stream == "rows":
        return A.rows_stream(frames["requests"], frames["quarantine"])
    return frames[stream]


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
                with quiet_spark_errors():
                    frame.where(F.expr(text)).schema  # noqa: B018 - analysis is the check
            except PySparkException as err:
                reason = str(err).strip().splitlines()[0][:300]
                raise ConfigError(f"alerts.rules.{i}.{key}",
                                  f"a Spark SQL condition over the columns of the {rule.stream} stream", reason) from None


class Alerting:
    """The alerting of one job: rules, state, outbox, delivery (see the module docstring).

    Args:
        spark: the job's session (start-up reads, the background deliveries).
        settings: rules, sinks and output tables.
        tables: the job's tables by role: ``requests``, ``quarantine``,
            ``token_events``, ``safety_events``, ``alerts``, ``outbox``, ``deliveries``.
        sinks: the sinks to deliver to (default: ``build_sinks(settings.sinks)``).
        clock: the wall clock of transitions and deliveries.
        empty: the ``ref`` of each table created empty at this start (``out.prepare_outputs``'s
            ``created``): the start does not read them (a first read of a new table costs Delta's
            state reconstruction, 0.5-1.3 s each).
    """

    def __init__(self, spark: SparkSession, settings: Settings, tables: Mapping[str, out.Table], *,
                 sinks: Sequence[Sink] | None = None, clock=utc_now, empty: Collection[str] = ()) -> None:
        self.spark = spark
        self.settings = settings
        self.rules = {r.name: r for r in settings.alerts.rules}
        self.roles = sorted({b.table for b in A.plan(settings.alerts.rules)})  # the tables the rules read
        self.tables = dict(tables)
        self.clock = clock
        check_rules(spark, settings.alerts.rules, self.tables)
        self.sinks: dict[str, Sink] = {s.name: s for s in (build_sinks(settings.sinks) if sinks is None else sinks)}
        self.delta_sinks = {s.name for s in settings.sinks if isinstance(s, DeltaSinkSettings)}
        self.extra_tables = _delta_sink_tables(settings, self.tables["alerts"])
        self.lock = threading.RLock()
        firing, max_us = in_parallel(spark, lambda: load_state(spark, self.tables, empty),
                                     functools.partial(self._load_clock, empty), name="gatewatch-alerts-load")
        self.firing: dict[str, Alert] = firing
        self.max_us: int | None = max_us
        self.courier = Courier(self.tables, self.sinks, self.targets, clock)
        if self.tables["outbox"].ref in empty:
            self.courier.pending = 0  # a new outbox: nothing waits
        self.courier.load_last_sent(spark, self.firing)
        self.heavy: dict[str, bool] = {}  # rules aggregated by Spark (see ``count``)
        # running counts; None: recount after the next writes. Tables without a timed row (a first run) count
        # nothing, so the first batch adds its rows to zero alongside its writes instead of recounting after them
        self.cells: dict[str, D.Cells] | None = {name: {} for name in self.rules} if max_us is None else None
        self.generation = 0  # bumped by every recount
        self.recounted_at = time.monotonic()
        self.reload = False  # reload the state before the next batch (a batch failed)
        self.inflight = 0  # batches whose transitions are not recorded yet
        self.settled = threading.Condition(self.lock)
        self.record_lock = threading.Lock()  # one batch records at a time
        self.session = own_session(spark)  # the recording's and the state writer's session
        self.state = StateWriter(self.session, self.tables["alerts"], empty)
        self.advisor = Advisor(settings, self.tables, clock=clock)  # advisory rules, on the delivery tick
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._poked = threading.Event()  # a batch committed since the last ``evaluate`` (Spark Connect)
        self._evaluator: threading.Thread | None = None
        self.app_id = out.new_app_id("alerts")  # outbox appends of ``evaluate``: new per run
        self.evaluations = 0

    # ------------------------------------------------------------------ start-up state

    def _load_clock(self, empty: Collection[str] = ()) -> int | None:
        """The latest ``request_time`` in requests and quarantine, in microseconds (None: they hold no row).

        A table whose ``ref`` is in ``empty`` is not read.
        """
        times = [self.tables[role].read(self.spark).select("request_time") for role in ("requests", "quarantine")
                 if self.tables[role].holds_rows(self.spark, empty)]
        if not times:
            return None
        return functools.reduce(DataFrame.unionByName, times).agg(F.max(F.unix_micros("request_time"))).first()[0]

    def _reload_if_due(self) -> None:
        """After a failed batch: the alert state and the last sends again from the tables (under ``lock``)."""
        if self.reload:
            self.state.flush()
            self.firing = load_state(self.spark, self.tables)
            self.courier.load_last_sent(self.spark, self.firing)
            self.reload = False

    # ------------------------------------------------------------------ outside the batches (Spark Connect)

    def poke(self) -> None:
        """One of the job's queries committed a batch with rows: ``evaluate`` soon (see the module docstring)."""
        self._poked.set()

    def evaluate(self) -> dict[str, Any]:
        """Count every rule's windows from the tables, decide, send and record, outside any batch.

        The event-time clock moves to the newest ``request_time`` the tables
        hold. The outbox append is keyed by this run's id and evaluation
        number; a transition recorded before a restart is in the state the
        next run loads, so it is not sent as new again. Returns the figures
        a batch's ``alerts`` metrics carry.
        """
        started = time.monotonic()
        with self.lock:
            self._reload_if_due()
            latest = self._load_clock()
            if latest is not None and (self.max_us is None or latest > self.max_us):
                self.max_us = latest
            self.evaluations += 1
            ticket = Ticket(self.app_id, self.evaluations, self.clock(), self.generation)
            self._recount()
            ticket.timings["evaluate_s"] = round(time.monotonic() - started, 3)
            if self.max_us is not None:
                self._announce(ticket, self._decide(self.cells, ticket.now, A.from_micros(self.max_us)), self.spark)
        try:
            for write in ticket.writes:
                write()
        except BaseException:
            self.abort(ticket)
            raise
        figures = {"fired": sum(a.firing for a in ticket.transitions),
                   "resolved": sum(not a.firing for a in ticket.transitions), "firing": len(self.firing),
                   **ticket.counts, "duration_s": round(time.monotonic() - started, 3)}
        log.info("alerts_evaluated", **figures)
        return figures

    def _evaluate_when_poked(self) -> None:
        while not self._stop.is_set():
            if not self._poked.wait(0.5):
                continue
            self._poked.clear()
            try:
                self.evaluate()
            except Exception as err:  # noqa: BLE001 - keep evaluating; the next batch retries from the tables
                log.error("alert_evaluation_failed", error=error_summary(err))

    # ------------------------------------------------------------------ the batch stage

    def before_writes(self, ctx: BatchContext, parsed: DataFrame, batch_id: int, metrics: dict[str, Any], *,
                      replaces_rows: bool, frames: Mapping[str, DataFrame]) -> Ticket | None:
        """Move the clock and plan the batch's evaluation: its ticket's first write counts, decides and sends.

        ``frames`` are the batch's output frames by role. Returns the batch's
        ticket: its ``writes`` (the evaluation with the batch's rows added,
        then the recording of what it sent) run alongside the batch's output
        writes. When the running counts cannot be trusted (first batch,
        after a failure, a batch replacing rows, a recount due) the
        evaluation waits for the writes (``after_writes``).
        """
        if not metrics.get("rows"):  # nothing new: neither the windows nor the clock changed
            metrics["alerts"] = {"fired": 0, "resolved": 0, "firing": len(self.firing)}
            return None
        latest = metrics.get("event_time")
        batch_max = None if latest is None else A.micros(parse_iso(latest))
        with self.lock:
            self._reload_if_due()
            if batch_max is not None and (self.max_us is None or batch_max > self.max_us):
                self.max_us = batch_max
            ticket = Ticket(ctx.app_id, batch_id, ctx.clock(), self.generation)
            if self.cells is None or replaces_rows or self._recount_due() or self.max_us is None:
                return ticket
            ticket.evaluated = True
        ticket.writes.append(functools.partial(self._evaluate_batch, ticket, parsed.sparkSession, frames,
                                               metrics["rows"]))
        return ticket

    def _evaluate_batch(self, ticket: Ticket, spark: SparkSession, frames: Mapping[str, DataFrame],
                        rows: int) -> None:
        """Add a batch's rows to the running counts, decide and send; then record, as the ticket's first write.

        Runs alongside the batch's output writes: the alert waits for its
        rows' count, not for their commit. The rules' scan of the batch is
        collected as it is; a batch of more than ``max_rows_per_rule`` rows
        is first aggregated by Spark per time bucket (``alerts.batch_counts``:
        a few rows per group and minute reach the driver). For a small batch
        that aggregate's shuffle costs more than it saves.
        """
        started = time.monotonic()
        rules = list(self.rules.values())
        if rows > self.settings.alerts.max_rows_per_rule:
            counted = A.batch_counts(frames, rules)
        else:
            counted = A.scans(frames, A.plan(rules), rules)
        counts = counted.toArrow()
        with self.lock:
            if self.cells is None or self.generation != ticket.generation:
                # another query's batch failed, or recounted from tables this batch may have written to by now:
                # this batch recounts after its writes
                ticket.evaluated = False
                return
            max_time = A.from_micros(self.max_us)
            more = {rule.name: D.count_table(i, rule, counts, max_time) for i, rule in enumerate(rules)}
            self.cells = {name: D.prune(rule, D.add_cells(self.cells.get(name, {}), more[name]), max_time)
                          for name, rule in self.rules.items()}
            ticket.timings["evaluate_s"] = round(time.monotonic() - started, 3)
            recording = len(ticket.writes)
            self._announce(ticket, self._decide(self.cells, ticket.now, max_time), spark)
            ticket.timings["send_s"] = round(time.monotonic() - started - ticket.timings["evaluate_s"], 3)
        for write in ticket.writes[recording:]:
            write()

    def after_writes(self, ctx: BatchContext, parsed: DataFrame, batch_id: int, metrics: dict[str, Any],
                     ticket: Ticket | None) -> None:
        """Recount from the tables when the batch could not be evaluated before its writes; report the batch."""
        if ticket is None:
            return
        if not ticket.evaluated:
            started = time.monotonic()
            recording = len(ticket.writes)  # the writes its evaluation adds (not an evaluation that stood down)
            with self.lock:
                self._recount()
                ticket.timings["evaluate_s"] = round(time.monotonic() - started, 3)
                if self.max_us is not None:
                    self._announce(ticket, self._decide(self.cells, ticket.now, A.from_micros(self.max_us)),
                                   parsed.sparkSession)
                ticket.timings["send_s"] = round(time.monotonic() - started - ticket.timings["evaluate_s"], 3)
            for write in ticket.writes[recording:]:
                write()
        elif self.generation != ticket.generation:
            with self.lock:  # another query recounted while this batch wrote: its rows may be in both
                self.cells = None
        metrics["alerts"] = {
            "fired": sum(a.firing for a in ticket.transitions),
            "resolved": sum(not a.firing for a in ticket.transitions),
            "firing": len(self.firing),
            **ticket.counts,
            "recounted": not ticket.evaluated,
            **ticket.timings,
        }

    def abort(self, ticket: Ticket | None) -> None:
        """The batch failed: drop the running counts and reload the alert state before the next batch."""
        with self.lock:
            if ticket is not None:
                self._settle(ticket)
            self.cells = None
            self.reload = True
            self.courier.pending = None

    def _recount_due(self) -> bool:
        every = self.settings.alerts.recount_interval_s
        return every == 0 or time.monotonic() - self.recounted_at >= every

    def _recount(self) -> None:
        """Count every rule's windows from the tables (the batch's rows are written)."""
        if self.max_us is None:
            self.cells = {name: {} for name in self.rules}
        else:
            max_time = A.from_micros(self.max_us)
            frames = {role: read_role(self.spark, self.tables, role) for role in self.roles}
            self.cells = self.count(frames, max_time)
        self.generation += 1
        self.recounted_at = time.monotonic()

    def count(self, frames: Mapping[str, DataFrame], max_time: datetime) -> dict[str, D.Cells]:
        """Every rule's cells (per group and window) from the tables' stream frames by role.

        Each frame is read once for all its rules (``alerts.scan``), in one
        Spark job, collected as Arrow and counted by Arrow on the driver
        (``count_table``). Spark aggregates instead (``alerts.windowed``)
        a rule whose windows held more than ``max_rows_per_rule`` rows last
        time, until they shrink to half that. (A batch's own rows are
        counted by ``_evaluate_batch``.)
        """
        limit = self.settings.alerts.max_rows_per_rule
        rules = list(self.rules.values())
        cells: dict[str, D.Cells] = {r.name: {} for r in rules}
        heavy = [r for r in rules if self.heavy.get(r.name)]
        light = [i for i, r in enumerate(rules) if r not in heavy]
        if light:
            branches = [b for b in A.plan(rules) if set(b.rules) & set(light)]
            branches = [A.Branch(b.table, b.rows, tuple(i for i in b.rules if i in light)) for b in branches]
            scanned = A.scans(frames, branches, rules, max_time).toArrow()
            for i in light:
                cells[rules[i].name] = D.count_table(i, rules[i], scanned, max_time)
                self.heavy[rules[i].name] = (pc.sum(scanned.column(f"in_{i}")).as_py() or 0) > limit
        if heavy:
            windows = [stream_of(frames, r.stream).transform(A.windowed(r, max_time, upcoming=True)) for r in heavy]
            collected = A.union_all(windows).collect()
            for rule in heavy:
                cells[rule.name] = D.cells_from_windows(rule, (w for w in collected if w["rule"] == rule.name))
                current = D.measures_from_cells(rule, cells[rule.name], max_time)
                self.heavy[rule.name] = sum(m.rows for m in current if m.current) > limit // 2
        return cells

    def _decide(self, cells: Mapping[str, D.Cells], now: datetime, max_time: datetime) -> list[Alert]:
        """The transitions of every rule from its cells at event time ``max_time``."""
        transitions: list[Alert] = []
        for name, rule in self.rules.items():
            firing = {k: a for k, a in self.firing.items() if a.rule == name}
            measures = D.measures_from_cells(rule, cells.get(name, {}), max_time)
            transitions += D.decide(rule, measures, firing, now=now, max_time=max_time)
        for alert in self.firing.values():
            if alert.rule not in self.rules and not self.advisor.owns(alert):
                transitions.append(D.resolve(None, alert, None, now=now, max_time=max_time))
        return transitions

    def _announce(self, ticket: Ticket, transitions: list[Alert], spark: SparkSession) -> None:
        """Take ``transitions`` as the new state and send them; the ticket's ``writes`` record it all.

        When nothing is pending in the outbox and no other batch is still
        recording, the transitions are sent now and written to the outbox
        with how that went. Otherwise they are written pending and a
        delivery pass sends them in order after the older entries.
        """
        ticket.transitions = transitions
        entries = self.outbox_entries(transitions, ticket.now)
        for alert in transitions:
            self.firing.pop(alert.dedup_key, None)
            if alert.firing:
                self.firing[alert.dedup_key] = alert
            else:
                self.courier.forget(alert.dedup_key)
        if self.inflight == 0 and self.courier.pending == 0:
            sent = self.courier.send(entries, self.firing)
            ticket.rows = [e.row(sent.updates.get((e.event_id, e.sink))) for e in entries]
            ticket.records, ticket.counts = sent.records, sent.counts
        else:
            ticket.rows, ticket.entries = [e.row() for e in entries], entries
        if ticket.rows or transitions or ticket.entries is not None:
            self.inflight += 1
            ticket.recording = True
            ticket.writes.append(functools.partial(self._write, ticket))
        if ticket.records:  # the attempts made now, on the batch's session, alongside the outbox
            ticket.writes.append(functools.partial(self.courier.record, spark, ticket.records))

    def _write(self, ticket: Ticket) -> None:
        """Record a batch's transitions: the outbox (with a delivery pass if they wait), then queue the state.

        Runs on the alerting's own session, one batch at a time, alongside
        the batch's output writes. The transitions go to the state writer
        only once the outbox holds them (see the module docstring); those
        of rules with no sink but Delta have no outbox entry, so they are
        merged into the alerts table here, before the batch completes.
        """
        started = time.monotonic()
        spark = self.session
        try:
            with self.record_lock:
                if ticket.rows:
                    out.append(out.local_rows(spark, ticket.rows, ALERT_OUTBOX), self.tables["outbox"],
                               ticket.app_id, ticket.batch_id)
                if ticket.transitions and self.extra_tables:
                    history = out.local_rows(spark, [alert_row(a, ticket.now) for a in ticket.transitions], ALERTS)
                    for table in self.extra_tables:
                        out.append(history, table, ticket.app_id, ticket.batch_id)
                if ticket.entries is not None:
                    with self.lock:
                        ticket.counts = self.deliver(spark, fresh=ticket.entries, safe=True, waiting=False)
                else:
                    with self.lock:
                        if self.courier.pending is not None:
                            self.courier.pending += ticket.counts.get("pending", 0)
                unrecorded = {a.dedup_key: a for a in ticket.transitions if not self.targets(a.rule)}
                if unrecorded:  # no outbox entry to recover them from: the table must hold them before the batch ends
                    merge_rows(spark, self.tables["alerts"], [alert_row(a, ticket.now) for a in unrecorded.values()])
                self.state.put([a for a in ticket.transitions if a.dedup_key not in unrecorded], ticket.now)
        finally:
            ticket.timings["record_s"] = round(time.monotonic() - started, 3)
            with self.lock:
                self._settle(ticket)

    def _settle(self, ticket: Ticket) -> None:
        """The ticket's recording ended (or never will): it no longer counts in ``inflight``."""
        if ticket.recording:
            ticket.recording = False
            self.inflight -= 1
            self.settled.notify_all()

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

    # ------------------------------------------------------------------ delivery

    def deliver(self, spark: SparkSession | None = None, fresh: Sequence[OutboxEntry] = (), *,
                safe: bool = False, waiting: bool = True) -> dict[str, int]:
        """One delivery pass (``Courier.deliver``) under the lock, re-sending from the current firing alerts.

        With ``waiting`` (callers outside a batch), the pass first waits for
        the batches still recording their transitions. With ``safe``, a
        failure to read or record is logged instead of raised (batches and
        the background pass: delivery never stops the stream).
        """
        with self.lock:
            if waiting:
                self.settled.wait_for(lambda: self.inflight == 0)
            try:
                return self.courier.deliver(spark or self.spark, self.firing, fresh)
            except Exception as err:  # noqa: BLE001 - see the docstring
                if not safe:
                    raise
                log.error("alert_delivery_pass_failed", error=error_summary(err))
                return {**no_deliveries(), "pending": None}

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, evaluate: bool = False) -> None:
        """Deliver what a previous run left pending, then keep delivering between batches in the background.

        With ``evaluate`` (the job's batches run on a Spark Connect server)
        a thread of its own also runs ``evaluate`` after every ``poke``.
        """
        self.deliver(safe=True)
        if evaluate and self._evaluator is None:
            self._evaluator = threading.Thread(target=self._evaluate_when_poked, name="gatewatch-alert-evaluation",
                                               daemon=True)
            self._evaluator.start()
        interval = self.settings.alerts.deliver_interval_s
        if interval > 0 and self._ticker is None:
            session = own_session(self.spark)
            self._ticker = threading.Thread(target=self._tick, args=(session, interval), name="gatewatch-alerts",
                                            daemon=True)
            self._ticker.start()

    def _tick(self, session: SparkSession, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.advisor.tick(self, session)
                if self.courier.due(self.firing):
                    self.deliver(session, safe=True)
            except Exception as err:  # noqa: BLE001 - keep the ticker alive
                log.error("alert_delivery_tick_failed", error=error_summary(err))

    def close(self) -> None:
        """Stop the background deliveries and close the sinks."""
        self._stop.set()
        if self._evaluator is not None:
            self._evaluator.join(timeout=60)
            self._evaluator = None
        if self._ticker is not None:
            self._ticker.join(timeout=30)
            self._ticker = None
        self.state.close()
        for sink in self.sinks.values():
            sink.close()


def ensure_alert_tables(spark: SparkSession, settings: Settings, tables: Mapping[str, out.Table],
                        created: set[str] | None = None) -> list[out.Table]:
    """Create the alerts, outbox and deliveries tables (and any other ``delta`` sink table) if needed; return them.

    The ``ref`` of each table created now is added to ``created``.
    """
    properties = settings.output.table_properties()
    ensured = [(tables[role], schema, properties) for role, schema in STATE_TABLES.items()] \
        + [(table, ALERTS, properties) for table in _delta_sink_tables(settings, tables["alerts"])]
    out.ensure_tables(spark, ensured, created)
    return [table for table, _, _ in ensured]


def deliver_once(spark: SparkSession, settings: Settings) -> dict[str, int]:
    """One delivery pass outside a running job (``gatewatch alerts deliver``).

    Do not run it while a job delivers to the same outbox: both could send
    an entry before either marks it delivered.
    """

    tables = out.prepare_outputs(spark, settings)
    tables.update(alert_tables(settings))
    ensure_alert_tables(spark, settings, tables)
    alerting = Alerting(spark, settings, tables)
    try:
        return alerting.deliver()
    finally:
        alerting.close()
