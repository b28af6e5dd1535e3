"""Alert rules over event-time windows: the window arithmetic, the aggregation and the decision.

Everything here is pure. The clock is event time: ``max_time``, the latest
``request_time`` the job has processed, passed in by the caller. For a rule
with window ``W``, slide ``S`` and watermark ``L`` the windows are Spark's
``window(request_time, W, S)``; the *current* window of a group is the one
that covers the last ``W`` of event time (the earliest-ending window that
still contains ``max_time``), and windows that ended less than ``L`` before
``max_time`` still count, so a late row can tip them. A group's condition
holds when any of those windows meets it.

``windowed(rule, max_time)`` aggregates a stream into one row per group and
window; ``decide`` compares those rows with the alerts that are firing and
returns the transitions: a fire for a group that newly meets the condition,
a resolve for a firing group that no longer does (or has no rows left in
the windows, because event time moved on).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType

from gatewatch.settings import AlertRule, CountCondition, RatioCondition, SumCondition
from gatewatch.streams.sinks.model import Alert, make_dedup_key

Transform = Callable[[DataFrame], DataFrame]

EVENT_TIME = "request_time"
NO_VALUE = "(none)"
"""The group value of a row whose group column is null (a requester the endpoint does not log)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = 1_000_000
_MAX_SAMPLE = 200


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
    """The earliest window end still taking late rows (exclusive lower bound)."""
    current_start: int
    current_end: int


def span(rule: AlertRule, max_time: datetime) -> Span:
    """The windows to evaluate for ``rule`` when event time has reached ``max_time``.

    Windows start at multiples of the slide since the epoch (Spark's
    ``window``). The current one is the earliest-ending window containing
    ``max_time``; the others are those ending in ``(max_time - watermark, current end]``.
    """
    w, s, lag = rule.window_s * _US, rule.slide_s * _US, rule.watermark_s * _US
    t = micros(max_time)
    k = (t - w) // s + 1  # the smallest k with k*s + w > t
    current_start = k * s
    current_end = current_start + w
    return Span(read_from=t - w - lag, read_until=current_end, first_end=t - lag,
                current_start=current_start, current_end=current_end)


def _group_map(rule: AlertRule) -> Column:
    if not rule.group_by:
        return F.create_map().cast(MapType(StringType(), StringType()))
    pairs: list[Column] = []
    for key in rule.group_by:
        pairs += [F.lit(key), F.coalesce(F.col(key).cast("string"), F.lit(NO_VALUE))]
    return F.create_map(*pairs)


def _ts(us: int) -> Column:
    return F.timestamp_micros(F.lit(us))


def windowed(rule: AlertRule, max_time: datetime) -> Transform:
    """Aggregate a rule's stream into one row per group and window that still counts.

    Reads: ``request_time``, the rule's ``group_by`` columns, and the columns
    its ``where``, ``condition.numerator`` or ``condition.column`` use.
    Returns: ``rule``, ``group`` (map of group column to value, nulls as
    ``(none)``), ``window_start_us``, ``window_end_us``, ``rows``,
    ``matched`` (ratio numerator rows, else null), ``total`` (the summed
    column, else null), ``value`` (what the threshold is compared with),
    ``meets`` (the condition holds in that window, ``min_rows`` included),
    ``current`` (this is the group's current window) and ``sample`` (the most
    frequent ``error_message`` when the rule has ``include_text``, else null).
    """
    cond = rule.condition
    bounds = span(rule, max_time)

    def apply(df: DataFrame) -> DataFrame:
        rows = df.where((F.col(EVENT_TIME) >= _ts(bounds.read_from)) & (F.col(EVENT_TIME) < _ts(bounds.read_until)))
        if rule.where:
            rows = rows.where(F.expr(rule.where))
        rows = rows.withColumn("_group", _group_map(rule)).withColumn(
            "_window", F.window(EVENT_TIME, f"{rule.window_s} seconds", f"{rule.slide_s} seconds")
        )
        aggs = [F.count(F.lit(1)).alias("rows")]
        if isinstance(cond, RatioCondition):
            aggs.append(F.count(F.when(F.expr(cond.numerator), F.lit(1))).alias("matched"))
        else:
            aggs.append(F.lit(None).cast("long").alias("matched"))
        if isinstance(cond, SumCondition):
            aggs.append(F.coalesce(F.sum(F.col(cond.column).cast("double")), F.lit(0.0)).alias("total"))
        else:
            aggs.append(F.lit(None).cast("double").alias("total"))
        if rule.include_text and "error_message" in df.columns:
            aggs.append(F.mode(F.substring("error_message", 1, _MAX_SAMPLE)).alias("sample"))
        else:
            aggs.append(F.lit(None).cast("string").alias("sample"))
        grouped = rows.groupBy("_group", "_window").agg(*aggs)
        end_us = F.unix_micros(F.col("_window.end"))
        kept = grouped.where((end_us > F.lit(bounds.first_end)) & (end_us <= F.lit(bounds.current_end)))
        if isinstance(cond, RatioCondition):
            value = F.col("matched") / F.col("rows")
        elif isinstance(cond, SumCondition):
            value = F.col("total")
        else:
            value = F.col("rows").cast("double")
        threshold = F.lit(float(cond.threshold))
        compare = value > threshold if cond.op == ">" else value >= threshold
        meets = (F.col("rows") >= F.lit(cond.min_rows)) & F.coalesce(compare, F.lit(False))
        return kept.select(
            F.lit(rule.name).alias("rule"),
            F.col("_group").alias("group"),
            F.unix_micros(F.col("_window.start")).alias("window_start_us"),
            end_us.alias("window_end_us"),
            F.col("rows").cast("long").alias("rows"),
            F.col("matched").cast("long").alias("matched"),
            F.col("total"),
            value.cast("double").alias("value"),
            meets.alias("meets"),
            (end_us == F.lit(bounds.current_end)).alias("current"),
            F.col("sample"),
        )

    return apply


def relevant(df: DataFrame) -> DataFrame:
    """Keep the rows ``decide`` needs: windows that meet their condition, and every current window.

    Reads and returns: the ``windowed`` columns.
    """
    return df.where(F.col("meets") | F.col("current"))


def rows_stream(requests: DataFrame, quarantine: DataFrame) -> DataFrame:
    """Every processed row, requests and quarantine together: the ``rows`` stream.

    Reads: the requests and quarantine columns named below. Returns:
    ``databricks_request_id``, ``request_time``, ``endpoint``,
    ``served_entity_id``, ``requester``, ``model``, ``outcome``,
    ``status_code``, ``execution_duration_ms``, ``blocked``, ``error_type``,
    ``source_table``, ``quarantined`` and ``quarantine_reason``. A
    quarantined row a replay has since moved into requests (status
    ``resolved``) counts once, as the request.
    """
    common = ["databricks_request_id", "request_time", "endpoint", "served_entity_id", "requester",
              "status_code", "execution_duration_ms", "source_table"]
    passed = requests.select(
        *common, "model", "outcome", "blocked", "error_type",
        F.lit(False).alias("quarantined"), F.lit(None).cast("string").alias("quarantine_reason"),
    )
    held = quarantine.where(F.coalesce(F.col("status"), F.lit("open")) != F.lit("resolved")).select(
        *common, F.lit(None).cast("string").alias("model"), F.lit(None).cast("string").alias("outcome"),
        F.lit(None).cast("boolean").alias("blocked"), F.lit(None).cast("string").alias("error_type"),
        F.lit(True).alias("quarantined"), F.col("reason").alias("quarantine_reason"),
    )
    return passed.unionByName(held)


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Measure:
    """One group's numbers in one window (a collected ``windowed`` row)."""

    group: Mapping[str, str]
    window_start: datetime
    window_end: datetime
    rows: int
    matched: int | None
    total: float | None
    value: float
    meets: bool
    current: bool
    sample: str | None = None

    @classmethod
    def from_row(cls, row: Mapping) -> Measure:
        """Build from a collected ``windowed`` row (a ``Row`` or a dict)."""
        return cls(
            group=dict(row["group"] or {}),
            window_start=from_micros(row["window_start_us"]),
            window_end=from_micros(row["window_end_us"]),
            rows=int(row["rows"]),
            matched=None if row["matched"] is None else int(row["matched"]),
            total=None if row["total"] is None else float(row["total"]),
            value=float(row["value"] or 0.0),
            meets=bool(row["meets"]),
            current=bool(row["current"]),
            sample=row["sample"],
        )


def _fmt(number: float) -> str:
    if float(number).is_integer():
        return f"{int(number):,}"
    return format(number, ".4g")


def describe(rule: AlertRule, m: Measure | None) -> str:
    """The numbers of one measure in words, e.g. ``82% of 50 rows match blocked``."""
    cond = rule.condition
    if m is None or m.rows == 0:
        return "no rows"
    if isinstance(cond, RatioCondition):
        return f"{m.value:.0%} of {m.rows:,} rows match {cond.numerator} ({m.matched:,})"
    if isinstance(cond, SumCondition):
        return f"{cond.column} {_fmt(m.total or 0.0)} over {m.rows:,} rows"
    return f"{m.rows:,} rows"


def _threshold_text(rule: AlertRule) -> str:
    cond = rule.condition
    value = f"{cond.threshold:.0%}" if isinstance(cond, RatioCondition) else _fmt(cond.threshold)
    return f"{cond.op} {value}"


def _counts(rule: AlertRule, m: Measure | None) -> dict[str, float]:
    counts: dict[str, float] = {"rows": float(m.rows if m else 0)}
    if isinstance(rule.condition, RatioCondition):
        counts["matched"] = float((m.matched or 0) if m else 0)
    if isinstance(rule.condition, SumCondition):
        counts["sum"] = float((m.total or 0.0) if m else 0.0)
    return counts


def _details(rule: AlertRule, max_time: datetime, m: Measure | None) -> dict[str, str | int | float | bool | None]:
    details: dict[str, str | int | float | bool | None] = {
        "stream": rule.stream,
        "window": rule.window,
        "slide": rule.slide or rule.window,
        "event_time": max_time.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
    }
    if rule.description:
        details["description"] = rule.description[:250]
    if rule.include_text and m is not None and m.sample:
        details["sample_error_message"] = m.sample[:_MAX_SAMPLE]
    return details


def fire(rule: AlertRule, m: Measure, *, now: datetime, max_time: datetime) -> Alert:
    """The firing alert of ``rule`` for the group and window of ``m``."""
    group = ", ".join(f"{k}={v}" for k, v in sorted(m.group.items())) or "-"
    summary = f"{rule.name} [{group}]: {describe(rule, m)}, {_threshold_text(rule)} over {rule.window}"
    return Alert(
        rule=rule.name, group=m.group, status="firing", severity=rule.severity, summary=summary,
        value=m.value, threshold=rule.condition.threshold, window_start=m.window_start, window_end=m.window_end,
        started_at=now, counts=_counts(rule, m), links=tuple((link.text, link.url) for link in rule.links),
        details=_details(rule, max_time, m),
    )


def resolve(rule: AlertRule | None, firing: Alert, m: Measure | None, *, now: datetime, max_time: datetime,
            window: tuple[datetime, datetime] | None = None) -> Alert:
    """The resolved form of ``firing``: its numbers in the current window ``m`` (none when it has no rows)."""
    if rule is None:
        return firing.resolve(now, summary=f"{firing.rule} [{firing.group_text()}]: rule removed from config")
    start, end = (m.window_start, m.window_end) if m is not None else (window or (firing.window_start,
                                                                                    firing.window_end))
    summary = (f"{rule.name} [{firing.group_text()}] resolved: {describe(rule, m)}, no window "
               f"{_threshold_text(rule)} over {rule.window}")
    return firing.resolve(now, summary=summary, value=m.value if m else 0.0, window_start=start, window_end=end,
                          counts=_counts(rule, m), details=_details(rule, max_time, m))


def decide(rule: AlertRule, measures: Iterable[Measure], firing: Mapping[str, Alert], *, now: datetime,
           max_time: datetime) -> list[Alert]:
    """The transitions of ``rule``: fires for groups newly meeting it, resolves for firing groups that no longer do.

    Args:
        rule: the rule.
        measures: its ``windowed`` rows (at least every meeting window and every current window).
        firing: the firing alerts of this rule, by dedup key.
        now: the wall-clock time of the transition (``started_at`` / ``ended_at``).
        max_time: the event time evaluated.

    Returns:
        New firing alerts and resolved alerts, in dedup-key order.
    """
    by_key: dict[str, list[Measure]] = {}
    for m in measures:
        by_key.setdefault(make_dedup_key(rule.name, m.group), []).append(m)
    out: list[Alert] = []
    bounds = span(rule, max_time)
    current_window = (from_micros(bounds.current_start), from_micros(bounds.current_end))
    for key in sorted(set(by_key) | set(firing)):
        ms = by_key.get(key, [])
        meeting = sorted((m for m in ms if m.meets), key=lambda m: m.window_end)
        current = next((m for m in ms if m.current), None)
        if meeting and key not in firing:
            out.append(fire(rule, meeting[-1], now=now, max_time=max_time))
        elif not meeting and key in firing:
            out.append(resolve(rule, firing[key], current, now=now, max_time=max_time, window=current_window))
    return out


def event_id(alert: Alert) -> str:
    """A stable id of one transition: the dedup key, the status and when it started or ended."""
    when = alert.ended_at if alert.ended_at is not None else alert.started_at
    raw = f"{alert.dedup_key}|{alert.status}|{micros(when)}"
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()  # noqa: S324 - an identifier, not security
