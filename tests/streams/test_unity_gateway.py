"""A Unity AI Gateway inference table read end to end by ``gatewatch run``.

The table is made as Databricks makes a model service's ``<service>_payload``
table (``request_id``, ``event_time``, ``latency_ms``, ... with change data
feed on; https://docs.databricks.com/aws/en/ai-gateway/inference-tables),
carries two columns the adapter does not read, and is filled with generated
traffic of every shape (guardrail and service-policy blocks among it) in two
commits. ``gatewatch run --available-now`` reads it; the test checks the
``query_started`` line names the schema it chose, that every inserted row
landed exactly once, and that the rows carry the table's ids, times and
latencies and the parse of their shapes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from gatewatch.cli.main import main
from gatewatch.traffic import generate as traffic
from tests.streams.helpers import assert_each_once

ENDPOINT = "agent-prod"  # its profile holds the service-policy shapes


@pytest.fixture(scope="module")
def unity_run(spark, tmp_path_factory):
    """Two commits into a Unity AI Gateway table, one ``gatewatch run``; what it logged and wrote."""
    root = tmp_path_factory.mktemp("unity")
    table, out, ckpt = root / "team_chat_payload", root / "out", root / "ckpt"
    traffic.create_inference_table(spark, str(table), kind="unity_gateway")
    start = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)
    first = traffic.generate(250, seed=61, endpoints=(ENDPOINT,), start=start)
    second = traffic.spike(80, endpoint=ENDPOINT, seed=62, layer="databricks", start=start.replace(hour=10))
    generated = first + second
    traffic.write_rows(spark, str(table), first, kind="unity_gateway")
    traffic.write_rows(spark, str(table), second, kind="unity_gateway")
    return {"table": table, "out": out, "ckpt": ckpt, "generated": generated}


def test_gatewatch_run_reads_a_unity_gateway_table_once_and_names_its_schema(spark, unity_run, capsys):
    """``gatewatch run`` picks the ``unity_gateway`` schema, logs it, and lands every inserted row exactly once."""
    r = unity_run
    code = main(["run", "--available-now", "--source", str(r["table"]), "--output", str(r["out"]),
                 "--checkpoint", str(r["ckpt"]), "--set", f"sources.0.endpoint={ENDPOINT}",
                 "--set", "alerts.enabled=false", "--log-format", "json"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    started = [json.loads(line) for line in err.splitlines() if '"query_started"' in line]
    assert [s["kind"] for s in started] == ["unity_gateway"]
    assert_each_once(spark, r["out"], {g.row["databricks_request_id"] for g in r["generated"]})

    requests = {
        row["databricks_request_id"]: row.asDict(recursive=True)
        for row in spark.read.format("delta").load(str(r["out"] / "requests")).collect()
    }
    checked = 0
    for g in r["generated"]:
        row = requests.get(g.row["databricks_request_id"])
        if row is None:
            assert g.truth.outcome is None or g.truth.quarantine_reason is not None, g.truth.scenario
            continue
        checked += 1
        assert row["request_time"].replace(tzinfo=timezone.utc) == g.row["request_time"]
        assert row["execution_duration_ms"] == g.row["execution_duration_ms"]
        assert (row["endpoint"], row["status_code"]) == (ENDPOINT, g.row["status_code"])
        assert row["outcome"] == g.truth.outcome, g.truth.scenario
        assert row["blocked_stage"] == g.truth.blocked_stage, g.truth.scenario
        assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (
            g.truth.input_tokens, g.truth.output_tokens, g.truth.total_tokens), g.truth.scenario
        if g.truth.scenario.startswith("policy_"):
            assert row["service_policy"]["name"].startswith("main.governance."), row
    assert checked > 250
    blocked_by = {requests[g.row["databricks_request_id"]]["error_type"] for g in r["generated"]
                  if g.truth.blocked_stage is not None and g.row["databricks_request_id"] in requests}
    assert {"guardrail", "service_policy"} <= blocked_by


def test_a_table_close_to_the_unity_schema_is_refused_naming_its_missing_columns():
    """A table with most Unity AI Gateway columns but no ``latency_ms`` is refused naming that column and schema."""
    from pyspark.sql.types import StringType, StructField, StructType

    from gatewatch.errors import SourceSchemaError
    from gatewatch.streams.source import detect_kind

    names = ("request_id", "event_time", "status_code", "request", "response", "requester", "service_name")
    with pytest.raises(SourceSchemaError) as refused:
        detect_kind(StructType([StructField(n, StringType()) for n in names]), "main.serving.chat_payload")
    assert refused.value.missing == ["latency_ms"]
    assert "Unity AI Gateway inference table" in str(refused.value)
    extra = StructType([StructField(n, StringType()) for n in (*names, "latency_ms", "usage", "routing")])
    assert detect_kind(extra, "main.serving.chat_payload") == "unity_gateway"
