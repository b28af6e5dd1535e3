"""The whole parse as one transform, and the two views of its result.

``parse_inference_rows`` turns canonical inference rows into rows carrying
both the raw columns and the parsed ones; ``requests_view`` and
``quarantine_view`` project them onto the two output schemas.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType

from gatewatch.schemas import CANONICAL_INPUT, FAILED_EXPECTATION, QUARANTINE, REQUEST_COLUMNS
from gatewatch.transforms.fingerprint import with_shape_fingerprint
from gatewatch.transforms.staging import built_once
from gatewatch.transforms import parsers as _builtins  # noqa: F401  (importing registers the built-in parsers)
from gatewatch.transforms.rows import parse_registered

Transform = Callable[[DataFrame], DataFrame]

PROCESSED_CHANGE_TYPES: tuple[str, ...] = ("insert", "update_postimage")


def latest_per_request(version_column: str = "_commit_version") -> Transform:
    """Keep one row per ``databricks_request_id``: the one of the latest commit.

    Reads: ``databricks_request_id`` and ``version_column``. Rows without an
    id are all kept (the contract quarantines them).
    """

    def apply(df: DataFrame) -> DataFrame:
        w = Window.partitionBy("databricks_request_id").orderBy(F.col(version_column).desc_nulls_last())
        ranked = df.withColumn("_rank", F.when(F.col("databricks_request_id").isNull(), F.lit(1)).otherwise(
            F.row_number().over(w)
        ))
        return ranked.where(F.col("_rank") == 1).drop("_rank")

    return apply


def parse_inference_rows() -> Transform:
    """Parse, classify and dispatch canonical inference rows.

    Reads: the CANONICAL_INPUT columns.
    Adds: every parsed requests column, ``parser``, ``parser_version``,
    ``quarantine_reason`` and the helper columns ``_req_invalid`` /
    ``_resp_invalid`` and ``_flagged``. The built-in parsers run in the Arrow parse
    (``transforms.rows``); shape parsers then claim unknown shapes.
    """

    def apply(df: DataFrame) -> DataFrame:
        return df.transform(parse_registered())

    return apply


def payloads_only_set_aside(parsed: DataFrame) -> DataFrame:
    """``parsed`` with the raw ``request``/``response`` kept only on rows set aside (quarantine keeps them).

    Reads: ``outcome``, ``quarantine_reason``, ``request``, ``response``.
    Sets: ``request``/``response`` to null on rows with an outcome and no
    quarantine reason: requests hold no payloads, and the kept rows of a
    batch shrink to their parsed columns (about a tenth of the bytes).
    """
    aside = F.col("outcome").isNull() | F.col("quarantine_reason").isNotNull()
    return parsed.withColumns({name: F.when(aside, F.col(name)) for name in ("request", "response")})


def requests_view() -> Transform:
    """Project parsed rows with an outcome onto the requests schema.

    Reads: parsed rows. Returns: the REQUESTS columns (lineage from the change feed).
    """

    def apply(df: DataFrame) -> DataFrame:
        kept, lineage, columns = _requests_columns()
        return df.where(kept).withColumns(lineage).select(*columns)

    return apply


_requests_columns = built_once(lambda: (
    F.col("outcome").isNotNull(),
    {"source_commit_version": F.col("_commit_version"), "source_commit_timestamp": F.col("_commit_timestamp")},
    [F.col(name) for name in REQUEST_COLUMNS],
))
_quarantine_columns = built_once(lambda: (
    F.col("quarantine_reason").isNotNull(),
    F.array().cast(ArrayType(FAILED_EXPECTATION)),
    {
        "reason": F.col("quarantine_reason"),
        "status": F.lit("open"),
        "resolved_by_parser_version": F.lit(None).cast("string"),
        "resolved_at": F.lit(None).cast("timestamp"),
    },
    [F.col(f.name).cast(f.dataType) for f in QUARANTINE.fields],
))


def quarantine_view(quarantined_at: datetime) -> Transform:
    """Project rows set aside onto the quarantine schema.

    Reads: parsed rows whose ``quarantine_reason`` is set, plus
    ``failed_expectations`` when present. Returns: the QUARANTINE columns: the
    canonical row untouched, the reason, the failed expectations, the shape
    and its fingerprint, the parser version, ``status = open``.
    """

    def apply(df: DataFrame) -> DataFrame:
        held, no_failures, fixed, columns = _quarantine_columns()
        out = df.where(held).transform(with_shape_fingerprint())
        if "failed_expectations" not in out.columns:
            out = out.withColumn("failed_expectations", no_failures)
        out = out.withColumns({**fixed, "quarantined_at": F.lit(quarantined_at).cast("timestamp")})
        return out.select(*columns)

    return apply


CANONICAL_COLUMNS: tuple[str, ...] = tuple(f.name for f in CANONICAL_INPUT.fields)
