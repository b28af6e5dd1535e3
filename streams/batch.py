"""The micro-batch handler: one ``foreachBatch`` call writes every output of a batch.

``handle_batch`` is a module-level function so a test can call it with a
static DataFrame and a batch id. Each write is idempotent per (app id, batch
id), so a batch replayed after a crash writes nothing twice.

A batch runs in four steps: parse (the change feed is read once and the
parsed rows are kept; one small collect gives the batch's figures), the
stages' ``before_writes`` (alerting moves its clock and plans its
evaluation), the writes (requests, and quarantine when it has rows, with
each stage's ticket ``writes``, the alerting's evaluation and sends among
them, in parallel), the stages' ``after_writes`` and then the hooks. A
stage's ``abort`` runs when the batch fails after its ``before_writes``.
The token-usage and safety events of a running job are not written here:
their own query derives them from requests on a cadence (``streams.events``).
A run with ``available_now`` writes them here, with the requests
(``events_with_requests``).

A batch may hold the rows of several sources (one query reads several
change feeds): the figures are kept per source as well (``sources``).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import structlog
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gatewatch.streams import outputs as out
from gatewatch.streams.spark import in_parallel
from gatewatch.transforms import staging as S
from gatewatch.transforms.events import safety_events, token_events
from gatewatch.schemas import FAILED_EXPECTATION
from gatewatch.transforms.pipeline import (
    PROCESSED_CHANGE_TYPES,
    latest_per_request,
    payloads_only_set_aside,
    parse_inference_rows,
    quarantine_view,
    requests_view,
)

log = structlog.get_logger("gatewatch.batch")

Clock = Callable[[], datetime]
Append = tuple[str, out.Table, int]
"""An append: the role of its frame in ``BatchFrames``, the table, its row count."""
BatchHook = Callable[["BatchContext", DataFrame, int, dict[str, Any]], None]
"""Called after a batch's writes with the context, the parsed rows, the batch id and the metrics."""


class BatchStage(Protocol):
    """Work around a batch's writes (alerting). The ticket may carry ``writes``, run alongside the batch's writes."""

    def before_writes(self, ctx: BatchContext, parsed: DataFrame, batch_id: int, metrics: dict[str, Any], *,
                      replaces_rows: bool, frames: Mapping[str, DataFrame]) -> Any: ...

    def after_writes(self, ctx: BatchContext, parsed: DataFrame, batch_id: int, metrics: dict[str, Any],
                     ticket: Any) -> None: ...

    def abort(self, ticket: Any) -> None: ...


def utc_now() -> datetime:
    """The wall clock, in UTC (the default clock of a running job)."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class BatchContext:
    """What a batch handler needs: where to write, the contract, the clock."""

    source: str
    """The query's name: its one source's name, or its group's."""
    app_id: str
    requests: out.Table
    quarantine: out.Table
    contract: Any | None = None
    clock: Clock = utc_now
    hooks: tuple[BatchHook, ...] = field(default_factory=tuple)
    stages: tuple[BatchStage, ...] = field(default_factory=tuple)
    on_metrics: Callable[[dict[str, Any]], None] | None = None
    source_names: Mapping[str, str] = field(default_factory=dict)
    """The source name of each ``source_table`` the query reads (figures per source)."""
    token_events: out.Table | None = None
    safety_events: out.Table | None = None
    events_inline: bool = False
    """Write each batch's token-usage and safety events with its requests (a run with ``available_now``) rather
    than leave them to the events query; needs both event tables. See ``events_with_requests``."""


def apply_contract(parsed: DataFrame, contract: Any | None) -> DataFrame:
    """Check parsed rows with an outcome against the contract; failures are quarantined.

    Reads: parsed rows. Adds: ``source_commit_version`` and
    ``source_commit_timestamp`` (lineage), ``failed_expectations`` (empty for
    rows that pass or were already set aside) and sets ``quarantine_reason``
    to ``expectation_failed`` for rows that fail.
    """
    if contract is not None:
        from gatewatch.quarantine.contract import require_columns

        require_columns(parsed, contract)
    return parsed.transform(_contract_steps(contract))


@functools.cache
def _contract_steps(contract: Any | None) -> S.Steps:
    """The contract's steps, built once per contract (a contract is hashed by identity)."""
    return S.Steps(lambda: _contract_step_list(contract))


def _contract_step_list(contract: Any | None) -> list[S.Step]:
    from pyspark.sql.types import ArrayType

    lineage = S.with_columns(
        {"source_commit_version": F.col("_commit_version"), "source_commit_timestamp": F.col("_commit_timestamp")}
    )
    empty = F.array().cast(ArrayType(FAILED_EXPECTATION))
    if contract is None:
        return [lineage, S.with_columns({"failed_expectations": empty})]
    has_outcome = F.col("outcome").isNotNull()
    failed = has_outcome & (F.size("failed_expectations") > 0)
    return [
        lineage,
        S.with_columns({"failed_expectations": contract.failed_expectations}),
        S.with_columns(
            {
                "failed_expectations": F.when(has_outcome, F.col("failed_expectations")).otherwise(empty),
                "quarantine_reason": F.when(failed, F.lit("expectation_failed")).otherwise(F.col("quarantine_reason")),
                "outcome": F.when(failed, F.lit(None).cast("string")).otherwise(F.col("outcome")),
            }
        ),
    ]


def process(batch: DataFrame, contract: Any | None) -> DataFrame:
    """Parse the processed change types of a batch and check them against the contract."""
    rows = batch.where(processed_rows())
    return rows.transform(parse_inference_rows()).transform(
        lambda df: apply_contract(df, contract)
    )


def processed_rows() -> Column:
    """True for the change types that are parsed and written (inserts and update post-images)."""
    return F.col("_change_type").isin(*PROCESSED_CHANGE_TYPES)


def process_all(batch: DataFrame, contract: Any | None) -> DataFrame:
    """Parse every row of a batch, whatever its change type, and check it against the contract.

    Deletes and update pre-images are parsed too (they are few) so the batch
    is read once and counted in one pass; only ``processed_rows`` are written.
    """
    return batch.transform(parse_inference_rows()).transform(lambda df: apply_contract(df, contract))


class BatchFrames(Mapping[str, DataFrame]):
    """What a batch writes to each output table, by role, each frame built when first asked for.

    Roles: ``requests``, ``quarantine``, ``token_events``, ``safety_events``.
    Building a frame plans its projection (a fixed cost per batch), so a
    frame nobody asks for costs nothing.
    """

    def __init__(self, parsed: DataFrame, now: datetime) -> None:
        self.session = parsed.sparkSession
        written = parsed.where(processed_rows())
        self._build: dict[str, Callable[[], DataFrame]] = {
            "requests": lambda: written.transform(requests_view()),
            "quarantine": lambda: written.transform(quarantine_view(now)),
            "token_events": lambda: self["requests"].transform(token_events),
            "safety_events": lambda: self["requests"].transform(safety_events),
        }
        self._built: dict[str, DataFrame] = {}
        self._lock = threading.RLock()  # the writes ask from several threads

    def __getitem__(self, role: str) -> DataFrame:
        with self._lock:
            if role not in self._built:
                self._built[role] = self._build[role]()
            return self._built[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._build)

    def __len__(self) -> int:
        return len(self._build)


def fewer_tasks(batch: DataFrame) -> DataFrame:
    """``batch`` in at most ``spark.sql.shuffle.partitions`` partitions (no shuffle).

    A batch of several sources is a union of their change feeds, at least
    one partition per commit file: eight sources' small commits were parsed
    in eight Python tasks, each paying its fixed cost (parse of a batch of
    8 x 25 rows on 2 cores: 1.3 s, 0.8 s in two tasks). A partition count
    the session does not give as a number (``auto``) leaves the batch as it is.
    """
    value = batch.sparkSession.conf.get("spark.sql.shuffle.partitions", None)
    try:
        limit = int(value)
    except (TypeError, ValueError):
        return batch
    return batch.coalesce(limit) if limit > 0 else batch


def materialize(df: DataFrame) -> DataFrame:
    """Keep ``df``'s rows (memory, spilling to disk) once computed: the batch's later queries read them, not the feed.

    The rows are computed by the first query over the result (the batch's
    figures) and kept until ``release``. ``persist``/``unpersist`` are the
    same calls on classic Spark and over Spark Connect.
    """
    return df.persist(StorageLevel.MEMORY_AND_DISK)


def release(df: DataFrame) -> None:
    """Free the rows ``materialize`` kept."""
    df.unpersist()


def handle_batch(ctx: BatchContext, batch: DataFrame, batch_id: int) -> dict[str, Any]:
    """Write one micro-batch's requests and quarantine rows, once.

    Returns the batch metrics (also logged): rows per change type, per
    outcome and per quarantine reason, per source, and the duration.
    """
    started = time.monotonic()
    now = ctx.clock()
    timings: dict[str, float] = {}
    # The change feed is read once: every row is parsed and kept for the counts and the writes.
    parsed = materialize(process_all(fewer_tasks(batch), ctx.contract).transform(payloads_only_set_aside))
    try:
        grouped = parsed.groupBy("source_table", "_change_type", "outcome", "quarantine_reason").agg(
            F.count("*").alias("n"), *_event_counts()
        ).collect()
        processed = [r for r in grouped if r["_change_type"] in PROCESSED_CHANGE_TYPES]
        counts: dict[tuple, int] = {}
        for r in processed:
            key = (r["_change_type"], r["outcome"], r["quarantine_reason"])
            counts[key] = counts.get(key, 0) + r["n"]
        skipped: dict[str, int] = {}
        for r in grouped:
            if r["_change_type"] not in PROCESSED_CHANGE_TYPES:
                skipped[r["_change_type"]] = skipped.get(r["_change_type"], 0) + r["n"]
        events: dict[str, Any] = {k: sum(r[k] or 0 for r in processed if r["outcome"] is not None)
                                  for k in ("token_events", "safety_events")}
        latest = max((r["event_time_us"] for r in processed if r["event_time_us"] is not None), default=None)
        events["event_time"] = None if latest is None else _iso_micros(latest)
        timings["parse_s"] = time.monotonic() - started
        frames = BatchFrames(parsed, now)
        quarantined = sum(n for k, n in counts.items() if k[1] is None)
        replaces = any(k[0] == "update_postimage" and k[1] is not None for k in counts)
        metrics = _metrics(ctx, batch_id, counts, skipped, time.monotonic() - started)
        metrics.update(events)
        if len(ctx.source_names) > 1 or (ctx.source_names and ctx.source not in ctx.source_names.values()):
            metrics["sources"] = _per_source(ctx, processed, grouped)
        tickets: list[tuple[BatchStage, Any]] = []
        try:
            for stage in ctx.stages:
                tickets.append((stage, stage.before_writes(ctx, parsed, batch_id, metrics, replaces_rows=replaces,
                                                            frames=frames)))
            timings["alerts_s"] = time.monotonic() - started - timings["parse_s"]
            extra = [w for _, t in tickets for w in getattr(t, "writes", ())]
            requests = sum(n for k, n in counts.items() if k[1] is not None)
            inline = False
            if replaces:
                latest_rows = frames["requests"].transform(latest_per_request("source_commit_version"))
                # sets each request to its latest row: a retried batch merging the same rows changes nothing
                ctx.requests.merge(latest_rows, "t.databricks_request_id = s.databricks_request_id")
                appends = [("quarantine", ctx.quarantine, quarantined)]
            else:
                inline = requests > 0 and events_with_requests(ctx, parsed.sparkSession, batch_id)
                appends = [("requests", ctx.requests, requests), ("quarantine", ctx.quarantine, quarantined)]
                if inline:
                    appends += [("token_events", ctx.token_events, events["token_events"]),
                                ("safety_events", ctx.safety_events, events["safety_events"])]
            metrics["events_inline"] = inline
            _append_all(ctx, frames, appends, batch_id, extra, events=inline)
            timings["write_s"] = time.monotonic() - started - timings["parse_s"] - timings["alerts_s"]
            metrics["duration_s"] = round(time.monotonic() - started, 3)
            metrics.update({k: round(v, 3) for k, v in timings.items()})
            for stage, ticket in tickets:
                stage.after_writes(ctx, parsed, batch_id, metrics, ticket)
        except BaseException:
            for stage, ticket in tickets:
                stage.abort(ticket)
            raise
        for hook in ctx.hooks:
            hook(ctx, parsed, batch_id, metrics)
    finally:
        release(parsed)
    log.info("batch", **metrics)
    if ctx.on_metrics:
        ctx.on_metrics(metrics)
    return metrics


def _per_source(ctx: BatchContext, processed: list, grouped: list) -> dict[str, dict[str, int]]:
    """Rows, requests, quarantined and skipped rows (deletes, pre-images) of each source the batch read."""
    figures = {name: {"rows": 0, "requests": 0, "quarantined": 0, "skipped": 0} for name in ctx.source_names.values()}
    for r in grouped:
        name = ctx.source_names.get(r["source_table"], r["source_table"])
        f = figures.setdefault(name, {"rows": 0, "requests": 0, "quarantined": 0, "skipped": 0})
        if r["_change_type"] not in PROCESSED_CHANGE_TYPES:
            f["skipped"] += r["n"]
            continue
        f["rows"] += r["n"]
        f["requests" if r["outcome"] is not None else "quarantined"] += r["n"]
    return figures


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
    """Per-group aggregates: requests with known tokens, flagged safety categories, the latest event time.

    The flags are counted by the parse (``_flagged``): a higher-order function over ``safety_flags`` here is
    interpreted, row by row, and kept the whole aggregate out of generated code.
    """
    known = F.col("input_tokens").isNotNull() | F.col("output_tokens").isNotNull() | F.col("total_tokens").isNotNull()
    return [
        F.max(F.unix_micros("request_time")).alias("event_time_us"),
        F.count(F.when(known, F.lit(1))).alias("token_events"),
        F.sum(F.coalesce(F.col("_flagged"), F.lit(0))).alias("safety_events"),
    ]


def events_with_requests(ctx: BatchContext, spark: Any, batch_id: int) -> bool:
    """Whether batch ``batch_id``, which appends requests, writes their token-usage and safety events itself.

    The choice is recorded in the batch's requests commit (``batch_marker``
    with ``events``) and the events query skips the changes of a commit so
    marked, so each request's events are written once, by one of the two.
    A new batch follows ``ctx.events_inline``. A batch that may have run
    before (the one a restart re-runs) keeps what its first run chose, in
    either mode: marked, it writes its events (each append is once per
    batch, so only those its first run missed); written unmarked, it leaves
    them to the events query; not yet written, it writes them itself if its
    first run had already appended some of them (the appends of a batch run
    in parallel), else it follows ``ctx.events_inline``.
    """
    if ctx.token_events is None or ctx.safety_events is None:
        return False
    if not out.may_be_written(ctx.requests, ctx.app_id, batch_id):
        return ctx.events_inline
    marker = out.written_marker(spark, ctx.requests, ctx.app_id, batch_id)
    if marker is not None:
        return out.marks_events(marker)
    if ctx.events_inline:
        return True
    return any(out.written_marker(spark, t, ctx.app_id, batch_id) is not None
               for t in (ctx.token_events, ctx.safety_events))


def _append_all(ctx: BatchContext, frames: Mapping[str, DataFrame], appends: list[Append], batch_id: int,
                extra: list[Callable[[], None]] = (), *, events: bool = False) -> None:
    """Append to each table once per (app id, batch id), the tables (and ``extra`` writes) in parallel.

    Each frame is built in the thread that writes it. An append with no rows is skipped (there is nothing to write twice).
    Running them in parallel overlaps their fixed costs (the write job, the
    commit, its post-commit hooks); one that fails fails the batch after the
    others finished (the retried batch skips the appends that committed).
    """
    todo = [functools.partial(_append, frames, role, table, ctx.app_id, batch_id, rows, events and role == "requests")
            for role, table, rows in appends if rows]
    in_parallel(frames.session, *todo, *extra, name="gatewatch-append")


def _append(frames: Mapping[str, DataFrame], role: str, table: out.Table, app_id: str, batch_id: int,
            rows: int, events: bool) -> None:
    out.append(frames[role], table, app_id, batch_id, rows, events=events)
