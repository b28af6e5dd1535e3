"""``stream_ok``: a streaming call that completed.

Shapes: a list of chat-completion chunks (usage absent, on a last chunk with
empty ``choices``, or a running total on every chunk: the last is taken), a
list of Responses-API events ending in ``response.completed``, or one
aggregated object; MLflow ChatAgent chunks (``delta``, usage on the last
when logged) and streamed legacy completions.
"""

from __future__ import annotations

from gatewatch.transforms import fields
from gatewatch.transforms.fields import Row
from gatewatch.transforms.registry import register
from gatewatch.transforms.rows import parse_with


@register("stream_ok", version="1.1.0")
def columns(row: Row) -> dict:
    """Reads the located payloads; returns the parsed request columns."""
    return fields.answer(row, last=True)


parse = parse_with("stream_ok")
