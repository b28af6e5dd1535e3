"""Throughput and latency of the gatewatch pipeline on a local change-feed table.

Modes:

- ``throughput`` (default): writes N generated rows (default 1,000,000) into
  a change-feed table in equal commits, then runs ``gatewatch run
  --available-now`` as a fresh process and reports rows/s end to end (JVM
  start included) and in steady state (micro-batches after the first, from
  the job's own batch log). For comparison it runs the same change feed,
  read with delta-rs, through a plain Python ``json.loads`` loop that
  extracts outcome and tokens, and a stock Spark job (``bench/stock_job.py``:
  the change feed, tokens by ``get_json_object``, one Delta table), also as
  a fresh process with the same micro-batch size. Both read the change
  feed from version 0 (``--starting-version earliest`` runs gatewatch from
  its own default instead: the table's snapshot, then its changes, which
  Delta starts by listing and sorting the snapshot's files).
- ``alert-latency``: runs the job with a 1 second trigger and the packaged
  alert rules, commits blocked requests on one endpoint in rounds, and
  reports p50/p95 from the commit that tips ``content_filter_spike`` to the
  alert reaching a loopback webhook receiver (``bench/alert_latency.py``).
- ``contract``: the cost of the in-stream contract: reads the same change
  feed once (kept in memory and on disk), warms both up on a tenth of it,
  then runs the parse over all of it into Spark's ``noop`` sink with the
  contract off, on, on, off (in one process, so drift cancels out) and
  prints rows/s of each and the overhead of the means.
- ``floor``: what Spark costs before any parsing, against the same loop: a
  fresh process starts a session and reads the whole change feed once
  (and once more, warm), parsing and writing nothing.
- ``latency``: runs the job with a 1 second trigger, commits small batches
  of rows every ``--every`` seconds, and reports p50/p95 of the time from a
  commit landing in the source (its Delta commit timestamp) to its rows
  being committed in the requests table.

    python bench/throughput.py --rows 1000000
    python bench/throughput.py --mode contract --dir /tmp/bench1m
    python bench/throughput.py --mode floor --dir /tmp/bench1m
    python bench/throughput.py --mode latency --commits 30
    python bench/throughput.py --mode alert-latency --commits 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _spark():
    from gatewatch.settings import SparkSettings
    from gatewatch.streams.spark import build_spark

    return build_spark(SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="4g"), app_name="bench")


def write_source(spark, table: Path, rows: int, commits: int, seed: int) -> float:
    """Write ``rows`` generated rows in ``commits`` commits; return the seconds spent."""
    from gatewatch.traffic import generate as traffic

    started = time.monotonic()
    traffic.create_inference_table(spark, str(table))
    per = rows // commits
    for i in range(commits):
        n = per if i < commits - 1 else rows - per * (commits - 1)
        traffic.write_rows(spark, str(table), [g.row for g in traffic.generate(n, seed=seed + i)])
        print(f"  wrote commit {i + 1}/{commits} ({n:,} rows)", flush=True)
    return time.monotonic() - started


def run_pipeline(table: Path, work: Path, files_per_trigger: int, contract: bool, starting_version: str = "0") -> dict:
    """``gatewatch run --available-now`` in a fresh process, reading from ``starting_version``; wall time and batch
    log."""
    cmd = [
        sys.executable, "-m", "gatewatch.cli.main", "run", "--available-now",
        "--source", str(table), "--output", str(work / "out"), "--checkpoint", str(work / "ckpt"),
        "--set", f"sources.0.max_files_per_trigger={files_per_trigger}",
        "--set", f"sources.0.starting_version={starting_version}",
        "--set", "spark.shuffle_partitions=2", "--set", "spark.driver_memory=4g",
        "--set", f"contract.enabled={'true' if contract else 'false'}",
        "--log-format", "json",
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if os.environ.get("GATEWATCH_BENCH_LOG"):
        Path(os.environ["GATEWATCH_BENCH_LOG"]).write_text(proc.stdout + proc.stderr)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"gatewatch run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    batches = []
    phases: dict = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "batch" and event.get("rows"):
                batches.append(event)
            elif event.get("event") in ("job_ready", "events_caught_up", "events_batch"):
                phases[event["event"]] = event
    return {"wall_s": wall, "batches": batches, "phases": phases}


def where_time_went(run: dict) -> list[str]:
    """The run's wall time by phase, from the job's own log: start-up steps, micro-batches, events, the rest."""
    phases, batches = run["phases"], run["batches"]
    lines = []
    ready = phases.get("job_ready")
    if ready:
        steps = {k: v for k, v in ready.items() if k.endswith("_s")}
        lines.append("  job start (after the session)  " + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in steps.items()))
    in_batches = sum(b["duration_s"] for b in batches)
    lines.append(f"  micro-batch handlers           {in_batches:.1f}s")
    caught_up = phases.get("events_caught_up")
    if caught_up:
        batch = phases.get("events_batch", {})
        lines.append(f"  events query                   {caught_up['duration_s']:.1f}s "
                     f"(its batch {batch.get('duration_s', 0):.1f}s)")
    rest = run["wall_s"] - in_batches - (caught_up or {}).get("duration_s", 0.0)
    lines.append(f"  everything else                {rest:.1f}s (JVM and session start, job start, "
                 f"each batch's planning and commit, exit)")
    return lines


def stock_job(table: Path, work: Path, files_per_trigger: int) -> dict:
    """``bench/stock_job.py`` in a fresh process: wall time (JVM start included) and rows written."""
    for sub in ("stock-out", "stock-ckpt"):
        _rmtree(work / sub)
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "stock_job.py"), str(table),
           str(work / "stock-out"), str(work / "stock-ckpt"), str(files_per_trigger)]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"the stock job failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def json_loop(table: Path) -> dict:
    """The same change feed through plain Python: delta-rs read, json.loads, a few fields."""
    import pyarrow as pa
    from deltalake import DeltaTable

    started = time.monotonic()
    feed = pa.table(DeltaTable(str(table)).load_cdf(starting_version=0).read_all())
    outcomes: dict[str, int] = {}
    tokens = 0
    for change, req_text, resp_text, status in zip(
        feed.column("_change_type").to_pylist(),
        feed.column("request").to_pylist(),
        feed.column("response").to_pylist(),
        feed.column("status_code").to_pylist(),
    ):
        if change not in ("insert", "update_postimage"):
            continue
        try:
            req = json.loads(req_text) if req_text else None
            resp = json.loads(resp_text) if resp_text else None
        except ValueError:
            outcomes["json_parse_error"] = outcomes.get("json_parse_error", 0) + 1
            continue
        stream = isinstance(req, dict) and bool(req.get("stream"))
        usage = None
        if isinstance(resp, list):
            stream = True
            for chunk in resp:
                if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
        elif isinstance(resp, dict):
            usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else None
        if usage:
            tokens += int(usage.get("total_tokens") or 0)
        kind = "error" if (status or 0) >= 400 else ("stream" if stream else "predict")
        outcomes[kind] = outcomes.get(kind, 0) + 1
    return {"seconds": time.monotonic() - started, "rows": sum(outcomes.values()), "tokens": tokens}


def throughput(args: argparse.Namespace) -> None:
    work = Path(args.dir or tempfile.mkdtemp(prefix="gatewatch-bench-"))
    table = work / "source"
    if not table.exists():
        spark = _spark()
        print(f"Generating {args.rows:,} rows into {table} ...", flush=True)
        seconds = write_source(spark, table, args.rows, args.commits, args.seed)
        print(f"  source written in {seconds:.1f}s", flush=True)
        spark.stop()
    files = _files_per_commit(table)
    print("\nPlain Python json.loads loop over the change feed (delta-rs) ...", flush=True)
    loop = json_loop(table)
    print("\nStock Spark job: change feed -> get_json_object tokens -> one Delta table (fresh process) ...", flush=True)
    stock = stock_job(table, work, files)
    print(f"\ngatewatch run --available-now (fresh process, contract {'on' if args.contract else 'off'}, "
          f"starting_version {args.starting_version}) ...", flush=True)
    for sub in ("out", "ckpt"):
        _rmtree(work / sub)
    run = run_pipeline(table, work, files, args.contract, args.starting_version)
    batches = run["batches"]
    rows = sum(b["rows"] for b in batches)
    steady = batches[1:]
    steady_rows = sum(b["rows"] for b in steady)
    steady_s = sum(b["duration_s"] for b in steady)
    print("\nResults")
    print(f"  rows processed          {rows:,} in {len(batches)} micro-batches")
    print(f"  end to end (JVM incl.)  {run['wall_s']:.1f}s  -> {rows / run['wall_s']:,.0f} rows/s")
    if steady_s:
        print(f"  steady state            {steady_s:.1f}s over {len(steady)} batches -> {steady_rows / steady_s:,.0f} rows/s")
    print(f"  first batch             {batches[0]['duration_s']:.1f}s ({batches[0]['rows']:,} rows)")
    print(f"  json.loads loop         {loop['seconds']:.1f}s  -> {loop['rows'] / loop['seconds']:,.0f} rows/s")
    print(f"  ratio end to end        {(rows / run['wall_s']) / (loop['rows'] / loop['seconds']):.2f}x the loop")
    print(f"  stock Spark job         {stock['wall_s']:.1f}s  -> {stock['rows'] / stock['wall_s']:,.0f} rows/s "
          f"({stock['rows']:,} rows)")
    print(f"  gatewatch / stock job   {run['wall_s'] / stock['wall_s']:.2f}x the stock job's time")
    print("\nWhere gatewatch's time went")
    print("\n".join(where_time_went(run)))


def latency(args: argparse.Namespace) -> None:
    from gatewatch.settings import OutputSettings, Settings, SourceSettings, TriggerSettings
    from gatewatch.traffic import generate as traffic
    from gatewatch.streams.job import Job

    work = Path(args.dir or tempfile.mkdtemp(prefix="gatewatch-latency-"))
    spark = _spark()
    table = work / "source"
    traffic.create_inference_table(spark, str(table))
    settings = Settings(
        sources=(SourceSettings(table=str(table), endpoint="chat-prod", starting_version="latest"),),
        output=OutputSettings(location=str(work / "out")),
        checkpoint_root=str(work / "ckpt"),
        trigger=TriggerSettings(mode="processing_time", interval="1 second"),
    )
    landed: dict[int, float] = {}
    lock = threading.Lock()

    def record(ctx, parsed, batch_id, metrics) -> None:  # runs after the batch's writes committed
        now = time.time()
        with lock:
            for r in parsed.select("_commit_version").distinct().collect():
                landed.setdefault(r[0], now)

    job = Job(spark, settings, hooks=(record,)).start()
    query = job.running[0].query
    history = _history(spark, table)
    committed: dict[int, float] = {}
    try:
        for i in range(args.commits):
            traffic.write_rows(spark, str(table), [g.row for g in traffic.generate(args.batch_rows, seed=args.seed + i)])
            version, ts = history()
            committed[version] = ts
            time.sleep(args.every)
        query.processAllAvailable()
    finally:
        job.stop()
    lat = sorted(landed[v] - committed[v] for v in committed if v in landed)
    if not lat:
        sys.exit("no commit reached the requests table")
    p50 = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    print(f"\nCommit -> requests table, 1 second trigger, {len(lat)} commits of {args.batch_rows} rows")
    print(f"  p50 {p50:.2f}s   p95 {p95:.2f}s   max {lat[-1]:.2f}s")


def contract_overhead(args: argparse.Namespace) -> None:
    from pyspark import StorageLevel

    from gatewatch.quarantine.contract import compile_suite, load_suite
    from gatewatch.settings import SourceSettings
    from gatewatch.streams.batch import process
    from gatewatch.streams.source import to_canonical

    work = Path(args.dir or tempfile.mkdtemp(prefix="gatewatch-bench-"))
    table = work / "source"
    spark = _spark()
    if not table.exists():
        print(f"Generating {args.rows:,} rows into {table} ...", flush=True)
        write_source(spark, table, args.rows, args.commits, args.seed)
    feed = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0).load(str(table))
    rows = to_canonical(feed, "gateway", SourceSettings(table=str(table), endpoint="chat-prod"))
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    n = rows.count()
    print(f"{n:,} change-feed rows read and kept", flush=True)
    contract = compile_suite(load_suite())
    modes = {"contract off": None, "contract on": contract}
    warm = rows.limit(max(1, n // 10))
    for c in modes.values():  # JIT and code generation warmed up for both, untimed
        process(warm, c).write.format("noop").mode("overwrite").save()
    seconds: dict[str, list[float]] = {label: [] for label in modes}
    for label in ("contract off", "contract on", "contract on", "contract off"):  # ABBA: drift cancels out
        started = time.monotonic()
        process(rows, modes[label]).write.format("noop").mode("overwrite").save()
        seconds[label].append(time.monotonic() - started)
        print(f"  {label:13s} {seconds[label][-1]:8.1f}s  -> {n / seconds[label][-1]:,.0f} rows/s", flush=True)
    mean = {label: statistics.mean(v) for label, v in seconds.items()}
    for label, m in mean.items():
        print(f"  mean {label:13s} {m:8.1f}s  -> {n / m:,.0f} rows/s")
    print(f"  contract overhead {mean['contract on'] / mean['contract off'] - 1:.1%} (mean time with / without, minus one)")


def floor(args: argparse.Namespace) -> None:
    """What Spark costs before any parsing: a fresh process starts a session and reads the whole feed once.

    The read sums the lengths of ``request`` and ``response`` (so every
    value is read) and parses, writes and keeps nothing; a second read in
    the same session shows the part of the first that is JIT warm-up.
    Compared with the json.loads loop over the same feed.
    """
    work = Path(args.dir or tempfile.mkdtemp(prefix="gatewatch-bench-"))
    table = work / "source"
    if not table.exists():
        spark = _spark()
        print(f"Generating {args.rows:,} rows into {table} ...", flush=True)
        write_source(spark, table, args.rows, args.commits, args.seed)
        spark.stop()
    print("Plain Python json.loads loop over the change feed (delta-rs) ...", flush=True)
    loop = json_loop(table)
    print("Spark: a fresh process, a session, two reads of the change feed, nothing parsed ...", flush=True)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--mode", "floor", "--child", str(table)],
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"the Spark read failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    print("\nResults")
    print(f"  json.loads loop, whole run        {loop['seconds']:6.1f}s  ({loop['rows']:,} rows)")
    print(f"  Spark process start to session    {child['session_s']:6.1f}s")
    print(f"  first read of the feed            {child['first_read_s']:6.1f}s  ({child['rows']:,} rows, nothing parsed)")
    print(f"  second read (JIT warm)            {child['second_read_s']:6.1f}s")
    floor_s = child["session_s"] + child["first_read_s"]
    print(f"  floor: session + one read         {floor_s:6.1f}s  -> {floor_s / loop['seconds']:.2f}x the loop's whole run")
    print(f"  (the Spark process's wall time, exit included: {wall:.1f}s)")


def _floor_child(table: str) -> None:
    started = time.monotonic()
    from pyspark.sql import functions as F

    spark = _spark()
    timings = {"session_s": time.monotonic() - started}
    for label in ("first_read_s", "second_read_s"):
        began = time.monotonic()
        feed = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0).load(table)
        row = feed.agg(F.count(F.lit(1)).alias("rows"),
                       F.sum(F.length("request") + F.length("response")).alias("chars")).first()
        timings[label] = time.monotonic() - began
    print(json.dumps({**timings, "rows": row["rows"], "chars": row["chars"]}))


def _history(spark, table: Path):
    from delta.tables import DeltaTable

    dt = DeltaTable.forPath(spark, str(table))

    def latest() -> tuple[int, float]:
        row = dt.history(1).select("version", "timestamp").first()
        return int(row["version"]), row["timestamp"].timestamp()

    return latest


def _files_per_commit(table: Path) -> int:
    from deltalake import DeltaTable

    dt = DeltaTable(str(table))
    versions = max(dt.version(), 1)
    return max(1, len(dt.file_uris()) // versions)


def _rmtree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)


def alert_latency(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from alert_latency import alert_latency as run

    run(args)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("throughput", "contract", "latency", "alert-latency", "floor"),
                   default="throughput")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--commits", type=int, default=10)
    p.add_argument("--batch-rows", type=int, default=50, help="latency: rows per commit")
    p.add_argument("--every", type=float, default=2.0, help="latency: seconds between commits")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--no-contract", dest="contract", action="store_false")
    p.add_argument("--dir", help="work folder (kept; an existing source table is reused)")
    p.add_argument("--starting-version", default="0",
                   help="throughput: where gatewatch reads from; 0 (default) reads the change feed from version 0 as "
                        "the stock job does, earliest (gatewatch's own default) the table's snapshot, then its changes")
    p.add_argument("--child", help=argparse.SUPPRESS)  # floor: the Spark process's own run
    args = p.parse_args(argv)
    if args.child:
        _floor_child(args.child)
        return
    modes = {"throughput": throughput, "contract": contract_overhead, "latency": latency,
             "alert-latency": alert_latency, "floor": floor}
    modes[args.mode](args)


if __name__ == "__main__":
    main()
