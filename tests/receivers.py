"""Loopback HTTP receivers the tests send alerts to: each records what it was sent and answers a set status."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

ServerT = TypeVar("ServerT", bound=ThreadingHTTPServer)


@dataclass
class Hook:
    """A loopback webhook receiver: records each POST with the status it answered."""

    status: int = 200
    posts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answered(self, status: int) -> list[dict[str, Any]]:
        """The alerts of the POSTs answered with ``status``."""
        with self.lock:
            return [body["alert"] for code, body in self.posts if code == status]


@contextlib.contextmanager
def serving(server: ServerT) -> Iterator[ServerT]:
    """``server`` answering on a thread of its own until the block ends; then shut down and closed."""
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def webhook_receiver() -> Iterator[Hook]:
    """A started ``Hook`` on 127.0.0.1 (path ``/alerts``), stopped on exit."""
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            with state.lock:
                status = state.status
                state.posts.append((status, body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access logs
            return

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        state.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
        yield state
