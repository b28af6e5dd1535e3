"""Field extractors the outcome parsers share: tokens, model, finish reason, errors.

Each returns a ``Column`` over the helper columns of ``with_parsed_payloads``
and ``with_outcome``. Tokens are taken from where the row carries them and
are null otherwise; a running total is read from its last chunk, never summed.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gatewatch.transforms import staging as S
from gatewatch.transforms import variant as V

_TRACE_META = "$.databricks_output.trace.info.trace_metadata"


def _usage_struct(usage: Column) -> Column:
    """``struct<input, output, total>`` from a chat or Responses ``usage`` object."""
    return F.struct(
        V.first(V.get(usage, "$.input_tokens", "bigint"), V.get(usage, "$.prompt_tokens", "bigint")).alias("input"),
        V.first(
            V.get(usage, "$.output_tokens", "bigint"), V.get(usage, "$.completion_tokens", "bigint")
        ).alias("output"),
        V.get(usage, "$.total_tokens", "bigint").alias("total"),
    )


def _usage_object(v: Column, path: str) -> Column:
    is_object = F.try_variant_get(v, path, "map<string,variant>").isNotNull()
    return F.when(is_object, F.try_variant_get(v, path, "variant"))


def response_usage() -> Column:
    """Usage of a single response: top level, trace metadata, then the one span that has it.

    The trace metadata's ``mlflow.trace.tokenUsage`` is the request's total
    over every model call. Without it, a span's usage is the request's only
    when that span is the only one carrying usage: one call of an agent that
    made several is not the request's usage, so the tokens stay null.
    """
    resp = F.col("_resp")
    trace_usage = V.nested(resp, f"{_TRACE_META}['mlflow.trace.tokenUsage']")
    span_usages = F.filter(
        F.transform(F.col("_trace_outputs"), lambda o: _usage_object(o, "$.usage")), lambda u: u.isNotNull()
    )
    only_span_usage = F.when(F.size(span_usages) == 1, F.try_element_at(span_usages, F.lit(1)))
    return V.first(_usage_object(resp, "$.usage"), _usage_object(trace_usage, "$"), only_span_usage)


def stream_usage() -> Column:
    """Usage of a streamed call: the last chunk or event that carries it (running totals)."""
    per_chunk = F.transform(
        V.or_empty(F.col("_chunks")),
        lambda c: V.first(_usage_object(c, "$.usage"), _usage_object(c, "$.response.usage")),
    )
    return V.first(V.last_non_null(per_chunk), response_usage())


def tokens() -> dict[str, Column]:
    """The three token columns (from ``_usage``, null where not carried)."""
    u = F.col("_usage")
    return {"input_tokens": u["input"], "output_tokens": u["output"], "total_tokens": u["total"]}


def with_common_fields() -> Callable[[DataFrame], DataFrame]:
    """Extract, once per row, the fields several parsers pick from.

    Reads: the helper columns of ``with_parsed_payloads`` and ``with_outcome``.
    Adds: ``_usage`` (struct input/output/total: the last chunk or event that
    carries usage, else the response's own, the trace metadata's, or that of
    the only span carrying usage),
    ``_model``, ``_trace_id``, ``_finish_first``, ``_finish_last``.
    """

    return _FIELDS


def _fields_steps() -> list[S.Step]:
    usage = F.col("_usage_obj")
    return [
        S.with_columns(
            {
                "_usage_obj": stream_usage(),
                "_model": model(),
                "_trace_id": V.get(F.col("_resp"), "$.databricks_output.trace.info.trace_id"),
                "_finish_first": _finish_reason(last=False),
                "_finish_last": _finish_reason(last=True),
            }
        ),
        S.with_columns({"_usage": F.when(usage.isNotNull(), _usage_struct(usage))}),
        S.drop("_usage_obj"),
    ]


_FIELDS = S.Steps(_fields_steps)


def model_name() -> Column:
    """The model that answered (extracted once by ``with_common_fields``)."""
    return F.col("_model")


def _name(v: Column, path: str) -> Column:
    """The string at ``path``, or null when absent or empty."""
    return F.nullif(V.get(v, path), F.lit(""))


def model() -> Column:
    """The model that answered: response, chunks, events, then the trace's chat span.

    Empty names are skipped: Azure's prompt-filter and annotation frames carry
    ``"model": ""`` ahead of and between the chunks that name the model.
    """
    resp, chunks = F.col("_resp"), V.or_empty(F.col("_chunks"))
    from_chunks = V.first_non_null(
        F.transform(chunks, lambda c: V.first(_name(c, "$.model"), _name(c, "$.response.model")))
    )
    from_outputs = V.first_non_null(F.transform(F.col("_trace_outputs"), lambda o: _name(o, "$.model")))
    spans = V.or_empty(V.items(resp, "$.databricks_output.trace.data.spans"))
    from_span_attributes = V.first_non_null(
        F.transform(spans, lambda s: _name(V.nested(s, "$.attributes.model"), "$"))
    )
    return V.first(_name(resp, "$.model"), from_chunks, from_outputs, from_span_attributes)


def finish_reason(*, last: bool) -> Column:
    """The finish reason: the first one of a response, the last one of a stream."""
    return F.col("_finish_last" if last else "_finish_first")


def _finish_reason(*, last: bool) -> Column:
    reasons = F.col("_finish_reasons")
    picked = V.last_non_null(reasons) if last else V.first_non_null(reasons)
    return V.first(picked, F.col("_incomplete_reason"), F.when(F.col("_shape") == "responses", V.get(F.col("_resp"), "$.status")))


def trace_id() -> Column:
    """The Databricks trace id, when the response carries a trace."""
    return F.col("_trace_id")


def error_code() -> Column:
    """The most specific error code: the provider's, else the gateway's."""
    return F.col("_error")["code"]


def error_message() -> Column:
    """The error message as logged (may hold the provider's JSON)."""
    return F.col("_error")["message"]


def error_type() -> Column:
    """A small vocabulary for what went wrong, from the status and the error's code and type.

    A stream that failed after its 200 carries no failing status: there the
    provider's own ``server_error`` (the ``code`` of a Responses
    ``response.failed`` error, the ``type`` of an OpenAI error object) says it.
    """
    status, code = F.col("status_code"), F.lower(F.coalesce(F.col("_error")["code"], F.lit("")))
    kind = F.lower(F.coalesce(F.col("_error")["type"], F.lit("")))
    http = F.coalesce(F.col("_error")["http_status"], status)
    return (
        F.when(F.col("blocked"), F.lit("content_filter"))
        .when((http == 429) | code.contains("rate_limit") | (code == "request_limit_exceeded"), F.lit("rate_limit"))
        .when((http == 504) | code.contains("timeout"), F.lit("timeout"))
        .when((http == 401) | (http == 403) | code.contains("permission"), F.lit("permission_denied"))
        .when((http == 404) | (code == "resource_does_not_exist"), F.lit("not_found"))
        .when((http >= 500) | (code == "server_error") | (kind == "server_error"), F.lit("server_error"))
        .when(http >= 400, F.lit("bad_request"))
        .when(F.col("_error").isNotNull(), F.lit("model_error"))
    )
