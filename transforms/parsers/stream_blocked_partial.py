"""``stream_blocked_partial``: a stream that produced content, then was cut by a filter.

Shapes: chat chunks with content deltas and then ``finish_reason:
content_filter`` (with filtered ``content_filter_results``), an aggregated
object ending that way, and Responses events with text deltas followed by
``response.incomplete`` with reason ``content_filter``.
"""

from __future__ import annotations

from gatewatch.transforms import fields
from gatewatch.transforms.fields import Row
from gatewatch.transforms.registry import register
from gatewatch.transforms.rows import parse_with


@register("stream_blocked_partial", version="1.1.0")
def columns(row: Row) -> dict:
    """Reads the located payloads; returns the parsed request columns with the filter's error."""
    return {**fields.answer(row, last=True), **fields.filter_error(row)}


parse = parse_with("stream_blocked_partial")
