"""What the streaming tests share: settings for one source, committing generated rows, counting what landed."""

from __future__ import annotations

from pathlib import Path

from gatewatch.settings import OutputSettings, Settings, SourceSettings, TriggerSettings
from gatewatch.traffic import generate as traffic


def settings_for(source: Path, out: Path, ckpt: Path, **trigger) -> Settings:
    """One chat-prod source, outputs and checkpoints in folders; a 1 s trigger unless ``trigger`` says otherwise."""
    return Settings(
        sources=(SourceSettings(table=str(source), endpoint="chat-prod"),),
        output=OutputSettings(location=str(out)),
        checkpoint_root=str(ckpt),
        trigger=TriggerSettings(**(trigger or {"mode": "processing_time", "interval": "1 second"})),
    )


def landed(spark, out: Path) -> tuple[list[str], list[str]]:
    """The request ids in the requests table and in the quarantine table."""
    requests = [r[0] for r in spark.read.format("delta").load(str(out / "requests")).select("databricks_request_id").collect()]
    quarantined = [
        r[0] for r in spark.read.format("delta").load(str(out / "quarantine")).select("databricks_request_id").collect()
    ]
    return requests, quarantined


def assert_each_once(spark, out: Path, ids: set[str]) -> None:
    """Every id in ``ids`` is in exactly one of requests or quarantine, once, and nothing else is."""
    requests, quarantined = landed(spark, out)
    got = requests + quarantined
    assert len(got) == len(ids), f"{len(got)} rows landed for {len(ids)} inserts"
    assert set(got) == ids
    assert len(set(requests)) == len(requests), "a request was written twice"
    assert not set(requests) & set(quarantined), "a row is both in requests and in quarantine"


def commit(spark, table: Path, rows) -> set[str]:
    """Append generated rows to the table in one commit; return their request ids."""
    traffic.write_rows(spark, str(table), [g.row for g in rows])
    return {g.row["databricks_request_id"] for g in rows}


def assert_events_once(spark, out: Path) -> None:
    """Every request's events are in the event tables once: a token event per request with a known count, a
    safety event per flagged safety flag, none twice and none of a request that is not there."""
    from pyspark.sql import functions as F

    from gatewatch.transforms.events import is_flagged

    requests = spark.read.format("delta").load(str(out / "requests"))
    known = F.col("input_tokens").isNotNull() | F.col("output_tokens").isNotNull() | F.col("total_tokens").isNotNull()
    expected = sorted(r[0] for r in requests.where(known).select("databricks_request_id").collect())
    tokens = sorted(r[0] for r in spark.read.format("delta").load(str(out / "token_usage_events"))
                    .select("databricks_request_id").collect())
    assert expected and tokens == expected, f"{len(tokens)} token events for {len(expected)} requests with tokens"
    flags = (requests.select("databricks_request_id", F.explode("safety_flags").alias("f")).where(is_flagged(F.col("f")))
             .select("databricks_request_id", "f.stage", "f.category"))
    safety = spark.read.format("delta").load(str(out / "safety_events")).select("databricks_request_id", "stage",
                                                                                 "category")
    want, got = sorted(map(tuple, flags.collect())), sorted(map(tuple, safety.collect()))
    assert want and got == want, f"{len(got)} safety events for {len(want)} flagged safety flags"

