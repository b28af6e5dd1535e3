"""End to end through a real Alertmanager: a generated content-filter spike pages once, then resolves.

The job tails two inference tables (chat-prod and agent-prod) with the
packaged alert rules and one Alertmanager sink. Alertmanager (started on
loopback by the fixtures of ``test_alertmanager_real.py``, grouping by
alertname and endpoint with 1 s waits) forwards to a webhook receiver run by
the test. Streaming progress is awaited with ``processAllAvailable``; only
the external receiver is polled, with a deadline.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from gatewatch.settings import Settings
from gatewatch.traffic import generate as traffic
from gatewatch.streams.config import read_rules
from gatewatch.streams.job import Job

_spec = importlib.util.spec_from_file_location(
    "gatewatch_tests_alertmanager_real", Path(__file__).with_name("test_alertmanager_real.py")
)
_real = sys.modules.get(_spec.name) or importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _real
_spec.loader.exec_module(_real)
alertmanager = _real.alertmanager  # fixtures shared with the sink's own Alertmanager test
notifications = _real.notifications
wait_for = _real.wait_for

pytestmark = [
    pytest.mark.alertmanager,
    pytest.mark.skipif(_real.find_alertmanager() is None,
                       reason="prometheus-alertmanager binary not found (apt-get install prometheus-alertmanager)"),
]

T0 = traffic.DEFAULT_START
ENDPOINTS = ("chat-prod", "agent-prod")


def test_a_content_filter_spike_fires_once_for_its_endpoint_and_resolves(spark, tmp_path, alertmanager,
                                                                         notifications):
    """A spike on chat-prod gives exactly one firing notification for chat-prod, none for calm agent-prod, then a resolve."""
    tables = {e: tmp_path / e.replace("-", "_") for e in ENDPOINTS}
    for path in tables.values():
        traffic.create_inference_table(spark, str(path))
    settings = Settings.model_validate({
        "sources": [{"table": str(tables[e]), "endpoint": e} for e in ENDPOINTS],
        "output": {"location": str(tmp_path / "out")},
        "checkpoint_root": str(tmp_path / "ckpt"),
        "trigger": {"mode": "processing_time", "interval": "1 second"},
        "alerts": {"rules": read_rules(), "deliver_interval_s": 2},
        "sinks": [{"name": "am", "type": "alertmanager", "url": alertmanager, "resend_interval_s": 3,
                   "ends_at_horizon_s": 120}],
    })

    def commit(rows_by_endpoint: dict[str, list]) -> None:
        for endpoint, rows in rows_by_endpoint.items():
            traffic.write_rows(spark, str(tables[endpoint]), rows)
        for rs in job.running:
            rs.query.processAllAvailable()

    def calm(endpoint: str, seed: int, minutes: int) -> list:
        return traffic.generate(150, seed=seed, endpoints=(endpoint,), start=T0 + timedelta(minutes=minutes))

    job = Job(spark, settings).start()
    try:
        # calm traffic on both endpoints, then (ten minutes later in event time) a spike on chat-prod only
        commit({"chat-prod": calm("chat-prod", 10, 0)
                + traffic.spike(80, endpoint="chat-prod", seed=20, start=T0 + timedelta(minutes=10)),
                "agent-prod": calm("agent-prod", 11, 0) + calm("agent-prod", 12, 10)})
        wait_for(lambda: notifications.alerts("firing", alertname="content_filter_spike"), 30,
                 "the firing notification")
        commit({e: calm(e, 30 + i, 25) for i, e in enumerate(ENDPOINTS)})  # event time moves past the spike
        [resolved] = wait_for(lambda: notifications.alerts("resolved", alertname="content_filter_spike"), 30,
                              "the resolved notification")
    finally:
        job.stop()

    [firing] = notifications.alerts("firing", alertname="content_filter_spike")
    assert firing["labels"] == {"alertname": "content_filter_spike", "endpoint": "chat-prod", "severity": "critical"}
    assert resolved["labels"] == firing["labels"]
    assert notifications.alerts("firing", endpoint="agent-prod") == []
    assert notifications.alerts("resolved", endpoint="agent-prod") == []
    assert float(firing["annotations"]["value"]) >= 0.5
    assert notifications.snapshot()[-1]["status"] == "resolved"
