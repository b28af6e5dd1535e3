"""Classify every row's outcome: the key that routes it to its parser.

The outcomes are those of ``schemas.OUTCOMES``. A row whose payload is not
JSON, or whose JSON has a shape no rule recognises, gets no outcome and a
``quarantine_reason`` instead: it is set aside, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatewatch.transforms import values as V
from gatewatch.transforms.payload import CHUNK_OBJECTS, Payload, read_frame
_FILTER_CODES = ("content_filter", "ResponsibleAIPolicyViolation", "content_policy_violation")
_POLICY_STAGES = {"pre_call": "prompt", "post_call": "completion"}
_POLICY_DENIALS = ("deny", "block")


@dataclass(slots=True)
class Classified:
    """A row's outcome and the signals it was decided on.

    ``outcome`` is ``None`` when quarantined (``quarantine_reason`` says
    why); ``safety_flags`` holds one merged flag per (stage, category);
    ``shape`` is ``none``, ``chat``, ``agent``, ``embeddings``,
    ``responses``, ``chunks``, ``policy``, ``guardrail``, ``error_body`` or
    ``unknown``; ``layer`` names the safety layer that blocked
    (``guardrail``, ``service_policy`` or ``content_filter``), ``None``
    when nothing did.
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
    layer: str | None = None


def _is_chat_frame(c: Any) -> bool:
    """A chat-completion chunk: has ``choices``, a chunk ``object``, or prompt filter results."""
    if type(c) is not dict:
        return False
    return (
        type(c.get("choices")) is list
        or c.get("object") in CHUNK_OBJECTS
        or type(c.get("prompt_filter_results")) is list
        or type(c.get("prompt_annotations")) is list
    )


def _is_agent_frame(c: Any) -> bool:
    """An MLflow ChatAgent response (``messages``) or one of its stream chunks (``delta``)."""
    return type(c) is dict and (type(c.get("messages")) is list or type(c.get("delta")) is dict)


def _is_embeddings(c: Any) -> bool:
    """An OpenAI-compatible embeddings response: ``object: list`` whose ``data`` are embeddings."""
    data = V.items(c, "data")
    return bool(data) and V.text(c, "object") == "list" and all(V.text(d, "object") == "embedding" for d in data)


def _shape(p: Payload) -> str:
    resp, chunks = p.resp, p.chunks
    if not p.has_resp:
        return "none"
    if chunks is not None:
        return "chunks" if chunks and p.chunks_known else "unknown"
    if _is_chat_frame(resp):
        return "chat"
    if _is_agent_frame(resp):
        return "agent"
    if _is_embeddings(resp):
        return "embeddings"
    if V.items(resp, "output") is not None or V.text(resp, "object") == "response":
        return "responses"
    if p.policy is not None:
        return "policy"
    if p.guardrail_stages or p.guardrail_flags:
        return "guardrail"
    if p.error is not None:
        return "error_body"
    return "unknown"


def _frames(p: Payload) -> tuple[list[str], V.FlagTable]:
    """The finish reasons (in order) and filter flags of the response, its chunks and its trace outputs.

    A logged stream's were read in ``read_payloads``'s walk over its chunks
    (a list has no trace and no guardrail verdict). The flag table also holds
    the error's and the guardrail's flags.
    """
    if p.chunk_flags is not None:
        table, reasons = p.chunk_flags, p.chunk_reasons
    else:
        table, reasons, own = V.FlagTable(), [], p.guardrail_code is None
        read_frame(table, reasons, p.resp, own)
        for output in p.trace_outputs:
            read_frame(table, reasons, output, own)
    if p.error is not None:
        table.add_flags(p.error["flags"])
    if p.guardrail_flags:
        table.add_flags(p.guardrail_flags)
    return reasons, table


def _incomplete_reason(p: Payload) -> str | None:
    """Why a Responses call ended incomplete: the response's own reason, else a ``response.incomplete`` event's."""
    resp = p.resp
    if type(resp) is dict:
        details = resp.get("incomplete_details")
        return None if details is None else V.text(details, "reason")
    return p.chunk_incomplete


def _frame_has_content(c: Any) -> bool:
    for choice in V.items(c, "choices") or ():
        if (V.has_text(V.get(choice, "delta", "content")) or V.has_text(V.get(choice, "message", "content"))
                or V.has_text(V.get(choice, "text"))):
            return True
    if V.has_text(V.get(c, "delta", "content")):  # a ChatAgent chunk
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


def _policy_stage(policy: dict | None, finish_reasons: list[str]) -> tuple[str | None, bool]:
    """(stage, denied) of a service policy: the stage from its phase; denied when it denied the call.

    ``action: deny`` denies; a policy without an action denies when the call
    ended ``content_filter``. A policy that allowed or transformed the call
    (another action) is not a block. A phase other than ``pre_call`` /
    ``post_call`` gives no stage.
    """
    if policy is None:
        return None, False
    action = (policy["action"] or "").lower()
    denied = action in _POLICY_DENIALS or (not action and "content_filter" in finish_reasons)
    return _POLICY_STAGES.get((policy["phase"] or "").lower()), denied


def classify(p: Payload, status_code: int | None, logging_error_codes: list | None) -> Classified:
    """Classify one row from its located payloads, status and logging error codes."""
    shape = _shape(p)
    finish_reasons, table = _frames(p)
    policy_stage, policy_denied = _policy_stage(p.policy, finish_reasons) if p.policy is not None else (None, False)
    if policy_stage is not None:
        table.add(policy_stage, "service_policy", None, policy_denied, True)  # values.policy_flag
    flags = table.flags()
    incomplete = _incomplete_reason(p)
    resp, req = p.resp, p.req
    resp_says_stream = shape == "chunks" or (type(resp) is dict and V.key_text(resp, "object") == "chat.completion.chunk")
    if (type(req) is dict and V.as_boolean(req.get("stream"))) or resp_says_stream:
        is_stream: bool | None = True
    elif p.has_req or p.has_resp:
        is_stream = False
    else:
        is_stream = None
    not_logged = bool(logging_error_codes)
    guarded = bool(p.guardrail_stages)
    prompt_filtered = completion_filtered = False
    if not guarded:
        for f in flags:
            if f["filtered"] is True:
                if f["stage"] == "prompt":
                    prompt_filtered = True
                elif f["stage"] == "completion":
                    completion_filtered = True
    policy_blocked = policy_denied and not guarded
    prompt_blocked = (
        "prompt" in p.guardrail_stages
        or (policy_blocked and policy_stage == "prompt")
        or (not guarded and (_is_filter_error(p.error) or prompt_filtered))
    )
    completion_cut = (
        "completion" in p.guardrail_stages
        or (policy_blocked and policy_stage == "completion")
        or (not guarded and (
            "content_filter" in finish_reasons or incomplete == "content_filter"
            or completion_filtered
        ))
    )
    invalid = p.req_invalid or p.resp_invalid
    blocked = prompt_blocked or completion_cut
    unknown = (
        shape == "unknown"
        or (shape == "none" and not not_logged and (status_code is None or status_code < 400))
        or (policy_denied and not blocked)  # a denial whose phase says no stage: not guessed
    )
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
        layer=None if quarantined or not blocked else (
            "guardrail" if guarded else "service_policy" if policy_blocked else "content_filter"
        ),
    )
