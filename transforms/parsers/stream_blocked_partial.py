"""``stream_blocked_partial``: a stream that produced content, then was cut by a filter.

Shapes: chat chunks with content deltas and then ``finish_reason:
content_filter`` (with filtered ``content_filter_results``), an aggregated
object ending that way, and Responses events with text deltas followed by
``response.incomplete`` with reason ``content_filter``.
"""

from __future__ import annotations

from gatewatch.transforms import fields
from gatewatch.transforms.fields import Row
from gatewatch.transforms.parsers.registry import parse_with, register


@register("stream_blocked_partial", version="1.0.0")
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


parse = parse_with("stream_blocked_partial")
