"""The sink contract and the pieces every HTTP sink shares.

- ``Sink``: ``name`` and ``deliver(alert) -> DeliveryResult``; ``deliver`` never
  raises for a delivery failure, it reports it.
- ``DeliveryResult``: what one delivery did (attempts, status, error), the
  row the deliveries table records.
- ``RetryPolicy``: exponential backoff with full jitter that honours a
  server's ``Retry-After``.
- ``RateLimiter``: a token bucket (rate per second, burst).
- ``HttpClient``: the injected transport (``post`` of exact body bytes);
  ``TransportError`` is what it raises when no HTTP answer came back.

Clocks, sleeps and the random source are injected so unit tests never wait.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

from gatewatch.alerts.sinks.model import Alert

Clock = Callable[[], float]
Sleep = Callable[[float], None]
WallClock = Callable[[], datetime]
Outcome = Literal["ok", "retry", "permanent"]

#: Response bodies kept in a ``DeliveryResult`` are cut to this many characters.
MAX_BODY_CHARS = 2000


def utc_now() -> datetime:
    """The current time, aware, in UTC (the default wall clock)."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of delivering one alert to one sink.

    Attributes:
        sink: the sink's configured name.
        dedup_key: the alert's dedup key.
        status: the alert's status (``firing`` or ``resolved``).
        ok: the receiver accepted the alert.
        permanent: the failure will not go away by retrying the same request.
        attempts: requests made (0 for a sink without requests).
        http_status: the last HTTP status, ``None`` when no answer came back.
        response_body: the last response body, truncated, secrets removed.
        error: what went wrong, ``None`` when ``ok``.
        duration_ms: time spent, waits included.
    """

    sink: str
    dedup_key: str
    status: str
    ok: bool
    permanent: bool = False
    attempts: int = 0
    http_status: int | None = None
    response_body: str | None = None
    error: str | None = None
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as a plain dict (one row of the deliveries table)."""
        return asdict(self)


class Sink(ABC):
    """Where alerts go. Subclasses set ``name`` and implement ``deliver``."""

    name: str

    @abstractmethod
    def deliver(self, alert: Alert) -> DeliveryResult:
        """Deliver one alert; report failures in the result instead of raising."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has none."""


class HttpResponse(Protocol):
    """The part of an HTTP response a sink reads."""

    status_code: int
    headers: Mapping[str, str]
    text: str


class HttpClient(Protocol):
    """POST exact body bytes; raise ``TransportError`` when no answer came back."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        """Send one request and return the response, whatever its status."""
        ...


class TransportError(Exception):
    """No HTTP answer: connection refused or reset, DNS failure, timeout, bad URL.

    The message never contains the URL (a Slack webhook URL is a secret).
    ``permanent`` marks failures retrying cannot fix, such as a malformed URL.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def classify_status(status: int) -> Outcome:
    """``ok`` for 2xx; ``retry`` for 408, 429 and 5xx; ``permanent`` for anything else."""
    if 200 <= status < 300:
        return "ok"
    if status in (408, 429) or 500 <= status < 600:
        return "retry"
    return "permanent"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value by case-insensitive name, or ``None``."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date); ``None`` if absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or utc_now())).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a delivery.

    Attributes:
        max_attempts: requests in all, the first included (1 means no retry).
        base_delay_s: the backoff cap before the first retry; doubles each retry.
        max_delay_s: the largest backoff cap.
        jitter: full jitter (a uniform delay between 0 and the cap) when true,
            the cap itself when false.
        max_retry_after_s: the longest ``Retry-After`` waited in place; a longer
            one ends the delivery (not permanent) so the outbox retries it later.
    """

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: bool = True
    max_retry_after_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("retry delays must not be negative")

    def backoff_cap(self, attempt: int) -> float:
        """The backoff cap after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_delay_s, self.base_delay_s * (2 ** max(0, attempt - 1)))

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float | None:
        """Seconds to wait after failed attempt ``attempt``; ``None`` when ``Retry-After`` is too long.

        Args:
            attempt: the attempt that just failed, from 1.
            retry_after: the server's ``Retry-After`` in seconds, when it sent one.
            rng: the random source for jitter.

        Returns:
            ``retry_after`` itself when given (and not above ``max_retry_after_s``),
            else a full-jitter exponential backoff.
        """
        if retry_after is not None:
            return None if retry_after > self.max_retry_after_s else max(0.0, retry_after)
        cap = self.backoff_cap(attempt)
        return (rng or random).uniform(0.0, cap) if self.jitter else cap


class RateLimiter:
    """A token bucket: ``rate_per_s`` tokens a second, at most ``burst`` saved up.

    ``acquire`` waits (through the injected ``sleep``) until a token is free.
    Thread-safe; the bucket starts full.
    """

    def __init__(self, rate_per_s: float, burst: int = 1, *, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate_per_s = float(rate_per_s)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now

    def acquire(self) -> float:
        """Take one token, waiting for it if needed; returns the seconds waited."""
        waited = 0.0
        with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return waited
                wait = (1.0 - self._tokens) / self.rate_per_s
                self._sleep(wait)
                waited += wait
