"""Parse ``request`` and ``response`` once, and find the pieces every parser needs.

Where a value may sit depends on the call, the provider and how the serving
code handled a failure, so each piece is probed in every documented place:

- the response itself, or its chunks/events when a stream was logged as a list;
- the provider error: a bare ``{"error": {...}}`` body, a gateway body whose
  ``message`` is the provider's JSON, a Responses ``response.failed`` or
  ``error`` event, a chat chunk carrying ``error`` mid-stream, or an
  exception event in the Databricks trace whose message is a Python repr
  wrapping JSON (parsed twice);
- the chat-model span outputs of a Databricks trace (escaped JSON strings);
- the verdict of an AI Gateway guardrail (``input_guardrail`` /
  ``output_guardrail`` entries), in a gateway body's ``message`` or at the
  top of the response;
- the ``databricks_service_policy`` a Unity AI Gateway response names, at its top.

Pure functions over one row's values; ``transforms.rows`` runs them over
Arrow batches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from gatewatch.transforms import values as V

_orjson_loads = orjson.loads

_REPR_MESSAGE = re.compile(r"'message': '(\{.*\})'\}\s*$")
# The filter result dict, three levels deep: {category: {field: ...}}, where
# custom_blocklists holds {"details": [{"filtered", "id"}]} and protected
# material {"citation": {...}}.
_REPR_FILTER = re.compile(r"'content_filter_results?': (\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\})")
_REPR_CODE = re.compile(r"'code': '([^']*)'")
_HTTP_CODE = re.compile(r"Error code: (\d{3})")
_ESCAPED_QUOTE = re.compile(r"\\'")
_REPR_WORDS = ((re.compile(r"\bTrue\b"), "true"), (re.compile(r"\bFalse\b"), "false"), (re.compile(r"\bNone\b"), "null"))
_TRACE = ("databricks_output", "trace")
_GUARDRAIL_KEYS = (("input_guardrail", "prompt"), ("output_guardrail", "completion"))
_POLICY = "databricks_service_policy"
_POLICY_FIELDS = ("name", "action", "phase", "reason")
CHUNK_OBJECTS: tuple[str, ...] = ("chat.completion.chunk", "chat.completion", "text_completion")

ERROR_ORIGINS: tuple[str, ...] = ("gateway", "stream_event", "responses", "provider", "trace_exception")


@dataclass(slots=True)
class Payload:
    """What one row's payloads hold, located once.

    ``req``/``resp`` are the parsed JSON (``None`` when absent, JSON null or
    not JSON; ``has_req``/``has_resp`` tell JSON null apart from absent);
    ``chunks`` the response when it is a list; ``trace_outputs`` the parsed
    span outputs; ``exception`` the first trace exception message;
    ``gw_code``/``gw_message`` a gateway error body; ``error`` the error the
    row carries (``code``, ``message``, ``type``, ``param``, ``http_status``,
    ``flags``, ``origin``), ``None`` without one. ``guardrail_flags`` are
    the flags of a guardrail verdict, ``guardrail_stages`` the stages whose
    guardrail blocked (``prompt`` for input, ``completion`` for output),
    ``guardrail_code`` the verdict's ``finish_reason``; ``policy`` the
    service policy's ``name``, ``action``, ``phase`` and ``reason``.
    ``chunks_known`` says every chunk is a frame the classifier knows;
    ``chunk_reasons``/``chunk_flags`` are the chunks' finish reasons (in
    order) and filter flags, ``chunk_incomplete`` the reason of the first
    ``response.incomplete`` event that gives one (``_walk_chunks``).
    """

    req: Any = None
    resp: Any = None
    has_req: bool = False
    has_resp: bool = False
    req_invalid: bool = False
    resp_invalid: bool = False
    chunks: list | None = None
    trace_outputs: list = field(default_factory=list)
    spans: list = field(default_factory=list)
    exception: str | None = None
    gw_code: str | None = None
    gw_message: str | None = None
    error: dict[str, Any] | None = None
    guardrail_flags: list = field(default_factory=list)
    guardrail_stages: tuple[str, ...] = ()
    guardrail_code: str | None = None
    policy: dict[str, str | None] | None = None
    chunks_known: bool = False
    chunk_reasons: list | None = None
    chunk_flags: V.FlagTable | None = None
    chunk_incomplete: str | None = None


def _load(text: str | None) -> tuple[Any, bool, bool]:
    """(value, present, invalid) of one payload column."""
    if text is None:
        return None, False, False
    try:
        return _orjson_loads(text), True, False
    except orjson.JSONDecodeError:
        pass
    try:
        return V.loads(text), True, False
    except V.Invalid:
        return None, False, True


def _repr_to_json(text: str) -> str:
    """Turn a small Python dict repr (no quotes inside values) into JSON text."""
    out = text.replace("'", '"')
    for pattern, word in _REPR_WORDS:
        out = pattern.sub(word, out)
    return out


def _group(pattern: re.Pattern, text: str | None) -> str | None:
    """The first group of the first match, or ``None`` (also for an empty match)."""
    if text is None:
        return None
    m = pattern.search(text)
    return (m.group(1) or None) if m else None


def _exception_message(spans: list) -> str | None:
    """The first ``exception.message`` of any span event in the Databricks trace."""
    for span in spans:
        for event in V.items(span, "events") or ():
            if V.text(event, "name") == "exception":
                message = V.text(event, "attributes", "exception.message")
                if message is not None:
                    return message
    return None


def read_frame(table: V.FlagTable, reasons: list, v: Any, own: bool) -> None:
    """Read one frame: its finish reasons into ``reasons``, its prompt and completion filter results into ``table``.

    The finish reasons are those of ``choices``, or, without ``choices``, the
    frame's own ``finish_reason`` when ``own`` (a ChatAgent or policy
    response's; not a guardrail verdict's). The filter results are
    ``prompt_filter_results`` (or ``prompt_annotations``) and every
    ``choices[].content_filter_results``.
    """
    if type(v) is not dict:
        return
    choices = v.get("choices")
    if type(choices) is list:
        for choice in choices:
            if type(choice) is dict:
                reason = choice.get("finish_reason")
                if reason is not None:
                    reasons.append(reason if type(reason) is str else V.as_text(reason))
                results = choice.get("content_filter_results")
                if results is not None:
                    table.add_results(results, "completion")
    elif own:
        reason = v.get("finish_reason")
        if reason is not None:
            reasons.append(reason if type(reason) is str else V.as_text(reason))
    entries = v.get("prompt_filter_results")
    if type(entries) is not list:
        entries = v.get("prompt_annotations")
    if type(entries) is list:
        for entry in entries:
            if type(entry) is dict:
                table.add_results(entry.get("content_filter_results"), "prompt")


def _is_frame(c: dict, kind: Any) -> bool:
    """A chunk the classifier knows: a chat chunk, a Responses event, a ChatAgent chunk or an error frame.

    A chat chunk has ``choices``, a chunk ``object`` or prompt filter
    results; a Responses event a ``type`` starting ``response.``; a ChatAgent
    chunk ``messages`` or a ``delta`` object; an error frame ``type: error``
    or an ``error`` object. ``kind`` is the chunk's ``type``.
    """
    return (
        type(c.get("choices")) is list
        or c.get("object") in CHUNK_OBJECTS
        or type(c.get("prompt_filter_results")) is list
        or type(c.get("prompt_annotations")) is list
        or (type(kind) is str and kind.startswith("response."))
        or type(c.get("messages")) is list
        or type(c.get("delta")) is dict
        or kind == "error"
        or type(c.get("error")) is dict
    )


def _walk_chunks(p: Payload, chunks: list) -> dict | None:
    """One walk over a logged stream's chunks; return the error the stream ended with.

    Records on ``p`` whether every chunk is a known frame, the chunks' finish
    reasons and filter flags (``read_frame``), and the reason of the first
    ``response.incomplete`` event that gives one. The error is the
    ``response.error`` of a Responses ``response.failed`` event, a Responses
    ``error`` event itself (it holds ``code``, ``message``, ``param``), or the
    ``error`` of a chat chunk that carries one instead of ``choices`` (an
    error raised mid-stream): the first found.
    """
    table, reasons = V.FlagTable(), []
    known, error, incomplete = True, None, None
    for chunk in chunks:
        if type(chunk) is not dict:
            known = False
            continue
        kind, choices = chunk.get("type"), chunk.get("choices")
        if known and type(choices) is not list and not _is_frame(chunk, kind):
            known = False
        if error is None:
            if kind == "response.failed":
                found = V.obj(chunk, "response", "error")
            elif kind == "error":
                found = chunk
            else:
                found = chunk.get("error")
            if type(found) is dict:
                error = found
        if incomplete is None and kind == "response.incomplete":
            incomplete = V.text(chunk, "response", "incomplete_details", "reason")
        # read_frame(table, reasons, chunk, True), inline: this runs for every chunk.
        if type(choices) is list:
            for choice in choices:
                if type(choice) is dict:
                    reason = choice.get("finish_reason")
                    if reason is not None:
                        reasons.append(reason if type(reason) is str else V.as_text(reason))
                    results = choice.get("content_filter_results")
                    if results is not None:
                        table.add_results(results, "completion")
        else:
            reason = chunk.get("finish_reason")
            if reason is not None:
                reasons.append(reason if type(reason) is str else V.as_text(reason))
        entries = chunk.get("prompt_filter_results")
        if type(entries) is not list:
            entries = chunk.get("prompt_annotations")
        if type(entries) is list:
            for entry in entries:
                if type(entry) is dict:
                    table.add_results(entry.get("content_filter_results"), "prompt")
    p.chunks_known, p.chunk_reasons, p.chunk_flags, p.chunk_incomplete = known, reasons, table, incomplete
    return error


def _with_message(err: dict | None) -> dict | None:
    """A provider error object that is the error itself (Bedrock's ``{"message": ...}``), else ``None``."""
    return err if V.text(err, "message") is not None else None


def _provider_error(p: Payload, gw_inner: Any, exc_inner: Any, stream_error: dict | None) -> tuple[dict | None, str | None]:
    """The provider's error object wherever it sits (the first place found), and that place.

    The places, in order: ``gateway`` (the gateway body's inner JSON),
    ``stream_event`` (``stream_error``, found by ``_walk_chunks``), ``responses`` (a ``failed`` Responses object's
    ``error``), ``provider`` (a bare ``error`` body) and ``trace_exception``.
    """
    if gw_inner is not None:
        found = V.first(V.obj(gw_inner, "external_model_error", "error"), V.obj(gw_inner, "error"),
                        _with_message(V.obj(gw_inner, "external_model_error")))
        if found is not None:
            return found, "gateway"
    if stream_error is not None:
        return stream_error, "stream_event"
    found = V.key(p.resp, "error")
    if type(found) is dict:
        return found, "responses" if V.key_text(p.resp, "status") == "failed" else "provider"
    if exc_inner is not None:
        found = V.first(V.obj(exc_inner, "external_model_error", "error"), V.obj(exc_inner, "error"))
        if found is not None:
            return found, "trace_exception"
    return None, None


def _error(p: Payload, err: dict | None, origin: str | None) -> dict[str, Any] | None:
    """code, message, type, param, http_status, flags, origin; ``None`` without any error."""
    exception = p.exception
    if err is None and p.gw_code is None and exception is None:
        return None
    exc_http = _group(_HTTP_CODE, exception)
    if err is not None:
        flags = V.error_flags(err)
    else:
        found = _group(_REPR_FILTER, exception)
        flags = V.flags_from_results(V.parse(_repr_to_json(found)) if found else None, "prompt")
    return {
        "code": V.first(V.text(err, "code"), p.gw_code, _group(_REPR_CODE, exception)),
        "message": V.first(V.text(err, "message"), p.gw_message, exception),
        "type": V.text(err, "type"),
        "param": V.text(err, "param"),
        "http_status": V.first(V.integer(err, "status"), None if exc_http is None else int(exc_http)),
        "flags": flags,
        "origin": V.first(
            origin, "gateway" if p.gw_code is not None else None, "trace_exception" if exception is not None else None
        ),
    }


def _guardrail(p: Payload, verdict: Any) -> bool:
    """Record a guardrail verdict's flags and blocking stages on ``p``; whether ``verdict`` is one."""
    if type(verdict) is not dict or (verdict.get("input_guardrail") is None and verdict.get("output_guardrail") is None):
        return False
    flags, stages, seen = [], [], False
    for key, stage in _GUARDRAIL_KEYS:
        found = V.get(verdict, key)
        entries = found if type(found) is list else (found,) if type(found) is dict else ()
        for entry in entries:
            seen = True
            flags += V.guardrail_flags(entry, stage)
            if V.boolean(entry, "flagged") is True and stage not in stages:
                stages.append(stage)
    if seen:
        p.guardrail_flags, p.guardrail_stages = flags, tuple(stages)
        p.guardrail_code = V.text(verdict, "finish_reason")
    return seen


def read_payloads(request: str | None, response: str | None) -> Payload:
    """Parse the JSON payloads once and locate chunks, trace outputs and errors."""
    p = Payload()
    if request is not None:
        p.req, p.has_req, p.req_invalid = _load(request)
    if response is not None:
        p.resp, p.has_resp, p.resp_invalid = _load(response)
    resp = p.resp
    stream_error = gw_inner = exc_inner = None
    if type(resp) is dict:
        if "databricks_output" in resp:
            spans = p.spans = V.items(resp, *_TRACE, "data", "spans") or []
            outputs = p.trace_outputs
            for span in spans:
                output = V.parse(V.text(span, "attributes", "mlflow.spanOutputs"))
                if output is not None:
                    outputs.append(output)
            exception = p.exception = _exception_message(spans)
            if exception is not None:
                inner_text = _group(_REPR_MESSAGE, exception)
                exc_inner = V.parse(_ESCAPED_QUOTE.sub("'", inner_text)) if inner_text else None
        gw_code = resp.get("error_code")
        if gw_code is not None:
            p.gw_code = gw_code if type(gw_code) is str else V.as_text(gw_code)
            gw_message = p.gw_message = V.key_text(resp, "message")
            gw_inner = V.parse(gw_message) if gw_message is not None else None
    elif type(resp) is list:
        p.chunks = resp
        stream_error = _walk_chunks(p, resp)
    err, origin = _provider_error(p, gw_inner, exc_inner, stream_error)
    p.error = _error(p, err, origin)
    if type(resp) is dict:
        if not _guardrail(p, gw_inner):
            _guardrail(p, resp)
        policy = resp.get(_POLICY)
        if type(policy) is dict:
            p.policy = {k: V.text(policy, k) for k in _POLICY_FIELDS}
    return p
