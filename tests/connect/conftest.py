"""The Connect lane's server: one local Spark Connect server with Delta for the test session.

It is started as a user would (``gatewatch connect-server``'s command) on a
free loopback port, its Python workers able to import the test parser
modules (``tests/quarantine/user_parsers``), and stopped at the end. The
runs under test are ``gatewatch`` commands with ``--remote``, each its own
process, as on serverless; the tests read the outputs with the classic
session (``spark``), so the two sessions never share a process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.receivers import Hook, webhook_receiver

USER_PARSERS = Path(__file__).parents[1] / "quarantine" / "user_parsers"


@dataclass
class ConnectServer:
    """A started local Spark Connect server."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        """The ``sc://`` URL a client passes to ``--remote``."""
        return f"sc://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL the server and its Python workers (a crash, not a stop)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(log: Path, timeout_s: float = 240) -> ConnectServer:
    """Start a server and wait until it accepts connections (its log tail is shown if it does not)."""
    from gatewatch.streams.spark import connect_server_command, fetch_jars

    fetch_jars(quiet=True)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(USER_PARSERS), os.environ.get("PYTHONPATH")]))}
    env.pop("SPARK_REMOTE", None)
    command = connect_server_command(port, driver_memory="1500m", conf={"spark.sql.shuffle.partitions": "2"})
    handle = log.open("w")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = ConnectServer(process, port, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the Spark Connect server exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    pytest.fail(f"the Spark Connect server did not listen within {timeout_s:.0f} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory) -> Iterator[ConnectServer]:
    """The session's Spark Connect server with Delta."""
    server = start_server(tmp_path_factory.mktemp("connect") / "server.log")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture()
def webhook() -> Iterator[Hook]:
    """A loopback webhook receiver for the alerts of a run."""
    with webhook_receiver() as state:
        yield state
