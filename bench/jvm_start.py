"""How long local Spark takes to be ready, with and without the JVM class archive ``gatewatch setup`` makes.

Each run is a fresh Python process: it starts the session (``build_spark``),
then reads a small Delta table's detail, rows and change feed, the first
Delta work any run does. Runs alternate between the two, so the machine's
drift falls on both.

    python bench/jvm_start.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

_RUN = """
import json, sys, time
began = time.monotonic()
from gatewatch.settings import SparkSettings
from gatewatch.streams.spark import build_spark
spark = build_spark(SparkSettings(master="local[2]", class_archive=sys.argv[2] == "on"), app_name="jvm-start")
session = time.monotonic()
table = sys.argv[1]
spark.sql(f"DESCRIBE DETAIL delta.`{table}`").collect()
spark.read.format("delta").load(table).count()
spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0).load(table).count()
ready = time.monotonic()
print(json.dumps({"session_s": session - began, "ready_s": ready - began}))
spark.stop()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    args = parser.parse_args()
    from gatewatch.streams.spark import build_class_archive

    if build_class_archive(quiet=True) is None:
        sys.exit("no class archive could be made here (see the warning above)")
    results: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="gatewatch-jvm-start-") as work:
        table = f"{work}/t"
        subprocess.run([sys.executable, "-c", "from gatewatch.streams.spark import build_spark\n"
                        "from gatewatch.settings import SparkSettings\n"
                        "s = build_spark(SparkSettings(master='local[1]'))\n"
                        f"s.range(100).write.format('delta').option('delta.enableChangeDataFeed', 'true').save({table!r})\n"
                        "s.stop()"], check=True, capture_output=True)
        for i in range(args.runs * 2):
            mode = ("on", "off")[i % 2]
            done = subprocess.run([sys.executable, "-c", _RUN, table, mode], check=True, capture_output=True, text=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            results[mode].append(figures)
            print(f"  archive {mode:3}: session {figures['session_s']:5.2f}s  ready {figures['ready_s']:5.2f}s", flush=True)
    print("\nLocal Spark ready (session, then the first Delta detail, read and change-feed read), median of "
          f"{args.runs} fresh processes each:")
    for mode, label in (("on", "with the class archive"), ("off", "without it (a plain JVM)")):
        session = statistics.median(r["session_s"] for r in results[mode])
        ready = statistics.median(r["ready_s"] for r in results[mode])
        print(f"  {label:26}  session {session:5.2f}s  ready {ready:5.2f}s")


if __name__ == "__main__":
    main()
