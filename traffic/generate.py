"""Seeded synthetic inference traffic, with the ground truth of every row.

Used by the demo, the benchmark and the accuracy test. ``generate`` returns
rows of an AI Gateway inference table (``GATEWAY_SCHEMA``) in the shapes the
documented formats give: chat completions from a foundation model and from
Azure OpenAI (prompt and completion filter results), ResponsesAgent
responses (top-level usage, or a Databricks trace), streamed chat chunks
(Azure's first frame, usage absent, last or a running total, a content filter
cutting the stream at once or midway), Responses-API event streams
(completed, incomplete for a content filter, failed), gateway error bodies
whose ``message`` is the provider's JSON, 429/5xx with a null response,
payloads too large to log, and malformed rows. Each row comes with a
``Truth``: what a correct parser must find in it.

The endpoint is not a column of the inference table (the job takes it from
config), so each row's ``Truth.endpoint`` names the endpoint whose behaviour
was used for it; ``profile_of`` says which behaviour a name gets.

``to_legacy`` gives the same rows in the legacy payload table schema and
``to_unity_gateway`` in the Unity AI Gateway inference table schema;
``create_inference_table`` and ``write_rows`` make and fill a table of any
of the three the way Databricks does (change data feed, deletion vectors,
row tracking on).

The shapes themselves live in ``traffic_shapes``, rendered once per process
as templates (a few variants per shape); a row is a template filled with its
own ids, time and token counts, so a million rows take seconds.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from pyspark.sql.types import (
    ArrayType,
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

from gatewatch.schemas import GATEWAY_TABLE
from gatewatch.traffic.shapes import MALFORMED, SCENARIOS, templates

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "DEFAULT_ENDPOINTS",
    "DEFAULT_START",
    "ENDPOINT_PROFILES",
    "GATEWAY_SCHEMA",
    "LEGACY_SCHEMA",
    "UNITY_GATEWAY_SCHEMA",
    "MALFORMED",
    "PROFILES",
    "SCENARIOS",
    "GeneratedRow",
    "Truth",
    "create_inference_table",
    "frame",
    "generate",
    "profile_of",
    "spike",
    "to_legacy",
    "to_unity_gateway",
    "write_rows",
]

DEFAULT_ENDPOINTS: tuple[str, ...] = ("chat-prod", "agent-prod", "chat-canary")
DEFAULT_START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

GATEWAY_SCHEMA = GATEWAY_TABLE
"""The AI Gateway inference table, as Databricks creates it."""

LEGACY_SCHEMA = StructType(
    [
        StructField("databricks_request_id", StringType()),
        StructField("client_request_id", StringType()),
        StructField("date", DateType()),
        StructField("timestamp_ms", LongType()),
        StructField("status_code", IntegerType()),
        StructField("sampling_fraction", DoubleType()),
        StructField("execution_time_ms", LongType()),
        StructField("request", StringType()),
        StructField("response", StringType()),
        StructField("request_metadata", MapType(StringType(), StringType())),
        StructField("logging_error_codes", ArrayType(StringType())),
    ]
)
"""The legacy payload table. ``logging_error_codes`` is kept (the source adapter
reads it when present) so a payload too large to log reads the same in both."""

UNITY_GATEWAY_SCHEMA = StructType(
    [
        StructField("request_id", StringType()),
        StructField("event_time", TimestampType()),
        StructField("status_code", IntegerType()),
        StructField("latency_ms", LongType()),
        StructField("request", StringType()),
        StructField("response", StringType()),
        StructField("requester", StringType()),
        StructField("logging_error_codes", ArrayType(StringType())),
        StructField("service_name", StringType()),
        StructField("request_tags", MapType(StringType(), StringType())),
    ]
)
"""The Unity AI Gateway inference table of a model service (``<service>_payload``), with
two columns the source adapter does not read (``service_name``, ``request_tags``): a
table carrying more columns than the adapter needs still reads."""


class Truth(NamedTuple):
    """What a correct parser finds in one generated row."""

    endpoint: str
    scenario: str
    outcome: str | None
    quarantine_reason: str | None
    is_stream: bool | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    blocked_stage: str | None
    categories: tuple[str, ...]
    """The safety categories that filtered the call, sorted."""


class GeneratedRow(NamedTuple):
    """One inference-table row (``GATEWAY_SCHEMA`` keys) and its truth."""

    row: dict[str, Any]
    truth: Truth


PROFILES: dict[str, dict[str, float]] = {
    # An external Azure OpenAI model behind AI Gateway: chat completions with filter results.
    "azure_chat": {
        "azure_chat_ok": 30, "azure_stream_ok": 25, "aggregated_stream_ok": 1, "azure_chat_cut": 2,
        "gateway_prompt_filter": 3, "azure_error_body": 1, "stream_prompt_filter": 1,
        "azure_stream_immediate": 1.5, "azure_stream_partial": 2, "gateway_bad_request": 1.5,
        "rate_limited": 3, "server_error": 1.5, "not_logged": 1.5,
        "guardrail_input_block": 2, "guardrail_output_block": 1, "guardrail_stream_block": 1,
    },
    # A ResponsesAgent (MLflow) wrapping an Azure OpenAI deployment.
    "agent": {
        "agent_ok": 30, "agent_trace_ok": 8, "agent_handled_block": 4, "agent_stream_ok": 15,
        "responses_stream_ok": 12, "responses_stream_immediate": 1.5, "responses_stream_partial": 2.5,
        "responses_stream_failed": 1.5, "gateway_prompt_filter": 1, "rate_limited": 2, "server_error": 2,
        "not_logged": 1.5, "chat_agent_ok": 6, "chat_agent_stream_ok": 4, "agent_bare_ok": 3,
        "responses_stream_error": 1.5, "policy_pre_call_deny": 1.5, "policy_post_call_deny": 1.5, "policy_allowed": 2,
    },
    # A Databricks foundation model (no provider content filter).
    "foundation": {
        "foundation_chat_ok": 45, "foundation_stream_ok": 35, "aggregated_stream_ok": 1,
        "rate_limited": 6, "server_error": 4, "gateway_bad_request": 3, "not_logged": 2,
        "embeddings_ok": 5, "completions_ok": 5, "chat_parts_ok": 6, "provider_error": 4, "guardrail_input_block": 1.5,
    },
}
ENDPOINT_PROFILES: dict[str, str] = {"chat-prod": "azure_chat", "agent-prod": "agent", "chat-canary": "foundation"}
_SPIKE: dict[str, dict[str, float]] = {
    "azure_chat": {"gateway_prompt_filter": 5, "azure_error_body": 2, "azure_chat_cut": 2,
                   "stream_prompt_filter": 1, "azure_stream_partial": 1, "azure_stream_immediate": 1},
    "agent": {"agent_handled_block": 5, "gateway_prompt_filter": 3, "responses_stream_partial": 1,
              "responses_stream_immediate": 1},
}
_SAFETY_SPIKE: dict[str, float] = {"guardrail_input_block": 5, "guardrail_output_block": 2, "guardrail_stream_block": 1,
                                   "policy_pre_call_deny": 2, "policy_post_call_deny": 1}
"""A spike of blocks by Databricks' own safety layers: AI Gateway guardrails and Unity AI Gateway service policies."""


def profile_of(endpoint: str) -> str:
    """The behaviour an endpoint name gets: ``azure_chat``, ``agent`` or ``foundation``.

    The three default endpoints are mapped explicitly; another name gets
    ``agent`` if it contains "agent", ``foundation`` if it contains "canary",
    "llama" or "foundation", else ``azure_chat``.
    """
    if endpoint in ENDPOINT_PROFILES:
        return ENDPOINT_PROFILES[endpoint]
    name = endpoint.lower()
    if "agent" in name:
        return "agent"
    if any(k in name for k in ("canary", "llama", "foundation")):
        return "foundation"
    return "azure_chat"


@dataclass(frozen=True)
class _Entity:
    id: str
    name: str
    version: str
    endpoint: str


_ENTITY_BY_ID: dict[str, _Entity] = {}


@lru_cache(maxsize=None)
def _entities(endpoint: str) -> tuple[_Entity, ...]:
    """The served entities of an endpoint (two on a canary: a traffic split)."""
    profile = profile_of(endpoint)
    names = {"azure_chat": ("gpt-4o",), "agent": ("main.agents.support_agent",),
             "foundation": ("meta_llama_3_3_70b", "llama_4_maverick")}[profile]
    out = []
    for i, name in enumerate(names):
        digest = hashlib.sha256(f"{endpoint}/{name}".encode()).hexdigest()
        entity = _Entity(digest[:32], name, str(1 + i + int(digest[32:34], 16) % 9), endpoint)
        _ENTITY_BY_ID[entity.id] = entity
        out.append(entity)
    return tuple(out)


# --------------------------------------------------------------------------- rows

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_REQUESTERS = ("ana.silva@example.com", "ops-bot@example.com", "8c1f2d7e-5b0a-4e57-9a3c-2f6d1b4e0a91",
               "li.wei@example.com", "support-app@example.com")


class _Picker:
    """Weighted choice of a scenario name per endpoint, from one uniform draw."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        unknown = [n for n in weights if n not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
        self.names = [n for n, w in weights.items() if w > 0]
        if not self.names:
            raise ValueError("the mix gives no scenario a positive weight")
        total, cum = 0.0, []
        for n in self.names:
            total += weights[n]
            cum.append(total)
        self.cum, self.total = cum, total

    def __call__(self, u: float) -> str:
        return self.names[min(bisect.bisect_right(self.cum, u * self.total), len(self.names) - 1)]


def _tokens(rng: random.Random, kind: str) -> tuple[int, int]:
    r = rng.random
    prompt = 12 + int(r() * r() * 2400)
    if kind == "short":
        return prompt, 4 + int(r() * 80)
    if kind == "cut":
        return prompt, int(r() * 12)
    return prompt, 1 + int(r() * r() * 1100)


def _emit(rng: random.Random, n: int, endpoints: Sequence[str], pickers: Mapping[str, Callable[[float], str]],
          malformed_rate: float, start: datetime, mean_gap_ms: float) -> list[GeneratedRow]:
    if not endpoints:
        raise ValueError("endpoints must name at least one endpoint")
    if not 0.0 <= malformed_rate <= 1.0:
        raise ValueError("malformed_rate must be between 0 and 1")
    malformed = _Picker({m: 1.0 for m in MALFORMED})
    entities = {e: _entities(e) for e in endpoints}
    sampling = {e: (0.25 if profile_of(e) == "foundation" else 1.0) for e in endpoints}
    start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
    t_ms = (start - _EPOCH) // timedelta(milliseconds=1)
    r, bits = rng.random, rng.getrandbits
    out: list[GeneratedRow] = []
    append = out.append
    for _ in range(n):
        endpoint = endpoints[int(r() * len(endpoints))]
        name = malformed(r()) if r() < malformed_rate else pickers[endpoint](r())
        scenario = SCENARIOS[name]
        variants = templates(name)
        tpl = variants[int(r() * len(variants))]
        t_ms += 1 + int(-mean_gap_ms * math.log(1.0 - r()))  # exponential gaps; 1 - r() > 0
        ts = _EPOCH + timedelta(milliseconds=t_ms)
        b = bits(130)
        h = f"{b >> 2:032x}"
        rid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[b & 3]}{h[17:20]}-{h[20:]}"
        tin, tout = _tokens(rng, scenario.tokens)
        if name == "negative_tokens":
            tin = -tin
        vals = {"n_in": tin, "n_out": tout, "n_tot": tin + tout, "n_created": t_ms // 1000,
                "s_id": h[::-1][:24], "s_rid": rid, "s_trace": h[4:] + h[:4]}
        if tpl.running:
            k = tpl.running
            for i in range(1, k + 1):
                c = tout * i // k
                vals[f"n_c{i}"], vals[f"n_t{i}"] = c, tin + c
        response = None if tpl.response is None else tpl.response % vals
        if name == "truncated_json" and response is not None:
            response = response[: 10 + int(r() * (len(response) - 12))]
        entity = entities[endpoint][int(r() * len(entities[endpoint]))]
        lo, hi = scenario.duration
        row = {
            "databricks_request_id": rid,
            "client_request_id": f"app-{h[:12]}" if r() < 0.15 else None,
            "request_date": ts.date(),
            "request_time": ts,
            "status_code": tpl.status,
            "sampling_fraction": sampling[endpoint],
            "execution_duration_ms": lo + int(r() * r() * (hi - lo)),
            "request": tpl.request,
            "response": response,
            "served_entity_id": entity.id,
            "logging_error_codes": list(tpl.codes),
            "requester": None if r() < 0.1 else _REQUESTERS[int(r() * len(_REQUESTERS))],
        }
        usage = tpl.usage
        if tpl.tokens == "zero":
            tokens: tuple[int | None, ...] = (0, 0, 0)
        elif tpl.tokens == "input":
            tokens = (tin, None, tin)
        else:
            tokens = (tin, tout, tin + tout) if usage else (None, None, None)
        truth = Truth(
            endpoint=endpoint,
            scenario=name,
            outcome=scenario.outcome,
            quarantine_reason=scenario.reason,
            is_stream=tpl.is_stream,
            model=tpl.model,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            total_tokens=tokens[2],
            blocked_stage=tpl.blocked_stage,
            categories=tpl.categories,
        )
        append(GeneratedRow(row, truth))
    return out


def generate(
    n: int,
    *,
    seed: int = 0,
    endpoints: Sequence[str] = DEFAULT_ENDPOINTS,
    start: datetime = DEFAULT_START,
    malformed_rate: float = 0.02,
    mix: Mapping[str, float] | None = None,
) -> list[GeneratedRow]:
    """``n`` rows of inference traffic, the same for the same arguments.

    Args:
        n: how many rows.
        seed: the random seed (ids, shapes, tokens, times).
        endpoints: the endpoints the traffic is spread over, evenly; each
            name picks a behaviour (``profile_of``) and is recorded in
            ``Truth.endpoint``. The rows themselves do not name it.
        start: the first request time (UTC when naive); requests follow
            every ~50 ms on average, at millisecond precision.
        malformed_rate: the share of rows drawn from the malformed shapes
            (``MALFORMED``: truncated JSON, non-JSON request, unknown shape,
            negative tokens).
        mix: scenario weights (names of ``SCENARIOS``) used instead of each
            endpoint's profile.
    """
    endpoints = tuple(endpoints)
    pickers = {e: _Picker(mix if mix is not None else PROFILES[profile_of(e)]) for e in endpoints}
    return _emit(random.Random(seed), n, endpoints, pickers, malformed_rate, start, 50.0)


def spike(
    n: int,
    *,
    endpoint: str,
    seed: int,
    blocked_fraction: float = 0.8,
    start: datetime = DEFAULT_START,
    layer: str = "content_filter",
) -> list[GeneratedRow]:
    """A spike of blocked calls on one endpoint: ``n`` rows over about ``n / 5`` seconds.

    About ``blocked_fraction`` of them are blocked; the rest is the
    endpoint's ordinary traffic. No malformed rows. ``layer`` says by what:
    ``content_filter`` (the provider's filter: prompt-filter error bodies
    mostly, then cut completions and streams; an endpoint whose profile has
    no provider filter gets the Azure OpenAI ones) or ``databricks`` (AI
    Gateway guardrails, input mostly, and Unity AI Gateway service policies).
    """
    if not 0.0 <= blocked_fraction <= 1.0:
        raise ValueError("blocked_fraction must be between 0 and 1")
    if layer not in ("content_filter", "databricks"):
        raise ValueError(f"layer must be 'content_filter' or 'databricks', not {layer!r}")
    profile = profile_of(endpoint)
    normal = {k: v for k, v in PROFILES[profile].items() if SCENARIOS[k].outcome is not None}
    blocked = _SAFETY_SPIKE if layer == "databricks" else _SPIKE.get(profile, _SPIKE["azure_chat"])
    b_total, n_total = sum(blocked.values()), sum(normal.values())
    weights = {k: blocked_fraction * v / b_total for k, v in blocked.items()}
    for k, v in normal.items():
        weights[k] = weights.get(k, 0.0) + (1.0 - blocked_fraction) * v / n_total
    return _emit(random.Random(seed), n, (endpoint,), {endpoint: _Picker(weights)}, 0.0, start, 200.0)


def to_legacy(rows: Iterable[Mapping[str, Any] | GeneratedRow]) -> list[dict[str, Any]]:
    """The same rows in the legacy payload table schema (``LEGACY_SCHEMA``).

    ``request_metadata`` holds ``model_name``, ``model_version`` and
    ``endpoint_name`` of the row's served entity; the legacy table has no
    ``served_entity_id`` or ``requester`` column.
    """
    out = []
    for item in rows:
        row = item.row if isinstance(item, GeneratedRow) else item
        entity = _ENTITY_BY_ID.get(row.get("served_entity_id") or "")
        meta = (
            {"model_name": entity.name, "model_version": entity.version, "endpoint_name": entity.endpoint}
            if entity
            else {"model_name": row.get("served_entity_id") or "unknown", "model_version": "1"}
        )
        ts = row["request_time"]
        ts = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
        out.append(
            {
                "databricks_request_id": row["databricks_request_id"],
                "client_request_id": row["client_request_id"],
                "date": row["request_date"],
                "timestamp_ms": (ts - _EPOCH) // timedelta(milliseconds=1),
                "status_code": row["status_code"],
                "sampling_fraction": row["sampling_fraction"],
                "execution_time_ms": row["execution_duration_ms"],
                "request": row["request"],
                "response": row["response"],
                "request_metadata": meta,
                "logging_error_codes": row["logging_error_codes"],
            }
        )
    return out


def to_unity_gateway(rows: Iterable[Mapping[str, Any] | GeneratedRow], *, service: str = "main.serving.chat"
                     ) -> list[dict[str, Any]]:
    """The same rows in the Unity AI Gateway inference table schema (``UNITY_GATEWAY_SCHEMA``).

    ``request_id``, ``event_time`` and ``latency_ms`` carry the request id,
    time and duration; ``service_name`` and ``request_tags`` are filled as a
    model service would (the adapter does not read them).
    """
    out = []
    for item in rows:
        row = item.row if isinstance(item, GeneratedRow) else item
        out.append(
            {
                "request_id": row["databricks_request_id"],
                "event_time": row["request_time"],
                "status_code": row["status_code"],
                "latency_ms": row["execution_duration_ms"],
                "request": row["request"],
                "response": row["response"],
                "requester": row["requester"],
                "logging_error_codes": row["logging_error_codes"],
                "service_name": service,
                "request_tags": {"app": "support-bot"} if row.get("client_request_id") else None,
            }
        )
    return out


# --------------------------------------------------------------------------- tables

_TABLE_PROPERTIES = {
    "delta.enableChangeDataFeed": "true",
    "delta.enableDeletionVectors": "true",
    "delta.enableRowTracking": "true",
}


def _schema(kind: str) -> StructType:
    if kind == "gateway":
        return GATEWAY_SCHEMA
    if kind == "legacy":
        return LEGACY_SCHEMA
    if kind == "unity_gateway":
        return UNITY_GATEWAY_SCHEMA
    raise ValueError(f"kind must be 'gateway', 'legacy' or 'unity_gateway', not {kind!r}")


def _identifier(target: str) -> str:
    from gatewatch.streams.source import is_path

    if not is_path(target):
        return target
    has_scheme = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target) and not re.match(r"^[A-Za-z]:\\", target)
    path = target if has_scheme else os.path.abspath(target)
    return "delta.`" + path.replace("`", "``") + "`"


def create_inference_table(spark: SparkSession, target: str, *, kind: str = "gateway") -> None:
    """Create an empty inference table as Databricks does, unless it exists.

    ``target`` is a path (created as ``delta.`<absolute path>```) or a
    catalog name. Change data feed, deletion vectors and row tracking are on.
    """
    columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in _schema(kind).fields)
    properties = ", ".join(f"'{k}' = '{v}'" for k, v in _TABLE_PROPERTIES.items())
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {_identifier(target)} ({columns}) USING delta TBLPROPERTIES ({properties})"
    )


def _arrow_table(rows: Sequence[Mapping[str, Any]], schema: StructType) -> Any:
    import pyarrow as pa

    types = {
        "string": pa.string(), "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC"),
        "int": pa.int32(), "bigint": pa.int64(), "double": pa.float64(),
        "array<string>": pa.list_(pa.string()), "map<string,string>": pa.map_(pa.string(), pa.string()),
    }
    arrays, fields = [], []
    for f in schema.fields:
        t = types[f.dataType.simpleString()]
        values = [r.get(f.name) for r in rows]
        if f.dataType.simpleString().startswith("map"):
            values = [None if v is None else list(v.items()) for v in values]
        arrays.append(pa.array(values, type=t))
        fields.append(pa.field(f.name, t))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def frame(spark: SparkSession, rows: Iterable[Mapping[str, Any] | GeneratedRow], *, kind: str = "gateway") -> Any:
    """``rows`` as a DataFrame in the columns of the ``kind`` table (converted as ``write_rows`` does).

    ``rows`` are dicts of the table's columns or ``GeneratedRow``s (or their
    ``row``), which are converted with ``to_legacy`` / ``to_unity_gateway``.
    """
    schema = _schema(kind)
    plain = [r.row if isinstance(r, GeneratedRow) else r for r in rows]
    if kind == "legacy" and plain and "request_metadata" not in plain[0]:
        plain = to_legacy(plain)
    if kind == "unity_gateway" and plain and "request_id" not in plain[0]:
        plain = to_unity_gateway(plain)
    return spark.createDataFrame(_arrow_table(plain, schema), schema=schema)


def write_rows(
    spark: SparkSession,
    target: str,
    rows: Iterable[Mapping[str, Any] | GeneratedRow],
    *,
    kind: str = "gateway",
) -> None:
    """Append ``rows`` to an inference table in one commit (none when there are no rows).

    ``rows`` are dicts of the table's columns (``generate(...)[i].row``, or
    ``to_legacy`` / ``to_unity_gateway`` output for ``kind="legacy"`` /
    ``"unity_gateway"``) or ``GeneratedRow``s, which are converted to the
    table's schema. They reach Spark as one Arrow table with the explicit schema.
    """
    from gatewatch.streams.source import is_path

    _schema(kind)  # an unknown kind is refused even without rows
    plain = [r.row if isinstance(r, GeneratedRow) else r for r in rows]
    if not plain:
        return
    df = frame(spark, plain, kind=kind)
    writer = df.write.format("delta").mode("append")
    if is_path(target):
        writer.save(target)
    else:
        writer.saveAsTable(target)
