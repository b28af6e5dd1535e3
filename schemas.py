"""The column contracts between the stages: canonical input, requests, quarantine."""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

OUTCOMES: tuple[str, ...] = (
    "predict_ok",
    "predict_blocked",
    "stream_ok",
    "stream_blocked_immediate",
    "stream_blocked_partial",
    "error",
)
"""The known outcomes; every other shape is quarantined as ``unknown_shape``."""

QUARANTINE_REASONS: tuple[str, ...] = ("json_parse_error", "unknown_shape", "expectation_failed")

CDF_COLUMNS: tuple[str, ...] = ("_change_type", "_commit_version", "_commit_timestamp")

SAFETY_FLAG = StructType(
    [
        StructField("stage", StringType()),
        StructField("category", StringType()),
        StructField("severity", StringType()),
        StructField("filtered", BooleanType()),
        StructField("detected", BooleanType()),
    ]
)

SERVICE_POLICY = StructType(
    [
        StructField("name", StringType()),
        StructField("action", StringType()),
        StructField("phase", StringType()),
        StructField("reason", StringType()),
    ]
)
"""The Unity AI Gateway service policy a response names (``databricks_service_policy``), as logged."""

GATEWAY_TABLE = StructType(
    [
        StructField("databricks_request_id", StringType()),
        StructField("client_request_id", StringType()),
        StructField("request_date", DateType()),
        StructField("request_time", TimestampType()),
        StructField("status_code", IntegerType()),
        StructField("sampling_fraction", DoubleType()),
        StructField("execution_duration_ms", LongType()),
        StructField("request", StringType()),
        StructField("response", StringType()),
        StructField("served_entity_id", StringType()),
        StructField("logging_error_codes", ArrayType(StringType())),
        StructField("requester", StringType()),
    ]
)
"""The AI Gateway inference table's columns, as Databricks creates it (the canonical input starts with them)."""

CANONICAL_INPUT = StructType(
    [
        *GATEWAY_TABLE.fields,
        StructField("endpoint", StringType()),
        StructField("request_metadata", MapType(StringType(), StringType())),
        StructField("source_table", StringType()),
        StructField("_change_type", StringType()),
        StructField("_commit_version", LongType()),
        StructField("_commit_timestamp", TimestampType()),
    ]
)
"""What the source adapter emits for every supported inference-table schema."""

REQUESTS = StructType(
    [
        StructField("databricks_request_id", StringType()),
        StructField("client_request_id", StringType()),
        StructField("request_time", TimestampType()),
        StructField("request_date", DateType()),
        StructField("endpoint", StringType()),
        StructField("served_entity_id", StringType()),
        StructField("requester", StringType()),
        StructField("status_code", IntegerType()),
        StructField("execution_duration_ms", LongType()),
        StructField("outcome", StringType()),
        StructField("is_stream", BooleanType()),
        StructField("model", StringType()),
        StructField("input_tokens", LongType()),
        StructField("output_tokens", LongType()),
        StructField("total_tokens", LongType()),
        StructField("finish_reason", StringType()),
        StructField("blocked", BooleanType()),
        StructField("blocked_stage", StringType()),
        StructField("safety_flags", ArrayType(SAFETY_FLAG)),
        StructField("service_policy", SERVICE_POLICY),
        StructField("error_type", StringType()),
        StructField("error_code", StringType()),
        StructField("error_message", StringType()),
        StructField("trace_id", StringType()),
        StructField("logging_error_codes", ArrayType(StringType())),
        StructField("parser", StringType()),
        StructField("parser_version", StringType()),
        StructField("source_table", StringType()),
        StructField("source_commit_version", LongType()),
        StructField("source_commit_timestamp", TimestampType()),
    ]
)
"""The gold table: one typed row per request (DESIGN.md, "The output contract")."""

REQUEST_COLUMNS: tuple[str, ...] = tuple(f.name for f in REQUESTS.fields)

PARSED_COLUMNS: tuple[str, ...] = (
    "outcome",
    "is_stream",
    "model",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "finish_reason",
    "blocked",
    "blocked_stage",
    "safety_flags",
    "service_policy",
    "error_type",
    "error_code",
    "error_message",
    "trace_id",
)
"""The columns a parser adds; the rest of REQUESTS is carried from the input row."""

FAILED_EXPECTATION = StructType(
    [
        StructField("id", StringType()),
        StructField("type", StringType()),
        StructField("column", StringType()),
    ]
)

QUARANTINE_EXTRA = StructType(
    [
        StructField("reason", StringType()),
        StructField("failed_expectations", ArrayType(FAILED_EXPECTATION)),
        StructField("shape_fingerprint", StringType()),
        StructField("shape", StringType()),
        StructField("outcome", StringType()),
        StructField("parser_version", StringType()),
        StructField("quarantined_at", TimestampType()),
        StructField("status", StringType()),
        StructField("resolved_by_parser_version", StringType()),
        StructField("resolved_at", TimestampType()),
    ]
)

QUARANTINE = StructType(list(CANONICAL_INPUT.fields) + list(QUARANTINE_EXTRA.fields))
"""The raw canonical row untouched, plus why it was set aside."""

TOKEN_EVENTS = StructType(
    [
        StructField("databricks_request_id", StringType()),
        StructField("request_time", TimestampType()),
        StructField("endpoint", StringType()),
        StructField("served_entity_id", StringType()),
        StructField("requester", StringType()),
        StructField("model", StringType()),
        StructField("outcome", StringType()),
        StructField("input_tokens", LongType()),
        StructField("output_tokens", LongType()),
        StructField("total_tokens", LongType()),
        StructField("source_table", StringType()),
        StructField("source_commit_version", LongType()),
    ]
)
"""One token-usage event per request whose token counts are known."""

SAFETY_EVENTS = StructType(
    [
        StructField("databricks_request_id", StringType()),
        StructField("request_time", TimestampType()),
        StructField("endpoint", StringType()),
        StructField("served_entity_id", StringType()),
        StructField("requester", StringType()),
        StructField("model", StringType()),
        StructField("outcome", StringType()),
        StructField("blocked", BooleanType()),
        StructField("stage", StringType()),
        StructField("category", StringType()),
        StructField("severity", StringType()),
        StructField("filtered", BooleanType()),
        StructField("detected", BooleanType()),
        StructField("source_table", StringType()),
        StructField("source_commit_version", LongType()),
    ]
)
"""One safety event per flagged filter category of a request (``filtered`` or ``detected``)."""

ALERTS = StructType(
    [
        StructField("dedup_key", StringType()),
        StructField("rule", StringType()),
        StructField("group", MapType(StringType(), StringType())),
        StructField("status", StringType()),
        StructField("severity", StringType()),
        StructField("summary", StringType()),
        StructField("value", DoubleType()),
        StructField("threshold", DoubleType()),
        StructField("counts", MapType(StringType(), DoubleType())),
        StructField("window_start", TimestampType()),
        StructField("window_end", TimestampType()),
        StructField("started_at", TimestampType()),
        StructField("ended_at", TimestampType()),
        StructField("updated_at", TimestampType()),
        StructField("event_id", StringType()),
        StructField("alert", StringType()),
    ]
)
"""Alert state: one row per dedup key (rule and group), firing or resolved; ``alert`` is its JSON."""

ALERT_OUTBOX = StructType(
    [
        StructField("event_id", StringType()),
        StructField("sink", StringType()),
        StructField("dedup_key", StringType()),
        StructField("rule", StringType()),
        StructField("status", StringType()),
        StructField("alert", StringType()),
        StructField("created_at", TimestampType()),
        StructField("delivery_status", StringType()),
        StructField("attempts", IntegerType()),
        StructField("delivered_at", TimestampType()),
        StructField("last_error", StringType()),
    ]
)
"""One row per alert transition (fire or resolve) and sink: ``pending`` until ``delivered`` or ``failed``."""

ALERT_DELIVERIES = StructType(
    [
        StructField("event_id", StringType()),
        StructField("dedup_key", StringType()),
        StructField("sink", StringType()),
        StructField("status", StringType()),
        StructField("kind", StringType()),
        StructField("attempt", IntegerType()),
        StructField("ok", BooleanType()),
        StructField("permanent", BooleanType()),
        StructField("requests", IntegerType()),
        StructField("http_status", IntegerType()),
        StructField("error", StringType()),
        StructField("response_body", StringType()),
        StructField("duration_ms", DoubleType()),
        StructField("at", TimestampType()),
    ]
)
"""Every delivery attempt: ``kind`` is ``outbox`` (a transition) or ``resend`` (Alertmanager keep-alive)."""
