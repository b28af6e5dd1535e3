"""The comparison for ``throughput.py``: what a user would write instead, a stock Spark job.

It reads the inference table's change feed (``availableNow``, the same
micro-batch size as gatewatch's run), keeps inserts, extracts the request
id, status, model and token counts with ``get_json_object`` and appends
them to one Delta table through Delta's own streaming sink (exactly once
per batch by its checkpoint). No outcome, no streams, no safety filters, no
quarantine, no alerts: the floor a hand-written job sets. It starts a plain
JVM, without the class archive ``gatewatch setup`` makes for gatewatch, with the JVM's
default garbage collector and JIT thresholds.

    python bench/stock_job.py SOURCE OUTPUT CHECKPOINT [FILES_PER_TRIGGER]
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> None:
    started = time.monotonic()
    from pyspark.sql import functions as F

    from gatewatch.settings import SparkSettings
    from gatewatch.streams.spark import build_spark

    source, output, checkpoint = argv[:3]
    files = int(argv[3]) if len(argv) > 3 else 1000
    # a hand-written job starts a plain JVM: no class archive (gatewatch setup makes one for gatewatch), the default
    # GC and JIT thresholds
    spark = build_spark(SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="4g", class_archive=False,
                                      parallel_gc=False, jit_threshold_scaling=1),
                        app_name="stock")
    feed = (spark.readStream.format("delta").option("readChangeFeed", "true").option("startingVersion", 0)
            .option("maxFilesPerTrigger", str(files)).load(source))
    usage = "$.usage"
    tokens = (
        feed.where(F.col("_change_type") == "insert")
        .select(
            "databricks_request_id", "request_time", "status_code",
            F.get_json_object("response", "$.model").alias("model"),
            F.get_json_object("response", f"{usage}.prompt_tokens").cast("long").alias("input_tokens"),
            F.get_json_object("response", f"{usage}.completion_tokens").cast("long").alias("output_tokens"),
            F.get_json_object("response", f"{usage}.total_tokens").cast("long").alias("total_tokens"),
        )
    )
    query = (tokens.writeStream.format("delta").option("checkpointLocation", checkpoint)
             .trigger(availableNow=True).start(output))
    query.awaitTermination()
    rows = spark.read.format("delta").load(output).count()
    spark.stop()
    print(json.dumps({"rows": rows, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main(sys.argv[1:])
