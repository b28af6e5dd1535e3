"""gatewatch over Spark Connect (serverless, standard access mode): the same runs as on classic Spark.

Each run is ``gatewatch ... --remote sc://...`` in a process of its own, as
a serverless job runs it: the batches run in the server's Python workers,
the job's listener, status file and alerting in the client. The outputs are
read with the classic session and compared with what classic Spark writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F

from gatewatch.settings import Settings
from gatewatch.streams.config import read_rules
from gatewatch.streams.job import Job
from gatewatch.traffic import generate as traffic
from tests.connect.conftest import USER_PARSERS, start_server
from tests.streams.helpers import assert_each_once, commit, landed

pytestmark = [pytest.mark.connect, pytest.mark.xdist_group("connect")]  # one worker, one server

T0 = traffic.DEFAULT_START
SPIKE_RULE = next(r for r in read_rules() if r["name"] == "content_filter_spike")


def gatewatch(*args: str, wait: bool = True, timeout_s: float = 600) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run the ``gatewatch`` command line, able to import the test parser modules; wait unless ``wait`` is false."""
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(USER_PARSERS), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "gatewatch.cli.main", *args]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)


def config(tmp: Path, sources: list[dict], **extra) -> Path:
    """A YAML config with ``sources``, outputs and checkpoints under ``tmp``, a 1 s trigger, small Spark."""
    data = {
        "sources": sources,
        "output": {"location": str(tmp / "out")},
        "checkpoint_root": str(tmp / "ckpt"),
        "trigger": {"mode": "processing_time", "interval": "1 second"},
        "spark": {"shuffle_partitions": 2, "driver_memory": "1g"},
        **extra,
    }
    path = tmp / "gatewatch.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def events(output: str, name: str) -> list[dict]:
    """The JSON log lines of one event in a run's output."""
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def test_two_sources_land_once_as_on_classic_the_alert_fires_once_and_resolves_and_replay_moves_rows_once(
        spark, tmp_path, connect_server, webhook):
    """One query for two sources over Connect: every insert once, the same rows as classic Spark, one alert fired
    and resolved; unknown shapes quarantined, then moved to requests once by a replay over Connect."""
    chat, agent = tmp_path / "chat", tmp_path / "agent"
    for table in (chat, agent):
        traffic.create_inference_table(spark, str(table))
    calm = dict(endpoints=("chat-prod",), malformed_rate=0.0)
    ids = commit(spark, chat, traffic.generate(120, seed=1, start=T0, **calm))
    ids |= commit(spark, chat, traffic.spike(60, endpoint="chat-prod", seed=2, start=T0 + timedelta(minutes=10)))
    ids |= commit(spark, agent, traffic.generate(80, seed=3, endpoints=("agent-prod",), malformed_rate=0.1))
    unknown = _unknown_shapes(traffic.generate(12, seed=5, endpoints=("agent-prod",), malformed_rate=0.0))
    ids |= commit(spark, agent, unknown)
    sources = [{"table": str(chat), "name": "chat", "endpoint": "chat-prod"},
               {"table": str(agent), "name": "agent", "endpoint": "agent-prod"}]
    alerting = {"alerts": {"rules": [SPIKE_RULE], "deliver_interval_s": 0},
                "sinks": [{"name": "hook", "type": "webhook", "url": webhook.url,
                           "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02}}]}
    cfg = config(tmp_path, sources, **alerting)

    first = gatewatch("run", "--config", str(cfg), "--available-now", "--remote", connect_server.url,
                      "--log-format", "json")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    assert [a["status"] for a in webhook.answered(200)] == ["firing"]
    assert_each_once(spark, tmp_path / "out", ids)
    requests = spark.read.format("delta").load(str(tmp_path / "out" / "requests"))
    assert {r[0] for r in requests.select("source_table").distinct().collect()} == {str(chat), str(agent)}
    quarantine = spark.read.format("delta").load(str(tmp_path / "out" / "quarantine"))
    assert {g.row["databricks_request_id"] for g in unknown} <= {  # the mix may hold unknown shapes of its own
        r[0] for r in quarantine.where(F.col("reason") == "unknown_shape").select("databricks_request_id").collect()}
    status = json.loads((tmp_path / "ckpt" / "_status.json").read_text())
    assert {name: s["state"] for name, s in status["sources"].items()} == {"chat": "stopped", "agent": "stopped"}
    assert all(s["progress"]["input_rows"] > 0 for s in status["sources"].values())

    classic = tmp_path / "classic"  # the same sources through classic Spark, in this process
    settings = Settings.model_validate(yaml.safe_load(cfg.read_text()) | {
        "output": {"location": str(classic / "out")}, "checkpoint_root": str(classic / "ckpt"),
        "trigger": {"mode": "available_now"}, "alerts": {"enabled": False}})
    Job(spark, settings).start().wait()
    over_connect, on_classic = landed(spark, tmp_path / "out"), landed(spark, classic / "out")
    assert [sorted(ids) for ids in on_classic] == [sorted(ids) for ids in over_connect]
    print(f"\ntwo sources, {len(ids)} inserts: over Connect {len(over_connect[0])} requests + "
          f"{len(over_connect[1])} quarantined; classic {len(on_classic[0])} + {len(on_classic[1])}")
    for name in ("requests", "quarantine"):  # the same rows, column for column (but the time each was written)
        rows = [spark.read.format("delta").load(str(out / name)) for out in (tmp_path / "out", classic / "out")]
        columns = [c for c in rows[1].columns if not c.endswith("_at")]
        as_json = [sorted(r[0] for r in df.select(F.to_json(F.struct(*columns))).collect()) for df in rows]
        assert as_json[0] == as_json[1] and as_json[0], name

    ids |= commit(spark, chat, traffic.generate(120, seed=4, start=T0 + timedelta(minutes=25), **calm))
    second = gatewatch("run", "--config", str(cfg), "--available-now", "--remote", connect_server.url,
                       "--log-format", "json")
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    assert [a["status"] for a in webhook.answered(200)] == ["firing", "resolved"]
    alerts = spark.read.format("delta").load(str(tmp_path / "out" / "alerts"))
    assert [r["status"] for r in alerts.collect()] == ["resolved"]
    assert_each_once(spark, tmp_path / "out", ids)
    tokens = spark.read.format("delta").load(str(tmp_path / "out" / "token_usage_events"))
    assert tokens.select("databricks_request_id").distinct().count() == tokens.count() > 0

    replay = ("replay", "--config", str(cfg), "--remote", connect_server.url, "--set",  # a parser for the shape
              "parsers.modules=[predictions_parser]")
    done = gatewatch(*replay)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"moved {len(unknown)} of " in done.stdout
    requests, _ = landed(spark, tmp_path / "out")
    assert {g.row["databricks_request_id"] for g in unknown} <= set(requests)
    assert len(requests) == len(set(requests))
    statuses = {r["databricks_request_id"]: r["status"] for r in spark.read.format("delta")
                .load(str(tmp_path / "out" / "quarantine")).collect()}
    assert {statuses[g.row["databricks_request_id"]] for g in unknown} == {"resolved"}
    again = gatewatch(*replay)
    assert again.returncode == 0 and "moved 0 of " in again.stdout, again.stdout[-2000:]


def _unknown_shapes(rows: list) -> list:
    """``rows`` answered 200 with a custom model's ``predictions``: a shape no built-in parser knows."""
    for i, g in enumerate(rows):
        g.row.update(status_code=200, response=json.dumps({"predictions": [0.1 * i, 0.2], "token_count": i}))
    return rows


def test_kill_the_server_mid_stream_then_rerun_loses_and_duplicates_nothing(spark, tmp_path, connect_server):
    """A Connect server killed (SIGKILL) mid-stream, the run resumed on another server: every insert once."""
    table = tmp_path / "chat"
    traffic.create_inference_table(spark, str(table))
    ids: set[str] = set()
    for seed in range(121, 127):  # six commits, two per micro-batch
        ids |= commit(spark, table, traffic.generate(25, seed=seed))
    cfg = config(tmp_path, [{"table": str(table), "endpoint": "chat-prod", "max_files_per_trigger": 2}])

    doomed = start_server(tmp_path / "doomed.log")
    run = gatewatch("run", "--config", str(cfg), "--remote", doomed.url, "--log-format", "json", wait=False)
    try:
        _wait_for_batches(run, 2)
        doomed.kill()  # the server's JVM and its Python workers die mid-stream, and the job with them
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=60)
    finally:
        doomed.kill()
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=60)
    requests, quarantined = landed(spark, tmp_path / "out")
    assert 0 < len(requests) + len(quarantined) < len(ids), "the kill should land between the first and last batch"
    print(f"\nkill drill, {len(ids)} inserts: {len(requests) + len(quarantined)} landed before the kill")

    rerun = gatewatch("run", "--config", str(cfg), "--available-now", "--remote", connect_server.url,
                      "--log-format", "json")
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert_each_once(spark, tmp_path / "out", ids)
    requests, quarantined = landed(spark, tmp_path / "out")
    print(f"kill drill after the rerun: {len(requests)} requests + {len(quarantined)} quarantined, each once")


def _wait_for_batches(run: subprocess.Popen, count: int, timeout_s: float = 300) -> None:
    """Read a run's log until ``count`` batches with rows were reported (its listener's progress lines)."""
    import selectors

    assert run.stdout is not None
    seen, deadline, lines = 0, time.monotonic() + timeout_s, []
    with selectors.DefaultSelector() as selector:
        selector.register(run.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and seen < count:
            if not selector.select(timeout=5):
                continue
            line = run.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == "progress" and (event.get("input_rows") or 0) > 0:
                    seen += 1
    if seen < count:
        pytest.fail(f"the run reported {seen} batches with rows before ending or timing out: {''.join(lines)[-2000:]}")


def test_an_unreachable_server_is_one_line_with_the_fix(tmp_path):
    """``--remote`` to a port where nothing listens: one line naming the address and the fix, exit 2."""
    from tests.connect.conftest import free_port

    table = tmp_path / "chat"
    done = gatewatch("run", "--source", str(table), "--output", str(tmp_path / "out"), "--available-now",
                     "--remote", f"sc://127.0.0.1:{free_port()}", timeout_s=120)
    assert done.returncode == 2
    [line] = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert line.startswith("gatewatch: error: cannot reach the Spark Connect server at sc://127.0.0.1:")
    assert "Fix: start the server" in line
