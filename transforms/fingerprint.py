"""Shape fingerprints: group quarantined rows by the structure of their JSON.

The shape is the key structure of the request and response (Spark's
``schema_of_variant`` with every scalar type reduced to ``*``), so two rows
with the same keys share a fingerprint whatever their values.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gatewatch.transforms import variant as V
from gatewatch.transforms.staging import built_once

Transform = Callable[[DataFrame], DataFrame]

_SCALARS = r"\b(BIGINT|INT|SMALLINT|TINYINT|STRING|BOOLEAN|DOUBLE|FLOAT|VOID|DATE|TIMESTAMP(_NTZ)?|BINARY|DECIMAL\(\d+,\d+\)|VARIANT)\b"


def _shape_of(v: Column, text: Column, invalid: Column) -> Column:
    return (
        F.when(invalid, F.lit("not-json"))
        .when(text.isNull(), F.lit("null"))
        .otherwise(F.regexp_replace(F.schema_of_variant(v), _SCALARS, "*"))
    )


def with_shape_fingerprint() -> Transform:
    """Add the shape and its fingerprint.

    Reads: ``request``, ``response``, ``_req_invalid``, ``_resp_invalid``
    (the payloads are parsed as VARIANT here, for these rows only).
    Adds: ``shape`` (``request=<...> response=<...>``) and ``shape_fingerprint``
    (16 hex characters of its SHA-256).
    """

    def apply(df: DataFrame) -> DataFrame:
        shape, fingerprint = _fingerprint_columns()
        return df.withColumn("shape", shape).withColumn("shape_fingerprint", fingerprint)

    return apply


_fingerprint_columns = built_once(lambda: (
    F.concat(
        F.lit("request="),
        _shape_of(V.parse(F.col("request")), F.col("request"), F.col("_req_invalid")),
        F.lit(" response="),
        _shape_of(V.parse(F.col("response")), F.col("response"), F.col("_resp_invalid")),
    ),
    F.substring(F.sha2(F.col("shape"), 256), 1, 16),
))
