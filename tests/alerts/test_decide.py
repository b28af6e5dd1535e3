"""The pure alert decision: which windows count, and fire once / resolve once per group."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from gatewatch.settings import AlertRule
from gatewatch.alerts.sinks.model import make_dedup_key
from gatewatch.alerts.decide import Measure, decide, event_id, measures_from_rows
from gatewatch.alerts.windows import from_micros, micros, span

T = datetime(2026, 3, 2, 9, 7, 30, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
RULE = AlertRule.model_validate({
    "name": "blocks", "stream": "requests", "group_by": ["endpoint"], "window": "5 minutes", "slide": "1 minute",
    "watermark": "2 minutes", "severity": "critical",
    "condition": {"type": "ratio", "numerator": "blocked", "threshold": 0.5, "min_rows": 20},
})


def measure(endpoint: str, rows: int, matched: int, *, end: datetime, current: bool = True) -> Measure:
    """One window's numbers for ``endpoint``, judged as the rule would."""
    value = matched / rows
    return Measure(group={"endpoint": endpoint}, window_start=end - timedelta(minutes=5), window_end=end,
                   rows=rows, matched=matched, total=None, value=value, meets=rows >= 20 and value >= 0.5,
                   current=current)


class TestSpan:
    def test_the_current_window_covers_the_last_window_length(self):
        """At 09:07:30 with 5 min windows sliding by 1 min, the current window is 09:03-09:08."""
        s = span(RULE, T)
        assert from_micros(s.current_start) == T.replace(minute=3, second=0)
        assert from_micros(s.current_end) == T.replace(minute=8, second=0)

    def test_late_rows_are_read_back_to_window_plus_watermark(self):
        """Rows from 7 minutes before the event time are read; windows ending 2 minutes back still count."""
        s = span(RULE, T)
        assert from_micros(s.read_from) == T - timedelta(minutes=7)
        assert from_micros(s.first_end) == T - timedelta(minutes=2)

    def test_micros_round_trip(self):
        """Microseconds since the epoch convert both ways."""
        assert from_micros(micros(T)) == T


class TestDecide:
    def test_a_group_meeting_the_condition_fires_once(self):
        """A group whose window meets the rule fires; the next evaluation, already firing, does not."""
        end = T.replace(minute=8, second=0)
        [alert] = decide(RULE, [measure("chat", 40, 30, end=end)], {}, now=NOW, max_time=T)
        assert (alert.status, alert.group, alert.severity) == ("firing", {"endpoint": "chat"}, "critical")
        assert alert.dedup_key == make_dedup_key("blocks", {"endpoint": "chat"})
        assert alert.counts == {"rows": 40.0, "matched": 30.0} and alert.started_at == NOW
        assert "75% of 40 rows" in alert.summary
        again = decide(RULE, [measure("chat", 45, 33, end=end)], {alert.dedup_key: alert}, now=NOW, max_time=T)
        assert again == []

    def test_too_few_rows_do_not_fire(self):
        """Below min_rows a high ratio is not an alert; a calm group never fires."""
        end = T.replace(minute=8, second=0)
        assert decide(RULE, [measure("chat", 10, 10, end=end), measure("calm", 100, 5, end=end)], {},
                      now=NOW, max_time=T) == []

    def test_a_window_still_within_the_watermark_keeps_it_firing(self):
        """A meeting window that ended within the watermark counts even if the current one is calm."""
        end = T.replace(minute=8, second=0)
        old = measure("chat", 40, 30, end=end - timedelta(minutes=1), current=False)
        calm = measure("chat", 40, 2, end=end)
        [alert] = decide(RULE, [old, calm], {}, now=NOW, max_time=T)
        assert alert.window_end == old.window_end

    def test_a_firing_group_resolves_when_its_windows_clear(self):
        """A firing group whose windows no longer meet the rule resolves with the current window's numbers."""
        end = T.replace(minute=8, second=0)
        [fired] = decide(RULE, [measure("chat", 40, 30, end=end)], {}, now=NOW, max_time=T)
        later = NOW + timedelta(minutes=3)
        [resolved] = decide(RULE, [measure("chat", 50, 5, end=end)], {fired.dedup_key: fired}, now=later,
                            max_time=T)
        assert (resolved.status, resolved.dedup_key, resolved.ended_at) == ("resolved", fired.dedup_key, later)
        assert resolved.started_at == fired.started_at and resolved.value == 0.1
        assert event_id(resolved) != event_id(fired)

    def test_a_firing_group_without_rows_resolves(self):
        """When event time moved on and the group has no rows in its windows, it resolves with zero rows."""
        end = T.replace(minute=8, second=0)
        [fired] = decide(RULE, [measure("chat", 40, 30, end=end)], {}, now=NOW, max_time=T)
        moved = T + timedelta(minutes=20)
        [resolved] = decide(RULE, [], {fired.dedup_key: fired}, now=NOW, max_time=moved)
        assert resolved.status == "resolved" and resolved.counts["rows"] == 0
        assert resolved.window_end == from_micros(span(RULE, moved).current_end)


class TestCounting:
    def test_rows_are_counted_into_every_window_that_still_counts(self):
        """A row counts in each sliding window holding it, among the windows ending within the watermark or current."""
        def at(minute: int, second: int = 0) -> int:
            return micros(T.replace(minute=minute, second=second))

        rows = [(at(7, 10), {"endpoint": "chat"}, True, None, None),
                (at(5, 0), {"endpoint": "chat"}, False, None, None),
                (at(2, 59), {"endpoint": "chat"}, True, None, None),
                (at(7, 0), {"endpoint": "calm"}, False, None, None)]
        measures = measures_from_rows(RULE, rows, T)
        chat = {(m.window_start.minute, m.window_end.minute): (m.rows, m.matched, m.current)
                for m in measures if m.group == {"endpoint": "chat"}}
        # windows ending after 09:05:30 and at most 09:08: 09:01-09:06, 09:02-09:07, 09:03-09:08 (current)
        assert chat == {(1, 6): (2, 1, False), (2, 7): (2, 1, False), (3, 8): (2, 1, True)}
        [calm] = [m for m in measures if m.group == {"endpoint": "calm"} and m.current]
        assert (calm.rows, calm.value, calm.meets) == (1, 0.0, False)

    def test_a_meeting_window_needs_min_rows(self):
        """Twenty blocked rows in the current window meet the rule; nineteen do not."""
        rows = [(micros(T) - i * 1_000_000, {"endpoint": "chat"}, True, None, None) for i in range(20)]
        assert any(m.meets and m.current for m in measures_from_rows(RULE, rows, T))
        assert not any(m.meets for m in measures_from_rows(RULE, rows[:19], T))


class TestRunningCounts:
    def test_counts_added_batch_by_batch_match_counting_everything_later(self):
        """Cells counted per batch as event time moves, then added and pruned, give the windows a single count gives."""
        from gatewatch.alerts.decide import add_cells, count_rows, measures_from_cells, prune

        start = micros(T) - 20 * 60 * 1_000_000
        rows = [(start + i * 17_000_000, {"endpoint": ["chat", "calm"][i % 2]}, i % 3 == 0, None, None)
                for i in range(70)]
        cells: dict = {}
        for first in range(0, len(rows), 9):  # batches of 9 rows, the clock at each batch's latest row
            batch = rows[first:first + 9]
            clock = from_micros(max(t for t, *_ in batch))
            cells = prune(RULE, add_cells(cells, count_rows(RULE, batch, clock)), clock)
        clock = from_micros(rows[-1][0])
        late = measures_from_cells(RULE, cells, clock)
        once = measures_from_rows(RULE, rows, clock)
        assert late == once
        assert {m.group["endpoint"] for m in once} == {"chat", "calm"} and any(m.current for m in once)

    def test_adding_cells_changes_neither_side(self):
        """``add_cells`` returns a new mapping: the running counts stay as they were if a batch is dropped."""
        from gatewatch.alerts.decide import add_cells, count_rows

        rows = [(micros(T), {"endpoint": "chat"}, True, None, "boom")]
        base = count_rows(RULE, rows, T)
        before = {k: [v[0], v[1], v[2], dict(v[3])] for k, v in base.items()}
        more = count_rows(RULE, rows, T)
        total = add_cells(base, more)
        assert base == before and more == before
        assert all(cell[0] == 2 and cell[3] == {"boom": 2} for cell in total.values())

    def test_arrow_counting_gives_the_cells_of_the_row_by_row_count(self):
        """``count_table`` over scan columns equals ``count_rows``: late rows dropped, nulls, samples, two groups."""
        import pyarrow as pa

        from gatewatch.alerts.decide import count_rows, count_table, rule_rows

        start = micros(T) - 12 * 60 * 1_000_000  # older than the watermark allows: the first rows count nowhere
        scanned = pa.table({
            "t_us": [start + i * 11_000_000 for i in range(70)],
            "g_endpoint": [["chat", "calm", None][i % 3] for i in range(70)],
            "in_0": [i % 7 != 0 for i in range(70)],
            "hit_0": [None if i % 5 == 0 else i % 2 == 0 for i in range(70)],
            "amount_0": [None if i % 4 == 0 else float(i) for i in range(70)],
            "sample_0": [["boom", None, "", "bang"][i % 4] for i in range(70)],
        })
        row_by_row = count_rows(RULE, list(rule_rows(0, RULE, scanned.to_pylist())), T)
        assert len({k for k, _ in row_by_row}) == 3 and any(cell[3] for cell in row_by_row.values())
        assert count_table(0, RULE, scanned, T) == row_by_row
        assert count_table(0, RULE, scanned.slice(0, 0), T) == {}

    def test_a_row_standing_for_n_rows_counts_n_times(self):
        """``count_table`` over rows with ``n`` (``alerts.batch_counts``) gives the cells of the rows it stands for."""
        import pyarrow as pa

        from gatewatch.alerts.decide import count_table

        start = micros(T) - 4 * 60 * 1_000_000
        rows = pa.table({
            "t_us": [start + i * 7_000_000 for i in range(40)],
            "g_endpoint": [["chat", None][i % 2] for i in range(40)],
            "in_0": [i % 9 != 0 for i in range(40)],
            "hit_0": [i % 3 == 0 for i in range(40)],
            "amount_0": [float(i) for i in range(40)],
            "sample_0": [["boom", None][i % 2] for i in range(40)],
        })
        doubled = pa.concat_tables([rows, rows])
        weighted = rows.append_column("n", pa.array([2] * 40, pa.int64())).set_column(
            4, "amount_0", pa.array([2.0 * i for i in range(40)]))
        expected = count_table(0, RULE, doubled, T)
        assert len(expected) > 3 and any(cell[3] for cell in expected.values())
        assert count_table(0, RULE, weighted, T) == expected
