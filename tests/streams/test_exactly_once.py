"""Exactly once through the change feed: commits appended while the query runs,
a batch replayed after a crash, and a real process kill then restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gatewatch.traffic import generate as traffic
from gatewatch.streams.job import Job
from tests.streams.helpers import assert_each_once, assert_events_once, commit, landed, settings_for


def test_commits_appended_while_the_query_runs_each_land_once(spark, tmp_path):
    table, out, ckpt = tmp_path / "chat", tmp_path / "out", tmp_path / "ckpt"
    traffic.create_inference_table(spark, str(table))
    ids = commit(spark, table, traffic.generate(40, seed=101))
    job = Job(spark, settings_for(table, out, ckpt)).start()
    try:
        query = job.running[0].query
        query.processAllAvailable()
        for seed in (102, 103, 104):
            ids |= commit(spark, table, traffic.generate(40, seed=seed))
            query.processAllAvailable()
        batches = query.recentProgress
    finally:
        job.stop()
    assert sum(p["numInputRows"] for p in batches) == len(ids)
    assert_each_once(spark, out, ids)
    _assert_readable_by_delta_rs(spark, out)


def _assert_readable_by_delta_rs(spark, out: Path) -> None:
    """The outputs use no table feature other Delta readers lack: delta-rs reads the same rows."""
    import pyarrow as pa
    from deltalake import DeltaTable

    for name in ("requests", "quarantine"):
        table = DeltaTable(str(out / name))
        rows = pa.table(table.to_pyarrow_dataset().to_table()) if hasattr(table, "to_pyarrow_dataset") else None
        assert rows is not None
        assert rows.num_rows == spark.read.format("delta").load(str(out / name)).count() > 0


def test_a_replayed_batch_writes_nothing_twice(spark, tmp_path):
    """Re-running a finished batch id (what a restart after a crash does) is a no-op."""
    from gatewatch.streams.batch import BatchContext, handle_batch
    from gatewatch.streams.source import to_canonical

    table, out = tmp_path / "chat", tmp_path / "out"
    traffic.create_inference_table(spark, str(table))
    ids = commit(spark, table, traffic.generate(30, seed=111, malformed_rate=0.4))
    settings = settings_for(table, out, tmp_path / "ckpt")
    job = Job(spark, settings)  # checks the source, creates the outputs
    source = job.sources[0]
    batch = (
        spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0).load(str(table))
        .transform(lambda df: to_canonical(df, source.kind, source.settings))
    )
    ctx = BatchContext(
        source="chat", app_id="replay-test", requests=job.tables["requests"], quarantine=job.tables["quarantine"],
        contract=job.contract,
    )
    handle_batch(ctx, batch, 0)
    handle_batch(ctx, batch, 0)
    assert_each_once(spark, out, ids)
    # the batch keeps payloads only on rows set aside: the quarantine's are the source's, byte for byte
    raw = ["databricks_request_id", "request", "response"]
    kept = spark.read.format("delta").load(str(out / "quarantine")).select(*raw, "reason").collect()
    source = {r[0]: tuple(r) for r in spark.read.format("delta").load(str(table)).select(*raw).collect()}
    assert "expectation_failed" in {r["reason"] for r in kept}, "a row parsed with an outcome, then set aside"
    assert all(r["response"] for r in kept if r["reason"] == "expectation_failed")
    assert all(tuple(r)[:3] == source[r[0]] for r in kept)


def _one_batch(spark, tmp_path, seed: int):
    """A source of 40 generated rows, its job (outputs created), and the whole change feed as one batch."""
    from gatewatch.streams.source import to_canonical

    table, out = tmp_path / "chat", tmp_path / "out"
    traffic.create_inference_table(spark, str(table))
    ids = commit(spark, table, traffic.generate(40, seed=seed))
    job = Job(spark, settings_for(table, out, tmp_path / "ckpt", mode="available_now"))
    source = job.sources[0]
    batch = (
        spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0).load(str(table))
        .transform(lambda df: to_canonical(df, source.kind, source.settings))
    )
    return job, batch, ids


def _context(job: Job, app_id: str, inline: bool):
    from gatewatch.streams.batch import BatchContext

    t = job.tables
    return BatchContext(source="chat", app_id=app_id, requests=t["requests"], quarantine=t["quarantine"],
                        contract=job.contract, token_events=t["token_events"], safety_events=t["safety_events"],
                        events_inline=inline)


def _events_query_batch(spark, job: Job) -> dict:
    """The events query's batch over every requests change since the job started."""
    from gatewatch.streams.events import events_context, handle_events_batch

    changes = (spark.read.format("delta").option("readChangeFeed", "true")
               .option("startingVersion", job.events_start).load(job.tables["requests"].ref))
    return handle_events_batch(events_context(job.settings, job.tables), changes, 0)


def test_an_available_now_batch_writes_its_events_once_and_the_events_query_skips_them(spark, tmp_path):
    from gatewatch.streams import outputs as out
    from gatewatch.streams.batch import handle_batch

    job, batch, ids = _one_batch(spark, tmp_path, seed=131)
    ctx = _context(job, out.new_app_id("sink"), inline=True)
    first = handle_batch(ctx, batch, 0)
    handle_batch(ctx, batch, 0)  # a replay writes nothing twice
    assert first["events_inline"] and first["token_events"] > 0 and first["safety_events"] > 0
    [marker] = [r[0] for r in spark.sql(f"DESCRIBE HISTORY {job.tables['requests'].sql_name}")
                .where("operation = 'WRITE'").select("userMetadata").collect()]
    assert out.marks_events(marker)
    skipped = _events_query_batch(spark, job)
    assert (skipped["skipped_commits"], skipped["requests"]) == (1, 0)
    assert_each_once(spark, tmp_path / "out", ids)
    assert_events_once(spark, tmp_path / "out")


def test_the_events_query_reads_no_change_after_an_available_now_run_and_reads_a_running_jobs(spark, tmp_path):
    """Its batch after an available-now run finds its versions (from its offsets) marked and reads nothing;
    after a running job, whose requests commits leave the events to it, it reads them."""
    import structlog

    from gatewatch.streams.events import batch_versions, query_context

    table, out, ckpt = tmp_path / "chat", tmp_path / "out", tmp_path / "ckpt"
    traffic.create_inference_table(spark, str(table))
    ids = commit(spark, table, traffic.generate(40, seed=151))
    job = Job(spark, settings_for(table, out, ckpt, mode="available_now"))
    with structlog.testing.capture_logs() as logs:
        job.start().wait()
    [skipped] = [e for e in logs if e["event"] == "events_batch"]
    assert (skipped["read"], skipped["requests"]) == (False, 0) and skipped["skipped_commits"] >= 1
    requests = job.tables["requests"]
    written = {int(r[0]) for r in spark.sql(f"DESCRIBE HISTORY {requests.sql_name}").where("operation = 'WRITE'")
               .select("version").collect()}
    assert len(written) == 1 and written <= set(batch_versions(query_context(job.settings, job.tables,
                                                                             job.events_start), 0))
    assert_each_once(spark, out, ids)
    assert_events_once(spark, out)

    ids |= commit(spark, table, traffic.generate(40, seed=152))
    with structlog.testing.capture_logs() as logs:
        running = Job(spark, settings_for(table, out, ckpt)).start()
        try:
            running.running[0].query.processAllAvailable()
            running.flush_events()
        finally:
            running.stop()
    read = [e for e in logs if e["event"] == "events_batch" and e["requests"]]
    assert read and all(e["read"] for e in read)
    assert_each_once(spark, out, ids)
    assert_events_once(spark, out)


@pytest.mark.parametrize(("first_inline", "failing", "rerun_inline", "rerun_writes_events"), [
    (True, "events", False, True),     # requests marked, events lost: the rerun of a running job writes them
    (True, "requests", False, True),   # events written, requests lost: the rerun marks its requests commit
    (False, None, True, False),        # written unmarked: an available-now rerun leaves them to the events query
], ids=["marked-requests-alone", "events-alone", "unmarked"])
def test_a_rerun_batch_keeps_the_events_choice_of_its_first_run(spark, tmp_path, monkeypatch, first_inline, failing,
                                                                rerun_inline, rerun_writes_events):
    """A batch re-run after a crash, in either mode, writes each request's events once, with the events query."""
    from gatewatch.streams import outputs as out
    from gatewatch.streams.batch import handle_batch

    job, batch, ids = _one_batch(spark, tmp_path, seed=141)
    app_id = out.new_app_id("sink")
    events = {job.tables["token_events"].ref, job.tables["safety_events"].ref}
    real = out.append

    def crashing(df, target, *args, **kwargs):
        if failing == ("events" if target.ref in events else "requests" if target.ref == job.tables["requests"].ref
                       else None):
            raise RuntimeError("the process died here")
        return real(df, target, *args, **kwargs)

    monkeypatch.setattr(out, "append", crashing)
    if failing:
        with pytest.raises(RuntimeError, match="died"):
            handle_batch(_context(job, app_id, first_inline), batch, 0)
    else:
        handle_batch(_context(job, app_id, first_inline), batch, 0)
    monkeypatch.setattr(out, "append", real)
    monkeypatch.setattr(out, "_newest", {})  # a new process: it knows no batch and created no table
    monkeypatch.setattr(out, "_created", set())
    rerun = handle_batch(_context(job, app_id, rerun_inline), batch, 0)
    assert rerun["events_inline"] is rerun_writes_events
    _events_query_batch(spark, job)
    assert_each_once(spark, tmp_path / "out", ids)
    assert_events_once(spark, tmp_path / "out")


def _run_cli(table: Path, out: Path, ckpt: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "gatewatch.cli.main", "run",
        "--source", str(table), "--output", str(out), "--checkpoint", str(ckpt),
        "--set", "sources.0.max_files_per_trigger=2", "--set", "trigger.interval=1 second",
        "--set", "spark.shuffle_partitions=2", "--set", "spark.driver_memory=1g",
        "--log-format", "json", *extra,
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=os.environ.copy()
    )


def _batch_events(proc: subprocess.Popen, count: int, timeout_s: float = 300) -> list[dict]:
    """Read the run's log until ``count`` batches have been written (or the timeout)."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "batch" and event.get("rows", 0) > 0:
                events.append(event)
                if len(events) >= count:
                    return events
        if time.monotonic() > deadline:
            break
    pytest.fail(f"the run logged {len(events)} batches before ending or timing out")


@pytest.mark.slow
def test_kill_mid_stream_then_restart_loses_and_duplicates_nothing(spark, tmp_path):
    table, out, ckpt = tmp_path / "chat", tmp_path / "out", tmp_path / "ckpt"
    traffic.create_inference_table(spark, str(table))
    ids: set[str] = set()
    for seed in range(121, 127):  # six commits: one micro-batch each
        ids |= commit(spark, table, traffic.generate(25, seed=seed))

    run = _run_cli(table, out, ckpt)
    try:
        _batch_events(run, 2)
        os.killpg(run.pid, signal.SIGKILL)  # the JVM and Python die together, mid-stream
        run.wait(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    requests, quarantined = landed(spark, out)
    assert 0 < len(requests) + len(quarantined) < len(ids), "the kill should land between the first and last batch"

    rerun = _run_cli(table, out, ckpt, "--available-now")
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-2000:]
    assert_each_once(spark, out, ids)
    assert_events_once(spark, out)  # events of the killed run's batches by the events query, the rerun's inline
    assert '"events_inline": true' in output
    requests, quarantined = landed(spark, out)
    print(f"\nkill drill after the restart: {len(requests)} requests + {len(quarantined)} quarantined, each once")
