"""``predict_blocked``: a non-streaming call refused by a safety filter.

Shapes: a gateway 400 whose ``message`` holds the provider's content-filter
error; a bare Azure 400 body; a chat completion cut with
``finish_reason: content_filter``; and a ResponsesAgent that caught the
filter error and answered with its own message (the filter result is in the
trace's exception event, a Python repr wrapping JSON); a gateway 400 whose
``message`` is an AI Gateway guardrail's verdict (input: prompt stage,
output: completion stage); and a Unity AI Gateway response naming the
``databricks_service_policy`` that denied it (stage from its phase).
"""

from __future__ import annotations

from gatewatch.transforms import fields
from gatewatch.transforms.fields import Row
from gatewatch.transforms.registry import register
from gatewatch.transforms.rows import parse_with


@register("predict_blocked", version="1.1.0")
def columns(row: Row) -> dict:
    """Reads the located payloads; returns the parsed request columns with the filter's error."""
    return {**fields.answer(row, last=False), **fields.filter_error(row)}


parse = parse_with("predict_blocked")
