"""Events and alerting inside the job: the events tables, the outbox when a sink is down, and restarts.

Each test runs the real job (change feed, foreachBatch, Delta outputs) on a
local inference table and waits with ``processAllAvailable``. The sink is a
loopback webhook receiver whose answer the test switches.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from gatewatch.errors import ConfigError
from gatewatch.settings import Settings
from gatewatch.traffic import generate as traffic
from gatewatch.streams.events import events_context, handle_events_batch
from gatewatch.streams.batch import BatchContext, handle_batch
from gatewatch.streams.config import read_rules
from gatewatch.streams.job import Job
from gatewatch.streams.source import to_canonical
from tests.receivers import Hook, webhook_receiver

T0 = traffic.DEFAULT_START
SPIKE_RULE = next(r for r in read_rules() if r["name"] == "content_filter_spike")


@pytest.fixture()
def hook() -> Iterator[Hook]:
    """A started receiver on 127.0.0.1; stopped after the test."""
    with webhook_receiver() as state:
        yield state


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/alerts"


def settings_for(tmp: Path, url: str, rules: list[dict] | None = None) -> Settings:
    """One chat-prod source, the packaged content-filter rule, one webhook sink retrying once, quickly."""
    return Settings.model_validate({
        "sources": [{"table": str(tmp / "chat"), "endpoint": "chat-prod"}],
        "output": {"location": str(tmp / "out")},
        "checkpoint_root": str(tmp / "ckpt"),
        "trigger": {"mode": "processing_time", "interval": "1 second"},
        "alerts": {"rules": [SPIKE_RULE] if rules is None else rules, "deliver_interval_s": 0},
        "sinks": [{"name": "hook", "type": "webhook", "url": url,
                   "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02}}],
    })


def commit(spark, tmp: Path, rows, job: Job | None = None) -> None:
    """Write ``rows`` to the source in one commit and, with a job, wait until it processed them."""
    traffic.write_rows(spark, str(tmp / "chat"), rows)
    if job is not None:
        for rs in job.running:
            rs.query.processAllAvailable()


def table(spark, tmp: Path, name: str):
    """An output table as a DataFrame."""
    return spark.read.format("delta").load(str(tmp / "out" / name))


def calm(seed: int, minutes: float) -> list:
    """Ordinary chat-prod traffic starting ``minutes`` after T0."""
    return traffic.generate(120, seed=seed, endpoints=("chat-prod",), start=T0 + timedelta(minutes=minutes),
                            malformed_rate=0.0)


def spike(seed: int, minutes: float, n: int = 60) -> list:
    """A content-filter spike on chat-prod starting ``minutes`` after T0 (80% blocked)."""
    return traffic.spike(n, endpoint="chat-prod", seed=seed, start=T0 + timedelta(minutes=minutes))


class TestEvents:
    def test_token_and_safety_events_of_known_rows(self, spark, tmp_path):
        """Each request with tokens gives one token event with its counts; each filtered category one safety event; a replayed events batch adds none."""
        traffic.create_inference_table(spark, str(tmp_path / "chat"))
        rows = calm(1, 0) + spike(2, 1, n=40)
        commit(spark, tmp_path, rows)
        job = Job(spark, settings_for(tmp_path, "http://127.0.0.1:9/", rules=[]))
        source = job.sources[0]
        batch = (
            spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0)
            .load(str(tmp_path / "chat")).transform(lambda df: to_canonical(df, source.kind, source.settings))
        )
        ctx = BatchContext(source="chat", app_id="events-test", requests=job.tables["requests"],
                           quarantine=job.tables["quarantine"], contract=job.contract)
        metrics = handle_batch(ctx, batch, 0)
        handle_batch(ctx, batch, 0)
        changes = (spark.read.format("delta").option("readChangeFeed", "true")
                   .option("startingVersion", job.events_start).load(job.tables["requests"].ref))
        events = events_context(job.settings, job.tables)
        handle_events_batch(events, changes, 0)
        handle_events_batch(events, changes, 0)

        truth = {g.row["databricks_request_id"]: g.truth for g in rows}
        tokens = {r["databricks_request_id"]: r for r in table(spark, tmp_path, "token_usage_events").collect()}
        expected = {i: t for i, t in truth.items() if t.outcome is not None and t.total_tokens is not None}
        assert set(tokens) == set(expected) and metrics["token_events"] == len(expected)
        for rid, t in expected.items():
            event = tokens[rid]
            assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (
                t.input_tokens, t.output_tokens, t.total_tokens)
            assert (event["endpoint"], event["model"]) == ("chat-prod", t.model)
            assert event["source_table"] == str(tmp_path / "chat")

        safety = table(spark, tmp_path, "safety_events")
        assert safety.count() == metrics["safety_events"] > 0
        filtered = {(r["databricks_request_id"], r["category"]) for r in safety.where("filtered").collect()}
        assert filtered == {(i, c) for i, t in truth.items() if t.outcome is not None for c in t.categories}
        assert safety.where("NOT filtered AND NOT coalesce(detected, false)").count() == 0
        assert {r[0] for r in safety.select("endpoint").distinct().collect()} == {"chat-prod"}


class TestOutbox:
    def test_a_down_sink_keeps_the_alert_pending_until_it_is_back(self, spark, tmp_path, hook):
        """While the webhook answers 503 the firing alert stays pending; once it is back it arrives exactly once."""
        traffic.create_inference_table(spark, str(tmp_path / "chat"))
        hook.status = 503
        job = Job(spark, settings_for(tmp_path, hook.url)).start()
        try:
            commit(spark, tmp_path, calm(1, 0) + spike(2, 10), job)
            outbox = table(spark, tmp_path, "alert_outbox").collect()
            assert [(r["status"], r["delivery_status"], r["attempts"]) for r in outbox] == [("firing", "pending", 1)]
            assert len(hook.answered(503)) == 2  # one delivery, retried once
            hook.status = 200
            commit(spark, tmp_path, spike(3, 10.5), job)  # the next batch delivers what is pending
            assert len(hook.answered(200)) == 1
            assert job.alerting.deliver() == {"delivered": 0, "failed": 0, "pending": 0, "resent": 0}
        finally:
            job.stop()
        [alert] = hook.answered(200)
        assert (alert["rule"], alert["group"], alert["status"]) == ("content_filter_spike", {"endpoint": "chat-prod"},
                                                                    "firing")
        outbox = table(spark, tmp_path, "alert_outbox").collect()
        assert [(r["delivery_status"], r["attempts"]) for r in outbox] == [("delivered", 2)]
        attempts = table(spark, tmp_path, "alert_deliveries").orderBy("at").collect()
        assert [(r["attempt"], r["ok"], r["http_status"], r["requests"]) for r in attempts] == [
            (1, False, 503, 2), (2, True, 200, 1)]
        [state] = table(spark, tmp_path, "alerts").collect()
        assert (state["status"], state["group"]) == ("firing", {"endpoint": "chat-prod"})


class TestRestart:
    def test_a_start_does_not_read_the_tables_it_created(self, spark, tmp_path, hook, monkeypatch):
        """A first start creates the tables and reads none of them for the alert state; a restart reads them."""
        from gatewatch.streams import outputs as out

        traffic.create_inference_table(spark, str(tmp_path / "chat"))
        asked: list[str] = []
        holds_rows = out.Table.holds_rows

        def asking(table, spark, created=()):  # records the tables asked through Delta
            if table.ref not in created:
                asked.append(Path(table.ref).name)
            return holds_rows(table, spark, created)

        monkeypatch.setattr(out.Table, "holds_rows", asking)
        first = Job(spark, settings_for(tmp_path, hook.url))
        try:
            assert first.alerting.courier.pending == 0 and first.alerting.max_us is None
            assert asked == []
            first.start()
            commit(spark, tmp_path, calm(1, 0) + spike(2, 10), first)
        finally:
            first.stop()
        assert [a["status"] for a in hook.answered(200)] == ["firing"]
        asked.clear()
        again = Job(spark, settings_for(tmp_path, hook.url))  # same outputs: they exist, the state is read
        try:
            assert {"requests", "quarantine", "alerts", "alert_outbox"} <= set(asked)
            assert [a.status for a in again.alerting.firing.values()] == ["firing"]
        finally:
            again.alerting.close()

    def test_a_job_on_new_tables_leaves_out_deltas_first_commit_compaction_until_it_stops(self, spark, tmp_path, hook):
        """Tables all created at the start hold no file to compact: the job's sessions count their own files
        (``compact_own_files``) until it stops; a job on existing tables keeps Delta's default."""
        from gatewatch.streams.spark import FIRST_COMMIT_COMPACTION

        traffic.create_inference_table(spark, str(tmp_path / "chat"))
        spark.conf.unset(FIRST_COMMIT_COMPACTION)  # Delta's default (a job another test did not stop may have set it)
        first = Job(spark, settings_for(tmp_path, hook.url))
        try:
            assert spark.conf.get(FIRST_COMMIT_COMPACTION) == "false"
            assert first.alerting.session.conf.get(FIRST_COMMIT_COMPACTION) == "false"  # the alert tables' writer
        finally:
            first.stop()
        assert spark.conf.get(FIRST_COMMIT_COMPACTION, None) is None
        again = Job(spark, settings_for(tmp_path, hook.url))
        try:
            assert spark.conf.get(FIRST_COMMIT_COMPACTION, None) is None
            assert again.alerting.session.conf.get(FIRST_COMMIT_COMPACTION, None) is None
        finally:
            again.stop()

    def test_a_first_runs_first_batch_counts_alongside_its_writes_and_a_restarted_one_recounts(self, spark, tmp_path,
                                                                                               hook):
        """Tables without a row count nothing, so a first run's first batch adds its rows to zero (and fires);
        the first batch of a job restarted over tables with rows counts from them after its writes."""
        traffic.create_inference_table(spark, str(tmp_path / "chat"))
        seen: list[dict] = []
        first = Job(spark, settings_for(tmp_path, hook.url), on_metrics=seen.append).start()
        try:
            commit(spark, tmp_path, calm(1, 0) + spike(2, 10), first)
        finally:
            first.stop()
        assert [m["alerts"]["recounted"] for m in seen if m.get("rows")] == [False]
        assert [(a["rule"], a["status"]) for a in hook.answered(200)] == [("content_filter_spike", "firing")]
        for name in ("alert_outbox", "alert_deliveries", "alerts"):  # one file a commit: nothing to compact
            commits = spark.sql(f"DESCRIBE HISTORY delta.`{tmp_path / 'out' / name}`").collect()
            assert [c["operation"] for c in commits][::-1] == ["CREATE TABLE", "WRITE"]  # the first state: appended
            assert table(spark, tmp_path, name).inputFiles() and len(table(spark, tmp_path, name).inputFiles()) == 1
        seen.clear()
        again = Job(spark, settings_for(tmp_path, hook.url), on_metrics=seen.append).start()
        try:
            commit(spark, tmp_path, spike(3, 10.5), again)
        finally:
            again.stop()
        assert [m["alerts"]["recounted"] for m in seen if m.get("rows")] == [True]
        assert [m["alerts"]["firing"] for m in seen if m.get("rows")] == [1]

    def test_a_restart_neither_refires_nor_loses_the_alert(self, spark, tmp_path, hook):
        """Fired while the sink was unreachable, the alert goes out when the restarted job starts, once; it resolves once.

        The restarted job counts its batches with Spark first (``max_rows_per_rule`` 0), the first run's
        batches without.
        """
        traffic.create_inference_table(spark, str(tmp_path / "chat"))
        first = Job(spark, settings_for(tmp_path, closed_port_url())).start()
        try:
            commit(spark, tmp_path, calm(1, 0) + spike(2, 10), first)
        finally:
            first.stop()
        assert [r["delivery_status"] for r in table(spark, tmp_path, "alert_outbox").collect()] == ["pending"]
        [fired] = table(spark, tmp_path, "alerts").collect()

        settings = settings_for(tmp_path, hook.url)  # every batch aggregated by Spark: max_rows_per_rule 0
        settings = settings.model_copy(update={"alerts": settings.alerts.model_copy(update={"max_rows_per_rule": 0})})
        again = Job(spark, settings).start()  # same checkpoint and outputs
        try:
            assert [a["status"] for a in hook.answered(200)] == ["firing"]  # sent on start
            commit(spark, tmp_path, spike(3, 11), again)  # still spiking: no second fire
            assert [a["status"] for a in hook.answered(200)] == ["firing"]
            [state] = table(spark, tmp_path, "alerts").collect()
            assert (state["status"], state["started_at"]) == ("firing", fired["started_at"])
            commit(spark, tmp_path, calm(4, 25), again)  # event time moves past the window
        finally:
            again.stop()
        assert [a["status"] for a in hook.answered(200)] == ["firing", "resolved"]
        outbox = table(spark, tmp_path, "alert_outbox").orderBy("created_at").collect()
        assert [(r["status"], r["delivery_status"]) for r in outbox] == [("firing", "delivered"),
                                                                         ("resolved", "delivered")]
        assert table(spark, tmp_path, "alerts").where(F.col("status") == "resolved").count() == 1


    def test_an_alert_only_for_delta_is_kept_when_the_run_stops_before_its_state_merge(self, spark, tmp_path):
        """A rule whose only sink is Delta has no outbox entry: its batch records the state itself, so no re-fire."""
        traffic.create_inference_table(spark, str(tmp_path / "chat"))
        history = tmp_path / "alert_history"
        settings = Settings.model_validate({
            **settings_for(tmp_path, "http://127.0.0.1:9/").model_dump(mode="json", exclude={"alerts", "sinks"}),
            "alerts": {"rules": [{**SPIKE_RULE, "sinks": ["history"]}], "deliver_interval_s": 0},
            "sinks": [{"name": "history", "type": "delta", "table": str(history)}],
        })
        first = Job(spark, settings).start()
        first.alerting.state.put = lambda transitions, now: None  # the run ends before any background MERGE
        try:
            commit(spark, tmp_path, calm(1, 0) + spike(2, 10), first)
        finally:
            first.stop()
        [fired] = spark.read.format("delta").load(str(history)).collect()

        again = Job(spark, settings).start()  # same checkpoint and outputs
        try:
            commit(spark, tmp_path, spike(3, 11), again)  # still spiking: no second fire
        finally:
            again.stop()
        assert [r["status"] for r in spark.read.format("delta").load(str(history)).collect()] == ["firing"]
        [state] = table(spark, tmp_path, "alerts").collect()
        assert (state["status"], state["started_at"], state["event_id"]) == ("firing", fired["started_at"],
                                                                             fired["event_id"])


class TestWindows:
    def test_counting_on_the_driver_matches_spark_windows(self, spark):
        """For count, ratio and sum rules, the narrow scan counted here gives the numbers of Spark's window aggregation."""
        from datetime import datetime, timezone

        from gatewatch.settings import AlertRule
        from gatewatch.alerts import decide as D
        from gatewatch.alerts import windows as A

        start = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
        rows = [(start + timedelta(seconds=7 * i), ["chat", "agent", None][i % 3], i % 4 == 0 or i > 90,
                 "error" if i % 5 == 0 else "predict_ok", ["a@x", "b@x"][i % 2], 100 + i) for i in range(120)
                if not 95 <= i < 105]
        df = spark.createDataFrame(rows, "request_time timestamp, endpoint string, blocked boolean, outcome string, "
                                         "requester string, total_tokens long")
        base = {"stream": "requests", "window": "5 minutes", "slide": "1 minute", "watermark": "3 minutes"}
        rules = [
            AlertRule.model_validate({**base, "name": "blocks", "group_by": ["endpoint"], "condition": {
                "type": "ratio", "numerator": "blocked", "threshold": 0.3, "min_rows": 5}}),
            AlertRule.model_validate({**base, "name": "tokens", "group_by": ["requester", "endpoint"],
                                      "where": "outcome != 'error'", "condition": {
                                          "type": "sum", "column": "total_tokens", "op": ">", "threshold": 900}}),
            AlertRule.model_validate({**base, "name": "busy", "window": "2 minutes", "slide": "30 seconds",
                                      "condition": {"type": "count", "threshold": 17}}),
        ]
        max_time = start + timedelta(seconds=7 * 119)

        def key(m):
            return (tuple(sorted(m.group.items())), m.window_start, m.window_end, m.rows, m.matched,
                    None if m.total is None else round(m.total, 6), m.meets, m.current)

        for branch in A.plan(rules):
            scanned = df.transform(A.scan(branch, rules, max_time)).collect()
            for i in branch.rules:
                here = D.measures_from_rows(rules[i], D.rule_rows(i, rules[i], scanned), max_time)
                there = [D.Measure.from_row(r) for r in df.transform(A.windowed(rules[i], max_time)).collect()]
                assert sorted(map(key, here)) == sorted(map(key, there)), rules[i].name
                assert any(m.meets for m in here) and any(not m.meets for m in here), rules[i].name
            scanned = df.transform(A.scan(branch, rules, max_time)).toArrow()
            for i in branch.rules:  # the running cells, upcoming windows included: Arrow on the driver and Spark agree
                arrow = D.count_table(i, rules[i], scanned, max_time)
                spark_cells = D.cells_from_windows(
                    rules[i], df.transform(A.windowed(rules[i], max_time, upcoming=True)).collect())

                def numbers(cells):
                    return {k: (n, matched, round(total, 6)) for k, (n, matched, total, _) in cells.items()}

                assert numbers(arrow) == numbers(spark_cells) and len(arrow) > 3, rules[i].name

    def test_a_batch_aggregated_by_spark_gives_the_cells_of_its_rows(self, spark):
        """``batch_counts`` (per time bucket, in Spark) and the plain scan rows give every rule the same cells.

        The rules' windows and slides differ (the bucket is their common
        divisor), one rule reads another stream, one keeps error samples.
        """
        from datetime import datetime, timezone

        import pyarrow as pa

        from gatewatch.settings import AlertRule
        from gatewatch.alerts import decide as D
        from gatewatch.alerts import windows as A

        start = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
        rows = [(start + timedelta(seconds=2 * i), ["chat", "agent", None][i % 3], i % 4 == 0,
                 ["boom", "bang", None][i % 3] if i % 5 == 0 else None, ["a@x", None][i % 2], 10 + i)
                for i in range(600)]
        requests = spark.createDataFrame(rows, "request_time timestamp, endpoint string, blocked boolean, "
                                               "error_message string, requester string, total_tokens long")
        frames = {"requests": requests, "token_events": requests.where("total_tokens > 20")}
        base = {"stream": "requests", "watermark": "3 minutes"}
        rules = [
            AlertRule.model_validate({**base, "name": "blocks", "group_by": ["endpoint"], "window": "5 minutes",
                                      "slide": "1 minute", "include_text": True,
                                      "condition": {"type": "ratio", "numerator": "blocked", "threshold": 0.3}}),
            AlertRule.model_validate({**base, "name": "tokens", "stream": "token_events", "group_by": ["requester"],
                                      "window": "90 seconds", "slide": "45 seconds", "where": "requester IS NOT NULL",
                                      "condition": {"type": "sum", "column": "total_tokens", "threshold": 900}}),
        ]
        max_time = start + timedelta(seconds=2 * 599)
        assert A.bucket_us(rules) == 15 * 1_000_000
        scanned = A.union_all([frames[b.table].transform(A.scan(b, rules)) for b in A.plan(rules)]).toArrow()
        counted = A.batch_counts(frames, rules).toArrow()
        assert counted.num_rows < scanned.num_rows and pa.compute.sum(counted.column("n")).as_py() == scanned.num_rows
        for i, rule in enumerate(rules):
            cells = D.count_table(i, rule, counted, max_time)
            assert cells == D.count_table(i, rule, scanned, max_time) and len(cells) > 3, rule.name
        assert any(cell[3] for cell in D.count_table(0, rules[0], counted, max_time).values())


class TestRulesAtStart:
    def test_a_rule_filter_over_an_unknown_column_is_refused(self, spark, tmp_path):
        """A ``where`` naming a column the stream lacks is refused at start, naming the rule's key."""
        traffic.create_inference_table(spark, str(tmp_path / "chat"))
        bad = {**SPIKE_RULE, "where": "prompt_text LIKE '%x%'"}
        with pytest.raises(ConfigError) as info:
            Job(spark, settings_for(tmp_path, "http://127.0.0.1:9/", rules=[SPIKE_RULE, bad | {"name": "b"}]))
        assert info.value.key == "alerts.rules.1.where"
        assert "prompt_text" in str(info.value)


class TestState:
    def test_a_transition_the_alerts_table_missed_is_taken_from_the_outbox(self, spark, tmp_path):
        """A run that stopped before its state MERGE: the start takes the outbox's newer transitions and merges them."""
        from datetime import datetime, timezone

        from gatewatch.schemas import ALERT_OUTBOX
        from gatewatch.streams import outputs as out
        from gatewatch.alerts.outbox import OutboxEntry
        from gatewatch.alerts.state import load_state, merge_rows, alert_row
        from gatewatch.alerts.engine import alert_tables, ensure_alert_tables
        from gatewatch.alerts.sinks.model import Alert
        from gatewatch.alerts.decide import event_id

        settings = settings_for(tmp_path, "http://127.0.0.1:9/")
        tables = alert_tables(settings)
        ensure_alert_tables(spark, settings, tables)
        at = [datetime(2026, 3, 2, 9, m, tzinfo=timezone.utc) for m in (0, 5, 10)]
        fired = {name: Alert(rule="content_filter_spike", group={"endpoint": name}, summary="spike", value=0.8,
                             threshold=0.5, window_start=at[0], window_end=at[1], started_at=at[1])
                 for name in ("a", "b", "c")}
        resolved_b = fired["b"].resolve(at[2], summary="calm")
        merge_rows(spark, tables["alerts"], [alert_row(fired["a"], at[1]), alert_row(fired["b"], at[1])])
        missed = [(fired["c"], at[1]), (resolved_b, at[2])]  # in the outbox only
        entries = [OutboxEntry(event_id(a), "hook", a.dedup_key, a.rule, a.status, a.to_json(), when).row()
                   for a, when in missed]
        out.append(spark.createDataFrame(entries, ALERT_OUTBOX), tables["outbox"], "test", 0)

        firing = load_state(spark, tables)

        assert sorted(a.group["endpoint"] for a in firing.values()) == ["a", "c"]
        state = {r["group"]["endpoint"]: (r["status"], r["updated_at"].replace(tzinfo=timezone.utc))
                 for r in table(spark, tmp_path, "alerts").collect()}
        assert state == {"a": ("firing", at[1]), "b": ("resolved", at[2]), "c": ("firing", at[1])}
        merge_rows(spark, tables["alerts"], [alert_row(fired["b"], at[1])])  # an older transition again: no change
        assert table(spark, tmp_path, "alerts").where(F.col("status") == "resolved").count() == 1

    def test_the_state_writer_appends_into_a_table_created_now_without_asking_it_then_merges(self, spark, tmp_path,
                                                                                            monkeypatch):
        """A table created empty at this start: the first write appends (no ``DESCRIBE DETAIL``), the next merges."""
        from datetime import datetime, timezone

        from gatewatch.streams import outputs as out
        from gatewatch.alerts.state import StateWriter
        from gatewatch.alerts.engine import alert_tables, ensure_alert_tables
        from gatewatch.alerts.sinks.model import Alert

        settings = settings_for(tmp_path, "http://127.0.0.1:9/")
        tables = alert_tables(settings)
        created: set[str] = set()
        ensure_alert_tables(spark, settings, tables, created)
        assert tables["alerts"].ref in created
        asked: list[str] = []
        holds_rows = out.Table.holds_rows

        def asking(table, spark, created=()):  # records the tables asked through Delta
            if table.ref not in created:
                asked.append(table.ref)
            return holds_rows(table, spark, created)

        monkeypatch.setattr(out.Table, "holds_rows", asking)
        at = [datetime(2026, 3, 2, 9, m, tzinfo=timezone.utc) for m in (0, 5, 10)]
        fired = Alert(rule="content_filter_spike", group={"endpoint": "a"}, summary="spike", value=0.8,
                      threshold=0.5, window_start=at[0], window_end=at[1], started_at=at[1])
        writer = StateWriter(spark, tables["alerts"], empty=created)
        try:
            writer.put([fired], at[1])
            assert writer.flush(60)
            assert asked == []
            writer.put([fired.resolve(at[2], summary="calm")], at[2])
            assert writer.flush(60)
            assert asked == [tables["alerts"].ref]
        finally:
            writer.close()
        rows = table(spark, tmp_path, "alerts").collect()
        assert [(r["group"]["endpoint"], r["status"]) for r in rows] == [("a", "resolved")]
