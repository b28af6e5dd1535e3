"""Column helpers over Spark's VARIANT, for shape parsers and fingerprints.

Every helper returns a ``Column`` and never raises on an unexpected shape:
a path that is absent or of another type yields null.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType

from gatewatch.schemas import SAFETY_FLAG

FLAGS_TYPE = ArrayType(SAFETY_FLAG)


def items(v: Column, path: str = "$") -> Column:
    """The array at ``path`` as ``array<variant>``, or null when it is not an array."""
    return F.try_variant_get(v, path, "array<variant>")


def parse(text: Column) -> Column:
    """A JSON string parsed into a VARIANT, or null when it is not valid JSON."""
    return F.try_parse_json(text)


def no_flags() -> Column:
    """An empty ``array<safety_flag>``."""
    return F.array().cast(FLAGS_TYPE)
