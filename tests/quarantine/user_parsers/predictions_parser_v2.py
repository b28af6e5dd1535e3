"""A changed version of ``predictions_parser``: what a pull request to a user's parser module looks like.

Two deliberate changes: a response whose ``status`` is ``failed`` is now an
``error`` (it was ``predict_ok``), and only responses with a ``token_count``
are claimed (those without one go back to quarantine as ``unknown_shape``).
"""

from pyspark.sql import functions as F

from gatewatch.transforms.registry import register_shape


def _is_predictions():
    resp = F.col("_resp")
    return (F.try_variant_get(resp, "$.predictions", "array<variant>").isNotNull()
            & F.try_variant_get(resp, "$.token_count", "bigint").isNotNull())


@register_shape("custom_predictions", version="1.1.0", matches=_is_predictions)
def columns():
    """A custom model answering ``{"predictions": [...], "token_count": n}``, failed when ``status`` says so."""
    failed = F.try_variant_get(F.col("_resp"), "$.status", "string") == "failed"
    return {
        "outcome": F.when(failed, F.lit("error")).otherwise(F.lit("predict_ok")),
        "is_stream": F.lit(False),
        "blocked": F.lit(False),
        "model": F.lit("custom-ranker"),
        "output_tokens": F.try_variant_get(F.col("_resp"), "$.token_count", "bigint"),
        "error_type": F.when(failed, F.lit("model_error")),
    }
