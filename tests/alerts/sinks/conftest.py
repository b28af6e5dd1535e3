"""Fixtures for sink tests: fixed alerts, a scriptable loopback HTTP receiver, a fake clock."""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gatewatch.alerts.sinks.model import Alert
from tests.receivers import serving

SINK_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sinks"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def make_firing() -> Alert:
    """The firing alert every payload fixture was written for."""
    return Alert(
        rule="content_filter_blocks",
        group={"endpoint": "chat-bot"},
        severity="critical",
        summary="Content-filter blocks on chat-bot: 12 of 40 requests (30%) in 5 min",
        value=0.3,
        threshold=0.2,
        window_start=T0,
        window_end=T0 + timedelta(minutes=5),
        started_at=T0 + timedelta(minutes=5),
        counts={"blocked": 12, "requests": 40},
        links=(
            ("Dashboard", "https://dbc-example.cloud.databricks.com/sql/dashboards/abc"),
            ("Runbook", "https://wiki.example.com/runbooks/content-filter"),
        ),
        details={"source_table": "main.serving.chat_bot_payload"},
    )


def make_resolved() -> Alert:
    """The same alert, resolved at 12:20 after a quiet window."""
    return make_firing().resolve(
        T0 + timedelta(minutes=20),
        summary="Content-filter blocks on chat-bot back under threshold: 1 of 50 requests (2%)",
        value=0.02,
        counts={"blocked": 1, "requests": 50},
        window_start=T0 + timedelta(minutes=15),
        window_end=T0 + timedelta(minutes=20),
    )


@pytest.fixture()
def firing() -> Alert:
    """A firing content-filter alert for endpoint chat-bot."""
    return make_firing()


@pytest.fixture()
def resolved() -> Alert:
    """The resolved form of ``firing``."""
    return make_resolved()


@pytest.fixture()
def expected() -> Callable[[str], Any]:
    """Reads one hand-written expected payload from tests/fixtures/sinks."""
    return lambda name: json.loads((SINK_FIXTURES / name).read_text())


class FakeClock:
    """A monotonic clock that only moves when ``sleep`` is called, and records every sleep."""

    def __init__(self, wall: datetime) -> None:
        self.t = 1000.0
        self.wall = wall
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self.t

    def sleep(self, seconds: float) -> None:
        """Record the delay and advance both clocks by it."""
        self.sleeps.append(seconds)
        self.t += seconds
        self.wall += timedelta(seconds=seconds)

    def now(self) -> datetime:
        """The fake wall-clock time (UTC)."""
        return self.wall


@pytest.fixture()
def clock() -> FakeClock:
    """A fake clock starting at 2026-03-01T12:06:00Z."""
    return FakeClock(T0 + timedelta(minutes=6))


@dataclass
class Recorded:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], str]
Validator = Callable[[Recorded], "Reply | None"]


@dataclass
class Receiver:
    """A loopback HTTP server that records requests and answers from a script.

    ``script`` replies are used in order; when it is empty, ``validator`` (if
    set) decides, else ``default`` is sent.
    """

    requests: list[Recorded] = field(default_factory=list)
    script: deque[Reply] = field(default_factory=deque)
    default: Reply = (200, {}, "ok")
    validator: Validator | None = None
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def answer(self, *replies: Reply) -> None:
        """Queue replies: ``(status, headers, body)`` each."""
        self.script.extend(replies)

    def reply_for(self, recorded: Recorded) -> Reply:
        """Record the request and pick its reply."""
        with self.lock:
            self.requests.append(recorded)
            if self.script:
                return self.script.popleft()
        if self.validator is not None:
            verdict = self.validator(recorded)
            if verdict is not None:
                return verdict
        return self.default


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            recorded = Recorded("POST", self.path, dict(self.headers.items()), body)
            status, headers, text = receiver.reply_for(recorded)
            payload = text.encode("utf-8")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access logs
            return

    return Handler


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    """A started loopback receiver on 127.0.0.1 and a free port; stopped after the test."""
    rec = Receiver()
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))) as server:
        rec.port = server.server_address[1]
        yield rec


@pytest.fixture()
def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
