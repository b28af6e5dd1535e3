"""Soak: K inference tables under steady traffic for T minutes, one gatewatch job tailing them all.

The job runs as a user runs it, ``gatewatch run --config <file>`` in a
process of its own (1 s trigger by default, the packaged alert rules on).
This process creates the K source tables (change data feed, deletion
vectors and row tracking on, as Databricks creates them) and commits
``--rows`` generated rows to each every ``--every`` seconds, with its own
Spark session. When the traffic stops it waits for the job to drain, stops
it, and reads every figure from the tables themselves with delta-rs (no
Spark, nothing measured by the job about itself):

- commit-to-row latency of each source commit: the commit time of the
  first ``requests`` version holding its rows minus the source commit's
  time (both Delta commit timestamps), p50/p95/max for the first and the
  last third of the run (by source commit time);
- the backlog when the traffic stopped (source commits not yet in the
  outputs) and how long the job took to drain it;
- versions and (active) files of every output table at the end;
- an exact count: every inserted request id in requests or quarantine,
  exactly once.

    python bench/soak.py --sources 8 --rows 50 --every 5 --minutes 15
    python bench/soak.py --sources 1 --rows 50 --every 2 --minutes 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OUTPUTS = ("requests", "quarantine", "token_usage_events", "safety_events", "alerts", "alert_outbox")


def _config(work: Path, sources: int, interval: str, extra: dict) -> Path:
    import yaml

    cfg = {
        "sources": [{"table": str(work / f"endpoint{k}"), "endpoint": f"endpoint-{k}", "name": f"endpoint{k}",
                     "starting_version": "earliest"} for k in range(sources)],
        "output": {"location": str(work / "out")},
        "checkpoint_root": str(work / "ckpt"),
        "trigger": {"mode": "processing_time", "interval": interval},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "4g"},
        **extra,
    }
    path = work / "soak.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _landed(out: Path) -> dict[tuple[str, int], float]:
    """When each source commit first reached requests: (source table, source version) -> requests commit time."""
    import pyarrow as pa
    from deltalake import DeltaTable

    feed = pa.table(DeltaTable(str(out / "requests")).load_cdf(
        starting_version=0, columns=["source_table", "source_commit_version", "_change_type", "_commit_timestamp"]
    ).read_all())
    first: dict[tuple[str, int], float] = {}
    for change, table, version, at in zip(feed.column("_change_type").to_pylist(),
                                          feed.column("source_table").to_pylist(),
                                          feed.column("source_commit_version").to_pylist(),
                                          feed.column("_commit_timestamp").to_pylist()):
        if change != "insert":
            continue
        t = at.timestamp()
        key = (table, int(version))
        if key not in first or t < first[key]:
            first[key] = t
    return first


def _ids(out: Path) -> Counter:
    import pyarrow as pa
    from deltalake import DeltaTable

    seen: Counter = Counter()
    for name in ("requests", "quarantine"):
        path = out / name
        if path.exists():
            col = pa.table(DeltaTable(str(path)).to_pyarrow_table(columns=["databricks_request_id"])).column(0)
            seen.update(col.to_pylist())
    return seen


def _table_shape(path: Path) -> tuple[int, int]:
    from deltalake import DeltaTable

    if not path.exists():
        return 0, 0
    dt = DeltaTable(str(path))
    return dt.version() + 1, len(dt.file_uris())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, default=8)
    p.add_argument("--rows", type=int, default=50, help="rows per commit and source")
    p.add_argument("--every", type=float, default=5.0, help="seconds between rounds of commits")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--trigger", default="1 second")
    p.add_argument("--drain-timeout", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--dir")
    p.add_argument("--set", action="append", default=[], help="more `gatewatch run --set` overrides")
    args = p.parse_args(argv)

    from deltalake import DeltaTable

    from gatewatch.settings import SparkSettings
    from gatewatch.streams.spark import build_spark
    from gatewatch.traffic import generate as traffic

    work = Path(args.dir or tempfile.mkdtemp(prefix="gatewatch-soak-"))
    spark = build_spark(SparkSettings(master="local[2]", shuffle_partitions=1, driver_memory="2g"),
                        app_name="soak-traffic")
    tables = [work / f"endpoint{k}" for k in range(args.sources)]
    for t in tables:
        traffic.create_inference_table(spark, str(t))
    config = _config(work, args.sources, args.trigger, {})
    log_path = work / "job.log"
    cmd = [sys.executable, "-m", "gatewatch.cli.main", "run", "--config", str(config), "--log-format", "json",
           *[x for s in args.set for x in ("--set", s)]]
    log = log_path.open("w")
    job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())
    print(f"job pid {job.pid}, log {log_path}, work {work}", flush=True)

    rounds = int(args.minutes * 60 / args.every) + 1
    print(f"generating {rounds} rounds x {args.sources} sources x {args.rows} rows ...", flush=True)
    planned = [[[g.row for g in traffic.generate(args.rows, seed=args.seed + 100_000 * k + r,
                                                 endpoints=(f"endpoint-{k}",))]
                for k in range(args.sources)] for r in range(rounds)]
    status = work / "ckpt" / "_status.json"
    wait_until = time.time() + 600
    while time.time() < wait_until:  # traffic starts once every source's query runs
        if job.poll() is not None:
            sys.exit(f"the job ended early ({job.returncode}); see {log_path}")
        try:
            states = [s["state"] for s in json.loads(status.read_text())["sources"].values()]
        except (OSError, ValueError, KeyError):
            states = []
        if states and all(state == "running" for state in states):
            break
        time.sleep(0.5)
    print("job running; traffic starts", flush=True)
    inserted: set[str] = set()
    committed: dict[tuple[str, int], float] = {}
    pool = ThreadPoolExecutor(max_workers=args.sources, thread_name_prefix="soak-writer")
    started = time.time()
    deadline = started + args.minutes * 60
    round_no = 0
    late = 0
    try:
        while time.time() < deadline and round_no < rounds:
            began = time.time()
            writes = [pool.submit(traffic.write_rows, spark, str(t), planned[round_no][k])
                      for k, t in enumerate(tables)]
            for w in writes:
                w.result()
            for rows in planned[round_no]:
                inserted |= {r["databricks_request_id"] for r in rows}
            round_no += 1
            if job.poll() is not None:
                sys.exit(f"the job ended early ({job.returncode}); see {log_path}")
            if round_no % 12 == 0:
                print(f"  {round_no} rounds, {len(inserted):,} rows, {time.time() - started:.0f}s", flush=True)
            spare = args.every - (time.time() - began)
            late += spare < 0
            time.sleep(max(0.0, spare))
        stopped = time.time()
        for t in tables:  # every source commit and its time, from each table's history
            for h in DeltaTable(str(t)).history():
                if h.get("operation") == "WRITE":
                    committed[(str(t), int(h["version"]))] = h["timestamp"] / 1000.0
        print(f"traffic stopped: {round_no} rounds, {len(inserted):,} rows; waiting for the job to drain ...", flush=True)
        drain_deadline = time.time() + args.drain_timeout
        backlog_at_stop = None
        while time.time() < drain_deadline:
            landed = _landed(work / "out") if (work / "out" / "requests").exists() else {}
            if backlog_at_stop is None:
                backlog_at_stop = sum(1 for key in committed if key not in landed)
            seen = _ids(work / "out")
            if inserted <= set(seen):
                break
            time.sleep(2)
        drained = time.time() - stopped
    finally:
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
        log.close()
        pool.shutdown()
        spark.stop()

    landed = _landed(work / "out")
    seen = _ids(work / "out")
    missing = len(inserted - set(seen))
    duplicated = sum(1 for i in inserted if seen[i] > 1)
    lat = sorted((committed[k], landed[k] - committed[k]) for k in committed if k in landed)
    span = max(t for t, _ in lat) - min(t for t, _ in lat) if lat else 0
    first = [v for t, v in lat if t <= lat[0][0] + span / 3]
    last = [v for t, v in lat if t >= lat[0][0] + 2 * span / 3]
    batches = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "batch" and event.get("rows"):
                batches.append(event)
    print(f"\nSoak: {args.sources} sources x {args.rows} rows every {args.every:g}s for {args.minutes:g} min, "
          f"trigger {args.trigger}, 2 cores")
    print(f"  source commits {len(committed):,}, landed {len(lat):,}; rows inserted {len(inserted):,}; "
          f"rounds {round_no} ({late} took longer than --every to write)")
    print(f"  exact count: {missing} missing, {duplicated} duplicated")
    for label, values in (("first third", first), ("last third", last), ("whole run", [v for _, v in lat])):
        if values:
            print(f"  commit-to-row {label:11s} p50 {statistics.median(values):6.2f}s  p95 {_pct(values, 0.95):6.2f}s"
                  f"  max {max(values):6.2f}s  ({len(values)} commits)")
    print(f"  backlog when the traffic stopped: {backlog_at_stop} source commits; drained in {drained:.1f}s")
    if batches:
        durations = [b["duration_s"] for b in batches]
        print(f"  micro-batches {len(batches)}: duration p50 {statistics.median(durations):.2f}s "
              f"p95 {_pct(durations, 0.95):.2f}s; rows per batch p50 {statistics.median(b['rows'] for b in batches):.0f}")
    for name in OUTPUTS:
        versions, files = _table_shape(work / "out" / name)
        print(f"  {name:20s} {versions:6d} versions  {files:5d} files")


if __name__ == "__main__":
    main()
