"""Sinks delivering to a real loopback HTTP receiver: retries, permanent failures, rate limits, signatures."""

from __future__ import annotations

import io
import json
import random
from datetime import datetime

import pytest
from structlog.testing import capture_logs

from gatewatch.alerts.sinks import build_sink, build_sinks
from gatewatch.alerts.sinks.alertmanager import AlertmanagerSink
from gatewatch.alerts.sinks.config import (
    AlertmanagerSinkSettings,
    ConsoleSinkSettings,
    DeltaSinkSettings,
    PagerDutySinkSettings,
    RetrySettings,
    SlackSinkSettings,
    WebhookSinkSettings,
)
from gatewatch.alerts.sinks.console import ConsoleSink
from gatewatch.alerts.sinks.pagerduty import PagerDutySink
from gatewatch.alerts.sinks.slack import SlackSink
from gatewatch.alerts.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink, verify_signature

ROUTING_KEY = "R0UTINGKEY0123456789ABCDEFGHIJKL"
SLACK_PATH = "/services/T0000SECRET/B0000SECRET/XXXXxxxxSECRETxxxxXXXX"
HMAC_SECRET = "whsec-0123456789abcdef"
NO_JITTER = RetrySettings(max_attempts=5, base_delay_s=0.5, max_delay_s=30, jitter=False)


def sink_for(settings, clock):
    """Build a sink with the fake clock, sleep and wall clock."""
    return build_sink(settings, clock=clock.monotonic, sleep=clock.sleep, now=clock.now, rng=random.Random(7))


def pd(url: str, **kw) -> PagerDutySinkSettings:
    return PagerDutySinkSettings(name="pagerduty", url=f"{url}/v2/enqueue", routing_key=ROUTING_KEY,
                                 retry=kw.pop("retry", NO_JITTER), **kw)


def pagerduty_validator(request):
    """Answer like the Events API v2: 400 for an invalid event, else 202 with the dedup key."""
    errors = []
    if request.path != "/v2/enqueue":
        errors.append(f"path {request.path}")
    if not (request.header("Content-Type") or "").startswith("application/json"):
        errors.append("content type")
    event = request.json
    if event.get("routing_key") != ROUTING_KEY:
        errors.append("routing_key")
    if event.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        errors.append("event_action")
    if not event.get("dedup_key") or len(event["dedup_key"]) > 255:
        errors.append("dedup_key")
    if event.get("event_action") == "trigger":
        payload = event.get("payload") or {}
        for name in ("summary", "source", "severity"):
            if not payload.get(name):
                errors.append(f"payload.{name}")
        if payload.get("severity") not in ("critical", "error", "warning", "info"):
            errors.append("payload.severity")
        if len(payload.get("summary", "")) > 1024:
            errors.append("summary length")
        datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
        if not all("href" in link for link in event.get("links", [])):
            errors.append("links")
    if errors:
        return 400, {"Content-Type": "application/json"}, json.dumps(
            {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
    return 202, {"Content-Type": "application/json"}, json.dumps(
        {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]})


class TestPagerDutyDelivery:
    def test_trigger_then_resolve_same_dedup_key(self, receiver, clock, firing, resolved):
        """A trigger then a resolve reach the receiver, pass its checks and share the dedup key."""
        receiver.validator = pagerduty_validator
        sink = sink_for(pd(receiver.url), clock)
        first, second = sink.deliver(firing), sink.deliver(resolved)
        assert (first.ok, first.attempts, first.http_status) == (True, 1, 202)
        assert (second.ok, second.attempts, second.http_status) == (True, 1, 202)
        events = [r.json for r in receiver.requests]
        assert [e["event_action"] for e in events] == ["trigger", "resolve"]
        assert events[0]["dedup_key"] == events[1]["dedup_key"] == firing.dedup_key
        assert json.loads(first.response_body)["dedup_key"] == firing.dedup_key

    def test_429_then_success(self, receiver, clock, firing):
        """A 429 with Retry-After: 0 is retried once and then succeeds."""
        receiver.answer((429, {"Retry-After": "0"}, "{}"), (202, {}, "{}"))
        result = sink_for(pd(receiver.url), clock).deliver(firing)
        assert (result.ok, result.attempts, result.http_status) == (True, 2, 202)
        assert clock.sleeps == [0.0]
        assert len(receiver.requests) == 2

    def test_5xx_retried_with_backoff(self, receiver, clock, firing):
        """500, 500, 202 takes three attempts with doubling backoff between them."""
        receiver.answer((500, {}, "oops"), (500, {}, "oops"), (202, {}, "{}"))
        result = sink_for(pd(receiver.url), clock).deliver(firing)
        assert (result.ok, result.attempts) == (True, 3)
        assert clock.sleeps == [0.5, 1.0]
        assert result.duration_ms == pytest.approx(1500.0)

    def test_400_is_permanent(self, receiver, clock, firing):
        """A 400 is not retried; the result is permanent and keeps the response body."""
        body = '{"status":"invalid event","message":"Event object is invalid","errors":["routing_key"]}'
        receiver.answer((400, {"Content-Type": "application/json"}, body))
        result = sink_for(pd(receiver.url), clock).deliver(firing)
        assert (result.ok, result.permanent, result.attempts, result.http_status) == (False, True, 1, 400)
        assert result.response_body == body
        assert result.error == "HTTP 400"
        assert clock.sleeps == []

    def test_connection_refused_retried_then_fails(self, clock, closed_port, firing):
        """Connection refused is retried up to max_attempts and ends non-permanent, without the URL."""
        settings = pd(f"http://127.0.0.1:{closed_port}", retry=RetrySettings(max_attempts=3, jitter=False))
        result = sink_for(settings, clock).deliver(firing)
        assert (result.ok, result.permanent, result.attempts, result.http_status) == (False, False, 3, None)
        assert "connection error" in result.error and "after 3 attempts" in result.error
        assert "127.0.0.1" not in result.error and "/v2/enqueue" not in result.error
        assert clock.sleeps == [0.5, 1.0]

    def test_5xx_exhausted_is_not_permanent(self, receiver, clock, firing):
        """Three 503s with max_attempts 3 fail non-permanently, so the outbox retries later."""
        receiver.answer(*[(503, {}, "busy")] * 3)
        result = sink_for(pd(receiver.url, retry=RetrySettings(max_attempts=3, jitter=False)), clock).deliver(firing)
        assert (result.ok, result.permanent, result.attempts, result.http_status) == (False, False, 3, 503)

    def test_long_retry_after_left_for_later(self, receiver, clock, firing):
        """A Retry-After longer than max_retry_after_s ends the delivery without waiting."""
        receiver.answer((429, {"Retry-After": "3600"}, "{}"))
        retry = RetrySettings(max_attempts=5, max_retry_after_s=60)
        result = sink_for(pd(receiver.url, retry=retry), clock).deliver(firing)
        assert (result.ok, result.permanent, result.attempts) == (False, False, 1)
        assert "Retry-After 3600" in result.error
        assert clock.sleeps == []


class TestSlackDelivery:
    def slack(self, receiver, **kw) -> SlackSinkSettings:
        return SlackSinkSettings(name="slack", webhook_url=f"{receiver.url}{SLACK_PATH}", **kw)

    def test_429_retry_after_honoured(self, receiver, clock, firing):
        """A 429 with Retry-After: 7 makes the sink wait exactly 7 s before the retry."""
        receiver.answer((429, {"Retry-After": "7"}, "rate_limited"), (200, {}, "ok"))
        result = sink_for(self.slack(receiver), clock).deliver(firing)
        assert (result.ok, result.attempts, result.http_status) == (True, 2, 200)
        assert clock.sleeps == [7.0]
        assert [r.path for r in receiver.requests] == [SLACK_PATH, SLACK_PATH]

    def test_rate_limited_to_one_per_second(self, receiver, clock, firing, resolved):
        """Three messages in a row are spaced one second apart by the default rate limit."""
        sink = sink_for(self.slack(receiver), clock)
        results = [sink.deliver(a) for a in (firing, resolved, firing)]
        assert all(r.ok for r in results)
        assert clock.sleeps == pytest.approx([1.0, 1.0])
        assert len(receiver.requests) == 3

    def test_blocks_reach_receiver(self, receiver, clock, resolved):
        """The posted body has the fallback text and the blocks."""
        sink_for(self.slack(receiver), clock).deliver(resolved)
        body = receiver.requests[0].json
        assert body["text"].startswith("[RESOLVED] content_filter_blocks")
        assert [b["type"] for b in body["blocks"]][:3] == ["header", "section", "section"]

    def test_404_is_permanent(self, receiver, clock, firing):
        """Slack's ``no_service`` 404 is permanent and recorded."""
        receiver.answer((404, {}, "no_service"))
        result = sink_for(self.slack(receiver), clock).deliver(firing)
        assert (result.ok, result.permanent, result.response_body) == (False, True, "no_service")


class TestWebhookDelivery:
    def settings(self, receiver, secret: str | None = HMAC_SECRET) -> WebhookSinkSettings:
        return WebhookSinkSettings(name="hook", url=f"{receiver.url}/alerts", hmac_secret=secret,
                                   headers={"Authorization": "Bearer tok-abcdef"}, retry=NO_JITTER)

    @staticmethod
    def verifier(secret: str):
        def check(request):
            if not verify_signature(secret, request.body, request.header(SIGNATURE_HEADER)):
                return 401, {}, "bad signature"
            return 204, {}, ""
        return check

    def test_signature_verified_by_receiver(self, receiver, clock, firing):
        """The receiver recomputes the HMAC over the raw body and accepts the request."""
        receiver.validator = self.verifier(HMAC_SECRET)
        result = sink_for(self.settings(receiver), clock).deliver(firing)
        assert (result.ok, result.http_status) == (True, 204)
        request = receiver.requests[0]
        assert request.header(SIGNATURE_HEADER).startswith("sha256=")
        assert request.header(TIMESTAMP_HEADER) == str(int(clock.now().timestamp()))
        assert request.json["sent_at"] == "2026-03-01T12:06:00Z"
        assert request.json["alert"]["dedup_key"] == firing.dedup_key
        assert request.header("Authorization") == "Bearer tok-abcdef"

    def test_wrong_secret_rejected(self, receiver, clock, firing):
        """A receiver holding another secret rejects the signature (401, permanent)."""
        receiver.validator = self.verifier("another-secret")
        result = sink_for(self.settings(receiver), clock).deliver(firing)
        assert (result.ok, result.permanent, result.http_status) == (False, True, 401)

    def test_unsigned_without_secret(self, receiver, clock, firing):
        """Without an HMAC secret no signature headers are sent."""
        result = sink_for(self.settings(receiver, secret=None), clock).deliver(firing)
        assert result.ok
        assert receiver.requests[0].header(SIGNATURE_HEADER) is None
        assert receiver.requests[0].header(TIMESTAMP_HEADER) is None


class TestAlertmanagerDelivery:
    def test_posts_list_to_api_v2(self, receiver, clock, firing):
        """The sink POSTs a JSON list to /api/v2/alerts with the bearer token."""
        settings = AlertmanagerSinkSettings(name="am", url=receiver.url + "/", bearer_token="am-token-xyz")
        result = sink_for(settings, clock).deliver(firing)
        assert result.ok
        request = receiver.requests[0]
        assert request.path == "/api/v2/alerts"
        assert request.header("Authorization") == "Bearer am-token-xyz"
        [item] = request.json
        assert item["labels"] == {"alertname": "content_filter_blocks", "endpoint": "chat-bot", "severity": "critical"}
        assert item["endsAt"] == "2026-03-01T12:10:00Z"

    def test_needs_resend(self, clock, firing, resolved):
        """A firing alert is due again after the resend interval; a resolved one only until sent once."""
        sink = sink_for(AlertmanagerSinkSettings(name="am", url="http://127.0.0.1:1", resend_interval_s=60), clock)
        assert isinstance(sink, AlertmanagerSink)
        sent = clock.now()
        clock.sleep(59)
        assert not sink.needs_resend(firing, sent)
        clock.sleep(1)
        assert sink.needs_resend(firing, sent)
        assert sink.needs_resend(resolved, None)
        assert not sink.needs_resend(resolved, sent)


class TestConsoleAndFactory:
    def test_console_prints_one_line(self, firing, resolved):
        """The console sink writes exactly one line per alert."""
        out = io.StringIO()
        sink = ConsoleSink(ConsoleSinkSettings(name="console"), stream=out)
        results = [sink.deliver(firing), sink.deliver(resolved)]
        lines = out.getvalue().splitlines()
        assert [r.ok for r in results] == [True, True]
        assert len(lines) == 2 and " FIRING " in lines[0] and " RESOLVED " in lines[1]

    def test_build_sinks_types_and_delta_skipped(self, monkeypatch):
        """``build_sinks`` returns one sink per non-Delta entry, with env secrets resolved."""
        monkeypatch.setenv("GW_TEST_ROUTING_KEY", ROUTING_KEY)
        sinks = build_sinks([
            PagerDutySinkSettings(name="pd", routing_key="${env:GW_TEST_ROUTING_KEY}"),
            SlackSinkSettings(name="slack", webhook_url="http://127.0.0.1:1/x"),
            WebhookSinkSettings(name="hook", url="http://127.0.0.1:1/y"),
            AlertmanagerSinkSettings(name="am", url="http://127.0.0.1:1"),
            ConsoleSinkSettings(name="console"),
            DeltaSinkSettings(name="delta"),
        ])
        assert [type(s) for s in sinks] == [PagerDutySink, SlackSink, WebhookSink, AlertmanagerSink, ConsoleSink]
        assert sinks[0].settings.routing_key.get_secret_value() == ROUTING_KEY
        assert build_sink(DeltaSinkSettings(name="delta")) is None


class TestSecretsStayHidden:
    def test_settings_never_print_secrets(self):
        """repr, str and JSON dumps of settings mask every secret."""
        all_settings = [
            PagerDutySinkSettings(name="pd", routing_key=ROUTING_KEY),
            SlackSinkSettings(name="slack", webhook_url=f"http://127.0.0.1:1{SLACK_PATH}"),
            WebhookSinkSettings(name="hook", url="http://127.0.0.1:1", hmac_secret=HMAC_SECRET,
                                headers={"Authorization": "Bearer tok-abcdef"}),
            AlertmanagerSinkSettings(name="am", url="http://127.0.0.1:1", bearer_token="am-token-xyz"),
        ]
        for settings in all_settings:
            for text in (repr(settings), str(settings), settings.model_dump_json()):
                assert "**********" in text
                for secret in (ROUTING_KEY, SLACK_PATH, "SECRET", HMAC_SECRET, "tok-abcdef", "am-token-xyz"):
                    assert secret not in text

    def test_logs_and_results_never_hold_secrets(self, receiver, clock, firing):
        """Across retries and failures, no log entry or result holds a secret, even one echoed back."""
        receiver.answer((500, {}, f"echo {ROUTING_KEY}"), (400, {}, f"bad key {ROUTING_KEY}"),
                        (429, {"Retry-After": "0"}, f"slow {SLACK_PATH}"), (404, {}, f"no_service {SLACK_PATH}"))
        with capture_logs() as logs:
            pd_result = sink_for(pd(receiver.url), clock).deliver(firing)
            slack = SlackSinkSettings(name="slack", webhook_url=f"{receiver.url}{SLACK_PATH}", retry=NO_JITTER)
            slack_result = sink_for(slack, clock).deliver(firing)
        assert len(logs) >= 4 and {e["event"] for e in logs} >= {"alert delivery retry", "alert delivery failed"}
        assert pd_result.response_body == "bad key ***"
        assert slack_result.response_body == "no_service ***"
        text = repr(logs) + repr(pd_result) + repr(slack_result)
        assert ROUTING_KEY not in text and SLACK_PATH not in text and receiver.url not in text
