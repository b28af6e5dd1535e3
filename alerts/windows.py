"""Alert rules over event-time windows: the window arithmetic and the Spark side of measuring them.

Everything here is pure. The clock is event time: ``max_time``, the latest
``request_time`` the job has processed, passed in by the caller. For a rule
with window ``W``, slide ``S`` and watermark ``L`` the windows are Spark's
``window(request_time, W, S)`` (starting at multiples of ``S`` since the
epoch); the *current* window of a group is the one that covers the last
``W`` of event time (the earliest-ending window still containing
``max_time``), and windows that ended less than ``L`` before ``max_time``
still count, so a late row can tip them. A group's condition holds when any
of those windows meets it (``alert_decision``).

Two ways to get each group's numbers per window, with the same result:

- ``scan(branch, rules, max_time)``: one narrow projection per table for
  all the rules that read it, collected as Arrow and counted on the driver
  by ``alert_decision.count_table`` (one Spark job for every rule, no
  shuffle: the fast path for the usual volumes);
- ``windowed(rule, max_time)``: the aggregation in Spark, for a rule whose
  windows hold too many rows to collect.

A large batch's own rows go through ``batch_counts``: the scan's rows
aggregated by Spark per time bucket (``bucket_us``), which ``count_table``
counts as it counts the scan's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType

from gatewatch.alerts.rules import AlertRule, RatioCondition, SumCondition
from gatewatch.transforms.staging import gateway_key

Transform = Callable[[DataFrame], DataFrame]

EVENT_TIME = "request_time"


NO_VALUE = "(none)"
"""The group value of a row whose group column is null (a requester the endpoint does not log)."""
MAX_SAMPLE = 200
"""The longest error message sample an ``include_text`` rule carries."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
US = 1_000_000


def micros(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    """The aware UTC datetime of ``value`` microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=int(value))


@dataclass(frozen=True)
class Span:
    """The windows one evaluation looks at, in microseconds since the epoch."""

    read_from: int
    """Rows with event time at or after this can fall in the windows."""
    read_until: int
    """Rows before this (the current window's end)."""
    first_end: int
    """Windows ending after this still take late rows (exclusive bound)."""
    current_start: int
    current_end: int


def span(rule: AlertRule, max_time: datetime) -> Span:
    """The windows to evaluate for ``rule`` when event time has reached ``max_time``.

    The current window is the earliest-ending window containing
    ``max_time``; the others are those ending in
    ``(max_time - watermark, current end]``.
    """
    w, s, lag = rule.window_s * US, rule.slide_s * US, rule.watermark_s * US
    t = micros(max_time)
    k = (t - w) // s + 1  # the smallest k with k*s + w > t
    current_start = k * s
    return Span(read_from=t - w - lag, read_until=current_start + w, first_end=t - lag,
                current_start=current_start, current_end=current_start + w)


def _ts(us: int) -> Column:
    return F.timestamp_micros(F.lit(us))


def _group_value(key: str) -> Column:
    return F.coalesce(F.col(key).cast("string"), F.lit(NO_VALUE))


def _group_map(rule: AlertRule) -> Column:
    if not rule.group_by:
        return F.create_map().cast(MapType(StringType(), StringType()))
    pairs: list[Column] = []
    for key in rule.group_by:
        pairs += [F.lit(key), _group_value(key)]
    return F.create_map(*pairs)


def _in_span(rule: AlertRule, max_time: datetime) -> Column:
    bounds = span(rule, max_time)
    return (F.col(EVENT_TIME) >= _ts(bounds.read_from)) & (F.col(EVENT_TIME) < _ts(bounds.read_until))


def _where(rule: AlertRule) -> Column:
    return F.coalesce(F.expr(rule.where), F.lit(False)) if rule.where else F.lit(True)


def _hit(rule: AlertRule) -> Column:
    cond = rule.condition
    return F.coalesce(F.expr(cond.numerator), F.lit(False)) if isinstance(cond, RatioCondition) else F.lit(None)


def _amount(rule: AlertRule) -> Column:
    cond = rule.condition
    return F.col(cond.column).cast("double") if isinstance(cond, SumCondition) else F.lit(None)


def _sample(rule: AlertRule, columns: Sequence[str]) -> Column:
    if rule.include_text and "error_message" in columns:
        return F.substring("error_message", 1, MAX_SAMPLE)
    return F.lit(None)


# --------------------------------------------------------------------------- streams


def rows_view(role: str) -> Transform:
    """One table's part of the ``rows`` stream (every processed row, with ``quarantined``).

    ``role`` is ``requests`` or ``quarantine``. Returns:
    ``databricks_request_id``, ``request_time``, ``endpoint``,
    ``served_entity_id``, ``requester``, ``status_code``,
    ``execution_duration_ms``, ``source_table``, ``model``, ``outcome``,
    ``blocked``, ``error_type``, ``quarantined``, ``quarantine_reason``. A
    quarantined row a replay has since moved into requests (status
    ``resolved``) counts once, as the request.
    """
    common = ["databricks_request_id", "request_time", "endpoint", "served_entity_id", "requester",
              "status_code", "execution_duration_ms", "source_table"]

    def apply(df: DataFrame) -> DataFrame:
        if role == "requests":
            return df.select(*common, "model", "outcome", "blocked", "error_type",
                             F.lit(False).alias("quarantined"), F.lit(None).cast("string").alias("quarantine_reason"))
        held = df.where(F.coalesce(F.col("status"), F.lit("open")) != F.lit("resolved"))
        return held.select(
            *common, F.lit(None).cast("string").alias("model"), F.lit(None).cast("string").alias("outcome"),
            F.lit(None).cast("boolean").alias("blocked"), F.lit(None).cast("string").alias("error_type"),
            F.lit(True).alias("quarantined"), F.col("reason").alias("quarantine_reason"),
        )

    return apply


def rows_stream(requests: DataFrame, quarantine: DataFrame) -> DataFrame:
    """The ``rows`` stream: requests and quarantine together (see ``rows_view``)."""
    return rows_view("requests")(requests).unionByName(rows_view("quarantine")(quarantine))


# --------------------------------------------------------------------------- scans


@dataclass(frozen=True)
class Branch:
    """One table read of an evaluation and the rules (by position) it serves.

    ``table`` is the table's role; ``rows`` marks the quarantine table read
    as its part of the ``rows`` stream. The requests table serves both its
    own rules and the ``rows`` rules (its ``rows`` view only adds columns).
    """

    table: str
    rows: bool
    rules: tuple[int, ...]


def plan(rules: Sequence[AlertRule]) -> list[Branch]:
    """The table reads that serve ``rules``, each table read once (the quarantine table at most twice)."""
    served: dict[tuple[str, bool], list[int]] = {}
    for i, rule in enumerate(rules):
        if rule.stream == "rows":
            served.setdefault(("requests", False), []).append(i)
            served.setdefault(("quarantine", True), []).append(i)
        else:
            served.setdefault((rule.stream, False), []).append(i)
    return [Branch(table, rows, tuple(ids)) for (table, rows), ids in served.items()]


def scan(branch: Branch, rules: Sequence[AlertRule], max_time: datetime | None = None) -> Transform:
    """The rows of one frame that its rules take, reduced to what counting them needs.

    Reads: ``request_time``, the rules' ``group_by`` columns and the columns
    their ``where``, ``condition.numerator`` and ``condition.column`` use
    (``error_message`` with ``include_text``).
    Returns: ``t_us`` (event time in microseconds since the epoch),
    ``g_<key>`` per group column (nulls as ``(none)``), and per rule number
    ``i``: ``in_<i>`` (the row passes that rule's ``where``), ``hit_<i>``
    (the ratio numerator holds), ``amount_<i>`` (the summed column) and
    ``sample_<i>``. Only rows some rule takes are kept; with ``max_time``,
    only rows some rule's windows can hold at that event time (reading a
    whole table). Which windows a row counts in is left to
    ``alert_decision.count_table``. The column expressions are built once per
    set of rules and reused for every frame.
    """
    mine = [rules[i] for i in branch.rules]

    def apply(df: DataFrame) -> DataFrame:
        if branch.table == "requests":
            view = df.withColumns({"quarantined": F.lit(False),
                                   "quarantine_reason": F.lit(None).cast("string")})
        elif branch.rows:
            view = rows_view("quarantine")(df)
        else:
            view = df
        if max_time is not None:
            bounds = [span(r, max_time) for r in mine]
            view = view.where((F.col(EVENT_TIME) >= _ts(min(b.read_from for b in bounds)))
                              & (F.col(EVENT_TIME) < _ts(max(b.read_until for b in bounds))))
        columns, taken = _scan_columns(branch, tuple(rules), "error_message" in df.columns, gateway_key())
        return view.select(*columns).where(taken)

    return apply


@functools.lru_cache(maxsize=64)
def _scan_columns(branch: Branch, rules: tuple[AlertRule, ...], has_message: bool,
                  gateway: Hashable) -> tuple[list[Column], Column]:
    """``scan``'s projection and filter (``gateway`` keys them to the Spark gateway that built them)."""
    mine = [(i, rules[i]) for i in branch.rules]
    keys = sorted({k for _, r in mine for k in r.group_by})
    columns = [F.unix_micros(F.col(EVENT_TIME)).alias("t_us")]
    columns += [_group_value(k).alias(f"g_{k}") for k in keys]
    message = ["error_message"] if has_message else []
    for i, rule in mine:
        columns += [
            _where(rule).alias(f"in_{i}"),
            _hit(rule).cast("boolean").alias(f"hit_{i}"),
            _amount(rule).cast("double").alias(f"amount_{i}"),
            _sample(rule, message).cast("string").alias(f"sample_{i}"),
        ]
    taken = F.lit(False)
    for i, _ in mine:
        taken = taken | F.col(f"in_{i}")
    return columns, taken


def scans(frames: Mapping[str, DataFrame], branches: Sequence[Branch], rules: Sequence[AlertRule],
          max_time: datetime | None = None) -> DataFrame:
    """Every branch's ``scan`` of its frame (by role in ``frames``), stacked: one Spark job reads them all."""
    return union_all([frames[b.table].transform(scan(b, rules, max_time)) for b in branches])


def bucket_us(rules: Sequence[AlertRule]) -> int:
    """The longest span, in microseconds, that every rule's window and slide are whole multiples of.

    Rows whose event times fall in the same such bucket fall in the same
    windows of every rule, so they can be counted together.
    """
    return functools.reduce(math.gcd, [x * US for r in rules for x in (r.window_s, r.slide_s)])


def batch_counts(frames: Mapping[str, DataFrame], rules: Sequence[AlertRule]) -> DataFrame:
    """A batch's rows as the rules count them, aggregated by Spark per time bucket and scan values.

    ``frames`` are the batch's stream frames by role (every branch of
    ``plan(rules)``). Reads: what ``scan`` reads. Returns: ``scan``'s
    columns, ``t_us`` floored to ``bucket_us(rules)``, each ``amount_<i>``
    summed, and ``n``, the rows behind each row. ``alert_decision.count_table``
    gives the same cells from these rows as from the rows unaggregated; far
    fewer of them reach the driver (a few per group and minute).
    """
    scanned = scans(frames, plan(rules), rules)
    bucket = F.lit(bucket_us(rules))
    keys = [c for c in scanned.columns if c != "t_us" and not c.startswith("amount_")]
    sums = [F.sum(c).alias(c) for c in scanned.columns if c.startswith("amount_")]
    return scanned.groupBy((F.col("t_us") - F.pmod(F.col("t_us"), bucket)).alias("t_us"), *keys).agg(
        F.count(F.lit(1)).alias("n"), *sums)


def union_all(frames: Sequence[DataFrame]) -> DataFrame:
    """``frames`` stacked by column name, a column missing from one being null there."""
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame, allowMissingColumns=True)
    return union


# --------------------------------------------------------------------------- in Spark


def windowed(rule: AlertRule, max_time: datetime, *, upcoming: bool = False) -> Transform:
    """Aggregate a rule's stream into one row per group and window that still counts.

    With ``upcoming``, also the windows ending after the current one (they
    become current as event time moves on: the cells an incremental
    evaluation starts from).

    Reads: as ``scan``. Returns: ``rule``, ``group`` (map of group column to
    value, nulls as ``(none)``), ``window_start_us``, ``window_end_us``,
    ``rows``, ``matched`` (ratio numerator rows, else null), ``total`` (the
    summed column, else null), ``value`` (what the threshold is compared
    with), ``meets`` (the condition holds in that window, ``min_rows``
    included), ``current`` (the group's current window) and ``sample`` (the
    most frequent error message with ``include_text``, else null).
    """
    cond = rule.condition
    bounds = span(rule, max_time)

    def apply(df: DataFrame) -> DataFrame:
        rows = df.where(_in_span(rule, max_time) & _where(rule))
        rows = rows.withColumn("_group", _group_map(rule)).withColumn(
            "_window", F.window(EVENT_TIME, f"{rule.window_s} seconds", f"{rule.slide_s} seconds")
        )
        aggs = [
            F.count(F.lit(1)).alias("rows"),
            (F.count(F.when(_hit(rule), F.lit(1))) if isinstance(cond, RatioCondition)
             else F.lit(None).cast("long")).alias("matched"),
            (F.coalesce(F.sum(_amount(rule)), F.lit(0.0)) if isinstance(cond, SumCondition)
             else F.lit(None).cast("double")).alias("total"),
            (F.mode(_sample(rule, df.columns)) if rule.include_text and "error_message" in df.columns
             else F.lit(None).cast("string")).alias("sample"),
        ]
        grouped = rows.groupBy("_group", "_window").agg(*aggs)
        end_us = F.unix_micros(F.col("_window.end"))
        kept = grouped.where(end_us > F.lit(bounds.first_end))
        if not upcoming:
            kept = kept.where(end_us <= F.lit(bounds.current_end))
        if isinstance(cond, RatioCondition):
            value = F.col("matched") / F.col("rows")
        elif isinstance(cond, SumCondition):
            value = F.col("total")
        else:
            value = F.col("rows").cast("double")
        threshold = F.lit(float(cond.threshold))
        compare = value > threshold if cond.op == ">" else value >= threshold
        return kept.select(
            F.lit(rule.name).alias("rule"),
            F.col("_group").alias("group"),
            F.unix_micros(F.col("_window.start")).alias("window_start_us"),
            end_us.alias("window_end_us"),
            F.col("rows").cast("long").alias("rows"),
            F.col("matched").cast("long").alias("matched"),
            F.col("total"),
            value.cast("double").alias("value"),
            ((F.col("rows") >= F.lit(cond.min_rows)) & F.coalesce(compare, F.lit(False))).alias("meets"),
            (end_us == F.lit(bounds.current_end)).alias("current"),
            F.col("sample"),
        )

    return apply
