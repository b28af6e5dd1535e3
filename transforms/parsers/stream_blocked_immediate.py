"""``stream_blocked_immediate``: a streaming call refused before any content.

Shapes: a streaming request answered by a 400 content-filter error body; a
chunk list whose only outcome is ``finish_reason: content_filter`` with no
content delta; a Responses stream ending ``response.incomplete`` (reason
``content_filter``) before any text delta.
"""

from __future__ import annotations

from gatewatch.transforms import fields
from gatewatch.transforms.fields import Row
from gatewatch.transforms.parsers.registry import parse_with, register


@register("stream_blocked_immediate", version="1.0.0")
def columns(row: Row) -> dict:
    """Reads the located payloads; returns the parsed request columns with the filter's error."""
    return dict(
        model=fields.model(row),
        finish_reason=fields.finish_reason(row, last=True),
        trace_id=fields.trace_id(row),
        error_type="content_filter",
        error_code=fields.error_code(row) or "content_filter",
        error_message=fields.error_message(row),
        **fields.tokens(row),
    )


parse = parse_with("stream_blocked_immediate")
