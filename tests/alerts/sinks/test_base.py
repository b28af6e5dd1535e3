"""The shared delivery pieces: status classification, Retry-After, backoff, token bucket, transport."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from gatewatch.alerts.sinks.base import (
    RateLimiter,
    RetryPolicy,
    TransportError,
    classify_status,
    header,
    parse_retry_after,
)
from gatewatch.alerts.sinks.http import RequestsHttpClient, scrub


class TestClassifyStatus:
    @pytest.mark.parametrize(("status", "outcome"), [
        (200, "ok"), (202, "ok"), (204, "ok"),
        (408, "retry"), (429, "retry"), (500, "retry"), (502, "retry"), (503, "retry"), (599, "retry"),
        (301, "permanent"), (400, "permanent"), (401, "permanent"), (403, "permanent"), (404, "permanent"),
        (410, "permanent"), (413, "permanent"),
    ])
    def test_classification(self, status, outcome):
        """2xx is ok, 408/429/5xx are retried, other statuses are permanent."""
        assert classify_status(status) == outcome


class TestRetryAfter:
    def test_seconds(self):
        """A number of seconds is read as is."""
        assert parse_retry_after("7") == 7.0
        assert parse_retry_after(" 0 ") == 0.0

    def test_http_date(self):
        """An HTTP date is turned into seconds from now."""
        now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
        assert parse_retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now) == 30.0

    def test_absent_or_bad(self):
        """A missing or unreadable value gives None."""
        assert [parse_retry_after(v) for v in (None, "", "soon")] == [None, None, None]

    def test_header_lookup_ignores_case(self):
        """Header names match case-insensitively."""
        assert header({"retry-after": "3"}, "Retry-After") == "3"
        assert header({"Other": "x"}, "Retry-After") is None


class TestRetryPolicy:
    def test_backoff_doubles_and_caps(self):
        """Without jitter the delay doubles from base_delay_s and stops at max_delay_s."""
        policy = RetryPolicy(max_attempts=8, base_delay_s=0.5, max_delay_s=3.0, jitter=False)
        assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]

    def test_full_jitter_stays_under_cap(self):
        """Full jitter draws each delay between zero and the current cap."""
        policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0, jitter=True)
        rng = random.Random(42)
        delays = [policy.delay(n, rng=rng) for n in (1, 2, 3, 4, 5) for _ in range(20)]
        caps = [policy.backoff_cap(n) for n in (1, 2, 3, 4, 5) for _ in range(20)]
        assert all(0.0 <= d <= c for d, c in zip(delays, caps))
        assert len(set(delays)) > 50

    def test_retry_after_wins_until_too_long(self):
        """A server's Retry-After is used as the delay unless above max_retry_after_s."""
        policy = RetryPolicy(max_retry_after_s=60)
        assert policy.delay(1, retry_after=12.0) == 12.0
        assert policy.delay(1, retry_after=61.0) is None

    def test_invalid(self):
        """Zero attempts are refused."""
        with pytest.raises(ValueError, match="max_attempts"):
            RetryPolicy(max_attempts=0)


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class TestRateLimiter:
    def test_burst_then_rate(self):
        """A full bucket lets ``burst`` through at once, then one per 1/rate seconds."""
        fake = FakeTime()
        limiter = RateLimiter(2.0, burst=3, clock=fake.clock, sleep=fake.sleep)
        waits = [limiter.acquire() for _ in range(5)]
        assert waits[:3] == [0.0, 0.0, 0.0]
        assert waits[3:] == pytest.approx([0.5, 0.5])
        assert fake.sleeps == pytest.approx([0.5, 0.5])

    def test_refills_with_time(self):
        """After enough idle time no wait is needed."""
        fake = FakeTime()
        limiter = RateLimiter(1.0, burst=1, clock=fake.clock, sleep=fake.sleep)
        limiter.acquire()
        fake.t += 5
        assert limiter.acquire() == 0.0
        assert fake.sleeps == []

    def test_invalid(self):
        """A zero rate is refused."""
        with pytest.raises(ValueError, match="rate_per_s"):
            RateLimiter(0)


class TestRequestsHttpClient:
    def test_connection_refused_is_transport_error(self, closed_port):
        """A refused connection raises a retryable TransportError whose message has no URL."""
        with pytest.raises(TransportError) as caught:
            RequestsHttpClient().post(f"http://127.0.0.1:{closed_port}/secret/path", b"{}", {}, 2.0)
        assert not caught.value.permanent
        assert "secret/path" not in str(caught.value) and "connection error" in str(caught.value)

    def test_bad_url_is_permanent(self):
        """A URL without a scheme is a permanent TransportError."""
        with pytest.raises(TransportError) as caught:
            RequestsHttpClient().post("not a url", b"{}", {}, 1.0)
        assert caught.value.permanent

    def test_posts_exact_bytes(self, receiver):
        """The body arrives byte for byte with the given headers."""
        response = RequestsHttpClient().post(receiver.url + "/x", b'{"a":1}', {"X-Test": "1"}, 2.0)
        assert response.status_code == 200
        assert receiver.requests[0].body == b'{"a":1}'
        assert receiver.requests[0].header("X-Test") == "1"


class TestScrub:
    def test_replaces_secrets(self):
        """Every secret value in a text is replaced; short values are left alone."""
        assert scrub("key abcd1234 and xy", ("abcd1234", "xy")) == "key *** and xy"


def test_utc_wall_clock_is_aware():
    """The default wall clock is timezone-aware UTC."""
    from gatewatch.alerts.sinks.base import utc_now

    assert utc_now().utcoffset() == timedelta(0)
