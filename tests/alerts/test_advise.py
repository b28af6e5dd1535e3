"""The idle served-entity advisory against a loopback Serving Endpoints API, delivered through the outbox to a sink.

The loopback server answers ``GET /api/2.0/serving-endpoints/{name}`` with the
JSON documented at https://docs.databricks.com/api/workspace/servingendpoints/get
(``config.served_entities`` with ``name``, ``entity_name``, ``entity_version``,
``workload_size``, ``scale_to_zero_enabled``; ``config.traffic_config.routes``
with ``served_model_name`` and ``traffic_percentage``), and with the documented
error body (``error_code: RESOURCE_DOES_NOT_EXIST``, HTTP 404) for an endpoint
that does not exist. databricks-sdk talks to it with a host and a token.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import structlog
from pyspark.sql import functions as F

from gatewatch.alerts.advise import Advisor, sdk_lookup
from gatewatch.alerts.engine import Alerting, alert_tables, ensure_alert_tables
from gatewatch.alerts.sinks.config import ConsoleSinkSettings
from gatewatch.alerts.sinks.console import ConsoleSink
from gatewatch.quarantine.contract import load_contract
from gatewatch.schemas import CANONICAL_INPUT
from gatewatch.settings import AlertSettings, OutputSettings, Settings
from gatewatch.streams.batch import BatchContext, handle_batch
from gatewatch.streams.outputs import prepare_outputs
from tests.receivers import serving

T = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
TOKEN = "dapi-loopback-test"


def _entity(name: str, version: str, *, scale_to_zero: bool = False) -> dict[str, Any]:
    return {"name": name, "entity_name": "main.agents.support_agent", "entity_version": version,
            "workload_size": "Small", "scale_to_zero_enabled": scale_to_zero, "workload_type": "CPU",
            "creator": "ml-team@example.com", "creation_timestamp": 1764000000000,
            "state": {"deployment": "DEPLOYMENT_READY", "deployment_state_message": ""}}


def endpoint_json(entities: list[dict[str, Any]]) -> dict[str, Any]:
    """The documented answer for endpoint agent-prod: the given served entities, all traffic to agent-v3."""
    return {
        "name": "agent-prod", "id": "8e1b3f6c0a2d4e5f", "creator": "ml-team@example.com",
        "creation_timestamp": 1763000000000, "last_updated_timestamp": 1764400000000,
        "state": {"ready": "READY", "config_update": "NOT_UPDATING"},
        "config": {
            "config_version": 3,
            "served_entities": entities,
            "traffic_config": {"routes": [{"served_model_name": "agent-v3", "traffic_percentage": 100}]},
        },
        "permission_level": "CAN_MANAGE", "route_optimized": False, "task": "agent/v2/chat",
    }


@dataclass
class ServingApi:
    """A loopback Serving Endpoints API: endpoint JSON by name, and every GET it answered."""

    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    gets: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    host: str = ""

    def lookups(self) -> list[str]:
        """The endpoint GETs answered (the SDK's other probes left out)."""
        with self.lock:
            return [p for p in self.gets if p.startswith("/api/2.0/serving-endpoints/")]


@pytest.fixture()
def api() -> Iterator[ServingApi]:
    """A started loopback API on 127.0.0.1 that checks the bearer token; stopped after the test."""
    state = ServingApi()
    prefix = "/api/2.0/serving-endpoints/"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            with state.lock:
                state.gets.append(self.path)
                found = state.endpoints.get(self.path[len(prefix):]) if self.path.startswith(prefix) else None
            if not self.path.startswith(prefix):  # e.g. the SDK's host-metadata probe: not this API
                status, body = 404, {"error_code": "NOT_FOUND", "message": "no such path"}
            elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, body = 401, {"error_code": "UNAUTHENTICATED", "message": "bad token"}
            elif found is None:
                status, body = 404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                                     "message": f"Endpoint with name '{self.path[len(prefix):]}' does not exist."}
            else:
                status, body = 200, found
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        state.host = f"http://127.0.0.1:{server.server_address[1]}"
        yield state


def _request(rid: str, entity: str, at: datetime) -> dict[str, Any]:
    return dict(
        databricks_request_id=rid, client_request_id=None, request_date=date(at.year, at.month, at.day),
        request_time=at, status_code=200, sampling_fraction=1.0, execution_duration_ms=40,
        request=json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        response=json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}, "model": "m"}),
        served_entity_id=entity, logging_error_codes=[], requester="svc@example.com", endpoint="agent-prod",
        request_metadata=None, source_table="main.serving.agent_prod_payload", _change_type="insert",
        _commit_version=1, _commit_timestamp=at,
    )


class Clock:
    """A wall clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture()
def job_tables(spark, tmp_path):
    """Outputs and alert tables of one job, with requests: agent-v3 an hour ago, agent-v1 three days ago."""
    settings = Settings(output=OutputSettings(location=str(tmp_path / "out")),
                        alerts=AlertSettings(rules=(), deliver_interval_s=0),
                        sinks=({"name": "console", "type": "console"},))
    tables = prepare_outputs(spark, settings)
    ctx = BatchContext(source="agent", app_id="test", requests=tables["requests"], quarantine=tables["quarantine"],
                       contract=load_contract(settings))
    rows = [_request(f"v3-{i}", "agent-v3", T - timedelta(minutes=60 + i)) for i in range(3)]
    rows.append(_request("v1-0", "agent-v1", T - timedelta(days=3)))
    handle_batch(ctx, spark.createDataFrame(rows, CANONICAL_INPUT), 0)
    tables.update(alert_tables(settings))
    ensure_alert_tables(spark, settings, tables)
    return settings, tables


def _alerting(spark, settings, tables, api: ServingApi, clock: Clock, out: io.StringIO) -> Alerting:
    from databricks.sdk import WorkspaceClient

    alerting = Alerting(spark, settings, tables, sinks=[ConsoleSink(ConsoleSinkSettings(name="console"), stream=out)],
                        clock=clock)
    alerting.advisor.lookup = sdk_lookup(WorkspaceClient(host=api.host, token=TOKEN))
    return alerting


def test_two_idle_entities_fire_once_each_and_one_resolves_when_removed_from_the_config(spark, job_tables, api):
    """Of v1 and v2 (0%, no scale-to-zero, no request in 24 h) and v3 (100%), v1 and v2 fire once; v1 resolves once gone."""
    settings, tables = job_tables
    api.endpoints["agent-prod"] = endpoint_json(
        [_entity("agent-v1", "1"), _entity("agent-v2", "2"), _entity("agent-v3", "3"),
         _entity("agent-v0", "0", scale_to_zero=True)])
    clock, console = Clock(T), io.StringIO()
    alerting = _alerting(spark, settings, tables, api, clock, console)
    try:
        fired = alerting.advisor.tick(alerting, spark)
        assert sorted((a.status, a.group["served_entity"]) for a in fired) == [("firing", "agent-v1"),
                                                                               ("firing", "agent-v2")]
        v1 = next(a for a in fired if a.group["served_entity"] == "agent-v1")
        assert v1.details["last_request"] == "2026-11-27T12:00:00Z"
        assert "Serving > agent-prod > Edit endpoint > remove agent-v1 > Update" in v1.summary
        lines = console.getvalue().splitlines()
        assert len(lines) == 2 and all(" FIRING info idle_served_entity [endpoint=agent-prod, served_entity=agent-v"
                                       in line for line in lines)

        clock.now = T + timedelta(hours=1)  # within the window: no lookup, nothing new
        assert alerting.advisor.tick(alerting, spark) == []
        assert api.lookups() == ["/api/2.0/serving-endpoints/agent-prod"]

        api.endpoints["agent-prod"] = endpoint_json(
            [_entity("agent-v2", "2"), _entity("agent-v3", "3"), _entity("agent-v0", "0", scale_to_zero=True)])
        clock.now = T + timedelta(hours=24)  # the next window: one more lookup
        resolved = alerting.advisor.tick(alerting, spark)
        assert [(a.status, a.group["served_entity"], a.dedup_key) for a in resolved] == [
            ("resolved", "agent-v1", v1.dedup_key)]
        assert resolved[0].summary.endswith("agent-v1 is gone from the endpoint's configuration")
        assert len(api.lookups()) == 2
        lines = console.getvalue().splitlines()
        assert len(lines) == 3 and " RESOLVED info idle_served_entity [endpoint=agent-prod, served_entity=agent-v1]" \
            in lines[2]
        outbox = tables["outbox"].read(spark).orderBy("created_at", "dedup_key").collect()
        assert [(r["status"], r["delivery_status"]) for r in outbox] == [
            ("firing", "delivered"), ("firing", "delivered"), ("resolved", "delivered")]
        alerting.state.flush()
        states = {r["dedup_key"]: r["status"] for r in tables["alerts"].read(spark).collect()}
        assert sorted(states.values()) == ["firing", "resolved"] and states[v1.dedup_key] == "resolved"
    finally:
        alerting.close()

    again = _alerting(spark, settings, tables, api, Clock(T + timedelta(hours=48)), io.StringIO())
    try:  # restarted: agent-v2 is still firing from the tables and is not fired a second time
        assert [a.group["served_entity"] for a in again.firing.values()] == ["agent-v2"]
        assert again.advisor.tick(again, spark) == []
    finally:
        again.close()


def test_without_credentials_the_advisory_is_off_and_says_so_once(spark, job_tables, monkeypatch, tmp_path):
    """No host, token or profile: the advisory logs advisory_off once, looks nothing up and fires nothing."""
    settings, tables = job_tables
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    advisor = Advisor(settings, tables, clock=Clock(T))
    with structlog.testing.capture_logs() as logs:
        assert advisor.evaluate(spark, {}) == []
        assert advisor.evaluate(spark, {}, T + timedelta(days=2)) == []
    assert [e["event"] for e in logs if e["event"].startswith("advisory")] == ["advisory_off"]
    assert advisor.off


def test_without_a_workspace_variable_or_config_file_the_sdk_is_not_asked(monkeypatch, tmp_path):
    """No DATABRICKS_* variable and no config file: nothing could authenticate, the lookup says so at once."""
    import os

    from gatewatch.alerts.advise import could_authenticate, default_lookup

    for name in [n for n in os.environ if n.startswith(("DATABRICKS_", "ARM_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not could_authenticate()
    with pytest.raises(ValueError, match="no Databricks workspace"):
        default_lookup()
    (tmp_path / ".databrickscfg").write_text("[DEFAULT]\nhost = http://127.0.0.1:9\ntoken = t\n")
    assert could_authenticate()
    (tmp_path / ".databrickscfg").unlink()
    monkeypatch.setenv("DATABRICKS_HOST", "http://127.0.0.1:9")
    assert could_authenticate()


def test_an_endpoint_that_no_longer_exists_resolves_its_alerts(spark, job_tables, api):
    """An endpoint the API answers 404 for has no served entities left: its firing advisory alerts resolve."""
    settings, tables = job_tables
    api.endpoints["agent-prod"] = endpoint_json([_entity("agent-v2", "2"), _entity("agent-v3", "3")])
    from databricks.sdk import WorkspaceClient

    advisor = Advisor(settings, tables, lookup=sdk_lookup(WorkspaceClient(host=api.host, token=TOKEN)))
    [fired] = advisor.evaluate(spark, {}, T)
    del api.endpoints["agent-prod"]
    [resolved] = advisor.evaluate(spark, {fired.dedup_key: fired}, T + timedelta(days=1))
    assert (resolved.status, resolved.dedup_key) == ("resolved", fired.dedup_key)
    assert tables["requests"].read(spark).where(F.col("served_entity_id") == "agent-v3").count() == 3
