"""Prometheus Alertmanager API v2: ``POST <url>/api/v2/alerts`` with a JSON list of alerts.

How an alert lives in Alertmanager, and what this sink does about it:

- **Identity is the label set.** Labels are ``alertname`` (the rule),
  ``severity`` and the alert's group (``endpoint=chat-bot``), plus static
  labels from the settings. The same rule and group always give the same
  labels, so re-sends and the resolve land on the same alert. Keep a rule's
  severity fixed: a changed label is a different alert.
- **Firing must be re-sent.** Alertmanager expects clients to re-send active
  alerts every 30 s to 3 min. A firing alert is sent with
  ``endsAt = now + horizon`` (default four resend intervals, as Prometheus
  does) rather than without ``endsAt``: without it, Alertmanager would resolve
  the alert after its own global ``resolve_timeout``, which this client neither
  knows nor controls; with it, an alert whose sender stopped resolves after a
  known time, and up to three missed re-sends do no harm. The caller re-sends
  each firing alert when ``needs_resend`` says so (every ``resend_interval_s``).
- **Resolve by ``endsAt``.** A resolved alert is sent with
  ``endsAt = ended_at`` (never later than now), which Alertmanager treats as
  resolved at once and, with ``send_resolved``, notifies.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from gatewatch.alerts.sinks.config import AlertmanagerSinkSettings
from gatewatch.alerts.sinks.http import HttpRequest, HttpSink, json_bytes
from gatewatch.alerts.sinks.model import Alert, iso, to_utc

API_PATH = "/api/v2/alerts"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _fmt(number: float) -> str:
    return format(number, ".6g")


def label_name(key: str) -> str:
    """``key`` as a valid Prometheus label name (``[a-zA-Z_][a-zA-Z0-9_]*``)."""
    name = _INVALID.sub("_", key) or "_"
    return f"_{name}" if name[0].isdigit() else name


def labels(alert: Alert, settings: AlertmanagerSinkSettings) -> dict[str, str]:
    """The identifying labels: static labels, the group, then ``alertname`` and ``severity``."""
    result = {label_name(k): v for k, v in settings.labels.items()}
    result.update({label_name(k): v for k, v in alert.group.items()})
    result["alertname"] = alert.rule
    result["severity"] = alert.severity
    return dict(sorted(result.items()))


def annotations(alert: Alert) -> dict[str, str]:
    """Informational text (not identifying): summary, a description and the numbers."""
    counts = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(alert.counts.items()))
    description = (f"{alert.rule} for {alert.group_text()}: value {_fmt(alert.value)} against threshold "
                   f"{_fmt(alert.threshold)} over {iso(alert.window_start)} to {iso(alert.window_end)}")
    result = {
        "summary": alert.summary,
        "description": f"{description} ({counts})" if counts else description,
        "value": _fmt(alert.value),
        "threshold": _fmt(alert.threshold),
        "window_start": iso(alert.window_start),
        "window_end": iso(alert.window_end),
        "dedup_key": alert.dedup_key,
    }
    for text, url in alert.links[1:]:
        result[label_name(f"link_{text}".lower())] = url
    return result


def build_payload(alert: Alert, settings: AlertmanagerSinkSettings, *, now: datetime) -> list[dict[str, Any]]:
    """The API v2 request body for ``alert`` (pure: ``now`` is passed in).

    Args:
        alert: the alert to send.
        settings: the sink's settings (static labels, horizon).
        now: the sending time; a firing alert is valid until ``now + horizon``.

    Returns:
        A one-element list, as ``POST /api/v2/alerts`` takes a list.
    """
    now = to_utc(now)
    starts = alert.started_at
    if alert.firing:
        ends = now + timedelta(seconds=settings.horizon_s)
    else:
        ends = min(alert.ended_at or now, now)
    item: dict[str, Any] = {
        "labels": labels(alert, settings),
        "annotations": annotations(alert),
        "startsAt": iso(starts),
        "endsAt": iso(max(ends, starts)),
    }
    if alert.links:
        item["generatorURL"] = alert.links[0][1]
    return [item]


def needs_resend(last_sent: datetime | None, now: datetime, interval_s: float) -> bool:
    """True when a firing alert last sent at ``last_sent`` is due again (never sent counts as due)."""
    if last_sent is None:
        return True
    return (to_utc(now) - to_utc(last_sent)).total_seconds() >= interval_s


class AlertmanagerSink(HttpSink):
    """Delivers alerts to Alertmanager (see ``HttpSink`` for the arguments)."""

    settings: AlertmanagerSinkSettings

    @property
    def resend_interval_s(self) -> float:
        """How often the caller re-sends a firing alert."""
        return self.settings.resend_interval_s

    def needs_resend(self, alert: Alert, last_sent: datetime | None, now: datetime | None = None) -> bool:
        """Whether ``alert`` should be sent now: firing and due, or resolved and never sent."""
        if not alert.firing:
            return last_sent is None
        return needs_resend(last_sent, now or self._now(), self.settings.resend_interval_s)

    def request(self, alert: Alert) -> HttpRequest:
        """A POST of ``build_payload`` (with the current time) to ``<url>/api/v2/alerts``."""
        body = json_bytes(build_payload(alert, self.settings, now=self._now()))
        extra = {}
        if self.settings.bearer_token is not None:
            extra["Authorization"] = f"Bearer {self.settings.bearer_token.get_secret_value()}"
        return HttpRequest(self.settings.url.rstrip("/") + API_PATH, body, self.json_headers(extra))
