"""HTTP delivery shared by the PagerDuty, Alertmanager, Slack and webhook sinks.

``RequestsHttpClient`` is the default ``HttpClient`` (a ``requests.Session``,
redirects not followed so a secret body never goes to another host).
``HttpSink`` runs one delivery: rate limit, POST, classify the answer
(2xx ok; 408, 429, 5xx and transport errors retried; other statuses
permanent), back off or honour ``Retry-After``, and report a
``DeliveryResult``. Logs name the sink, the dedup key and the outcome, never
a URL or a secret.
"""

from __future__ import annotations

import json
import random
import re
import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import structlog

from gatewatch import __version__
from gatewatch.alerts.sinks.base import (
    MAX_BODY_CHARS,
    Clock,
    DeliveryResult,
    HttpClient,
    HttpResponse,
    RateLimiter,
    RetryPolicy,
    Sink,
    Sleep,
    TransportError,
    WallClock,
    classify_status,
    header,
    parse_retry_after,
    utc_now,
)
from gatewatch.alerts.sinks.config import SinkSettingsBase, with_resolved_secrets
from gatewatch.alerts.sinks.model import Alert

log = structlog.get_logger("gatewatch.sinks")

USER_AGENT = f"gatewatch/{__version__}"
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")


def _describe(err: requests.RequestException) -> str:
    """A short reason for a transport failure, without the URL."""
    kind = "timeout" if isinstance(err, requests.Timeout) else "connection error"
    match = _ERRNO.search(str(err))
    return f"{kind} ({match.group(0).strip()})" if match else f"{kind} ({type(err).__name__})"


class RequestsHttpClient:
    """``HttpClient`` on a ``requests.Session``."""

    def __init__(self, session: requests.Session | None = None) -> None:
        self._session = session or requests.Session()

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        """POST ``body`` as is; ``TransportError`` when no response arrives."""
        try:
            return self._session.post(url, data=body, headers=dict(headers), timeout=timeout, allow_redirects=False)
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as err:
            raise TransportError(f"invalid URL ({type(err).__name__})", permanent=True) from None
        except requests.RequestException as err:
            raise TransportError(_describe(err)) from None

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()


@dataclass(frozen=True)
class HttpRequest:
    """One request a sink wants sent: where, what bytes, which headers."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def json_bytes(payload: Any) -> bytes:
    """Compact UTF-8 JSON: the exact bytes sent (and signed, for the webhook)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class HttpSink(Sink):
    """Base of the HTTP sinks: subclasses build the request, this class delivers it.

    Args:
        settings: the sink's settings; secret references are resolved here.
        http: the transport (default: ``RequestsHttpClient``).
        clock: a monotonic clock in seconds (rate limit and durations).
        sleep: how to wait; tests pass one that records the delays.
        now: the wall clock, for payload timestamps.
        rng: the random source for backoff jitter.
    """

    def __init__(self, settings: SinkSettingsBase, *, http: HttpClient | None = None, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep, now: WallClock = utc_now, rng: random.Random | None = None) -> None:
        self.settings = with_resolved_secrets(settings)
        self.name = settings.name
        self._owns_http = http is None
        self._http: HttpClient = http or RequestsHttpClient()
        self._clock = clock
        self._sleep = sleep
        self._now = now
        self._rng = rng or random.Random()
        retry = settings.retry
        self.retry = RetryPolicy(retry.max_attempts, retry.base_delay_s, retry.max_delay_s, retry.jitter,
                                 retry.max_retry_after_s)
        limit = settings.rate_limit
        self.limiter = RateLimiter(limit.rate_per_s, limit.burst, clock=clock, sleep=sleep) if limit else None

    @abstractmethod
    def request(self, alert: Alert) -> HttpRequest:
        """The request that delivers ``alert`` (built from a pure ``build_payload``)."""

    def secrets(self) -> tuple[str, ...]:
        """Resolved secret values to keep out of results and logs."""
        found: list[str] = []
        for _, value in self.settings:
            values = value.values() if isinstance(value, dict) else [value]
            found.extend(v.get_secret_value() for v in values if hasattr(v, "get_secret_value"))
        return tuple(found)

    def json_headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """``Content-Type: application/json`` and the user agent, plus ``extra``."""
        return {"Content-Type": "application/json", "User-Agent": USER_AGENT, **(extra or {})}

    def deliver(self, alert: Alert) -> DeliveryResult:
        """Send ``alert`` with retries; the result says whether it arrived."""
        start = self._clock()
        request = self.request(alert)
        secrets = self.secrets()
        attempts = 0
        result: dict[str, Any] = {}
        while True:
            attempts += 1
            if self.limiter is not None:
                self.limiter.acquire()
            retry_after = None
            try:
                response = self._http.post(request.url, request.body, request.headers, self.settings.timeout_s)
            except TransportError as err:
                result = {"http_status": None, "response_body": None, "error": scrub(str(err), secrets)}
                if err.permanent:
                    return self._finish(alert, start, attempts, ok=False, permanent=True, **result)
            else:
                body = scrub(response.text or "", secrets)[:MAX_BODY_CHARS]
                outcome = classify_status(response.status_code)
                result = {"http_status": response.status_code, "response_body": body or None}
                if outcome == "ok":
                    return self._finish(alert, start, attempts, ok=True, **result)
                result["error"] = f"HTTP {response.status_code}"
                if outcome == "permanent":
                    return self._finish(alert, start, attempts, ok=False, permanent=True, **result)
                retry_after = parse_retry_after(header(response.headers, "Retry-After"), self._now())
            if attempts >= self.retry.max_attempts:
                result["error"] = f"{result['error']} after {attempts} attempts"
                return self._finish(alert, start, attempts, ok=False, **result)
            delay = self.retry.delay(attempts, retry_after, self._rng)
            if delay is None:
                result["error"] = (f"{result['error']}: Retry-After {retry_after:g} s is longer than "
                                   f"max_retry_after_s; left for a later retry")
                return self._finish(alert, start, attempts, ok=False, **result)
            log.info("alert delivery retry", sink=self.name, dedup_key=alert.dedup_key, attempt=attempts,
                     delay_s=round(delay, 3), http_status=result["http_status"], error=result["error"])
            self._sleep(delay)

    def _finish(self, alert: Alert, start: float, attempts: int, *, ok: bool, permanent: bool = False,
                http_status: int | None = None, response_body: str | None = None,
                error: str | None = None) -> DeliveryResult:
        result = DeliveryResult(
            sink=self.name, dedup_key=alert.dedup_key, status=alert.status, ok=ok, permanent=permanent,
            attempts=attempts, http_status=http_status, response_body=response_body, error=error,
            duration_ms=round((self._clock() - start) * 1000.0, 3),
        )
        fields = {"sink": self.name, "sink_type": getattr(self.settings, "type", None), "dedup_key": alert.dedup_key,
                  "status": alert.status, "attempts": attempts, "http_status": http_status}
        if ok:
            log.info("alert delivered", **fields)
        else:
            log.warning("alert delivery failed", permanent=permanent, error=error, **fields)
        return result

    def close(self) -> None:
        """Close the default HTTP client (an injected one belongs to the caller)."""
        if self._owns_http and isinstance(self._http, RequestsHttpClient):
            self._http.close()
