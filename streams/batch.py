"""The micro-batch handler: one ``foreachBatch`` call writes every output of a batch.

``handle_batch`` is a module-level function so a test can call it with a
static DataFrame and a batch id. Each write is idempotent per (app id, batch
id), so a batch replayed after a crash writes nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import structlog
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from gatewatch.streams import outputs as out
from gatewatch.transforms.events import is_flagged, safety_events, token_events
from gatewatch.transforms.pipeline import (
    PROCESSED_CHANGE_TYPES,
    latest_per_request,
    parse_inference_rows,
    quarantine_view,
    requests_view,
)

log = structlog.get_logger("gatewatch.batch")

Clock = Callable[[], datetime]
BatchHook = Callable[["BatchContext", DataFrame, int, dict[str, Any]], None]


def utc_now() -> datetime:
    """The wall clock, in UTC (the default clock of a running job)."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class BatchContext:
    """What a batch handler needs: where to write, the contract, the clock."""

    source: str
    app_id: str
    requests: out.Table
    quarantine: out.Table
    contract: Any | None = None
    clock: Clock = utc_now
    hooks: tuple[BatchHook, ...] = field(default_factory=tuple)
    token_events: out.Table | None = None
    safety_events: out.Table | None = None
    on_metrics: Callable[[dict[str, Any]], None] | None = None


def apply_contract(parsed: DataFrame, contract: Any | None) -> DataFrame:
    """Check parsed rows with an outcome against the contract; failures are quarantined.

    Reads: parsed rows. Adds: ``failed_expectations`` (empty for rows that
    pass or were already set aside) and sets ``quarantine_reason`` to
    ``expectation_failed`` for rows that fail.
    """
    from pyspark.sql.types import ArrayType

    from gatewatch.schemas import FAILED_EXPECTATION

    lineage = parsed.withColumns(
        {"source_commit_version": F.col("_commit_version"), "source_commit_timestamp": F.col("_commit_timestamp")}
    )
    empty = F.array().cast(ArrayType(FAILED_EXPECTATION))
    if contract is None:
        return lineage.withColumn("failed_expectations", empty)
    from gatewatch.quarantine.contract import with_contract_results

    checked = lineage.transform(with_contract_results(contract))
    has_outcome = F.col("outcome").isNotNull()
    failed = has_outcome & (F.size("failed_expectations") > 0)
    return checked.withColumns(
        {
            "failed_expectations": F.when(has_outcome, F.col("failed_expectations")).otherwise(empty),
            "quarantine_reason": F.when(failed, F.lit("expectation_failed")).otherwise(F.col("quarantine_reason")),
            "outcome": F.when(failed, F.lit(None).cast("string")).otherwise(F.col("outcome")),
        }
    )


def process(batch: DataFrame, contract: Any | None) -> DataFrame:
    """Parse the processed change types of a batch and check them against the contract."""
    rows = batch.where(F.col("_change_type").isin(*PROCESSED_CHANGE_TYPES))
    return rows.transform(parse_inference_rows()).transform(
        lambda df: apply_contract(df, contract)
    )


def handle_batch(ctx: BatchContext, batch: DataFrame, batch_id: int) -> dict[str, Any]:
    """Write one micro-batch's requests and quarantine rows, once.

    Returns the batch metrics (also logged): rows per change type, per
    outcome and per quarantine reason, and the duration.
    """
    started = time.monotonic()
    now = ctx.clock()
    spark = batch.sparkSession
    timings: dict[str, float] = {}
    # The source is read once: the change feed rows are kept for the counts and the parse.
    raw = batch.persist(StorageLevel.MEMORY_AND_DISK)
    parsed = process(raw, ctx.contract).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        grouped = parsed.groupBy("_change_type", "outcome", "quarantine_reason").agg(
            F.count("*").alias("n"), *_event_counts()
        ).collect()
        counts = {(r["_change_type"], r["outcome"], r["quarantine_reason"]): r["n"] for r in grouped}
        events: dict[str, Any] = {k: sum(r[k] or 0 for r in grouped if r["outcome"] is not None)
                                  for k in ("token_events", "safety_events")}
        latest = max((r["event_time_us"] for r in grouped if r["event_time_us"] is not None), default=None)
        events["event_time"] = None if latest is None else _iso_micros(latest)
        timings["parse_s"] = time.monotonic() - started
        skipped = {
            r["_change_type"]: r["n"]
            for r in raw.where(~F.col("_change_type").isin(*PROCESSED_CHANGE_TYPES))
            .groupBy("_change_type").agg(F.count("*").alias("n")).collect()
        }
        requests = parsed.transform(requests_view())
        if any(k[0] == "update_postimage" and k[1] is not None for k in counts):
            latest = requests.transform(latest_per_request("source_commit_version"))
            with out.idempotent_dml(spark, ctx.app_id, batch_id):
                (
                    ctx.requests.delta(spark).alias("t")
                    .merge(latest.alias("s"), "t.databricks_request_id = s.databricks_request_id")
                    .whenMatchedUpdateAll()
                    .whenNotMatchedInsertAll()
                    .execute()
                )
                _merge_events(ctx, spark, latest)
        else:
            out.append(requests, ctx.requests, ctx.app_id, batch_id)
            _append_events(ctx, requests, batch_id)
        out.append(parsed.transform(quarantine_view(now)), ctx.quarantine, ctx.app_id, batch_id)
        timings["write_s"] = time.monotonic() - started - timings["parse_s"]
        metrics = _metrics(ctx, batch_id, counts, skipped, time.monotonic() - started)
        metrics.update(events)
        metrics.update({k: round(v, 3) for k, v in timings.items()})
        for hook in ctx.hooks:
            hook(ctx, parsed, batch_id, metrics)
    finally:
        parsed.unpersist()
        raw.unpersist()
    log.info("batch", **metrics)
    if ctx.on_metrics:
        ctx.on_metrics(metrics)
    return metrics


def _metrics(ctx: BatchContext, batch_id: int, counts: dict, skipped: dict, seconds: float) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for (_change, outcome, reason), n in counts.items():
        if outcome is not None:
            outcomes[outcome] = outcomes.get(outcome, 0) + n
        else:
            reasons[reason or "unknown_shape"] = reasons.get(reason or "unknown_shape", 0) + n
    processed = sum(counts.values())
    quarantined = sum(reasons.values())
    return {
        "source": ctx.source,
        "batch_id": batch_id,
        "rows": processed,
        "requests": sum(outcomes.values()),
        "quarantined": quarantined,
        "quarantine_rate": round(quarantined / processed, 4) if processed else 0.0,
        "outcomes": outcomes,
        "quarantine_reasons": reasons,
        "skipped_change_types": skipped,
        "duration_s": round(seconds, 3),
    }


def _iso_micros(us: int) -> str:
    """RFC 3339 UTC text, to the microsecond, of ``us`` microseconds since the epoch."""
    from datetime import timedelta

    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


def _event_counts() -> list:
    """Per-group aggregates: requests with known tokens, flagged safety categories, the latest event time."""
    known = F.col("input_tokens").isNotNull() | F.col("output_tokens").isNotNull() | F.col("total_tokens").isNotNull()
    return [
        F.max(F.unix_micros("request_time")).alias("event_time_us"),
        F.count(F.when(known, F.lit(1))).alias("token_events"),
        F.sum(F.coalesce(F.size(F.filter("safety_flags", is_flagged)), F.lit(0))).alias("safety_events"),
    ]


def _append_events(ctx: BatchContext, requests: DataFrame, batch_id: int) -> None:
    """Append the batch's token-usage and safety events, once per (app id, batch id)."""
    if ctx.token_events is not None:
        out.append(requests.transform(token_events), ctx.token_events, ctx.app_id, batch_id)
    if ctx.safety_events is not None:
        out.append(requests.transform(safety_events), ctx.safety_events, ctx.app_id, batch_id)


def _merge_events(ctx: BatchContext, spark, latest: DataFrame) -> None:
    """Upsert the events of a batch holding updated requests (inside the batch's idempotent-DML guard).

    Token events are keyed by request id, safety events by request id, stage
    and category, so an updated request replaces its events instead of
    adding a second set.
    """
    if ctx.token_events is not None:
        (
            ctx.token_events.delta(spark).alias("t")
            .merge(latest.transform(token_events).alias("s"), "t.databricks_request_id = s.databricks_request_id")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
    if ctx.safety_events is not None:
        keys = ("databricks_request_id", "stage", "category")
        (
            ctx.safety_events.delta(spark).alias("t")
            .merge(
                latest.transform(safety_events).dropDuplicates(list(keys)).alias("s"),
                " AND ".join(f"t.{k} <=> s.{k}" for k in keys),
            )
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
