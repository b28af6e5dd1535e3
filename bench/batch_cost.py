"""What one micro-batch costs: Spark jobs, Delta commits and seconds, per batch.

Creates K change-feed tables, commits ``--commits`` small commits of
``--rows`` rows to each, then runs the job with ``--available-now`` and one
commit per source per micro-batch, and prints per batch: its duration and
timings (from the job's batch log), the Spark jobs it ran (Spark's own job
list, read from the UI's REST API on loopback) and the Delta commits it made
to each output table.

    python bench/batch_cost.py --sources 1 --commits 8 --rows 500
    python bench/batch_cost.py --sources 8 --commits 4 --rows 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path


def _jobs(spark) -> int:
    url = spark.sparkContext.uiWebUrl
    app = spark.sparkContext.applicationId
    with urllib.request.urlopen(f"{url}/api/v1/applications/{app}/jobs", timeout=30) as r:
        return len(json.load(r))


def _versions(spark, path: Path) -> int:
    from delta.tables import DeltaTable

    if not path.exists():
        return 0
    return int(DeltaTable.forPath(spark, str(path)).history(1).first()["version"]) + 1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, default=1)
    p.add_argument("--commits", type=int, default=8)
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--dir")
    args = p.parse_args(argv)

    from gatewatch.settings import OutputSettings, Settings, SourceSettings, SparkSettings, TriggerSettings
    from gatewatch.streams.job import Job
    from gatewatch.streams.spark import build_spark
    from gatewatch.traffic import generate as traffic

    work = Path(args.dir or tempfile.mkdtemp(prefix="gatewatch-cost-"))
    spark = build_spark(SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="4g", ui=True,
                                      conf={"spark.ui.port": "4747", "spark.driver.host": "127.0.0.1",
                                            "spark.driver.bindAddress": "127.0.0.1"}),
                        app_name="batch-cost")
    sources = []
    for k in range(args.sources):
        table = work / f"source{k}"
        traffic.create_inference_table(spark, str(table))
        for c in range(args.commits):
            traffic.write_rows(spark, str(table),
                               [g.row for g in traffic.generate(args.rows, seed=args.seed + 100 * k + c)])
        sources.append(SourceSettings(table=str(table), endpoint=f"ep-{k}", name=f"s{k}", starting_version=1,
                                      max_files_per_trigger=1))
    settings = Settings(sources=tuple(sources), output=OutputSettings(location=str(work / "out")),
                        checkpoint_root=str(work / "ckpt"), trigger=TriggerSettings(mode="available_now"))
    outputs = ["requests", "quarantine", "token_events", "safety_events", "alerts", "alert_outbox"]
    job = Job(spark, settings)
    before_jobs = _jobs(spark)
    before = {t: _versions(spark, work / "out" / t) for t in outputs}
    batches: list[dict] = []
    job.on_metrics = (lambda inner: (lambda m: (inner(m), batches.append(m))))(job.on_metrics)
    started = time.monotonic()
    job.start()
    job.wait()
    wall = time.monotonic() - started
    after_jobs = _jobs(spark)
    after = {t: _versions(spark, work / "out" / t) for t in outputs}
    real = [b for b in batches if b.get("rows")]
    print(f"\n{len(real)} micro-batches with rows ({args.sources} source(s), {args.rows} rows per commit), "
          f"{wall:.1f}s in all")
    print(f"  Spark jobs: {after_jobs - before_jobs} -> {(after_jobs - before_jobs) / max(len(real), 1):.1f} per batch")
    for t in outputs:
        print(f"  Delta commits to {t:14s} {after[t] - before[t]:4d} -> {(after[t] - before[t]) / max(len(real), 1):.2f} per batch")
    durations = [b["duration_s"] for b in real]
    if durations:
        print(f"  batch duration s: p50 {statistics.median(durations):.2f}  max {max(durations):.2f}")
        for key in ("parse_s", "alerts_s", "write_s"):
            vals = [b[key] for b in real if key in b]
            if vals:
                print(f"    {key:9s} p50 {statistics.median(vals):.2f}")
    spark.stop()


if __name__ == "__main__":
    main()
