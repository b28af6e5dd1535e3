"""Classify every row's outcome: the key that routes it to its parser.

The outcomes are those of ``schemas.OUTCOMES``. A row whose payload is not
JSON, or whose JSON has a shape no rule recognises, gets a null outcome and a
``quarantine_reason`` instead: it is set aside, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gatewatch.transforms import staging as S
from gatewatch.transforms import variant as V

Transform = Callable[[DataFrame], DataFrame]

_CHUNK_OBJECTS = ("chat.completion.chunk", "chat.completion")
_FILTER_CODES = ("content_filter", "ResponsibleAIPolicyViolation", "content_policy_violation")


def _is_chat_frame(c: Column) -> Column:
    """A chat-completion chunk: has ``choices``, a chunk ``object``, or prompt filter results."""
    return (
        V.items(c, "$.choices").isNotNull()
        | V.get(c, "$.object").isin(*_CHUNK_OBJECTS)
        | V.items(c, "$.prompt_filter_results").isNotNull()
        | V.items(c, "$.prompt_annotations").isNotNull()
    )


def _is_responses_event(c: Column) -> Column:
    return F.coalesce(V.get(c, "$.type").startswith("response."), F.lit(False))


def _is_error_frame(c: Column) -> Column:
    """A stream's error frame: a Responses ``error`` event, or a chat chunk ``{"error": {...}}``."""
    return F.coalesce(V.get(c, "$.type") == "error", F.lit(False)) | F.try_variant_get(
        c, "$.error", "map<string,variant>"
    ).isNotNull()


def _shape(resp: Column, chunks: Column, error: Column) -> Column:
    """``none``, ``chat``, ``responses``, ``chunks``, ``error_body`` or ``unknown``."""
    all_known = F.forall(chunks, lambda c: _is_chat_frame(c) | _is_responses_event(c) | _is_error_frame(c))
    return (
        F.when(resp.isNull(), F.lit("none"))
        .when(chunks.isNotNull() & (F.size(chunks) > 0) & all_known, F.lit("chunks"))
        .when(chunks.isNotNull(), F.lit("unknown"))
        .when(_is_chat_frame(resp), F.lit("chat"))
        .when(
            V.items(resp, "$.output").isNotNull() | (V.get(resp, "$.object") == "response"),
            F.lit("responses"),
        )
        .when(error.isNotNull(), F.lit("error_body"))
        .otherwise(F.lit("unknown"))
    )


def _all_flags(resp: Column, chunks: Column, trace_outputs: Column, error: Column) -> Column:
    per_chunk = F.flatten(
        F.transform(V.or_empty(chunks), lambda c: F.concat(V.prompt_flags(c), V.completion_flags(c)))
    )
    per_output = F.flatten(
        F.transform(trace_outputs, lambda o: F.concat(V.prompt_flags(o), V.completion_flags(o)))
    )
    from_error = F.coalesce(error["flags"], V.no_flags())
    # Unmerged: with_outcome stages this as a column and merges it in the next
    # step, so the extraction runs once per row.
    return F.concat(V.prompt_flags(resp), V.completion_flags(resp), per_chunk, per_output, from_error)


def _finish_reasons(resp: Column, chunks: Column, trace_outputs: Column) -> Column:
    def of(v: Column) -> Column:
        return F.transform(V.or_empty(V.items(v, "$.choices")), lambda ch: V.get(ch, "$.finish_reason"))

    per_chunk = F.flatten(F.transform(V.or_empty(chunks), of))
    per_output = F.flatten(F.transform(trace_outputs, of))
    reasons = F.concat(of(resp), per_chunk, per_output)
    return F.filter(reasons, lambda r: r.isNotNull())


def _incomplete_reason(resp: Column, chunks: Column) -> Column:
    events = F.transform(
        V.or_empty(chunks),
        lambda c: F.when(
            V.get(c, "$.type") == "response.incomplete", V.get(c, "$.response.incomplete_details.reason")
        ),
    )
    return V.first(V.get(resp, "$.incomplete_details.reason"), V.first_non_null(events))


def _content_seen(resp: Column, chunks: Column) -> Column:
    """Whether any model output reached the caller before the end."""

    def frame_has_content(c: Column) -> Column:
        deltas = F.transform(V.or_empty(V.items(c, "$.choices")), lambda ch: V.get(ch, "$.delta.content"))
        messages = F.transform(V.or_empty(V.items(c, "$.choices")), lambda ch: V.get(ch, "$.message.content"))
        text_delta = (V.get(c, "$.type") == "response.output_text.delta") & V.non_empty_string(V.get(c, "$.delta"))
        return (
            F.coalesce(F.exists(F.concat(deltas, messages), V.non_empty_string), F.lit(False))
            | F.coalesce(text_delta, F.lit(False))
        )

    in_chunks = F.coalesce(F.exists(V.or_empty(chunks), frame_has_content), F.lit(False))
    return in_chunks | frame_has_content(resp)


def _is_filter_error(error: Column) -> Column:
    code_says = F.coalesce(error["code"].isin(*_FILTER_CODES), F.lit(False))
    message_says = F.coalesce(error["message"].contains("content_filter"), F.lit(False))
    return error.isNotNull() & (code_says | message_says | V.any_filtered(error["flags"]))


def with_outcome() -> Transform:
    """Classify each row.

    Reads: ``status_code``, ``logging_error_codes`` and the columns added by
    ``with_parsed_payloads``.
    Adds: ``is_stream`` (null when neither request nor response tells),
    ``outcome`` (null when quarantined), ``quarantine_reason``
    (``json_parse_error`` | ``unknown_shape`` | null), ``blocked``,
    ``blocked_stage``, ``safety_flags`` and the helper columns ``_shape``,
    ``_finish_reasons``, ``_incomplete_reason``, ``_content_seen``.
    """

    return _OUTCOME


def _outcome_steps() -> list[S.Step]:
    resp, chunks, error = F.col("_resp"), F.col("_chunks"), F.col("_error")
    features = {
        "_shape": _shape(resp, chunks, error),
        "_raw_flags": _all_flags(resp, chunks, F.col("_trace_outputs"), error),
        "_finish_reasons": _finish_reasons(resp, chunks, F.col("_trace_outputs")),
        "_incomplete_reason": _incomplete_reason(resp, chunks),
        "_content_seen": _content_seen(resp, chunks),
        "_req_stream": V.get(F.col("_req"), "$.stream", "boolean"),
    }
    flags, status, shape = F.col("safety_flags"), F.col("status_code"), F.col("_shape")
    resp_says_stream = (shape == "chunks") | F.coalesce(
        V.get(resp, "$.object") == "chat.completion.chunk", F.lit(False)
    )
    not_logged = F.coalesce(F.size(F.col("logging_error_codes")) > 0, F.lit(False))
    signals = {
        "is_stream": F.when(F.coalesce(F.col("_req_stream"), F.lit(False)) | resp_says_stream, F.lit(True))
        .when(F.col("_req").isNotNull() | resp.isNotNull(), F.lit(False)),
        "_prompt_blocked": _is_filter_error(error) | V.any_filtered(flags, "prompt"),
        "_completion_cut": F.coalesce(F.array_contains(F.col("_finish_reasons"), "content_filter"), F.lit(False))
        | F.coalesce(F.col("_incomplete_reason") == "content_filter", F.lit(False))
        | V.any_filtered(flags, "completion"),
        "_invalid": F.col("_req_invalid") | F.col("_resp_invalid"),
        "_unknown": (shape == "unknown")
        | ((shape == "none") & ~not_logged & F.coalesce(status < 400, F.lit(True))),
    }
    blocked = F.col("_prompt_blocked") | F.col("_completion_cut")
    failed = (
        error.isNotNull()
        | F.coalesce(status >= 400, F.lit(False))
        | F.coalesce(F.col("_incomplete_reason").isNotNull() & ~F.col("_completion_cut"), F.lit(False))
    )
    stream = F.coalesce(F.col("is_stream"), F.lit(False))
    quarantined = F.col("_invalid") | F.col("_unknown")
    outcome = (
        F.when(quarantined, F.lit(None).cast("string"))
        .when(blocked & stream & F.col("_content_seen"), F.lit("stream_blocked_partial"))
        .when(blocked & stream, F.lit("stream_blocked_immediate"))
        .when(blocked, F.lit("predict_blocked"))
        .when(failed, F.lit("error"))
        .when(stream, F.lit("stream_ok"))
        .otherwise(F.lit("predict_ok"))
    )
    classified = {
        "outcome": outcome,
        "quarantine_reason": F.when(F.col("_invalid"), F.lit("json_parse_error")).when(
            F.col("_unknown"), F.lit("unknown_shape")
        ),
        "blocked": blocked & ~quarantined,
        "blocked_stage": F.when(~quarantined & F.col("_prompt_blocked"), F.lit("prompt")).when(
            ~quarantined & F.col("_completion_cut"), F.lit("completion")
        ),
    }
    return [
        S.with_columns(features),
        S.with_columns({"safety_flags": V.merge_flags(F.col("_raw_flags"))}),
        S.with_columns(signals),
        S.with_columns(classified),
    ]


_OUTCOME = S.Steps(_outcome_steps)
