"""``stream_blocked_partial``: a stream that produced content, then was cut by a filter.

Shapes: chat chunks with content deltas and then ``finish_reason:
content_filter`` (with filtered ``content_filter_results``), an aggregated
object ending that way, and Responses events with text deltas followed by
``response.incomplete`` with reason ``content_filter``.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from gatewatch.transforms import fields
from gatewatch.transforms.parsers.registry import parse_with, register


@register("stream_blocked_partial", version="1.0.0")
def columns() -> dict[str, Column]:
    """Reads the helper columns; returns the parsed request columns."""
    return dict(
        model=fields.model_name(),
        finish_reason=fields.finish_reason(last=True),
        trace_id=fields.trace_id(),
        error_type=F.lit("content_filter"),
        error_code=F.coalesce(fields.error_code(), F.lit("content_filter")),
        error_message=fields.error_message(),
        **fields.tokens(),
    )


parse = parse_with('stream_blocked_partial')
