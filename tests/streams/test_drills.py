"""Failure drills: what the job does when its source or checkpoint changes under it, and what it tells the user.

Each drill ends by counting: every inserted request id lands exactly once in
requests or quarantine. A dropped-then-recreated source and a damaged
checkpoint are run through the command line, so the line a user reads is the
one checked, and the fix it names is then followed. (A sink that is down and
then back is drilled in tests/spark/test_alerting.py: the alert stays
pending in the outbox and arrives exactly once.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gatewatch.traffic import generate as traffic
from gatewatch.streams.config import load_settings
from gatewatch.streams.job import Job
from tests.streams.helpers import assert_each_once, commit, settings_for


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gatewatch.cli.main", *args],
        capture_output=True, text=True, env=os.environ.copy(), timeout=600,
    )


def _run_cli(table: Path, out: Path, ckpt: Path) -> subprocess.CompletedProcess:
    return _cli("run", "--available-now", "--source", str(table), "--output", str(out), "--checkpoint", str(ckpt),
                "--set", "alerts.enabled=false", "--set", "spark.shuffle_partitions=2",
                "--set", "spark.driver_memory=1g", "--log-format", "json")


def _user_line(run: subprocess.CompletedProcess) -> str:
    """The one error line the user reads: the last line on stderr, with no Python traceback anywhere."""
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("gatewatch:")]
    assert len(errors) == 1, run.stderr[-3000:]
    assert run.stderr.rstrip().splitlines()[-1] == errors[0]
    return errors[0]


def _resume(spark, line: str, table: Path, out: Path, ckpt: Path) -> Job:
    """A job on the same outputs with the ``--set`` the error line names (alerting off)."""
    fix = re.search(r"`--set (sources\.0\.starting_version=\S+?)`", line)
    assert fix, line
    settings = load_settings(None, [f"sources.0.table={table}", "sources.0.endpoint=chat-prod",
                                    f"output.location={out}", f"checkpoint_root={ckpt}",
                                    "trigger.mode=available_now", "alerts.enabled=false", fix.group(1)])
    return Job(spark, settings)


class _Batches:
    """Collects batch metrics from the job's callback and lets the test wait for a row count."""

    def __init__(self) -> None:
        self.rows = 0
        self._cond = threading.Condition()

    def __call__(self, metrics: dict) -> None:
        with self._cond:
            self.rows += metrics["rows"]
            self._cond.notify_all()

    def wait_rows(self, n: int, timeout: float = 420) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.rows >= n, timeout), f"{self.rows} of {n} rows after {timeout}s"


def test_a_column_added_to_the_source_restarts_the_query_and_nothing_is_lost(spark, tmp_path):
    """ALTER TABLE ADD COLUMNS under a running query: it stops with a schema change, restarts, and reads on."""
    table, out, ckpt = tmp_path / "chat", tmp_path / "out", tmp_path / "ckpt"
    traffic.create_inference_table(spark, str(table))
    ids = commit(spark, table, traffic.generate(8, seed=301))
    batches = _Batches()
    job = Job(spark, settings_for(table, out, ckpt), on_metrics=batches).start()
    failures: list[BaseException] = []

    def wait() -> None:
        try:
            job.wait(poll_s=0.5)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            failures.append(err)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    try:
        batches.wait_rows(len(ids))
        first = job.running[0].query
        spark.sql(f"ALTER TABLE delta.`{table}` ADD COLUMNS (region STRING)")
        ids |= commit(spark, table, traffic.generate(8, seed=302))
        batches.wait_rows(len(ids))
    finally:
        job.stop()
        waiter.join(timeout=120)
    assert not failures, failures
    assert job.running[0].query is not first, "the query was restarted"
    assert batches.rows == len(ids)
    assert_each_once(spark, out, ids)
    chat = json.loads((ckpt / "_status.json").read_text())["sources"]["chat"]
    assert (chat["state"], chat["restarts"]) == ("stopped", 1)


@pytest.mark.slow
def test_a_recreated_source_is_one_line_naming_it_and_its_fix_works(spark, tmp_path):
    """A source dropped and recreated at the same path stops the run with one line; the fix it names resumes."""
    table, out, ckpt = tmp_path / "chat", tmp_path / "out", tmp_path / "ckpt"
    traffic.create_inference_table(spark, str(table))
    ids = commit(spark, table, traffic.generate(6, seed=311))
    Job(spark, settings_for(table, out, ckpt, mode="available_now")).start().wait()

    shutil.rmtree(table)
    spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()  # as a new process would see it
    traffic.create_inference_table(spark, str(table))
    ids |= commit(spark, table, traffic.generate(6, seed=312))

    run = _run_cli(table, out, ckpt)
    line = _user_line(run)
    assert run.returncode == 2
    assert f"source '{table}' was dropped and recreated" in line
    assert f"`mv {ckpt / 'chat'} {ckpt / 'chat'}.replaced`" in line
    status = json.loads(_cli("status", "--checkpoint-root", str(ckpt), "--json").stdout)
    assert status["sources"]["chat"]["state"] == "failed"
    assert "dropped and recreated" in status["sources"]["chat"]["error"]

    (ckpt / "chat").rename(ckpt / "chat.replaced")
    _resume(spark, line, table, out, ckpt).start().wait()
    assert_each_once(spark, out, ids)


@pytest.mark.slow
def test_a_damaged_checkpoint_is_one_line_with_where_to_resume(spark, tmp_path):
    """A cut offsets file (the process died writing it) stops the run with one line; its resume version is exact."""
    table, out, ckpt = tmp_path / "chat", tmp_path / "out", tmp_path / "ckpt"
    traffic.create_inference_table(spark, str(table))
    ids = commit(spark, table, traffic.generate(6, seed=321))
    Job(spark, settings_for(table, out, ckpt, mode="available_now")).start().wait()
    offsets = ckpt / "chat" / "offsets"
    planned = (offsets / "0").read_text()
    (offsets / "1").write_text(planned[: len(planned) // 2])
    ids |= commit(spark, table, traffic.generate(6, seed=322))

    run = _run_cli(table, out, ckpt)
    line = _user_line(run)
    assert run.returncode == 2
    assert f"checkpoint {ckpt / 'chat'} cannot be read (offsets/1 is damaged)" in line
    assert f"`mv {ckpt / 'chat'} {ckpt / 'chat'}.corrupt`" in line
    assert "`--set sources.0.starting_version=2`" in line, "version 1 is written, version 2 is not"

    (ckpt / "chat").rename(ckpt / "chat.corrupt")
    _resume(spark, line, table, out, ckpt).start().wait()
    assert_each_once(spark, out, ids)


def test_status_shows_the_last_run(spark, tmp_path):
    """After an available-now run, ``gatewatch status --json`` shows the source stopped, its last batch and rows."""
    table, out, ckpt = tmp_path / "chat", tmp_path / "out", tmp_path / "ckpt"
    traffic.create_inference_table(spark, str(table))
    ids = commit(spark, table, traffic.generate(6, seed=331))
    Job(spark, settings_for(table, out, ckpt, mode="available_now")).start().wait()

    run = _cli("status", "--checkpoint-root", str(ckpt), "--json")
    assert run.returncode == 0, run.stderr
    chat = json.loads(run.stdout)["sources"]["chat"]
    assert (chat["table"], chat["state"], chat["last_batch_id"]) == (str(table), "stopped", 0)
    assert chat["last_batch"]["rows"] == len(ids)
    assert chat["lag"]["versions"] == 0 and chat["lag"]["seconds"] == 0.0
    text = _cli("status", "--checkpoint-root", str(ckpt))
    assert text.returncode == 0 and re.search(r"^chat\s+stopped\s+0\s+6\b", text.stdout, re.MULTILINE), text.stdout


def test_progress_lines_carry_each_batch_and_the_lag_left(spark, tmp_path):
    """A backlog of versions 1 to 3 read a file per batch: each line's rows and lag, down to 0 versions behind."""
    table, out, ckpt = tmp_path / "chat", tmp_path / "out", tmp_path / "ckpt"
    traffic.create_inference_table(spark, str(table))
    ids: set[str] = set()
    for i, n in enumerate((3, 4, 5)):
        ids |= commit(spark, table, traffic.generate(n, seed=341 + i))
    settings = settings_for(table, out, ckpt)
    settings = settings.model_copy(update={"sources": (settings.sources[0].model_copy(
        update={"max_files_per_trigger": 1, "starting_version": 1}),)})
    job = Job(spark, settings).start()
    try:
        query = job.running[0].query
        query.processAllAvailable()
        last = query.lastProgress["batchId"]
        lines = [job.observer.wait_for("chat", b, timeout=120) for b in range(last + 1)]
    finally:
        job.stop()
    assert all(lines), "a progress line per batch"
    assert sum(line["input_rows"] for line in lines) == len(ids)
    assert [line["rows"] for line in lines] == [line["input_rows"] for line in lines], "each merges its batch"
    behind = [line["lag_versions"] for line in lines]
    assert behind[0] == 3 and behind[-1] == 0, "nothing of version 1 is read entirely after the first file"
    assert behind == sorted(behind, reverse=True) and {2, 1} <= set(behind)
    assert all((line["lag_s"] > 0) == (line["lag_versions"] > 0) for line in lines)
    assert all(line["query_id"] == str(query.id) and line["batch_duration_ms"] > 0 for line in lines)
