"""``stream_blocked_immediate``: a streaming call refused before any content.

Shapes: a streaming request answered by a 400 content-filter error body; a
chunk list whose only outcome is ``finish_reason: content_filter`` with no
content delta; a Responses stream ending ``response.incomplete`` (reason
``content_filter``) before any text delta; a streaming request refused by an
AI Gateway guardrail (400, the verdict in ``message``) or denied by a
service policy before any chunk.
"""

from __future__ import annotations

from gatewatch.transforms import fields
from gatewatch.transforms.fields import Row
from gatewatch.transforms.registry import register
from gatewatch.transforms.rows import parse_with


@register("stream_blocked_immediate", version="1.1.0")
def columns(row: Row) -> dict:
    """Reads the located payloads; returns the parsed request columns with the filter's error."""
    return {**fields.answer(row, last=True), **fields.filter_error(row)}


parse = parse_with("stream_blocked_immediate")
