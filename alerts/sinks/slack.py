"""Slack incoming webhooks: a JSON ``{"text": ..., "blocks": [...]}`` POSTed to the webhook URL.

``text`` is the fallback shown in notifications; ``blocks`` hold a header, the
summary, and fields for rule, group, severity, value, threshold, window and
counts. Slack takes about one message a second per webhook (short bursts
allowed) and answers 429 with ``Retry-After`` when sent faster: the sink
rate-limits to one a second by default and waits the ``Retry-After`` it gets.
Other errors (400 ``invalid_payload``, 403, 404, 410) are permanent. The
webhook URL is itself the secret and is never logged.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gatewatch.alerts.sinks.config import SlackSinkSettings
from gatewatch.alerts.sinks.http import HttpRequest, HttpSink, json_bytes
from gatewatch.alerts.sinks.model import Alert, iso

MAX_HEADER = 150
MAX_FIELD = 2000
MAX_TEXT = 3000


def _fmt(number: float) -> str:
    return format(number, ".6g")


def escape(text: str) -> str:
    """Slack's mrkdwn escaping of ``&``, ``<`` and ``>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _field(title: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": f"*{title}*\n{escape(value)}"[:MAX_FIELD]}


def fields(alert: Alert) -> list[dict[str, str]]:
    """The section fields (at most 10, as Slack allows)."""
    items = [
        ("Rule", alert.rule),
        ("Group", alert.group_text()),
        ("Severity", alert.severity),
        ("Value", _fmt(alert.value)),
        ("Threshold", _fmt(alert.threshold)),
        ("Window", f"{iso(alert.window_start)} to {iso(alert.window_end)}"),
    ]
    if alert.counts:
        items.append(("Counts", ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(alert.counts.items()))))
    if alert.firing:
        items.append(("Started", iso(alert.started_at)))
    elif alert.ended_at is not None:
        items.append(("Resolved", iso(alert.ended_at)))
    return [_field(title, value) for title, value in items[:10]]


def build_payload(alert: Alert, settings: SlackSinkSettings | None = None) -> dict[str, Any]:
    """The webhook message for ``alert`` (pure: no I/O).

    Args:
        alert: the alert to announce.
        settings: unused today; kept so every sink's ``build_payload`` reads alike.

    Returns:
        ``{"text": fallback, "blocks": [...]}``.
    """
    state = "FIRING" if alert.firing else "RESOLVED"
    icon = ":rotating_light:" if alert.firing else ":white_check_mark:"
    text = f"[{state}] {alert.rule} ({alert.group_text()}): {alert.summary}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{icon} {state}: {alert.rule}"[:MAX_HEADER],
                                    "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": escape(alert.summary)[:MAX_TEXT]}},
        {"type": "section", "fields": fields(alert)},
    ]
    if alert.links:
        links = " | ".join(f"<{url}|{escape(name)}>" for name, url in alert.links)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": links[:MAX_TEXT]}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"dedup key `{alert.dedup_key}`"}]})
    return {"text": escape(text)[:MAX_TEXT], "blocks": blocks}


class SlackSink(HttpSink):
    """Posts alerts to a Slack incoming webhook (see ``HttpSink`` for the arguments)."""

    settings: SlackSinkSettings

    def secrets(self) -> tuple[str, ...]:
        """The webhook URL and its path (the token part), kept out of results and logs."""
        url = self.settings.webhook_url.get_secret_value()
        return (url, urlsplit(url).path)

    def request(self, alert: Alert) -> HttpRequest:
        """A POST of ``build_payload`` to the (secret) webhook URL."""
        body = json_bytes(build_payload(alert, self.settings))
        return HttpRequest(self.settings.webhook_url.get_secret_value(), body, self.json_headers())
