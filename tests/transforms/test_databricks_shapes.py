"""Databricks' own safety layers and the 2026 answer shapes, one fixture each.

Each test reads one fixture of ``tests/fixtures/payloads`` (built from the
documentation its docstring cites) through the per-row parse
(``transforms.rows.parse_values``, the code Spark's workers run) and asserts
the outcome, the token columns, the blocked stage and the filtered
categories; ``tests/transforms/test_parsers.py`` runs the same fixtures
through Spark and the contract against every value they expect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import gatewatch.transforms.parsers  # noqa: F401  (registers the outcome parsers)
from gatewatch.transforms.rows import parse_values

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"


def _text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value)


def parsed(name: str) -> dict[str, Any]:
    """The parsed columns of one fixture, with ``categories`` (filtered flags) and ``tokens`` added."""
    fx = json.loads((PAYLOADS / f"{name}.json").read_text())
    out = parse_values([_text(fx["request"])], [_text(fx["response"])], [fx["status_code"]], [fx["logging_error_codes"]])
    row = {k: v[0] for k, v in out.items()}
    row["categories"] = sorted({f["category"] for f in row["safety_flags"] or [] if f["filtered"]})
    row["tokens"] = (row["input_tokens"], row["output_tokens"], row["total_tokens"])
    row["source"] = fx["source"]
    return row


def check(row: dict[str, Any], outcome: str, tokens: tuple, stage: str | None, categories: list[str]) -> None:
    """The four things every shape test asserts."""
    assert (row["outcome"], row["tokens"], row["blocked_stage"], row["categories"]) == (outcome, tokens, stage, categories)
    assert row["blocked"] is (stage is not None)


# --- AI Gateway guardrails: https://docs.databricks.com/aws/en/ai-gateway/configure-ai-gateway-endpoints


def test_input_safety_guardrail_blocks_the_prompt_with_its_category():
    """An input safety guardrail's 400 is a prompt block by the guardrail, its category flagged, no model tokens.

    Source: https://docs.databricks.com/aws/en/ai-gateway/configure-ai-gateway-endpoints (guardrails: safety, PII).
    """
    row = parsed("guardrail_input_safety_block")
    check(row, "predict_blocked", (None, None, None), "prompt", ["violent_crimes"])
    assert (row["error_type"], row["error_code"]) == ("guardrail", "input_guardrail_triggered")


def test_input_pii_guardrail_is_its_own_category():
    """PII detection that blocked is the category ``pii``, at the prompt stage.

    Source: https://docs.databricks.com/aws/en/ai-gateway/configure-ai-gateway-endpoints (PII detection, behavior BLOCK).
    """
    row = parsed("guardrail_input_pii_block")
    check(row, "predict_blocked", (None, None, None), "prompt", ["pii"])
    assert row["error_type"] == "guardrail"


def test_output_guardrail_blocks_the_completion():
    """An output guardrail's verdict blocks at the completion stage with every category that fired.

    Source: https://docs.databricks.com/aws/en/ai-gateway/configure-ai-gateway-endpoints (output guardrails).
    """
    row = parsed("guardrail_output_block")
    check(row, "predict_blocked", (None, None, None), "completion", ["hate", "self_harm"])


def test_input_guardrail_on_a_stream_is_blocked_before_any_chunk():
    """A streaming call refused by an input guardrail is ``stream_blocked_immediate`` at the prompt stage.

    Source: https://docs.databricks.com/aws/en/ai-gateway/configure-ai-gateway-endpoints (guardrails on chat endpoints).
    """
    row = parsed("guardrail_stream_input_block")
    check(row, "stream_blocked_immediate", (None, None, None), "prompt", ["sexual_content"])
    assert row["is_stream"] is True


def test_output_guardrail_on_a_stream_is_blocked_before_any_chunk():
    """A streaming call whose answer an output PII guardrail refused is blocked at once, at the completion stage.

    Source: https://docs.databricks.com/aws/en/ai-gateway/configure-ai-gateway-endpoints (output PII guardrail).
    """
    row = parsed("guardrail_stream_output_block")
    check(row, "stream_blocked_immediate", (None, None, None), "completion", ["pii"])


# --- Unity AI Gateway service policies: https://docs.databricks.com/aws/en/data-governance/unity-catalog/service-policies/


def test_pre_call_policy_denial_is_a_prompt_block_and_records_the_policy():
    """A pre_call denial (200, finish_reason content_filter) blocks the prompt; the policy is on the row.

    Source: https://docs.databricks.com/aws/en/data-governance/unity-catalog/service-policies/ (ON CALL phase).
    """
    row = parsed("policy_pre_call_deny")
    check(row, "predict_blocked", (0, 0, 0), "prompt", ["service_policy"])
    assert row["service_policy"] == {"name": "main.governance.block_pii", "action": "deny", "phase": "pre_call",
                                     "reason": "Sensitive data detected: email address."}
    assert (row["error_type"], row["error_message"]) == ("service_policy", "Sensitive data detected: email address.")


def test_post_call_policy_denial_is_a_completion_block_with_the_models_usage():
    """A post_call denial blocks the completion; the model ran, so its usage is kept.

    Source: https://docs.databricks.com/aws/en/data-governance/unity-catalog/service-policies/ (ON RESULT phase).
    """
    row = parsed("policy_post_call_deny")
    check(row, "predict_blocked", (57, 212, 269), "completion", ["service_policy"])
    assert row["service_policy"]["phase"] == "post_call"


def test_bare_policy_denial_without_choices_is_a_prompt_block():
    """The denial as a model service returns it without choices or model is still a prompt block.

    Source: https://docs.databricks.com/aws/en/data-governance/unity-catalog/service-policies/ (policy decisions).
    """
    row = parsed("policy_bare_denial")
    check(row, "predict_blocked", (0, 0, 0), "prompt", ["service_policy"])
    assert row["model"] is None


def test_policy_that_transformed_the_call_is_not_a_block():
    """A policy that masked PII and let the answer through leaves the call ``predict_ok``, the policy recorded.

    Source: https://docs.databricks.com/aws/en/data-governance/unity-catalog/service-policies/ (redact, allow).
    """
    row = parsed("policy_allowed_mask")
    check(row, "predict_ok", (40, 12, 52), None, [])
    assert row["service_policy"]["action"] == "mask"


def test_denial_with_an_undocumented_phase_is_quarantined():
    """A denial whose phase the docs do not name, and that did not end content_filter, is set aside, not guessed.

    Source: https://docs.databricks.com/aws/en/data-governance/unity-catalog/service-policies/ (ON CALL / ON RESULT only).
    """
    row = parsed("policy_unknown_phase_deny")
    assert (row["outcome"], row["quarantine_reason"]) == (None, "unknown_shape")


# --- more answer shapes


def test_embeddings_count_input_tokens_only():
    """An embeddings response is ``predict_ok`` with input and total tokens and no output tokens.

    Source: https://developers.openai.com/api/reference/go/resources/embeddings (CreateEmbeddingResponse).
    """
    row = parsed("embeddings_ok")
    check(row, "predict_ok", (14, None, 14), None, [])
    assert row["model"] == "bge-large-en-v1.5"


def test_legacy_completions_are_answers():
    """A ``text_completion`` with ``choices[].text`` is ``predict_ok`` with its usage.

    Source: https://platform.openai.com/docs/api-reference/completions/object (legacy completions).
    """
    check(parsed("completions_legacy_ok"), "predict_ok", (9, 17, 26), None, [])


def test_chat_content_as_a_list_of_parts_is_an_answer():
    """A reasoning model's content list (reasoning, then text) is ``predict_ok``.

    Source: https://docs.databricks.com/aws/en/machine-learning/model-serving/query-reason-models (content parts).
    """
    check(parsed("chat_content_parts_ok"), "predict_ok", (31, 140, 171), None, [])


def test_chat_agent_response_with_usage():
    """An MLflow ChatAgentResponse is ``predict_ok`` with the usage it carries.

    Source: https://mlflow.org/docs/latest/api_reference/_modules/mlflow/types/agent.html (ChatAgentResponse).
    """
    check(parsed("chat_agent_usage_ok"), "predict_ok", (88, 9, 97), None, [])


def test_chat_agent_response_without_usage_id_or_model():
    """A ChatAgentResponse with no usage, id or model is ``predict_ok`` with unknown tokens.

    Source: https://mlflow.org/docs/latest/api_reference/_modules/mlflow/types/agent.html (usage is optional).
    """
    row = parsed("chat_agent_no_usage_ok")
    check(row, "predict_ok", (None, None, None), None, [])
    assert row["model"] is None


def test_chat_agent_chunks_are_a_stream():
    """A logged list of ChatAgentChunk deltas is ``stream_ok`` with the usage of the last chunk.

    Source: https://mlflow.org/docs/latest/api_reference/_modules/mlflow/types/agent.html (ChatAgentChunk).
    """
    row = parsed("chat_agent_stream_chunks_ok")
    check(row, "stream_ok", (5, 3, 8), None, [])
    assert row["is_stream"] is True


def test_responses_agent_answer_without_usage_id_or_model():
    """A ResponsesAgent answer with only ``output`` is ``predict_ok`` with unknown tokens.

    Source: https://mlflow.org/docs/latest/api_reference/_modules/mlflow/types/responses.html (ResponsesAgentResponse).
    """
    check(parsed("responses_agent_bare_ok"), "predict_ok", (None, None, None), None, [])


def test_responses_agent_stream_ending_in_an_error_event_is_an_error():
    """A ResponsesAgent stream ending in an ``error`` event is an ``error`` with the event's code, not a block.

    Source: https://mlflow.org/docs/latest/api_reference/_modules/mlflow/types/responses.html (ResponseErrorEvent).
    """
    row = parsed("responses_agent_stream_error_event")
    check(row, "error", (None, None, None), None, [])
    assert (row["error_type"], row["error_code"]) == ("server_error", "server_error")


@pytest.mark.parametrize(
    ("name", "error_type"),
    [("provider_anthropic_error", "bad_request"), ("provider_google_error", "server_error"),
     ("provider_bedrock_error", "bad_request"), ("provider_custom_rate_limit", "rate_limit")],
)
def test_provider_errors_through_the_gateway_are_errors_never_blocks(name, error_type):
    """An error of any provider passed through the gateway is an ``error`` of the right type, never a block.

    Source: https://docs.databricks.com/aws/en/generative-ai/external-models/ (external_model_provider and its error).
    """
    row = parsed(name)
    check(row, "error", (None, None, None), None, [])
    assert row["error_type"] == error_type
    assert row["error_message"] and "external_model_provider" not in row["error_message"]
