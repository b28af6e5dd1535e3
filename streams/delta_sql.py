"""Delta Lake through SQL and DataFrame reads only: the same calls on classic Spark and over Spark Connect.

Delta's Python ``DeltaTable`` API needs the JVM of a classic session, or
Delta's Connect plugin on a Connect server; SQL (``DESCRIBE DETAIL``,
``DESCRIBE HISTORY``, ``CREATE TABLE``, ``MERGE INTO``) needs neither. A
table is named the way SQL names it: ``delta.`/path``` or its catalog name
(``outputs.Table.sql_name``).

A MERGE reads its source rows through a temporary view with a name of its
own, on the session of those rows, so MERGEs of concurrent queries (and of
concurrent threads over one Connect session) never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql.types import ArrayType, DataType, MapType, StructField, StructType

MISSING = ("DELTA_MISSING_DELTA_TABLE", "not a Delta table", "DELTA_TABLE_NOT_FOUND", "PATH_NOT_FOUND",
           "TABLE_OR_VIEW_NOT_FOUND")
"""Words of Spark's and Delta's errors for a table that is not there (or not Delta)."""


def path_name(path: str) -> str:
    """The SQL name of a Delta table by path: ``delta.`/path```."""
    return "delta.`" + path.replace("`", "``") + "`"


def detail(spark: SparkSession, name: str) -> Row:
    """``DESCRIBE DETAIL``: the table's id, format, properties, files, size."""
    return spark.sql(f"DESCRIBE DETAIL {name}").first()


def properties(spark: SparkSession, name: str) -> dict[str, str]:
    """The table's properties (``TBLPROPERTIES``)."""
    return dict(detail(spark, name)["properties"] or {})


def is_missing(err: BaseException) -> bool:
    """Whether ``err`` says the table is not there or not a Delta table."""
    return any(word in str(err) for word in MISSING)


def is_delta(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` holds a Delta table."""
    try:
        return detail(spark, path_name(path))["format"] == "delta"
    except Exception as err:  # noqa: BLE001 - only "not there" means False
        if is_missing(err):
            return False
        raise


def history(spark: SparkSession, name: str, limit: int | None = None) -> DataFrame:
    """``DESCRIBE HISTORY`` as a DataFrame (``version``, ``timestamp``, ``operation``, ``operationMetrics``, ...)."""
    return spark.sql(f"DESCRIBE HISTORY {name}" + (f" LIMIT {int(limit)}" if limit else ""))


def latest_commit(spark: SparkSession, name: str) -> tuple[int, datetime] | None:
    """The table's latest version and its commit time (UTC), or None for a table with no commit."""
    from pyspark.sql import functions as F

    row = history(spark, name, 1).select("version", F.unix_micros("timestamp").alias("us")).first()
    if row is None:
        return None
    return int(row["version"]), datetime.fromtimestamp(row["us"] / 1e6, tz=timezone.utc)


def ddl_type(data_type: DataType) -> str:
    """A column type in SQL, nested field names quoted."""
    if isinstance(data_type, StructType):
        return "STRUCT<" + ", ".join(f"{quote(f.name)}: {ddl_type(f.dataType)}" for f in data_type.fields) + ">"
    if isinstance(data_type, ArrayType):
        return f"ARRAY<{ddl_type(data_type.elementType)}>"
    if isinstance(data_type, MapType):
        return f"MAP<{ddl_type(data_type.keyType)}, {ddl_type(data_type.valueType)}>"
    return data_type.simpleString()


def quote(identifier: str) -> str:
    """``identifier`` between backticks."""
    return "`" + identifier.replace("`", "``") + "`"


def column_ddl(field: StructField) -> str:
    """One column of a ``CREATE TABLE`` or ``ADD COLUMNS``: name, type, ``NOT NULL``, comment."""
    text = f"{quote(field.name)} {ddl_type(field.dataType)}"
    if not field.nullable:
        text += " NOT NULL"
    comment = (field.metadata or {}).get("comment")
    if comment:
        text += " COMMENT '" + str(comment).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def properties_sql(props: Mapping[str, str]) -> str:
    """``'key' = 'value', ...`` for ``TBLPROPERTIES``."""
    return ", ".join(f"'{k}' = '{v}'" for k, v in sorted(props.items()))


def create_table(spark: SparkSession, name: str, schema: StructType, props: Mapping[str, str] | None = None) -> None:
    """``CREATE TABLE IF NOT EXISTS`` with ``schema`` and ``props``: an existing table is left as it is."""
    columns = ", ".join(column_ddl(f) for f in schema.fields)
    sql = f"CREATE TABLE IF NOT EXISTS {name} ({columns}) USING DELTA"
    if props:
        sql += f" TBLPROPERTIES ({properties_sql(props)})"
    spark.sql(sql)


def merge(rows: DataFrame, target: str, on: str, *, matched: str | None = "UPDATE SET *",
          matched_condition: str | None = None, not_matched: str | None = "INSERT *") -> None:
    """``MERGE INTO target t USING rows s ON on``: ``matched`` and ``not_matched`` are the SQL actions (None: none).

    The rows are read through a temporary view of their own session, named
    for this MERGE alone and dropped after it.
    """
    spark = rows.sparkSession
    view = f"gatewatch_merge_{uuid.uuid4().hex}"
    clauses = []
    if matched is not None:
        clauses.append(f"WHEN MATCHED{f' AND ({matched_condition})' if matched_condition else ''} THEN {matched}")
    if not_matched is not None:
        clauses.append(f"WHEN NOT MATCHED THEN {not_matched}")
    rows.createOrReplaceTempView(view)
    try:
        spark.sql(f"MERGE INTO {target} t USING {view} s ON {on} {' '.join(clauses)}")
    finally:
        spark.catalog.dropTempView(view)


def update_set(columns: Sequence[str]) -> str:
    """``UPDATE SET t.c = s.c, ...`` for ``columns``."""
    return "UPDATE SET " + ", ".join(f"t.{quote(c)} = s.{quote(c)}" for c in columns)


def table_id(spark: SparkSession, name: str) -> Any:
    """The table's id (a new id when a table is dropped and created again)."""
    return detail(spark, name)["id"]
