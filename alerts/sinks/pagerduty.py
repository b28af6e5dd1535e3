"""PagerDuty Events API v2: ``trigger`` while firing, ``resolve`` with the same ``dedup_key``.

The event goes to ``POST /v2/enqueue`` with the integration's ``routing_key``.
PagerDuty answers 202 when it accepted the event, 400 for an invalid event
(permanent: retrying the same body cannot succeed), 429 and 5xx when it wants
a retry later. ``acknowledge`` is left to the people on call.
"""

from __future__ import annotations

from typing import Any

from gatewatch.alerts.sinks.config import PagerDutySinkSettings
from gatewatch.alerts.sinks.http import HttpRequest, HttpSink, json_bytes
from gatewatch.alerts.sinks.model import Alert, iso

#: Alert severity to PagerDuty's ``payload.severity`` (the same four words).
SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255


def custom_details(alert: Alert) -> dict[str, Any]:
    """The numbers behind the alert: rule, group, value, threshold, window, counts, details."""
    details: dict[str, Any] = {
        "rule": alert.rule,
        "group": dict(alert.group),
        "value": alert.value,
        "threshold": alert.threshold,
        "window_start": iso(alert.window_start),
        "window_end": iso(alert.window_end),
        "counts": dict(alert.counts),
    }
    if alert.details:
        details["details"] = dict(alert.details)
    return details


def build_payload(alert: Alert, settings: PagerDutySinkSettings) -> dict[str, Any]:
    """The Events API v2 event for ``alert`` (pure: no I/O, no clock).

    Args:
        alert: a firing alert becomes ``trigger``, a resolved one ``resolve``.
        settings: the sink's settings; ``routing_key`` must already be resolved.

    Returns:
        The event as a JSON-ready dict.
    """
    event: dict[str, Any] = {
        "routing_key": settings.routing_key.get_secret_value(),
        "event_action": "trigger" if alert.firing else "resolve",
        "dedup_key": alert.dedup_key[:MAX_DEDUP_KEY],
    }
    if not alert.firing:
        return event
    payload: dict[str, Any] = {
        "summary": alert.summary[:MAX_SUMMARY],
        "source": alert.group.get("endpoint") or settings.source,
        "severity": SEVERITY[alert.severity],
        "timestamp": iso(alert.started_at),
        "class": alert.rule,
        "custom_details": custom_details(alert),
    }
    if alert.group:
        payload["group"] = alert.group_text()
    if settings.component:
        payload["component"] = settings.component
    event["payload"] = payload
    event["client"] = settings.client
    if settings.client_url:
        event["client_url"] = settings.client_url
    if alert.links:
        event["links"] = [{"href": url, "text": text} for text, url in alert.links]
    return event


class PagerDutySink(HttpSink):
    """Delivers alerts as PagerDuty events (see ``HttpSink`` for the arguments)."""

    settings: PagerDutySinkSettings

    def request(self, alert: Alert) -> HttpRequest:
        """A POST of ``build_payload`` to the configured events URL."""
        body = json_bytes(build_payload(alert, self.settings))
        return HttpRequest(self.settings.url, body, self.json_headers())
