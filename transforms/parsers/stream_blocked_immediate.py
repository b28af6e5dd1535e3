"""``stream_blocked_immediate``: a streaming call refused before any content.

Shapes: a streaming request answered by a 400 content-filter error body; a
chunk list whose only outcome is ``finish_reason: content_filter`` with no
content delta; a Responses stream ending ``response.incomplete`` (reason
``content_filter``) before any text delta.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from gatewatch.transforms import fields
from gatewatch.transforms.parsers.registry import parse_with, register


@register("stream_blocked_immediate", version="1.0.0")
def columns() -> dict[str, Column]:
    """Reads the helper columns; returns the parsed request columns with the filter's error."""
    return dict(
        model=fields.model_name(),
        finish_reason=fields.finish_reason(last=True),
        trace_id=fields.trace_id(),
        error_type=F.lit("content_filter"),
        error_code=F.coalesce(fields.error_code(), F.lit("content_filter")),
        error_message=fields.error_message(),
        **fields.tokens(),
    )


parse = parse_with('stream_blocked_immediate')
