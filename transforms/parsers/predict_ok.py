"""``predict_ok``: a non-streaming call that returned model output.

Shapes: chat completions (foundation and external models, with or without
Azure filter results) and ResponsesAgent responses, with top-level ``usage``
or with a Databricks trace (tokens in ``mlflow.trace.tokenUsage``, model and
filter results in the chat span's outputs), legacy completions
(``choices[].text``), chat content as a list of parts, embeddings (input
tokens only), MLflow ChatAgent responses (``messages``, with or without
``usage``), and a call a Unity AI Gateway service policy allowed or
transformed. Also a 2xx call whose payload was too large to log: only status
and ids are known.
"""

from __future__ import annotations

from gatewatch.transforms import fields
from gatewatch.transforms.fields import Row
from gatewatch.transforms.registry import register
from gatewatch.transforms.rows import parse_with


@register("predict_ok", version="1.1.0")
def columns(row: Row) -> dict:
    """Reads the located payloads; returns the parsed request columns."""
    return fields.answer(row, last=False)


parse = parse_with("predict_ok")
