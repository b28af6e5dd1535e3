"""Parse ``request`` and ``response`` once, and find the pieces every parser needs.

Where a value may sit depends on the call, the provider and how the serving
code handled a failure, so each piece is probed in every documented place:

- the response itself, or its chunks/events when a stream was logged as a list;
- the provider error: a bare ``{"error": {...}}`` body, a gateway body whose
  ``message`` is the provider's JSON, a Responses ``response.failed`` or
  ``error`` event, a chat chunk carrying ``error`` mid-stream, or an
  exception event in the Databricks trace whose message is a Python repr
  wrapping JSON (parsed twice);
- the chat-model span outputs of a Databricks trace (escaped JSON strings).
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gatewatch.transforms import staging as S
from gatewatch.transforms import variant as V

Transform = Callable[[DataFrame], DataFrame]

_TRACE = "$.databricks_output.trace"
_REPR_MESSAGE = r"'message': '(\{.*\})'\}\s*$"
# The filter result dict, three levels deep: {category: {field: ...}}, where
# custom_blocklists holds {"details": [{"filtered", "id"}]} and protected
# material {"citation": {...}}.
_REPR_FILTER = r"'content_filter_results?': (\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\})"
_REPR_CODE = r"'code': '([^']*)'"
_HTTP_CODE = r"Error code: (\d{3})"


def _object(v: Column, path: str) -> Column:
    """The object at ``path`` as a VARIANT, or null (JSON null and scalars included)."""
    is_object = F.try_variant_get(v, path, "map<string,variant>").isNotNull()
    return F.when(is_object, F.try_variant_get(v, path, "variant"))


def _repr_to_json(text: Column) -> Column:
    """Turn a small Python dict repr (no quotes inside values) into JSON text."""
    out = F.regexp_replace(text, "'", '"')
    out = F.regexp_replace(out, r"\bTrue\b", "true")
    out = F.regexp_replace(out, r"\bFalse\b", "false")
    return F.regexp_replace(out, r"\bNone\b", "null")


def _trace_outputs(resp: Column) -> Column:
    """The parsed ``mlflow.spanOutputs`` of every span that has them."""
    spans = V.or_empty(V.items(resp, f"{_TRACE}.data.spans"))
    outputs = F.transform(spans, lambda s: V.nested(s, "$.attributes['mlflow.spanOutputs']"))
    return F.filter(outputs, lambda o: o.isNotNull())


def _exception_message(resp: Column) -> Column:
    """The first ``exception.message`` of any span event in the Databricks trace."""
    spans = V.or_empty(V.items(resp, f"{_TRACE}.data.spans"))
    per_span = F.transform(
        spans,
        lambda s: F.transform(
            F.filter(V.or_empty(V.items(s, "$.events")), lambda e: V.get(e, "$.name") == "exception"),
            lambda e: V.get(e, "$.attributes['exception.message']"),
        ),
    )
    return V.first_non_null(F.flatten(per_span))


def _stream_error(chunks: Column) -> Column:
    """The error a logged stream ended with.

    The ``response.error`` of a Responses ``response.failed`` event, a
    Responses ``error`` event itself (it holds ``code``, ``message``,
    ``param``), or the ``error`` of a chat chunk that carries one instead of
    ``choices`` (an error raised mid-stream).
    """
    return V.first_non_null(
        F.transform(
            V.or_empty(chunks),
            lambda c: F.when(V.get(c, "$.type") == "response.failed", _object(c, "$.response.error"))
            .when(V.get(c, "$.type") == "error", _object(c, "$"))
            .otherwise(_object(c, "$.error")),
        )
    )


_CANDIDATES: tuple[str, ...] = ("gateway", "stream_event", "responses", "provider", "trace_exception")


def _error_candidates() -> dict[str, Column]:
    """Each place the provider's error object may sit, as a helper column ``_perr_<place>``."""
    gw, exc, resp = F.col("_gw_inner"), F.col("_exc_inner"), F.col("_resp")
    candidates = {
        "gateway": V.first(_object(gw, "$.external_model_error.error"), _object(gw, "$.error")),
        "stream_event": _stream_error(F.col("_chunks")),
        "responses": F.when(V.get(resp, "$.status") == "failed", _object(resp, "$.error")),
        "provider": _object(resp, "$.error"),
        "trace_exception": V.first(_object(exc, "$.external_model_error.error"), _object(exc, "$.error")),
    }
    return {f"_perr_{name}": candidates[name] for name in _CANDIDATES}


def _provider_error() -> tuple[Column, Column]:
    """The provider's error object wherever it sits (the first candidate found), and where it was found."""
    error = V.first(*[F.col(f"_perr_{name}") for name in _CANDIDATES])
    origin = F.lit(None).cast("string")
    for name in reversed(_CANDIDATES):
        origin = F.when(F.col(f"_perr_{name}").isNotNull(), F.lit(name)).otherwise(origin)
    return error, origin


def _error_struct() -> Column:
    """code, message, type, param, http_status, flags, origin; null without any error."""
    err, exception = F.col("_perr"), F.col("_exception")
    exc_code = F.nullif(F.regexp_extract(exception, _REPR_CODE, 1), F.lit(""))
    exc_http = F.nullif(F.regexp_extract(exception, _HTTP_CODE, 1), F.lit("")).cast("int")
    exc_filter = V.parse(_repr_to_json(F.regexp_extract(exception, _REPR_FILTER, 1)))
    gw_code, gw_message = F.col("_gw_code"), F.col("_gw_message")
    struct = F.struct(
        V.first(V.get(err, "$.code"), gw_code, exc_code).alias("code"),
        V.first(V.get(err, "$.message"), gw_message, exception).alias("message"),
        V.first(V.get(err, "$.type"), F.when(F.col("_perr_origin") == "trace_exception", F.lit(None))).alias("type"),
        V.get(err, "$.param").alias("param"),
        V.first(V.get(err, "$.status", "int"), exc_http).alias("http_status"),
        F.when(err.isNotNull(), V.error_flags(err))
        .otherwise(V.flags_from_results(exc_filter, "prompt"))
        .alias("flags"),
        V.first(F.col("_perr_origin"), F.when(gw_code.isNotNull(), F.lit("gateway")),
                F.when(exception.isNotNull(), F.lit("trace_exception"))).alias("origin"),
    )
    return F.when(err.isNotNull() | gw_code.isNotNull() | exception.isNotNull(), struct)


def _payload_steps() -> list[S.Step]:
    resp = F.col("_resp")
    error, origin = _provider_error()
    return [
        S.with_columns({"_req": V.parse(F.col("request")), "_resp": V.parse(F.col("response"))}),
        S.with_columns(
            {
                "_req_invalid": F.col("request").isNotNull() & F.col("_req").isNull(),
                "_resp_invalid": F.col("response").isNotNull() & F.col("_resp").isNull(),
                "_chunks": V.items(resp),
                "_trace_outputs": _trace_outputs(resp),
                "_exception": _exception_message(resp),
                "_gw_code": V.get(resp, "$.error_code"),
                "_gw_message": F.when(V.get(resp, "$.error_code").isNotNull(), V.get(resp, "$.message")),
            }
        ),
        S.with_columns(
            {
                "_gw_inner": V.parse(F.col("_gw_message")),
                "_exc_inner": V.parse(
                    F.regexp_replace(F.regexp_extract(F.col("_exception"), _REPR_MESSAGE, 1), r"\\'", "'")
                ),
            }
        ),
        S.with_columns(_error_candidates()),
        S.with_columns({"_perr": error, "_perr_origin": origin}),
        S.with_columns({"_error": _error_struct()}),
        S.drop("_gw_inner", "_exc_inner", *[f"_perr_{name}" for name in _CANDIDATES]),
    ]


_PAYLOADS = S.Steps(_payload_steps)


def with_parsed_payloads() -> Transform:
    """Parse the JSON payloads once and locate chunks, trace outputs and errors.

    Reads: ``request``, ``response``.
    Adds: ``_req`` and ``_resp`` (VARIANT, null when absent or not JSON),
    ``_req_invalid`` / ``_resp_invalid`` (text present but not JSON),
    ``_chunks`` (``array<variant>`` when the response is a list, else null),
    ``_trace_outputs`` (parsed span outputs), ``_exception`` (first trace
    exception message), ``_gw_code`` / ``_gw_message`` (gateway error body),
    ``_perr`` / ``_perr_origin`` (the provider's error object and where it
    was found) and ``_error`` (struct: code, message, type, param,
    http_status, flags, origin; null when the response carries no error).
    Each candidate place of the error is computed once, in its own column.
    """
    return _PAYLOADS
