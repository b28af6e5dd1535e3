"""Field extractors the outcome parsers share: tokens, model, finish reason, errors.

Each reads a ``Row`` (the located payloads, the classification and the
status). Tokens are taken from where the row carries them and are ``None``
otherwise; a running total is read from its last chunk, never summed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatewatch.transforms import values as V
from gatewatch.transforms.outcome import Classified
from gatewatch.transforms.payload import Payload


@dataclass(slots=True)
class Row:
    """One inference row as the parsers see it."""

    payload: Payload
    classified: Classified
    status_code: int | None

    @property
    def usage(self) -> dict[str, int | None] | None:
        """``{input, output, total}`` from the usage object the row carries, or ``None`` (read on each access).

        A call a guardrail blocked has none: a verdict's ``usage`` counts the
        guardrail model's evaluation, not the served model's tokens.
        An embeddings response counts input tokens only (``output`` is ``None``).
        """
        usage = _usage(self)
        if usage is None:
            return None
        return {
            "input": _count(usage, "input_tokens", "prompt_tokens"),
            "output": _count(usage, "output_tokens", "completion_tokens"),
            "total": _count(usage, "total_tokens"),
        }


def _usage(row: Row) -> dict | None:
    """The usage object the row carries (``Row.usage``), or ``None``."""
    if row.classified.layer == "guardrail":
        return None
    p = row.payload
    usage = _stream_usage(p.chunks) if p.chunks else None
    return _response_usage(p) if usage is None else usage


def _count(usage: dict, name: str, other: str | None = None) -> int | None:
    """The first of ``name`` and ``other`` in a usage object that reads as an integer (``values.as_integer``)."""
    value = usage.get(name)
    if value is not None:
        value = value if type(value) is int and -(2**63) <= value < 2**63 else V.as_integer(value)
        if value is not None:
            return value
    if other is None:
        return None
    value = usage.get(other)
    if value is not None and not (type(value) is int and -(2**63) <= value < 2**63):
        value = V.as_integer(value)
    return value


def _response_usage(p: Payload) -> dict | None:
    """Usage of a single response: top level, trace metadata, then the one span that has it.

    The trace metadata's ``mlflow.trace.tokenUsage`` is the request's total
    over every model call. Without it, a span's usage is the request's only
    when that span is the only one carrying usage: one call of an agent that
    made several is not the request's usage, so the tokens stay ``None``.
    """
    resp = p.resp
    if type(resp) is not dict:
        return None
    usage = resp.get("usage")
    if type(usage) is dict:
        return usage
    output = resp.get("databricks_output")
    if output is not None:
        usage = V.obj(V.parse(V.text(output, "trace", "info", "trace_metadata", "mlflow.trace.tokenUsage")))
        if usage is not None:
            return usage
    span_usages = [u for u in (V.obj(o, "usage") for o in p.trace_outputs) if u is not None]
    return span_usages[0] if len(span_usages) == 1 else None


def _stream_usage(chunks: list) -> dict | None:
    """Usage of a streamed call: the last chunk or event that carries it (running totals)."""
    for chunk in reversed(chunks):
        if type(chunk) is dict:
            usage = chunk.get("usage")
            if type(usage) is dict:
                return usage
            response = chunk.get("response")
            if type(response) is dict:
                usage = response.get("usage")
                if type(usage) is dict:
                    return usage
    return None


def tokens(row: Row) -> dict[str, int | None]:
    """The three token columns (``None`` where not carried)."""
    usage = _usage(row)
    if usage is None:
        return {"input_tokens": None, "output_tokens": None, "total_tokens": None}
    return {
        "input_tokens": _count(usage, "input_tokens", "prompt_tokens"),
        "output_tokens": _count(usage, "output_tokens", "completion_tokens"),
        "total_tokens": _count(usage, "total_tokens"),
    }


def model(row: Row) -> str | None:
    """The model that answered: response, chunks, events, then the trace's chat span.

    Empty names are skipped: Azure's prompt-filter and annotation frames carry
    ``"model": ""`` ahead of and between the chunks that name the model.
    """
    p = row.payload
    resp = p.resp
    found = _name(resp.get("model")) if type(resp) is dict else None
    if found is None and p.chunks:
        for c in p.chunks:
            if type(c) is dict:
                found = _name(c.get("model"))
                if found is None:
                    response = c.get("response")
                    found = _name(response.get("model")) if type(response) is dict else None
                if found is not None:
                    break
    if found is None and p.trace_outputs:
        found = V.first_of(V.name(o, "model") for o in p.trace_outputs)
    if found is None and p.spans:
        found = V.first_of(V.name(V.parse(V.text(s, "attributes", "model"))) for s in p.spans)
    return found


def _name(value: Any) -> str | None:
    """A value as a name (``values.name``): its text, ``None`` when absent or empty."""
    return (value if type(value) is str else V.as_text(value)) or None


def finish_reason(row: Row, *, last: bool) -> str | None:
    """The finish reason: the first one of a response, the last one of a stream."""
    c = row.classified
    reasons = c.finish_reasons
    if reasons:
        picked = reasons[-1] if last else reasons[0]
        if picked is not None:
            return picked
    if c.incomplete_reason is not None:
        return c.incomplete_reason
    return V.text(row.payload.resp, "status") if c.shape == "responses" else None


def trace_id(row: Row) -> str | None:
    """The Databricks trace id, when the response carries a trace."""
    resp = row.payload.resp
    output = resp.get("databricks_output") if type(resp) is dict else None
    return None if output is None else V.text(output, "trace", "info", "trace_id")


def answer(row: Row, *, last: bool) -> dict[str, Any]:
    """What every parser reports about the answer: model, finish reason, trace id and tokens.

    ``last`` picks a stream's last finish reason instead of a response's first.
    """
    usage = _usage(row)
    return {
        "model": model(row),
        "finish_reason": finish_reason(row, last=last),
        "trace_id": trace_id(row),
        "service_policy": row.payload.policy,
        # tokens(row), without building its dict first
        "input_tokens": None if usage is None else _count(usage, "input_tokens", "prompt_tokens"),
        "output_tokens": None if usage is None else _count(usage, "output_tokens", "completion_tokens"),
        "total_tokens": None if usage is None else _count(usage, "total_tokens"),
    }


def filter_error(row: Row) -> dict[str, Any]:
    """The error columns of a call a safety layer refused.

    ``error_type`` names the layer (``content_filter`` for a provider's
    filter, ``guardrail`` for an AI Gateway guardrail, ``service_policy`` for
    a Unity AI Gateway service policy). The code is the one logged (a
    guardrail's ``finish_reason`` such as ``input_guardrail_triggered``);
    the message is the one logged, or the policy's reason.
    """
    p, layer = row.payload, row.classified.layer or "content_filter"
    policy = p.policy if layer == "service_policy" else None
    code = p.guardrail_code if layer == "guardrail" else None
    return {"error_type": layer, "error_code": V.first(code, error_code(row), "content_filter"),
            "error_message": V.first(error_message(row), policy and policy["reason"])}


def _error_field(row: Row, key: str) -> Any:
    error = row.payload.error
    return None if error is None else error[key]


def error_code(row: Row) -> str | None:
    """The most specific error code: the provider's, else the gateway's."""
    return _error_field(row, "code")


def error_message(row: Row) -> str | None:
    """The error message as logged (may hold the provider's JSON)."""
    return _error_field(row, "message")


def error_type(row: Row) -> str | None:
    """A small vocabulary for what went wrong, from the status and the error's code and type.

    A stream that failed after its 200 carries no failing status: there the
    provider's own ``server_error`` (the ``code`` of a Responses
    ``response.failed`` error, the ``type`` of an OpenAI error object) says it.
    """
    error = row.payload.error
    code = ((error or {}).get("code") or "").lower()
    kind = ((error or {}).get("type") or "").lower()
    http = V.first((error or {}).get("http_status"), row.status_code)
    if row.classified.blocked:
        return row.classified.layer or "content_filter"
    if http == 429 or "rate_limit" in code or code == "request_limit_exceeded":
        return "rate_limit"
    if http == 504 or "timeout" in code:
        return "timeout"
    if http in (401, 403) or "permission" in code:
        return "permission_denied"
    if http == 404 or code == "resource_does_not_exist":
        return "not_found"
    if (http is not None and http >= 500) or code == "server_error" or kind == "server_error":
        return "server_error"
    if http is not None and http >= 400:
        return "bad_request"
    if error is not None:
        return "model_error"
    return None
