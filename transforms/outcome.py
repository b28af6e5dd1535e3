"""Classify every row's outcome: the key that routes it to its parser.

The outcomes are those of ``schemas.OUTCOMES``. A row whose payload is not
JSON, or whose JSON has a shape no rule recognises, gets no outcome and a
``quarantine_reason`` instead: it is set aside, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatewatch.transforms import values as V
from gatewatch.transforms.payload import Payload

_CHUNK_OBJECTS = ("chat.completion.chunk", "chat.completion")
_FILTER_CODES = ("content_filter", "ResponsibleAIPolicyViolation", "content_policy_violation")


@dataclass
class Classified:
    """A row's outcome and the signals it was decided on.

    ``outcome`` is ``None`` when quarantined (``quarantine_reason`` says
    why); ``safety_flags`` holds one merged flag per (stage, category);
    ``shape`` is ``none``, ``chat``, ``responses``, ``chunks``,
    ``error_body`` or ``unknown``.
    """

    shape: str
    outcome: str | None
    quarantine_reason: str | None
    is_stream: bool | None
    blocked: bool
    blocked_stage: str | None
    safety_flags: list[V.Flag]
    finish_reasons: list[str]
    incomplete_reason: str | None


def _is_chat_frame(c: Any) -> bool:
    """A chat-completion chunk: has ``choices``, a chunk ``object``, or prompt filter results."""
    return (
        V.items(c, "choices") is not None
        or V.text(c, "object") in _CHUNK_OBJECTS
        or V.items(c, "prompt_filter_results") is not None
        or V.items(c, "prompt_annotations") is not None
    )


def _is_responses_event(c: Any) -> bool:
    kind = V.text(c, "type")
    return kind is not None and kind.startswith("response.")


def _is_error_frame(c: Any) -> bool:
    """A stream's error frame: a Responses ``error`` event, or a chat chunk ``{"error": {...}}``."""
    return V.text(c, "type") == "error" or V.obj(c, "error") is not None


def _shape(p: Payload) -> str:
    resp, chunks = p.resp, p.chunks
    if not p.has_resp:
        return "none"
    if chunks is not None:
        known = all(_is_chat_frame(c) or _is_responses_event(c) or _is_error_frame(c) for c in chunks)
        return "chunks" if chunks and known else "unknown"
    if _is_chat_frame(resp):
        return "chat"
    if V.items(resp, "output") is not None or V.text(resp, "object") == "response":
        return "responses"
    if p.error is not None:
        return "error_body"
    return "unknown"


def _frame_flags(v: Any) -> list[V.Flag]:
    return V.prompt_flags(v) + V.completion_flags(v)


def _all_flags(p: Payload) -> list[V.Flag]:
    flags = _frame_flags(p.resp)
    for chunk in p.chunks or ():
        flags += _frame_flags(chunk)
    for output in p.trace_outputs:
        flags += _frame_flags(output)
    if p.error is not None:
        flags += p.error["flags"]
    return flags


def _finish_reasons(p: Payload) -> list[str]:
    frames = [p.resp, *(p.chunks or ()), *p.trace_outputs]
    reasons = (V.text(choice, "finish_reason") for v in frames for choice in V.items(v, "choices") or ())
    return [r for r in reasons if r is not None]


def _incomplete_reason(p: Payload) -> str | None:
    events = (
        V.text(c, "response", "incomplete_details", "reason")
        for c in p.chunks or ()
        if V.text(c, "type") == "response.incomplete"
    )
    return V.first(V.text(p.resp, "incomplete_details", "reason"), V.first_of(events))


def _frame_has_content(c: Any) -> bool:
    for choice in V.items(c, "choices") or ():
        if V.non_empty(V.text(choice, "delta", "content")) or V.non_empty(V.text(choice, "message", "content")):
            return True
    return V.text(c, "type") == "response.output_text.delta" and V.non_empty(V.text(c, "delta"))


def _content_seen(p: Payload) -> bool:
    """Whether any model output reached the caller before the end."""
    return any(_frame_has_content(c) for c in p.chunks or ()) or _frame_has_content(p.resp)


def _is_filter_error(error: dict | None) -> bool:
    if error is None:
        return False
    return (
        error["code"] in _FILTER_CODES
        or "content_filter" in (error["message"] or "")
        or V.any_filtered(error["flags"])
    )


def classify(p: Payload, status_code: int | None, logging_error_codes: list | None) -> Classified:
    """Classify one row from its located payloads, status and logging error codes."""
    shape = _shape(p)
    flags = V.merge_flags(_all_flags(p))
    finish_reasons = _finish_reasons(p)
    incomplete = _incomplete_reason(p)
    resp_says_stream = shape == "chunks" or V.text(p.resp, "object") == "chat.completion.chunk"
    if V.boolean(p.req, "stream") or resp_says_stream:
        is_stream: bool | None = True
    elif p.has_req or p.has_resp:
        is_stream = False
    else:
        is_stream = None
    not_logged = bool(logging_error_codes)
    prompt_blocked = _is_filter_error(p.error) or V.any_filtered(flags, "prompt")
    completion_cut = (
        "content_filter" in finish_reasons or incomplete == "content_filter" or V.any_filtered(flags, "completion")
    )
    invalid = p.req_invalid or p.resp_invalid
    unknown = shape == "unknown" or (
        shape == "none" and not not_logged and (status_code is None or status_code < 400)
    )
    blocked = prompt_blocked or completion_cut
    failed = (
        p.error is not None
        or (status_code is not None and status_code >= 400)
        or (incomplete is not None and not completion_cut)
    )
    quarantined = invalid or unknown
    if quarantined:
        outcome = None
    elif blocked and is_stream:
        outcome = "stream_blocked_partial" if _content_seen(p) else "stream_blocked_immediate"
    elif blocked:
        outcome = "predict_blocked"
    elif failed:
        outcome = "error"
    elif is_stream:
        outcome = "stream_ok"
    else:
        outcome = "predict_ok"
    return Classified(
        shape=shape,
        outcome=outcome,
        quarantine_reason="json_parse_error" if invalid else "unknown_shape" if unknown else None,
        is_stream=is_stream,
        blocked=blocked and not quarantined,
        blocked_stage=None if quarantined else "prompt" if prompt_blocked else "completion" if completion_cut else None,
        safety_flags=flags,
        finish_reasons=finish_reasons,
        incomplete_reason=incomplete,
    )
