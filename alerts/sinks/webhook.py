"""A generic webhook: JSON ``{"version": 1, "sent_at": ..., "alert": {...}}``, optionally signed.

The envelope is versioned so receivers can tell formats apart; ``alert`` is
``Alert.to_dict()``. With an HMAC secret configured, each request carries:

- ``X-Gatewatch-Timestamp``: the sending time in Unix seconds, equal to the
  body's ``sent_at``;
- ``X-Gatewatch-Signature: sha256=<hex>``: HMAC-SHA256 with the secret over the
  exact body bytes.

A receiver recomputes the HMAC over the raw body (``verify_signature``), then
rejects a stale ``sent_at``; as ``sent_at`` is inside the signed body, a replayed
request cannot carry a fresh time. Retries of one delivery resend the same
bytes, so they keep the first attempt's time.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from gatewatch.alerts.sinks.config import WebhookSinkSettings
from gatewatch.alerts.sinks.http import HttpRequest, HttpSink, json_bytes
from gatewatch.alerts.sinks.model import Alert, iso, to_utc

ENVELOPE_VERSION = 1
SIGNATURE_HEADER = "X-Gatewatch-Signature"
TIMESTAMP_HEADER = "X-Gatewatch-Timestamp"


def build_payload(alert: Alert, settings: WebhookSinkSettings | None = None, *, now: datetime) -> dict[str, Any]:
    """The envelope for ``alert`` (pure: ``now`` is passed in).

    Args:
        alert: the alert to send.
        settings: unused today; kept so every sink's ``build_payload`` reads alike.
        now: the sending time, written as ``sent_at``.

    Returns:
        ``{"version": 1, "sent_at": <RFC 3339>, "alert": alert.to_dict()}``.
    """
    return {"version": ENVELOPE_VERSION, "sent_at": iso(now), "alert": alert.to_dict()}


def sign(secret: str | bytes, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``body`` with ``secret``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` (the header's value) matches ``body``, compared in constant time."""
    return signature is not None and hmac.compare_digest(sign(secret, body), signature.strip())


class WebhookSink(HttpSink):
    """POSTs the envelope to a URL, signed when an HMAC secret is set (see ``HttpSink``)."""

    settings: WebhookSinkSettings

    def request(self, alert: Alert) -> HttpRequest:
        """The envelope's exact bytes, the configured headers and the signature headers."""
        now = to_utc(self._now())
        body = json_bytes(build_payload(alert, self.settings, now=now))
        extra = {name: value.get_secret_value() for name, value in self.settings.headers.items()}
        if self.settings.hmac_secret is not None:
            extra[TIMESTAMP_HEADER] = str(int(now.timestamp()))
            extra[SIGNATURE_HEADER] = sign(self.settings.hmac_secret.get_secret_value(), body)
        return HttpRequest(self.settings.url, body, self.json_headers(extra))
