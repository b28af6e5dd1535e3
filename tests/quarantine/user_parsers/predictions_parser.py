"""A user's parser for a shape gatewatch does not know: a custom model's ``predictions``.

Registered by decorator when imported; named in ``parsers.modules``.
"""

from pyspark.sql import functions as F

from gatewatch.transforms.registry import register_shape


def _is_predictions():
    return F.try_variant_get(F.col("_resp"), "$.predictions", "array<variant>").isNotNull()


@register_shape("custom_predictions", version="1.0.0", matches=_is_predictions)
def columns():
    """A custom model answering ``{"predictions": [...], "token_count": n}``."""
    return {
        "outcome": F.lit("predict_ok"),
        "is_stream": F.lit(False),
        "blocked": F.lit(False),
        "model": F.lit("custom-ranker"),
        "output_tokens": F.try_variant_get(F.col("_resp"), "$.token_count", "bigint"),
    }
