"""The console sink: one line per alert on stdout or stderr, for demos and local runs."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import structlog

from gatewatch.alerts.sinks.base import Clock, DeliveryResult, Sink
from gatewatch.alerts.sinks.config import ConsoleSinkSettings
from gatewatch.alerts.sinks.model import Alert, iso

log = structlog.get_logger("gatewatch.sinks")


def _fmt(number: float) -> str:
    return format(number, ".6g")


def build_payload(alert: Alert, settings: ConsoleSinkSettings | None = None) -> str:
    """The line printed for ``alert`` (pure: no I/O).

    Example: ``2026-03-01T12:05:00Z FIRING critical content_filter_blocks [endpoint=chat-bot]
    value=0.3 threshold=0.2 blocked=12 requests=40 key=... | <summary>``.
    """
    when = alert.ended_at if not alert.firing and alert.ended_at is not None else alert.started_at
    counts = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(alert.counts.items()))
    parts = [iso(when), alert.status.upper(), alert.severity, alert.rule, f"[{alert.group_text()}]",
             f"value={_fmt(alert.value)}", f"threshold={_fmt(alert.threshold)}"]
    if counts:
        parts.append(counts)
    parts.append(f"key={alert.dedup_key}")
    return " ".join(parts) + f" | {alert.summary}"


class ConsoleSink(Sink):
    """Prints each alert; never fails unless the stream does.

    Args:
        settings: the sink's settings (which stream).
        stream: write here instead (tests pass a ``StringIO``).
        clock: a monotonic clock for the duration.
    """

    def __init__(self, settings: ConsoleSinkSettings, *, stream: TextIO | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.name = settings.name
        self._stream = stream
        self._clock = clock

    def deliver(self, alert: Alert) -> DeliveryResult:
        """Write the alert's line and flush."""
        start = self._clock()
        stream = self._stream or (sys.stderr if self.settings.stream == "stderr" else sys.stdout)
        try:
            print(build_payload(alert, self.settings), file=stream, flush=True)
        except (OSError, ValueError) as err:
            log.warning("alert delivery failed", sink=self.name, dedup_key=alert.dedup_key, error=str(err))
            return DeliveryResult(self.name, alert.dedup_key, alert.status, ok=False, attempts=1,
                                  error=f"{type(err).__name__}: {err}",
                                  duration_ms=round((self._clock() - start) * 1000.0, 3))
        return DeliveryResult(self.name, alert.dedup_key, alert.status, ok=True, attempts=1,
                              duration_ms=round((self._clock() - start) * 1000.0, 3))
