"""Alert latency: from the commit that tips a rule to the alert reaching a webhook receiver.

Used by ``bench/throughput.py --mode alert-latency``. The job runs with a
1 second trigger on one gateway inference table (endpoint chat-prod) with the
packaged alert rules and one webhook sink on loopback. Each round commits
ordinary traffic (which also resolves the previous round's alert), waits for
the resolve, then commits a batch of blocked requests whose ratio tips
``content_filter_spike``, and measures the time from that commit's Delta
timestamp to the firing alert's arrival at the receiver.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Receiver:
    """A loopback webhook receiver recording each alert with its arrival time."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with receiver.lock:
                    receiver.arrivals.append((time.time(), body["alert"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def wait(self, status: str, count: int, timeout_s: float = 120.0) -> float:
        """The arrival time of the ``count``-th alert of ``status``; exits when it does not come."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                times = [t for t, a in self.arrivals if a["status"] == status and a["rule"] == "content_filter_spike"]
            if len(times) >= count:
                return times[count - 1]
            time.sleep(0.01)
        sys.exit(f"no {status} alert #{count} within {timeout_s:g}s")


def alert_latency(args: argparse.Namespace) -> None:
    """Run the rounds and print p50/p95 of commit -> firing alert (and of commit -> resolve)."""
    from delta.tables import DeltaTable

    from gatewatch.settings import Settings, SparkSettings
    from gatewatch.traffic import generate as traffic
    from gatewatch.streams.config import read_rules
    from gatewatch.streams.job import Job
    from gatewatch.streams.spark import build_spark

    work = Path(args.dir or tempfile.mkdtemp(prefix="gatewatch-alert-latency-"))
    spark = build_spark(SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="4g"), app_name="bench")
    table = work / "chat_prod_payload"
    traffic.create_inference_table(spark, str(table))
    receiver = Receiver()
    settings = Settings.model_validate({
        "sources": [{"table": str(table), "endpoint": "chat-prod"}],
        "output": {"location": str(work / "out")},
        "checkpoint_root": str(work / "ckpt"),
        "trigger": {"mode": "processing_time", "interval": "1 second"},
        "alerts": {"rules": read_rules()},
        "sinks": [{"name": "hook", "type": "webhook", "url": receiver.url}],
    })
    history = DeltaTable.forPath(spark, str(table))

    def commit(rows) -> float:
        traffic.write_rows(spark, str(table), rows)
        return history.history(1).select("timestamp").first()[0].timestamp()

    fired: list[float] = []
    resolved: list[float] = []
    job = Job(spark, settings).start()
    try:
        start = traffic.DEFAULT_START
        for i in range(args.commits + 1):
            base = start + timedelta(minutes=20 * i)
            calm = traffic.generate(args.batch_rows, seed=args.seed + 2 * i, endpoints=("chat-prod",), start=base,
                                    malformed_rate=0.0)
            at = commit(calm)
            if i > 0:
                resolved.append(receiver.wait("resolved", i) - at)
            if i == args.commits:
                break
            time.sleep(args.every)
            blocked = traffic.spike(max(30, args.batch_rows // 2), endpoint="chat-prod", seed=args.seed + 2 * i + 1,
                                    blocked_fraction=1.0, start=base + timedelta(minutes=10))
            at = commit(blocked)
            fired.append(receiver.wait("firing", i + 1) - at)
            print(f"  round {i + 1}/{args.commits}: commit -> firing alert {fired[-1]:.2f}s", flush=True)
            time.sleep(args.every)
    finally:
        job.stop()
        receiver.server.shutdown()

    def pct(values: list[float]) -> str:
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        return f"p50 {statistics.median(ordered):.2f}s   p95 {p95:.2f}s   max {ordered[-1]:.2f}s"

    print(f"\nCommit -> alert at a loopback webhook, 1 second trigger, packaged rules, {len(fired)} rounds")
    print(f"  firing    {pct(fired)}")
    print(f"  resolved  {pct(resolved)}")
