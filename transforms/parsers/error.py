"""``error``: a call that failed for a reason other than a safety filter.

Shapes: 4xx/5xx with a null response (rate limits, timeouts, server errors),
gateway error bodies (``error_code`` + ``message``, the message possibly the
provider's JSON), bare provider error bodies, streams ending in a Responses
``response.failed`` or ``error`` event or in a chat chunk carrying ``error``,
and exceptions caught by an agent. Provider errors passed through the gateway
for any provider (``external_model_provider`` openai, anthropic, google,
amazon-bedrock, custom, ...), budget and rate limits are errors, never blocks.
"""

from __future__ import annotations

from gatewatch.transforms import fields
from gatewatch.transforms.fields import Row
from gatewatch.transforms.registry import register
from gatewatch.transforms.rows import parse_with


@register("error", version="1.1.0")
def columns(row: Row) -> dict:
    """Reads the located payloads and the status; returns the parsed request columns."""
    return {
        **fields.answer(row, last=True),
        "error_type": fields.error_type(row),
        "error_code": fields.error_code(row),
        "error_message": fields.error_message(row),
    }


parse = parse_with("error")
