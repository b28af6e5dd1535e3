"""``predict_blocked``: a non-streaming call refused by a safety filter.

Shapes: a gateway 400 whose ``message`` holds the provider's content-filter
error; a bare Azure 400 body; a chat completion cut with
``finish_reason: content_filter``; and a ResponsesAgent that caught the
filter error and answered with its own message (the filter result is in the
trace's exception event, a Python repr wrapping JSON).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from gatewatch.transforms import fields
from gatewatch.transforms.parsers.registry import parse_with, register


@register("predict_blocked", version="1.0.0")
def columns() -> dict[str, Column]:
    """Reads the helper columns; returns the parsed request columns with the filter's error."""
    return dict(
        model=fields.model_name(),
        finish_reason=fields.finish_reason(last=False),
        trace_id=fields.trace_id(),
        error_type=F.lit("content_filter"),
        error_code=F.coalesce(fields.error_code(), F.lit("content_filter")),
        error_message=fields.error_message(),
        **fields.tokens(),
    )


parse = parse_with('predict_blocked')
