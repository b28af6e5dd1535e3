"""Several sources in one streaming query: each lands exactly once with its lineage, a kill and restart
loses and duplicates nothing, and a change to the query's sources is refused in one line with the fix."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gatewatch.errors import CheckpointLayoutError
from gatewatch.settings import OutputSettings, Settings, SourceSettings, TriggerSettings
from gatewatch.streams.job import Job
from gatewatch.traffic import generate as traffic
from tests.streams.helpers import assert_each_once, assert_events_once, commit, landed

ENDPOINTS = ("chat-prod", "support-agent", "search-bot")


def _settings(tmp: Path, names: tuple[str, ...], **trigger) -> Settings:
    return Settings(
        sources=tuple(SourceSettings(table=str(tmp / n), endpoint=e, name=n) for n, e in zip(names, ENDPOINTS)),
        output=OutputSettings(location=str(tmp / "out")),
        checkpoint_root=str(tmp / "ckpt"),
        trigger=TriggerSettings(**(trigger or {"mode": "available_now"})),
    )


def _commit_to(spark, tmp: Path, name: str, endpoint: str, n: int, seed: int) -> set[str]:
    return commit(spark, tmp / name, traffic.generate(n, seed=seed, endpoints=(endpoint,)))


def test_two_sources_share_one_query_and_each_row_lands_once_with_its_source(spark, tmp_path):
    """Two tables read by one query land every insert once, each row naming its table, from one checkpoint."""
    names = ("chat", "support")
    ids: dict[str, set[str]] = {}
    for n, e in zip(names, ENDPOINTS):
        traffic.create_inference_table(spark, str(tmp_path / n))
        ids[n] = _commit_to(spark, tmp_path, n, e, 30, seed=len(n))
    job = Job(spark, _settings(tmp_path, names, mode="processing_time", interval="1 second")).start()
    try:
        assert len(job.running) == 1, "one query reads both sources"
        query = job.running[0].query
        query.processAllAvailable()
        for i, (n, e) in enumerate(zip(names, ENDPOINTS)):
            ids[n] |= _commit_to(spark, tmp_path, n, e, 20, seed=100 + i)
        query.processAllAvailable()
        progress = query.lastProgress
    finally:
        job.stop()
    assert_each_once(spark, tmp_path / "out", ids["chat"] | ids["support"])
    requests = spark.read.format("delta").load(str(tmp_path / "out" / "requests"))
    quarantine = spark.read.format("delta").load(str(tmp_path / "out" / "quarantine"))
    for n in names:
        rows = {r[0] for r in requests.where(f"source_table = '{tmp_path / n}'").select("databricks_request_id").collect()}
        rows |= {r[0] for r in quarantine.where(f"source_table = '{tmp_path / n}'").select("databricks_request_id").collect()}
        assert rows == ids[n], f"source_table lineage of {n}"
    assert len(progress["sources"]) == 2
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.is_dir()) == ["_events", "sources"]
    status = json.loads((tmp_path / "ckpt" / "_status.json").read_text())
    last = [status["sources"][n]["last_batch"] for n in names]
    for n in names:
        assert status["sources"][n]["state"] == "stopped"
        assert status["sources"][n]["last_batch_id"] == progress["batchId"]
    assert sum(b["rows"] for b in last) == progress["numInputRows"] > 0, "each source keeps its own rows of the batch"


@pytest.mark.slow
def test_a_source_added_to_the_query_is_refused_with_the_fix_that_then_works(spark, tmp_path):
    """A third source in a query whose checkpoint holds two stops in one line; its own group, as the line says, runs."""
    names = ("chat", "support", "search")
    ids: set[str] = set()
    for n, e in zip(names, ENDPOINTS):
        traffic.create_inference_table(spark, str(tmp_path / n))
        ids |= _commit_to(spark, tmp_path, n, e, 15, seed=7 * len(n))
    Job(spark, _settings(tmp_path, names[:2])).start().wait()

    config = tmp_path / "three.yaml"
    config.write_text(yaml.safe_dump(_settings(tmp_path, names).model_dump(mode="json", exclude={"deploy"})))
    run = _cli("run", "--config", str(config), "--set", "alerts.enabled=false")
    assert run.returncode != 0
    line = _user_line(run)
    assert "the sources of query 'sources' changed" in line and "sources.N.group=NAME" in line, line

    fixed = _cli("run", "--config", str(config), "--set", "alerts.enabled=false", "--set", "sources.2.group=search")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert_each_once(spark, tmp_path / "out", ids)


def test_a_source_with_its_own_checkpoint_is_not_read_again_by_a_new_shared_query(spark, tmp_path):
    """A one-source job's checkpoint is kept: adding a second source refuses to re-read the first, and the fix runs."""
    ids: set[str] = set()
    for n, e in zip(("chat", "support"), ENDPOINTS):
        traffic.create_inference_table(spark, str(tmp_path / n))
        ids |= _commit_to(spark, tmp_path, n, e, 15, seed=3 * len(n))
    Job(spark, _settings(tmp_path, ("chat",))).start().wait()
    assert (tmp_path / "ckpt" / "chat" / "offsets").is_dir(), "one source keeps its checkpoint by its own name"

    with pytest.raises(CheckpointLayoutError) as err:
        Job(spark, _settings(tmp_path, ("chat", "support")))
    assert "`--set sources.0.group=chat`" in str(err.value)

    both = _settings(tmp_path, ("chat", "support"))
    both = both.model_copy(update={"sources": (both.sources[0].model_copy(update={"group": "chat"}), both.sources[1])})
    Job(spark, both).start().wait()
    assert_each_once(spark, tmp_path / "out", ids)


@pytest.mark.slow
def test_kill_a_query_of_three_sources_mid_stream_then_restart_loses_and_duplicates_nothing(spark, tmp_path):
    """SIGKILL of a job reading three tables in one query, then a restart on its checkpoint: every insert once."""
    names = ("chat", "support", "search")
    ids: set[str] = set()
    for n, e in zip(names, ENDPOINTS):
        traffic.create_inference_table(spark, str(tmp_path / n))
        for seed in range(4):
            ids |= _commit_to(spark, tmp_path, n, e, 20, seed=1000 * len(n) + seed)
    config = tmp_path / "three.yaml"
    settings = _settings(tmp_path, names, mode="processing_time", interval="1 second")
    settings = settings.model_copy(update={"sources": tuple(s.model_copy(update={"max_files_per_trigger": 1})
                                                            for s in settings.sources)})
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"deploy"})))
    run = subprocess.Popen(
        [sys.executable, "-m", "gatewatch.cli.main", "run", "--config", str(config), "--set", "alerts.enabled=false",
         "--set", "spark.driver_memory=1g", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=os.environ.copy(),
    )
    try:
        batches = 0
        assert run.stdout is not None
        for line in run.stdout:
            if line.startswith("{") and json.loads(line).get("event") == "batch" and json.loads(line).get("rows"):
                batches += 1
                if batches == 2:
                    break
        assert batches == 2, "the run wrote two batches before it was killed"
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    requests, quarantined = landed(spark, tmp_path / "out")
    assert 0 < len(requests) + len(quarantined) < len(ids), "the kill lands between the first and the last batch"

    rerun = _cli("run", "--config", str(config), "--set", "alerts.enabled=false", "--available-now")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_each_once(spark, tmp_path / "out", ids)
    assert_events_once(spark, tmp_path / "out")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gatewatch.cli.main", *args, "--set", "spark.driver_memory=1g",
                           "--log-format", "json"],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=900)


def _user_line(run: subprocess.CompletedProcess) -> str:
    """The one error line the user reads, with no traceback."""
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("gatewatch:")]
    assert len(errors) == 1, run.stderr[-3000:]
    return re.sub(r"\s+", " ", errors[0])
