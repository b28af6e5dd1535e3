"""The Alertmanager sink against a real Alertmanager: one firing notification, then a resolved one.

Starts the ``prometheus-alertmanager`` binary on loopback (clustering off,
storage in ``tmp_path``) with a route to a webhook receiver run by the test,
and waits only by bounded polling.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from gatewatch.alerts.sinks import build_sink
from gatewatch.alerts.sinks.config import AlertmanagerSinkSettings
from gatewatch.alerts.sinks.model import Alert, parse_iso
from tests.receivers import serving

CANDIDATES = ("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager", "alertmanager")


def find_alertmanager() -> str | None:
    """The Alertmanager binary: ``$GATEWATCH_ALERTMANAGER_BIN``, the Debian path, or one on PATH."""
    configured = os.environ.get("GATEWATCH_ALERTMANAGER_BIN")
    for candidate in ((configured,) if configured else ()) + CANDIDATES:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    return None


pytestmark = [
    pytest.mark.alertmanager,
    pytest.mark.skipif(find_alertmanager() is None,
                       reason="prometheus-alertmanager binary not found (apt-get install prometheus-alertmanager)"),
]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy, failing the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class Notifications:
    """The webhook notifications Alertmanager sent, in arrival order."""

    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def snapshot(self) -> list[dict[str, Any]]:
        """A copy of what has arrived so far."""
        with self.lock:
            return list(self.received)

    def alerts(self, status: str, **labels: str) -> list[dict[str, Any]]:
        """Alerts of ``status`` with these labels, one per notification that carried them."""
        return [
            alert
            for note in self.snapshot()
            for alert in note.get("alerts", [])
            if alert.get("status") == status and all(alert["labels"].get(k) == v for k, v in labels.items())
        ]


@pytest.fixture()
def notifications() -> Iterator[Notifications]:
    """A loopback HTTP server recording Alertmanager's webhook notifications."""
    store = Notifications()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with store.lock:
                store.received.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access logs
            return

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        store.url = f"http://127.0.0.1:{server.server_address[1]}/notify"
        yield store


CONFIG = """\
global:
  resolve_timeout: 5m
route:
  receiver: gatewatch-test
  group_by: ['alertname', 'endpoint']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: gatewatch-test
    webhook_configs:
      - url: '{url}'
        send_resolved: true
"""


@pytest.fixture()
def alertmanager(tmp_path: Path, notifications: Notifications) -> Iterator[str]:
    """A started Alertmanager (no clustering, storage in tmp_path); yields its base URL."""
    binary = find_alertmanager()
    if binary is None:
        pytest.skip("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(url=notifications.url))
    port = free_port()
    log_path = tmp_path / "alertmanager.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=info"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"alertmanager exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                return requests.get(f"{base}/-/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 30, "alertmanager /-/ready")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


ENDPOINT = "chat-bot"


def make_alert(now: datetime) -> Alert:
    """A firing content-filter alert for endpoint chat-bot that started at ``now``."""
    return Alert(
        rule="content_filter_blocks",
        group={"endpoint": ENDPOINT},
        severity="critical",
        summary="Content-filter blocks on chat-bot: 12 of 40 requests (30%) in 5 min",
        value=0.3,
        threshold=0.2,
        window_start=now - timedelta(minutes=5),
        window_end=now,
        started_at=now,
        counts={"blocked": 12, "requests": 40},
        links=(("Dashboard", "https://dbc-example.cloud.databricks.com/sql/dashboards/abc"),),
    )


class TestRealAlertmanager:
    def test_fire_resend_resolve(self, alertmanager, notifications):
        """A firing alert (sent twice) notifies once; resolving it notifies a resolved alert."""
        sink = build_sink(AlertmanagerSinkSettings(name="am", url=alertmanager, resend_interval_s=30))
        now = datetime.now(timezone.utc)
        alert = make_alert(now)

        first = sink.deliver(alert)
        assert (first.ok, first.http_status) == (True, 200)
        wait_for(lambda: notifications.alerts("firing", endpoint=ENDPOINT), 20, "the firing notification")

        before = datetime.now(timezone.utc)
        resend = sink.deliver(alert)
        after = datetime.now(timezone.utc)
        assert resend.ok
        stored = requests.get(f"{alertmanager}/api/v2/alerts", params={"filter": f'endpoint="{ENDPOINT}"'},
                              timeout=5).json()
        assert len(stored) == 1
        assert stored[0]["labels"] == {"alertname": "content_filter_blocks", "endpoint": ENDPOINT,
                                       "severity": "critical"}
        assert stored[0]["status"]["state"] == "active"
        assert stored[0]["generatorURL"] == alert.links[0][1]
        horizon, ms = timedelta(seconds=120), timedelta(milliseconds=1)  # Alertmanager keeps milliseconds
        assert before + horizon - ms <= parse_iso(stored[0]["endsAt"]) <= after + horizon

        done = sink.deliver(alert.resolve(datetime.now(timezone.utc)))
        assert done.ok
        [resolved] = wait_for(lambda: notifications.alerts("resolved", endpoint=ENDPOINT), 20,
                              "the resolved notification")
        assert resolved["labels"]["alertname"] == "content_filter_blocks"
        assert resolved["annotations"]["dedup_key"] == alert.dedup_key
        assert len(notifications.alerts("firing", endpoint=ENDPOINT)) == 1
        assert notifications.snapshot()[-1]["status"] == "resolved"
