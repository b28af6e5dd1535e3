"""``gatewatch deploy``: the job settings it builds, the CLI's dry run, and create-or-reset by name."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.jobs import JobSettings

from gatewatch.errors import ConfigError, DuplicateJobsError
from gatewatch.cli.main import job_main, main
from gatewatch.streams.config import load_settings
from gatewatch.cli.deploy import build_job, deploy
from gatewatch.settings import Settings
from tests.receivers import serving

WHEEL = "/Volumes/main/gatewatch/wheels/gatewatch-0.1.0-py3-none-any.whl"

TWO_SOURCES = """\
sources:
  - table: main.serving.chat_bot_payload        # AI Gateway inference table
  - table: main.serving.support_agent_payload   # legacy payload table
    endpoint: support-agent
output:
  location: main.gatewatch
checkpoint_root: /Volumes/main/gatewatch/checkpoints
deploy:
  config_path: /Volumes/main/gatewatch/conf/eu-west.yaml
  wheel: {wheel}
  cluster:
    node_type_id: i3.xlarge
    num_workers: 2
  tags:
    region: eu-west
  email_notifications:
    on_failure: [oncall@example.com]
"""


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    """A config with two catalog sources, one of each schema, and a deploy section."""
    path = tmp_path / "eu-west.yaml"
    path.write_text(TWO_SOURCES.format(wheel=WHEEL))
    return path


def load(config_file: Path, *overrides: str) -> Settings:
    return load_settings(str(config_file), list(overrides))


def dry_run_json(config_file: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["deploy", "--config", str(config_file), "--dry-run", *args]) == 0
    return json.loads(capsys.readouterr().out)


class TestJobSettings:
    def test_round_trips_through_the_sdk_classes(self, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The dry run prints the SDK's own JSON of the job, sorted and indented, and it survives from_dict/as_dict."""
        body = build_job(load(config_file)).as_dict()
        assert JobSettings.from_dict(body).as_dict() == body
        assert main(["deploy", "--config", str(config_file), "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert json.loads(out) == body
        assert out == json.dumps(body, sort_keys=True, indent=2) + "\n"

    def test_one_continuous_wheel_task_runs_every_source(self, config_file: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
        """A processing-time config gives one continuous, unpaused job whose wheel task runs the workspace config."""
        body = dry_run_json(config_file, capsys)
        assert body["name"] == "gatewatch-eu-west"
        assert body["continuous"] == {"pause_status": "UNPAUSED", "task_retry_mode": "ON_FAILURE"}
        assert body["max_concurrent_runs"] == 1
        assert "schedule" not in body
        (task,) = body["tasks"]
        assert task["python_wheel_task"] == {
            "package_name": "gatewatch",
            "entry_point": "gatewatch-job",
            "parameters": ["run", "--config", "/Volumes/main/gatewatch/conf/eu-west.yaml", "--log-format", "json",
                           "--set", "trigger.mode=processing_time"],
        }
        assert not {"max_retries", "min_retry_interval_millis", "retry_on_timeout"} & task.keys()
        assert "main.serving.chat_bot_payload, main.serving.support_agent_payload" in body["description"]
        assert body["tags"] == {"app": "gatewatch", "region": "eu-west"}
        assert body["email_notifications"] == {"on_failure": ["oncall@example.com"]}

    def test_flags_override_the_deploy_section(self, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--name, --wheel and --config-path replace their deploy keys."""
        wheel = "/Workspace/Shared/gatewatch/gatewatch-0.2.0-py3-none-any.whl"
        body = dry_run_json(config_file, capsys, "--name", "gatewatch-eu", "--wheel", wheel,
                            "--config-path", "/Workspace/Shared/gatewatch/eu.yaml")
        assert body["name"] == "gatewatch-eu"
        assert body["tasks"][0]["libraries"] == [{"whl": wheel}]
        assert body["tasks"][0]["python_wheel_task"]["parameters"][2] == "/Workspace/Shared/gatewatch/eu.yaml"

    def test_available_now_runs_on_a_schedule_with_retries(self, config_file: Path) -> None:
        """An available-now config with a schedule gives a scheduled job that drains and exits, with task retries."""
        body = build_job(load(config_file, "trigger.mode=available_now", "deploy.schedule.cron=0 0/15 * * * ?",
                              "deploy.retries.max_retries=2")).as_dict()
        assert "continuous" not in body
        assert body["schedule"] == {"quartz_cron_expression": "0 0/15 * * * ?", "timezone_id": "UTC",
                                    "pause_status": "UNPAUSED"}
        task = body["tasks"][0]
        assert task["python_wheel_task"]["parameters"][-1] == "--available-now"
        assert (task["max_retries"], task["min_retry_interval_millis"], task["retry_on_timeout"]) == (2, 60000, False)

    def test_available_now_without_schedule_runs_when_started(self, config_file: Path) -> None:
        """Without a schedule an available-now job has no trigger: it runs when started."""
        body = build_job(load(config_file, "trigger.mode=available_now")).as_dict()
        assert not {"continuous", "schedule", "trigger"} & body.keys()

    def test_paused(self, config_file: Path) -> None:
        """deploy.paused deploys the continuous job paused."""
        body = build_job(load(config_file, "deploy.paused=true")).as_dict()
        assert body["continuous"]["pause_status"] == "PAUSED"


class TestCompute:
    def test_job_cluster(self, config_file: Path) -> None:
        """Cluster compute gives one job cluster and installs the wheel as a task library."""
        body = build_job(load(config_file, "deploy.cluster.spark_conf={spark.sql.shuffle.partitions: '8'}")).as_dict()
        assert body["job_clusters"] == [{
            "job_cluster_key": "gatewatch",
            "new_cluster": {"spark_version": "17.3.x-scala2.13", "node_type_id": "i3.xlarge", "num_workers": 2,
                            "data_security_mode": "SINGLE_USER",
                            "spark_conf": {"spark.sql.shuffle.partitions": "8"}},
        }]
        task = body["tasks"][0]
        assert task["job_cluster_key"] == "gatewatch"
        assert task["libraries"] == [{"whl": WHEEL}]
        assert "environments" not in body and "environment_key" not in task

    def test_single_node_cluster(self, config_file: Path) -> None:
        """Zero workers gives the single-node profile."""
        cluster = build_job(load(config_file, "deploy.cluster.num_workers=0")).as_dict()["job_clusters"][0]
        assert cluster["new_cluster"]["spark_conf"]["spark.databricks.cluster.profile"] == "singleNode"
        assert cluster["new_cluster"]["custom_tags"] == {"ResourceClass": "SingleNode"}

    def test_serverless(self, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Serverless compute gives an environment holding the wheel and no cluster or task library."""
        body = dry_run_json(config_file, capsys, "--compute", "serverless", "--set", "trigger.mode=available_now",
                            "--set", "deploy.serverless.dependencies=[my-parsers==1.2]")
        assert JobSettings.from_dict(body).as_dict() == body
        assert body["environments"] == [{
            "environment_key": "gatewatch",
            "spec": {"environment_version": "4", "dependencies": [WHEEL, "my-parsers==1.2"]},
        }]
        task = body["tasks"][0]
        assert task["environment_key"] == "gatewatch"
        assert "job_clusters" not in body and "libraries" not in task and "job_cluster_key" not in task

    def test_serverless_refuses_a_continuous_job(self, config_file: Path) -> None:
        """Serverless compute with a processing-time trigger is refused naming deploy.compute."""
        with pytest.raises(ConfigError) as err:
            build_job(load(config_file, "deploy.compute=serverless"))
        assert err.value.key == "deploy.compute"


    @pytest.mark.parametrize(("override", "key"), [
        ("spark.conf={spark.databricks.delta.optimizeWrite.enabled: 'true'}",
         "spark.conf.spark.databricks.delta.optimizeWrite.enabled"),
        ("deploy.cluster.spark_conf={spark.speculation: 'true'}", "deploy.cluster.spark_conf"),
        ("checkpoint_root=dbfs:/gatewatch/ckpt", "checkpoint_root"),
    ])
    def test_serverless_refuses_what_serverless_refuses(self, config_file: Path, override: str, key: str) -> None:
        """A Spark conf serverless does not let a job set, a cluster conf, a DBFS location: refused naming the key."""
        with pytest.raises(ConfigError) as err:
            build_job(load(config_file, "deploy.compute=serverless", "trigger.mode=available_now", override))
        assert err.value.key == key

    def test_serverless_takes_the_session_confs_it_allows(self, config_file: Path) -> None:
        """``spark.conf`` keys serverless lets a job set pass the check (the job sets them on its session)."""
        job = build_job(load(config_file, "deploy.compute=serverless", "trigger.mode=available_now",
                             "spark.conf={spark.sql.shuffle.partitions: '64', spark.sql.session.timeZone: UTC}"))
        assert job.environments[0].spec.environment_version == "4"


class _Jobs(BaseHTTPRequestHandler):
    """The Jobs API paths the SDK calls for deploy, over an in-memory job store."""

    server: _JobsServer

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if url.path not in ("/api/2.1/jobs/list", "/api/2.2/jobs/list"):
            return self._reply(404, {"error_code": "NOT_FOUND", "message": url.path})
        self.server.calls.append(("GET", url.path, parse_qs(url.query)))
        name = parse_qs(url.query).get("name", [None])[0]
        found = [{"job_id": i, "settings": {"name": s["name"]}} for i, s in sorted(self.server.jobs.items())
                 if name is None or s["name"].lower() == name.lower()]
        self._reply(200, {"jobs": found, "has_more": False} if found else {"has_more": False})

    def do_POST(self) -> None:  # noqa: N802
        path = urlparse(self.path).path
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.calls.append(("POST", path, body))
        if path.endswith("/jobs/create"):
            job_id = 1000 + len(self.server.jobs)
            self.server.jobs[job_id] = body
            return self._reply(200, {"job_id": job_id})
        if path.endswith("/jobs/reset"):
            if body.get("job_id") not in self.server.jobs:
                return self._reply(400, {"error_code": "INVALID_PARAMETER_VALUE",
                                         "message": f"Job {body.get('job_id')} does not exist."})
            self.server.jobs[body["job_id"]] = body["new_settings"]
            return self._reply(200, {})
        self._reply(404, {"error_code": "NOT_FOUND", "message": path})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class _JobsServer(ThreadingHTTPServer):
    """A loopback server on a free port holding jobs by id and every call it answered."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Jobs)
        self.jobs: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []

    def posts(self, suffix: str) -> list[dict[str, Any]]:
        return [body for method, path, body in self.calls if method == "POST" and path.endswith(suffix)]


@pytest.fixture()
def workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[_JobsServer, WorkspaceClient]]:
    """A loopback Jobs API and a client pointed at it with a token (no other Databricks config in sight)."""
    for name in [n for n in os.environ if n.startswith(("DATABRICKS_", "ARM_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    with serving(_JobsServer()) as server:
        yield server, WorkspaceClient(host=f"http://127.0.0.1:{server.server_port}", token="x")


class TestIdempotency:
    def test_first_deploy_creates_then_resets_the_same_job(self, config_file: Path,
                                                           workspace: tuple[_JobsServer, WorkspaceClient]) -> None:
        """Deploying twice creates the job once, then overwrites it by id with the dry run's exact settings."""
        server, client = workspace
        settings = load(config_file)
        planned = deploy(settings, None, dry_run=True)
        first = deploy(settings, client)
        second = deploy(settings, client)
        assert (first.action, second.action) == ("created", "updated")
        assert first.job_id == second.job_id == 1000
        assert server.posts("/jobs/create") == [planned.settings]
        assert server.posts("/jobs/reset") == [{"job_id": 1000, "new_settings": planned.settings}]
        lists = [query for method, path, query in server.calls if method == "GET"]
        assert lists == [{"name": ["gatewatch-eu-west"]}] * 2

    def test_dry_run_calls_nothing(self, config_file: Path, workspace: tuple[_JobsServer, WorkspaceClient]) -> None:
        """A dry run makes no call even when given a client."""
        server, client = workspace
        assert deploy(load(config_file), client, dry_run=True).action == "planned"
        assert server.calls == []

    def test_a_name_differing_in_case_is_another_job(self, config_file: Path,
                                                     workspace: tuple[_JobsServer, WorkspaceClient]) -> None:
        """The API's name filter ignores case; a job named with other capitals is left alone."""
        server, client = workspace
        server.jobs[7] = {"name": "Gatewatch-EU-West"}
        assert deploy(load(config_file), client).action == "created"
        assert server.jobs[7] == {"name": "Gatewatch-EU-West"}

    def test_several_jobs_of_the_name_are_refused(self, config_file: Path,
                                                  workspace: tuple[_JobsServer, WorkspaceClient]) -> None:
        """Two jobs with the name stop the deploy, naming both ids, and nothing is written."""
        server, client = workspace
        server.jobs.update({41: {"name": "gatewatch-eu-west"}, 42: {"name": "gatewatch-eu-west"}})
        with pytest.raises(DuplicateJobsError, match=r"job ids 41, 42"):
            deploy(load(config_file), client)
        assert server.posts("/jobs/create") == server.posts("/jobs/reset") == []


class TestRefused:
    @pytest.mark.parametrize(("override", "key"), [
        ("deploy.cluster.num_workers=-1", "deploy.cluster.num_workers"),
        ("deploy.compute=lambda", "deploy.compute"),
        ("deploy.wheel=dist/gatewatch-0.1.0-py3-none-any.whl", "deploy.wheel"),
        ("deploy.config_path=conf/eu-west.yaml", "deploy.config_path"),
        ("deploy.email_notifications.on_failure=[oncall]", "deploy.email_notifications.on_failure.0"),
        ("deploy.schedule.cron=every 5 minutes", "deploy.schedule.cron"),
        ("deploy.retries.max_retry=3", "deploy.retries.max_retry"),
    ])
    def test_a_bad_deploy_value_names_its_key(self, config_file: Path, override: str, key: str) -> None:
        """A bad value in the deploy section is refused naming its dotted key."""
        with pytest.raises(ConfigError) as err:
            load(config_file, override)
        assert err.value.key == key

    @pytest.mark.parametrize(("override", "key"), [
        ("deploy.config_path=", "deploy.config_path"),
        ("deploy.wheel=", "deploy.wheel"),
        ("deploy.cluster.node_type_id=", "deploy.cluster.node_type_id"),
        ("checkpoint_root=checkpoints", "checkpoint_root"),
        ("output.location=output", "output.location"),
        ("deploy.schedule.cron=0 0 * * * ?", "deploy.schedule"),
    ])
    def test_a_config_the_job_cannot_run_names_its_key(self, config_file: Path, override: str, key: str) -> None:
        """A missing deploy key, a checkpoint on the driver's disk or a schedule on a continuous job are refused."""
        with pytest.raises(ConfigError) as err:
            build_job(load(config_file, override))
        assert err.value.key == key

    def test_the_cli_says_it_in_one_line(self, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The CLI prints a bad deploy value as one line and exits 2, without a traceback."""
        assert main(["deploy", "--config", str(config_file), "--dry-run", "--set", "deploy.compute=lambda"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert err.startswith("gatewatch: error: config key 'deploy.compute'")

    def test_missing_credentials_say_how_to_configure_them(self, config_file: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
        """Without credentials the CLI says in one line how to set them, and that --dry-run needs none."""
        for name in [n for n in os.environ if n.startswith(("DATABRICKS_", "ARM_", "GOOGLE_"))]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("PATH", str(tmp_path))  # no databricks or az CLI to ask
        assert main(["deploy", "--config", str(config_file)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert "DATABRICKS_HOST" in err and "DATABRICKS_TOKEN" in err and "--dry-run" in err


class TestJobEntryPoint:
    def test_a_failing_command_fails_the_task(self, config_file: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        """The wheel task's entry point raises the exit code, which a returned value would not carry."""
        monkeypatch.setattr("sys.argv", ["gatewatch-job", "deploy", "--config", str(config_file), "--dry-run",
                                         "--set", "deploy.compute=lambda"])
        with pytest.raises(SystemExit) as exit_:
            job_main()
        assert exit_.value.code == 2
        monkeypatch.setattr("sys.argv", ["gatewatch-job", "deploy", "--config", str(config_file), "--dry-run"])
        assert job_main() is None
