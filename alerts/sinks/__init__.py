"""Alert sinks: deliver ``Alert``s to PagerDuty, Alertmanager, Slack, a webhook or the console.

Module map:

- ``model``: ``Alert`` (no payload text, ever) and ``make_dedup_key``.
- ``base``: the ``Sink`` contract, ``DeliveryResult``, ``RetryPolicy``,
  ``RateLimiter``, the ``HttpClient`` protocol.
- ``http``: ``RequestsHttpClient`` and ``HttpSink``, the shared retry loop.
- ``config``: one frozen settings model per sink type, ``resolve_secret``.
- ``pagerduty``, ``alertmanager``, ``slack``, ``webhook``, ``console``: one
  sink each, with a pure ``build_payload``.

The ``delta`` sink type is written by the streaming job inside its
``foreachBatch`` (idempotent appends), not through this package: ``build_sink``
returns ``None`` for it and ``build_sinks`` leaves it out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

from gatewatch.errors import SinkError
from gatewatch.alerts.sinks.alertmanager import AlertmanagerSink
from gatewatch.alerts.sinks.base import (
    Clock,
    DeliveryResult,
    HttpClient,
    RateLimiter,
    RetryPolicy,
    Sink,
    Sleep,
    WallClock,
    utc_now,
)
from gatewatch.alerts.sinks.config import (
    AlertmanagerSinkSettings,
    ConsoleSinkSettings,
    DeltaSinkSettings,
    PagerDutySinkSettings,
    SinkSettings,
    SlackSinkSettings,
    WebhookSinkSettings,
    parse_sinks,
    resolve_secret,
)
from gatewatch.alerts.sinks.console import ConsoleSink
from gatewatch.alerts.sinks.model import Alert, make_dedup_key
from gatewatch.alerts.sinks.pagerduty import PagerDutySink
from gatewatch.alerts.sinks.slack import SlackSink
from gatewatch.alerts.sinks.webhook import WebhookSink

__all__ = [
    "Alert", "AlertmanagerSink", "ConsoleSink", "DeliveryResult", "HttpClient", "PagerDutySink",
    "RateLimiter", "RetryPolicy", "Sink", "SinkSettings", "SlackSink", "WebhookSink", "build_sink",
    "build_sinks", "make_dedup_key", "parse_sinks", "resolve_secret",
]

_HTTP_SINKS = {
    PagerDutySinkSettings: PagerDutySink,
    AlertmanagerSinkSettings: AlertmanagerSink,
    SlackSinkSettings: SlackSink,
    WebhookSinkSettings: WebhookSink,
}


def build_sink(settings: SinkSettings, http: HttpClient | None = None, *, clock: Clock = time.monotonic,
               sleep: Sleep = time.sleep, now: WallClock = utc_now,
               rng: random.Random | None = None) -> Sink | None:
    """The sink for one settings entry, secrets resolved.

    Args:
        settings: one validated sink settings model.
        http: the transport for HTTP sinks (default: a ``requests`` session per sink).
        clock: monotonic clock for rate limits and durations.
        sleep: how to wait between attempts.
        now: wall clock for payload timestamps.
        rng: random source for backoff jitter.

    Returns:
        The sink, or ``None`` for ``type: delta`` (the streaming job writes that table).

    Raises:
        ConfigError: a secret reference cannot be resolved.
        SinkError: the settings are of an unknown type.
    """
    if isinstance(settings, DeltaSinkSettings):
        return None
    if isinstance(settings, ConsoleSinkSettings):
        return ConsoleSink(settings, clock=clock)
    sink_class = _HTTP_SINKS.get(type(settings))
    if sink_class is None:
        raise SinkError(f"sink '{getattr(settings, 'name', '?')}' has an unknown type {type(settings).__name__}.")
    return sink_class(settings, http=http, clock=clock, sleep=sleep, now=now, rng=rng)


def build_sinks(settings: Iterable[SinkSettings], http: HttpClient | None = None, *,
                clock: Clock = time.monotonic, sleep: Sleep = time.sleep, now: WallClock = utc_now,
                rng: random.Random | None = None) -> list[Sink]:
    """Every non-Delta sink of ``settings``, in order."""
    built = (build_sink(s, http, clock=clock, sleep=sleep, now=now, rng=rng) for s in settings)
    return [sink for sink in built if sink is not None]
