"""Token-usage and safety events, derived from requests rows.

Both are pure ``DataFrame -> DataFrame`` transforms over the requests schema
(``schemas.REQUESTS``); the job writes their results next to the requests of
the same micro-batch.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from gatewatch.schemas import SAFETY_EVENTS, TOKEN_EVENTS
from gatewatch.transforms.staging import built_once


def _casts(schema: StructType) -> list[Column]:
    return [F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields]


_token_columns = built_once(lambda: (
    F.col("input_tokens").isNotNull() | F.col("output_tokens").isNotNull() | F.col("total_tokens").isNotNull(),
    _casts(TOKEN_EVENTS),
))
_safety_columns = built_once(lambda: (
    is_flagged(F.col("_flag")),
    {name: F.col("_flag")[name] for name in ("stage", "category", "severity", "filtered", "detected")},
    _casts(SAFETY_EVENTS),
))


def is_flagged(flag: Column) -> Column:
    """True for a safety flag the filter acted on or raised: ``filtered`` or ``detected``.

    Azure annotates every category of every call with a severity; a ``safe``
    or ``low`` rating the filter let through is an annotation, not a flag.
    """
    return F.coalesce(flag["filtered"], F.lit(False)) | F.coalesce(flag["detected"], F.lit(False))


def token_events(requests: DataFrame) -> DataFrame:
    """One token-usage event per request whose token counts are known.

    Reads: ``databricks_request_id``, ``request_time``, ``endpoint``,
    ``served_entity_id``, ``requester``, ``model``, ``outcome``,
    ``input_tokens``, ``output_tokens``, ``total_tokens``, ``source_table``,
    ``source_commit_version``.
    Returns: the ``TOKEN_EVENTS`` columns, for rows with at least one known
    token count (unknown counts stay null, never guessed).
    """
    known, columns = _token_columns()
    return requests.where(known).select(*columns)


def safety_events(requests: DataFrame) -> DataFrame:
    """One safety event per flagged element of ``safety_flags``.

    A flag counts when it was filtered or detected (``is_flagged``); the
    unfiltered severity annotations Azure sends for every category are not
    events.

    Reads: ``safety_flags`` and ``databricks_request_id``, ``request_time``,
    ``endpoint``, ``served_entity_id``, ``requester``, ``model``,
    ``outcome``, ``blocked``, ``source_table``, ``source_commit_version``.
    Returns: the ``SAFETY_EVENTS`` columns (``stage``, ``category``,
    ``severity``, ``filtered``, ``detected`` from the flag).
    """
    flagged, fields, columns = _safety_columns()
    # explode, then keep the flagged: generated code, where filtering the array first is a lambda, interpreted
    # (1.4 s against 2.5 s for the safety events of 1M requests); null or empty flags explode to no row
    exploded = requests.withColumn("_flag", F.explode("safety_flags")).where(flagged)
    return exploded.withColumns(fields).select(*columns)
