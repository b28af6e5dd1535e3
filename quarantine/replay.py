"""Replay open quarantined rows through the current parsers and contract.

A replay reads the open rows of the quarantine table (the raw inference
rows, kept untouched), parses them again with the parsers registered now
(built-ins and ``parsers.modules``) and checks them against the contract:

- rows that now pass are MERGEd into requests by ``databricks_request_id``
  (inserted only when no row of that request is there yet), then marked
  ``resolved`` with the parser version that resolved them;
- rows that still fail stay ``open`` with a refreshed reason, failed
  expectations, fingerprint and parser version.

Both steps are MERGEs keyed by the request, so a replay run twice, or killed
between the two steps and run again, inserts nothing twice and loses
nothing. A dry run computes the same split and writes nothing.

``summary`` groups the open rows by reason and shape fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import structlog
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from gatewatch.errors import ConfigError
from gatewatch.schemas import CANONICAL_INPUT, QUARANTINE_REASONS
from gatewatch.settings import Settings
from gatewatch.streams.delta_sql import update_set

log = structlog.get_logger("gatewatch.replay")

CANONICAL = [f.name for f in CANONICAL_INPUT.fields]
_KEY = "t.databricks_request_id = s.databricks_request_id AND t._commit_version = s._commit_version"


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did (or, dry, would do), per shape fingerprint."""

    dry_run: bool
    considered: int
    resolved: int
    still_open: int
    by_fingerprint: list[dict[str, Any]]


def open_rows(quarantine: DataFrame, *, fingerprint: str | None = None, reason: str | None = None) -> DataFrame:
    """Open quarantined rows, optionally of one fingerprint or reason."""
    rows = quarantine.where(F.col("status") == "open")
    if fingerprint:
        rows = rows.where(F.col("shape_fingerprint") == fingerprint)
    if reason:
        rows = rows.where(F.col("reason") == reason)
    return rows


def summary(spark: SparkSession, settings: Settings) -> list[dict[str, Any]]:
    """Open rows by reason and fingerprint: counts, first and last seen, sample ids."""
    quarantine = _tables(settings)["quarantine"].read(spark)
    grouped = (
        open_rows(quarantine)
        .groupBy("reason", "shape_fingerprint")
        .agg(
            F.count("*").alias("rows"),
            F.min("quarantined_at").alias("first_seen"),
            F.max("quarantined_at").alias("last_seen"),
            F.slice(F.sort_array(F.collect_set("databricks_request_id")), 1, 3).alias("sample_ids"),
            F.first("shape", ignorenulls=True).alias("shape"),
            F.collect_set("source_table").alias("sources"),
        )
        .orderBy(F.desc("rows"), "reason", "shape_fingerprint")
    )
    return [r.asDict() for r in grouped.collect()]


def replay(
    spark: SparkSession,
    settings: Settings,
    *,
    dry_run: bool = False,
    fingerprint: str | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> ReplayResult:
    """Re-run open quarantined rows; merge those that pass, refresh those that fail."""
    from gatewatch.streams.batch import process
    from gatewatch.quarantine.contract import load_contract
    from gatewatch.streams.parsers import load_parser_modules
    from gatewatch.transforms.pipeline import quarantine_view, requests_view

    if reason and reason not in QUARANTINE_REASONS:
        raise ConfigError("--reason", f"one of {', '.join(QUARANTINE_REASONS)}", reason)
    load_parser_modules(settings)
    now = now or datetime.now(timezone.utc)
    tables = _tables(settings)
    contract = load_contract(settings)
    candidates = open_rows(tables["quarantine"].read(spark), fingerprint=fingerprint, reason=reason)
    old = candidates.select(*CANONICAL, F.col("shape_fingerprint").alias("_old_fingerprint"))
    reparsed = process(old, contract).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # A row without a request id cannot be merged exactly once: it stays open.
        passes = F.col("outcome").isNotNull() & F.col("databricks_request_id").isNotNull()
        flagged = reparsed.withColumn("_passes", passes)
        by_fp = [
            r.asDict()
            for r in flagged.groupBy(F.col("_old_fingerprint").alias("fingerprint"))
            .agg(
                F.count("*").alias("rows"),
                F.sum(F.col("_passes").cast("int")).alias("would_resolve"),
                F.sort_array(F.collect_set(F.when(~F.col("_passes"), F.coalesce("quarantine_reason", F.lit("unknown_shape"))))).alias("still_failing_as"),
                F.first(F.when(F.col("_passes"), F.col("parser_version")), ignorenulls=True).alias("parser"),
            )
            .orderBy(F.desc("rows"))
            .collect()
        ]
        considered = sum(r["rows"] for r in by_fp)
        resolved = sum(r["would_resolve"] or 0 for r in by_fp)
        if not dry_run and considered:
            _merge_requests(spark, tables["requests"], flagged.where(F.col("_passes")).transform(requests_view()))
            _update_quarantine(spark, tables["quarantine"], flagged, now, quarantine_view(now))
    finally:
        reparsed.unpersist()
    result = ReplayResult(dry_run, considered, resolved, considered - resolved, by_fp)
    log.info("replay", dry_run=dry_run, considered=considered, resolved=resolved, still_open=considered - resolved)
    return result


def _merge_requests(spark: SparkSession, requests, rows: DataFrame) -> None:
    requests.merge(rows.dropDuplicates(["databricks_request_id"]), "t.databricks_request_id = s.databricks_request_id",
                   matched=None)


def _update_quarantine(spark: SparkSession, quarantine, flagged: DataFrame, now: datetime, view) -> None:
    fixed = (
        flagged.where(F.col("_passes"))
        .select("databricks_request_id", "_commit_version", F.col("parser_version").alias("resolved_by"),
                F.lit(now).cast("timestamp").alias("resolved_at"))
        .dropDuplicates(["databricks_request_id", "_commit_version"])
    )
    quarantine.merge(fixed, f"{_KEY} AND t.status = 'open'", not_matched=None,
                     matched="UPDATE SET t.status = 'resolved', t.resolved_by_parser_version = s.resolved_by, "
                             "t.resolved_at = s.resolved_at")
    refreshed = (
        flagged.where(~F.col("_passes"))
        .withColumn("quarantine_reason", F.coalesce("quarantine_reason", F.lit("unknown_shape")))
        .transform(view)
        .select("databricks_request_id", "_commit_version", "reason", "failed_expectations", "shape",
                "shape_fingerprint", "parser_version")
        .dropDuplicates(["databricks_request_id", "_commit_version"])
    )
    quarantine.merge(refreshed, f"{_KEY.replace(' = s.databricks', ' <=> s.databricks')} AND t.status = 'open'",
                     matched=update_set(("reason", "failed_expectations", "shape", "shape_fingerprint",
                                         "parser_version")), not_matched=None)


def _tables(settings: Settings) -> dict[str, Any]:
    from gatewatch.streams import outputs

    return {
        "requests": outputs.table(settings.output, settings.output.requests_table),
        "quarantine": outputs.table(settings.output, settings.output.quarantine_table),
    }
