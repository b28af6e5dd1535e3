"""The alert decision, in plain Python: counting windows, and fire once / resolve once per group.

``count_rows`` counts a rule's rows (collected by ``alerts.scan``) into
running per-window cells (``count_table`` does the same over the rows as
Arrow, vectorised), which can be added to batch by batch
(``add_cells``) and pruned as event time moves on; ``measures_from_cells``
reads the windows that count at a given event time; ``decide`` compares those numbers with the alerts that are
firing and returns the transitions: a fire for a group that newly meets the
condition, a resolve for a firing group that no longer does (or has no rows
left in the windows, because event time moved on). Alerts carry counts,
rates, the rule, the group and links; an error message sample only when the
rule has ``include_text``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gatewatch.alerts.rules import AlertRule, RatioCondition, SumCondition
from gatewatch.alerts.sinks.model import Alert, make_dedup_key
from gatewatch.alerts.windows import MAX_SAMPLE, US, from_micros, micros, span

Row = tuple[int, Mapping[str, str], "bool | None", "float | None", "str | None"]


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
        details["sample_error_message"] = m.sample[:MAX_SAMPLE]
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


def _value(rule: AlertRule, rows: int, matched: int, total: float) -> float:
    if isinstance(rule.condition, RatioCondition):
        return matched / rows if rows else 0.0
    if isinstance(rule.condition, SumCondition):
        return total
    return float(rows)


def meets(rule: AlertRule, rows: int, value: float) -> bool:
    """Whether a window with ``rows`` rows and ``value`` meets the rule (``min_rows`` included)."""
    cond = rule.condition
    if rows < cond.min_rows:
        return False
    return value > cond.threshold if cond.op == ">" else value >= cond.threshold


GroupKey = tuple[tuple[str, str], ...]
Cells = dict[tuple[GroupKey, int], list]
"""A rule's running counts: ``(group, k)`` (the window starting at ``k * slide``) to
``[rows, matched, total, {sample: rows}]``."""


def _k_first(rule: AlertRule, max_time: datetime) -> int:
    """The first window (by start index) that still counts at ``max_time``: it ends after ``max_time - watermark``."""
    w, s = rule.window_s * US, rule.slide_s * US
    return (span(rule, max_time).first_end - w) // s + 1


def count_rows(rule: AlertRule, rows: Iterable[Row], max_time: datetime) -> Cells:
    """Count a rule's rows into every window holding them that still counts or is yet to come.

    A row counts in each sliding window it falls in, from the first window
    that still takes late rows at ``max_time`` up to the last window starting
    at or before the row, so cells counted now stay right when event time
    moves on and later windows become current. ``measures_from_cells`` picks
    the windows that count at the time of a decision.

    Args:
        rule: the rule.
        rows: ``(t_us, group, hit, amount, sample)`` per row the rule takes
            (event time in microseconds, the group values, whether the ratio
            numerator holds, the summed value, an error message sample).
        max_time: the event time reached.
    """
    w, s = rule.window_s * US, rule.slide_s * US
    k_first = _k_first(rule, max_time)
    acc: Cells = {}
    for t, group, hit, amount, sample in rows:
        key = tuple(sorted(group.items()))
        for k in range(max(k_first, (t - w) // s + 1), t // s + 1):
            cell = acc.get((key, k))
            if cell is None:
                cell = acc[(key, k)] = [0, 0, 0.0, {}]
            cell[0] += 1
            cell[1] += 1 if hit else 0
            cell[2] += amount or 0.0
            if sample:
                cell[3][sample] = cell[3].get(sample, 0) + 1
    return acc


def count_table(i: int, rule: AlertRule, scanned: pa.Table, max_time: datetime) -> Cells:
    """``count_rows`` of rule number ``i`` over ``alerts.scan`` rows collected as Arrow, counted by Arrow.

    The same cells as ``count_rows(rule, rule_rows(i, rule, rows), max_time)``:
    each row is expanded into the windows holding it (one vectorised pass per
    window offset) and the cells are Arrow group-by aggregates, so a batch
    of 100k rows counts in a fraction of a second instead of a Python loop
    over every row and window. A row with an ``n`` column stands for ``n``
    rows (``alerts.batch_counts``: its ``amount_<i>`` is their sum).
    """
    w, s = rule.window_s * US, rule.slide_s * US
    taken = scanned.filter(pc.fill_null(scanned.column(f"in_{i}"), False))
    if taken.num_rows == 0:
        return {}
    t = taken.column("t_us").to_numpy()
    k_top = t // s
    k_low = np.maximum((t - w) // s + 1, _k_first(rule, max_time))
    keys = [f"g_{k}" for k in rule.group_by]
    n = (pc.cast(taken.column("n"), pa.int64()) if "n" in taken.column_names
         else pa.array(np.ones(taken.num_rows, dtype=np.int64)))
    base = {
        **{name: taken.column(name) for name in keys},
        "n": n,
        "hit": pc.multiply(pc.cast(pc.fill_null(taken.column(f"hit_{i}"), False), pa.int64()), n),
        "amount": pc.fill_null(pc.cast(taken.column(f"amount_{i}"), pa.float64()), 0.0),
        "sample": taken.column(f"sample_{i}"),
    }
    pieces = []
    for offset in range(int((k_top - k_low).max(initial=-1)) + 1):  # the windows holding each row, latest first
        keep = k_top - offset >= k_low
        if keep.any():
            mask = pa.array(keep)
            pieces.append(pa.table({**{name: pc.filter(c, mask) for name, c in base.items()},
                                    "k": pa.array((k_top - offset)[keep])}))
    if not pieces:
        return {}
    expanded = pa.concat_tables(pieces)
    counted = expanded.group_by([*keys, "k"]).aggregate([("n", "sum"), ("hit", "sum"), ("amount", "sum")])
    cells: Cells = {}
    for row in counted.to_pylist():
        cells[(_scan_group(rule, row), row["k"])] = [int(row["n_sum"]), int(row["hit_sum"] or 0),
                                                      float(row["amount_sum"] or 0.0), {}]
    with_sample = expanded.filter(pc.is_valid(expanded.column("sample")))
    if with_sample.num_rows:
        for row in with_sample.group_by([*keys, "k", "sample"]).aggregate([("n", "sum")]).to_pylist():
            if row["sample"]:
                cells[(_scan_group(rule, row), row["k"])][3][row["sample"]] = int(row["n_sum"])
    return cells


def _scan_group(rule: AlertRule, row: Mapping) -> GroupKey:
    """The group key of a row with ``alerts.scan``'s ``g_<column>`` values."""
    return tuple(sorted((k, row[f"g_{k}"]) for k in rule.group_by))


def cells_from_windows(rule: AlertRule, rows: Iterable[Mapping]) -> Cells:
    """The cells of collected ``alerts.windowed`` rows (a rule aggregated by Spark)."""
    s = rule.slide_s * US
    cells: Cells = {}
    for row in rows:
        key = tuple(sorted((row["group"] or {}).items()))
        sample = row["sample"]
        cells[(key, row["window_start_us"] // s)] = [
            int(row["rows"]), int(row["matched"] or 0), float(row["total"] or 0.0),
            {sample: int(row["rows"])} if sample else {},
        ]
    return cells


def add_cells(base: Cells, more: Cells) -> Cells:
    """``base`` with ``more`` added, as a new mapping (neither argument changes)."""
    out = dict(base)
    for key, (n, matched, total, samples) in more.items():
        have = out.get(key)
        if have is None:
            out[key] = [n, matched, total, dict(samples)]
            continue
        merged = dict(have[3])
        for text, count in samples.items():
            merged[text] = merged.get(text, 0) + count
        out[key] = [have[0] + n, have[1] + matched, have[2] + total, merged]
    return out


def prune(rule: AlertRule, cells: Cells, max_time: datetime) -> Cells:
    """``cells`` without the windows that no longer count at ``max_time`` (they never will again)."""
    k_first = _k_first(rule, max_time)
    return {key: cell for key, cell in cells.items() if key[1] >= k_first}


def measures_from_cells(rule: AlertRule, cells: Cells, max_time: datetime) -> list[Measure]:
    """One ``Measure`` per group and window that counts at ``max_time``.

    Those are the windows ending in ``(max_time - watermark, current end]``
    (the driver-side twin of ``alerts.windowed``).
    """
    w, s = rule.window_s * US, rule.slide_s * US
    k_current = span(rule, max_time).current_start // s
    k_first = _k_first(rule, max_time)
    out = []
    for (key, k), (n, matched, total, samples) in sorted(cells.items(), key=lambda item: item[0]):
        if not k_first <= k <= k_current or n == 0:
            continue
        value = _value(rule, n, matched, total)
        out.append(Measure(
            group=dict(key), window_start=from_micros(k * s), window_end=from_micros(k * s + w), rows=n,
            matched=matched if isinstance(rule.condition, RatioCondition) else None,
            total=total if isinstance(rule.condition, SumCondition) else None,
            value=value, meets=meets(rule, n, value), current=k == k_current,
            sample=max(samples, key=lambda text: (samples[text], text)) if samples else None,
        ))
    return out


def measures_from_rows(rule: AlertRule, rows: Iterable[Row], max_time: datetime) -> list[Measure]:
    """Count a rule's rows into the windows that count at ``max_time`` (``count_rows``, then ``measures_from_cells``).

    Returns:
        One ``Measure`` per group and window holding at least one row, for the
        windows ending in ``(max_time - watermark, current end]``.
    """
    return measures_from_cells(rule, count_rows(rule, rows, max_time), max_time)


def rule_rows(i: int, rule: AlertRule, scanned: Iterable[Mapping]) -> Iterator[Row]:
    """The ``measures_from_rows`` input of rule number ``i`` from collected ``alerts.scan`` rows."""
    for row in scanned:
        if row[f"in_{i}"]:
            yield (row["t_us"], {k: row[f"g_{k}"] for k in rule.group_by}, row[f"hit_{i}"], row[f"amount_{i}"],
                   row[f"sample_{i}"])
