"""Each sink's pure ``build_payload`` against hand-written expected JSON in tests/fixtures/sinks."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from gatewatch.alerts.sinks import alertmanager, console, pagerduty, slack, webhook
from gatewatch.alerts.sinks.config import (
    AlertmanagerSinkSettings,
    PagerDutySinkSettings,
    SlackSinkSettings,
    WebhookSinkSettings,
)
from gatewatch.alerts.sinks.http import json_bytes

ROUTING_KEY = "R0UTINGKEY0123456789ABCDEFGHIJKL"
CONTENT_KEYS = {"prompt", "response", "request", "messages", "content", "completion", "input", "output"}
SENT = datetime(2026, 3, 1, 12, 6, tzinfo=timezone.utc)
SENT_RESOLVED = datetime(2026, 3, 1, 12, 21, tzinfo=timezone.utc)


def pd_settings() -> PagerDutySinkSettings:
    return PagerDutySinkSettings(name="pagerduty", url="http://127.0.0.1:9/v2/enqueue", routing_key=ROUTING_KEY,
                                 client_url="https://gatewatch.example.com")


def am_settings() -> AlertmanagerSinkSettings:
    return AlertmanagerSinkSettings(name="alertmanager", url="http://127.0.0.1:9093", labels={"team": "ml-platform"})


def _keys(value: object) -> set[str]:
    """Every dict key anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


class TestPagerDutyPayload:
    def test_trigger_matches_expected(self, firing, expected):
        """A firing alert becomes the documented trigger event with counts in custom_details."""
        assert pagerduty.build_payload(firing, pd_settings()) == expected("pagerduty_trigger.json")

    def test_resolve_matches_expected(self, resolved, expected):
        """A resolved alert becomes a resolve event with the same dedup_key and nothing else."""
        assert pagerduty.build_payload(resolved, pd_settings()) == expected("pagerduty_resolve.json")

    def test_trigger_and_resolve_share_dedup_key(self, firing, resolved):
        """Trigger and resolve carry the same dedup_key, at most 255 characters."""
        trigger = pagerduty.build_payload(firing, pd_settings())
        resolve = pagerduty.build_payload(resolved, pd_settings())
        assert trigger["dedup_key"] == resolve["dedup_key"] == firing.dedup_key
        assert len(trigger["dedup_key"]) <= 255

    def test_source_falls_back_without_endpoint(self, firing):
        """An alert without an endpoint group uses the configured source."""
        payload = pagerduty.build_payload(replace(firing, group={}, dedup_key=""), pd_settings())
        assert payload["payload"]["source"] == "databricks-model-serving"
        assert "group" not in payload["payload"]


class TestAlertmanagerPayload:
    def test_firing_matches_expected(self, firing, expected):
        """A firing alert is sent with endsAt four resend intervals after now."""
        assert alertmanager.build_payload(firing, am_settings(), now=SENT) == expected("alertmanager_firing.json")

    def test_resolved_matches_expected(self, resolved, expected):
        """A resolved alert is sent with endsAt at its end time and the same labels."""
        payload = alertmanager.build_payload(resolved, am_settings(), now=SENT_RESOLVED)
        assert payload == expected("alertmanager_resolved.json")

    def test_resolved_end_never_in_future(self, resolved):
        """A resolved alert whose end is after now is sent ending now, so it resolves at once."""
        early = resolved.ended_at - timedelta(minutes=1)
        [item] = alertmanager.build_payload(resolved, am_settings(), now=early)
        assert item["endsAt"] == "2026-03-01T12:19:00Z"

    def test_custom_horizon(self, firing):
        """``ends_at_horizon_s`` sets how long a firing alert stays valid without a re-send."""
        settings = AlertmanagerSinkSettings(name="am", url="http://127.0.0.1:1", ends_at_horizon_s=300)
        [item] = alertmanager.build_payload(firing, settings, now=SENT)
        assert item["endsAt"] == "2026-03-01T12:11:00Z"

    def test_group_keys_become_valid_label_names(self, firing):
        """Group keys are turned into valid Prometheus label names."""
        odd = replace(firing, group={"served-entity.id": "x", "9lives": "y"}, dedup_key="")
        [item] = alertmanager.build_payload(odd, am_settings(), now=SENT)
        assert item["labels"]["served_entity_id"] == "x"
        assert item["labels"]["_9lives"] == "y"


class TestSlackPayload:
    def test_firing_matches_expected(self, firing, expected):
        """A firing alert becomes a header, the summary, fields and links."""
        assert slack.build_payload(firing, SlackSinkSettings(name="s", webhook_url="x")) == expected(
            "slack_firing.json")

    def test_resolved_matches_expected(self, resolved, expected):
        """A resolved alert says RESOLVED and when."""
        assert slack.build_payload(resolved) == expected("slack_resolved.json")

    def test_mrkdwn_is_escaped(self, firing):
        """Angle brackets and ampersands in a summary are escaped for mrkdwn."""
        odd = replace(firing, summary="a < b & c > d")
        payload = slack.build_payload(odd)
        assert payload["blocks"][1]["text"]["text"] == "a &lt; b &amp; c &gt; d"


class TestWebhookPayload:
    def test_firing_matches_expected(self, firing, expected):
        """The envelope is version 1, the sending time and ``Alert.to_dict()``."""
        assert webhook.build_payload(firing, now=SENT) == expected("webhook_firing.json")

    def test_resolved_matches_expected(self, resolved, expected):
        """A resolved alert carries its end time."""
        assert webhook.build_payload(resolved, WebhookSinkSettings(name="w", url="http://127.0.0.1:1"),
                                     now=SENT_RESOLVED) == expected("webhook_resolved.json")


class TestConsolePayload:
    def test_firing_line(self, firing):
        """The console line names status, rule, group, numbers and the dedup key."""
        assert console.build_payload(firing) == (
            "2026-03-01T12:05:00Z FIRING critical content_filter_blocks [endpoint=chat-bot] value=0.3 "
            "threshold=0.2 blocked=12 requests=40 key=content_filter_blocks:76cbdbb02e7b357ecef3b8abc468402ccc5d82db"
            " | Content-filter blocks on chat-bot: 12 of 40 requests (30%) in 5 min"
        )

    def test_resolved_line(self, resolved):
        """A resolved alert's line starts with its end time and RESOLVED."""
        line = console.build_payload(resolved)
        assert line.startswith("2026-03-01T12:20:00Z RESOLVED critical content_filter_blocks [endpoint=chat-bot]")


class TestNoPayloadText:
    def test_payloads_have_no_text_fields(self, firing, resolved):
        """No sink payload has a key naming prompt or response content."""
        payloads = [
            pagerduty.build_payload(firing, pd_settings()),
            alertmanager.build_payload(firing, am_settings(), now=SENT),
            slack.build_payload(firing),
            webhook.build_payload(resolved, now=SENT),
        ]
        keys = set().union(*(_keys(p) for p in payloads))
        assert keys
        assert not keys & CONTENT_KEYS

    def test_payloads_are_json_serialisable(self, firing):
        """The bytes sent decode back to the payload."""
        payload = pagerduty.build_payload(firing, pd_settings())
        assert json.loads(json_bytes(payload)) == payload
