"""The dashboard: its datasets run as SQL on the job's output tables, and its deploy through a loopback Lakeview API.

The Lakeview API paths and bodies are those of
https://docs.databricks.com/api/workspace/lakeview (list, create, update,
publish); the serialized dashboard is the ``.lvdash.json`` format of
https://docs.databricks.com/dashboards/api-tutorials/lakeview-crud-api.html.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from pyspark.sql import functions as F

from gatewatch.cli.main import main
from gatewatch.views import queries
from gatewatch.views.dashboard import dataset_texts, plan
from tests.views.helpers import build_outputs
from tests.receivers import serving


@pytest.fixture(scope="module")
def outputs(spark, tmp_path_factory):
    """The job's output tables (requests, quarantine, alerts, outbox) from generated traffic, built once."""
    return build_outputs(spark, tmp_path_factory.mktemp("views-dashboard"))


def _rows(spark, settings, name: str) -> list[dict[str, Any]]:
    """The rows of the dataset ``name`` as the dashboard's SQL text returns them."""
    serialized = plan(settings, "gatewatch").serialized
    (dataset,) = [d for d in serialized["datasets"] if d["name"] == name]
    rows = [r.asDict() for r in spark.sql("".join(dataset["queryLines"])).collect()]
    assert rows, f"dataset {name} returned no rows"
    return rows


def _table(spark, settings, name: str):
    return spark.read.format("delta").load(str(Path(settings.output.location) / name))


def test_the_dashboard_gets_each_dataset_sql_with_the_output_path_filled_in(outputs) -> None:
    """Every dataset's queryLines are the one SQL text of views.queries, naming the outputs as delta.`path`."""
    serialized = plan(outputs, "gatewatch").serialized
    texts = dataset_texts(outputs)
    assert [d["name"] for d in serialized["datasets"]] == [d.name for d in queries.DATASETS]
    out = Path(outputs.output.location).resolve()
    for d in serialized["datasets"]:
        text = "".join(d["queryLines"])
        assert text == queries.dataset_sql(queries.by_name(d["name"]), queries.table_refs(outputs.output))
        assert text == texts[d["name"]]
        assert f"delta.`{out}/" in text
    names = {w["widget"]["queries"][0]["query"]["datasetName"] for w in serialized["pages"][0]["layout"]}
    assert names == {d.name for d in queries.DATASETS}


def test_overview_tokens_and_outcomes_match_the_requests_table(spark, outputs) -> None:
    """Overview, tokens per endpoint and requests per outcome equal the same sums over requests and quarantine."""
    requests, quarantine = _table(spark, outputs, "requests"), _table(spark, outputs, "quarantine")
    (overview,) = _rows(spark, outputs, "overview")
    assert overview["requests"] == requests.count() > 0
    assert overview["blocked"] == requests.where("blocked").count() > 0
    assert overview["errors"] == requests.where("outcome = 'error'").count()
    assert overview["total_tokens"] == requests.agg(F.sum("total_tokens")).first()[0]
    assert overview["quarantined"] == quarantine.count() > 0

    per_endpoint: dict[str, int] = {}
    for r in _rows(spark, outputs, "tokens_by_endpoint"):
        per_endpoint[r["endpoint"]] = per_endpoint.get(r["endpoint"], 0) + r["total_tokens"]
    expected = {r["endpoint"]: r["t"] for r in requests.groupBy("endpoint").agg(F.sum("total_tokens").alias("t"))
                .collect()}
    assert per_endpoint == expected and set(expected) == {"chat-prod", "agent-prod"}

    per_requester = sum(r["total_tokens"] for r in _rows(spark, outputs, "tokens_by_requester"))
    assert per_requester == overview["total_tokens"]

    outcomes: dict[str, int] = {}
    for r in _rows(spark, outputs, "outcomes"):
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + r["requests"]
    assert outcomes == {r["outcome"]: r["count"] for r in requests.groupBy("outcome").count().collect()}


def test_blocked_rate_errors_quarantine_alerts_and_lag_match_the_tables(spark, outputs) -> None:
    """Blocked rates, errors, quarantine groups, alert transitions and source versions equal the tables' figures."""
    requests, quarantine = _table(spark, outputs, "requests"), _table(spark, outputs, "quarantine")
    totals = {r["endpoint"]: r["count"] for r in requests.groupBy("endpoint").count().collect()}
    flags = (requests.where("blocked")
             .select("endpoint", "databricks_request_id", "blocked_stage",
                     F.explode_outer(F.filter("safety_flags", lambda f: f["filtered"])).alias("flag")))
    expected = {
        (r["endpoint"], r["layer"], r["category"]): r["n"]
        for r in flags.groupBy(
            "endpoint",
            F.coalesce("blocked_stage", F.col("flag.stage"), F.lit("(unknown)")).alias("layer"),
            F.coalesce(F.col("flag.category"), F.lit("(unspecified)")).alias("category"),
        ).agg(F.countDistinct("databricks_request_id").alias("n")).collect()
    }
    blocked = _rows(spark, outputs, "blocked_by_layer")
    assert {(r["endpoint"], r["layer"], r["category"]): r["blocked"] for r in blocked} == expected
    for r in blocked:
        assert r["endpoint_requests"] == totals[r["endpoint"]]
        assert r["blocked_rate"] == round(r["blocked"] / totals[r["endpoint"]], 4)

    errors = _rows(spark, outputs, "errors")
    assert sum(r["errors"] for r in errors) == requests.where("outcome = 'error'").count() > 0

    groups = _rows(spark, outputs, "quarantine")
    assert sum(r["rows"] for r in groups) == quarantine.count()
    first, last = quarantine.agg(F.min("quarantined_at"), F.max("quarantined_at")).first()
    assert min(r["first_seen"] for r in groups) == first and max(r["last_seen"] for r in groups) == last
    assert {r["reason"] for r in groups} == {r[0] for r in quarantine.select("reason").distinct().collect()}

    outbox = _table(spark, outputs, "alert_outbox")
    transitions = _rows(spark, outputs, "alert_transitions")
    assert sum(r["transitions"] for r in transitions) == outbox.select("event_id").distinct().count()
    assert {(r["rule"], r["status"]) for r in transitions} >= {("content_filter_spike", "firing")}
    alerts = _rows(spark, outputs, "alerts")
    assert len(alerts) == _table(spark, outputs, "alerts").count()
    assert any(json.loads(a["alert_group"]) == {"endpoint": "chat-prod"} for a in alerts)

    lag = {r["source_table"]: r for r in _rows(spark, outputs, "source_lag")}
    for source in outputs.sources:
        from delta.tables import DeltaTable

        latest = DeltaTable.forPath(spark, source.table).history(1).first()["version"]
        (row,) = [r for name, r in lag.items() if name.endswith(Path(source.table).name)]
        assert row["newest_commit_version"] == latest


def test_the_report_filters_narrow_every_dataset_to_the_endpoint_and_range(spark, outputs) -> None:
    """The report's endpoint filter leaves one endpoint's rows; a range after the traffic leaves no requests."""
    from datetime import datetime, timezone

    from gatewatch.views.data import Filters, collect

    chat = collect(spark, outputs.output, Filters(endpoints=("chat-prod",)))
    requests = _table(spark, outputs, "requests")
    assert {r["endpoint"] for r in chat.rows["tokens_by_endpoint"]} == {"chat-prod"}
    assert chat.rows["overview"][0]["requests"] == requests.where("endpoint = 'chat-prod'").count() > 0
    assert chat.rows["overview"][0]["quarantined"] == (
        _table(spark, outputs, "quarantine").where("endpoint = 'chat-prod'").count())
    later = collect(spark, outputs.output, Filters(since=datetime(2030, 1, 1, tzinfo=timezone.utc)))
    assert later.rows["overview"][0]["requests"] == 0 and later.rows["tokens_by_endpoint"] == []


class _Lakeview(BaseHTTPRequestHandler):
    """The Jobs and Lakeview API paths ``gatewatch deploy`` calls, over in-memory jobs and dashboards."""

    server: _Workspace

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        self.server.calls.append(("GET", url.path, url.query))
        if url.path in ("/api/2.1/jobs/list", "/api/2.2/jobs/list"):
            jobs = [{"job_id": i, "settings": {"name": s["name"]}} for i, s in self.server.jobs.items()]
            return self._reply(200, {"jobs": jobs, "has_more": False})
        if url.path == "/api/2.0/lakeview/dashboards":
            listed = [{k: v for k, v in d.items() if k in ("dashboard_id", "display_name", "parent_path",
                                                             "lifecycle_state")}
                      for d in self.server.dashboards.values()]
            return self._reply(200, {"dashboards": listed})
        self._reply(404, {"error_code": "NOT_FOUND", "message": url.path})

    def do_POST(self) -> None:  # noqa: N802
        path, body = self._body()
        if path.endswith("/jobs/create"):
            job_id = 1000 + len(self.server.jobs)
            self.server.jobs[job_id] = body
            return self._reply(200, {"job_id": job_id})
        if path.endswith("/jobs/reset"):
            self.server.jobs[body["job_id"]] = body["new_settings"]
            return self._reply(200, {})
        if path == "/api/2.0/lakeview/dashboards":
            if not body.get("display_name"):
                return self._reply(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "display_name"})
            dashboard_id = f"01ef{len(self.server.dashboards):028x}"
            stored = {**body, "dashboard_id": dashboard_id, "lifecycle_state": "ACTIVE",
                      "path": f"{body['parent_path']}/{body['display_name']}.lvdash.json"}
            self.server.dashboards[dashboard_id] = stored
            return self._reply(200, stored)
        if path.startswith("/api/2.0/lakeview/dashboards/") and path.endswith("/published"):
            dashboard_id = path.split("/")[-2]
            if dashboard_id not in self.server.dashboards:
                return self._reply(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": dashboard_id})
            return self._reply(200, {"display_name": self.server.dashboards[dashboard_id]["display_name"],
                                     "warehouse_id": body.get("warehouse_id")})
        self._reply(404, {"error_code": "NOT_FOUND", "message": path})

    def do_PATCH(self) -> None:  # noqa: N802
        path, body = self._body()
        dashboard_id = path.rsplit("/", 1)[-1]
        if dashboard_id not in self.server.dashboards:
            return self._reply(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": dashboard_id})
        self.server.dashboards[dashboard_id].update(body)
        self._reply(200, self.server.dashboards[dashboard_id])

    def _body(self) -> tuple[str, dict[str, Any]]:
        path = urlparse(self.path).path
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.calls.append((self.command, path, body))
        return path, body

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class _Workspace(ThreadingHTTPServer):
    """A loopback workspace on a free port: jobs and dashboards by id, and every call it answered."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Lakeview)
        self.jobs: dict[int, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []

    def made(self, method: str, path_part: str) -> list[Any]:
        return [body for m, path, body in self.calls if m == method and path_part in path]


@pytest.fixture()
def workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_Workspace]:
    """A loopback workspace and the environment pointing databricks-sdk at it with a token."""
    for name in [n for n in os.environ if n.startswith(("DATABRICKS_", "ARM_", "GOOGLE_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    with serving(_Workspace()) as server:
        monkeypatch.setenv("DATABRICKS_HOST", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("DATABRICKS_TOKEN", "x")
        yield server


CONFIG = """\
sources:
  - table: main.serving.chat_bot_payload
output:
  location: main.gatewatch
checkpoint_root: /Volumes/main/gatewatch/checkpoints
deploy:
  config_path: /Volumes/main/gatewatch/conf/gatewatch.yaml
  wheel: /Volumes/main/gatewatch/wheels/gatewatch-0.1.0-py3-none-any.whl
  cluster: {node_type_id: i3.xlarge}
  dashboard: {warehouse_id: wh-1234, parent_path: /Workspace/Shared/gatewatch}
"""


def test_deploy_creates_then_updates_and_publishes_the_same_dashboard(workspace, tmp_path, capsys) -> None:
    """The first deploy creates and publishes the dashboard; the second finds it by name and updates it in place."""
    config = tmp_path / "gatewatch.yaml"
    config.write_text(CONFIG)
    assert main(["deploy", "--config", str(config)]) == 0
    (created,) = workspace.made("POST", "/lakeview/dashboards")[:1]
    assert created["display_name"] == "gatewatch" and created["warehouse_id"] == "wh-1234"
    assert created["parent_path"] == "/Workspace/Shared/gatewatch"
    serialized = json.loads(created["serialized_dashboard"])
    assert "".join(serialized["datasets"][0]["queryLines"]).count("`main`.`gatewatch`.`requests`") == 1
    (dashboard_id,) = workspace.dashboards
    assert workspace.made("POST", f"/lakeview/dashboards/{dashboard_id}/published") == [{"warehouse_id": "wh-1234",
                                                                                        "embed_credentials": False}]
    assert f"created and published dashboard {dashboard_id} 'gatewatch'" in capsys.readouterr().out

    config.write_text(CONFIG.replace("location: main.gatewatch", "location: main.gatewatch_eu"))
    assert main(["deploy", "--config", str(config)]) == 0
    assert list(workspace.dashboards) == [dashboard_id]
    (patched,) = workspace.made("PATCH", f"/lakeview/dashboards/{dashboard_id}")
    assert "`main`.`gatewatch_eu`.`requests`" in patched["serialized_dashboard"]
    assert len(workspace.made("POST", "/published")) == 2
    assert len([b for b in workspace.made("POST", "/lakeview/dashboards") if "display_name" in b]) == 1
    assert f"updated and published dashboard {dashboard_id} 'gatewatch'" in capsys.readouterr().out


def test_dry_run_prints_the_dashboard_after_the_job(tmp_path, capsys) -> None:
    """With a warehouse set, --dry-run prints the job's JSON, then the dashboard's (alert views only with alerting)."""
    config = tmp_path / "gatewatch.yaml"
    config.write_text(CONFIG)
    assert main(["deploy", "--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    decoder = json.JSONDecoder()
    job, end = decoder.raw_decode(out)
    board, _ = decoder.raw_decode(out[end:].lstrip())
    assert job["name"] == "gatewatch"
    assert board["display_name"] == "gatewatch" and board["warehouse_id"] == "wh-1234"
    assert [d["name"] for d in board["serialized_dashboard"]["datasets"]] == [d.name for d in queries.DATASETS]

    assert main(["deploy", "--config", str(config), "--dry-run", "--set", "alerts.enabled=false"]) == 0
    out = capsys.readouterr().out
    board, _ = decoder.raw_decode(out[decoder.raw_decode(out)[1]:].lstrip())
    assert [d["name"] for d in board["serialized_dashboard"]["datasets"]] == [
        d.name for d in queries.DATASETS if not set(d.roles) & set(queries.ALERT_ROLES)]
