"""Tailing an inference table through Delta's change data feed.

``open_source`` checks the table (exists, change feed on, a known schema)
and returns its change feed as a streaming DataFrame in the canonical
columns of ``schemas.CANONICAL_INPUT``, whatever the table's schema:

- ``gateway``: the AI Gateway inference table (the main one);
- ``legacy``: the legacy payload table (``date``, ``timestamp_ms``,
  ``execution_time_ms``, ``request_metadata``), renamed onto the same columns;
- ``unity_gateway``: the Unity AI Gateway inference table of a model service
  (``<service>_payload``: ``request_id``, ``event_time``, ``latency_ms``,
  ``status_code``, ``request``, ``response``; ``requester``,
  ``logging_error_codes``, ``client_request_id``, ``sampling_fraction``
  and ``served_entity_id`` when present), renamed the same way
  (https://docs.databricks.com/aws/en/ai-gateway/inference-tables).

Columns beyond the required ones are ignored, so a table that gains columns
still reads. The kind chosen is named in the job's ``query_started`` line.
Any other schema is refused with the missing columns of the closest kind named.

``query_groups`` decides which sources share a streaming query (and so one
checkpoint and one micro-batch per trigger): those of one ``group``, all
ungrouped sources together. ``read_change_feeds`` unions their change feeds;
Spark keeps each source's offsets in the query's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from gatewatch.errors import ChangeFeedDisabledError, SourceNotFoundError, SourceSchemaError, UnknownCatalogError
from gatewatch.schemas import CANONICAL_INPUT
from gatewatch.settings import SourceSettings
from gatewatch.streams import delta_sql
from gatewatch.streams.outputs import check_catalog

GATEWAY_COLUMNS: tuple[str, ...] = (
    "databricks_request_id",
    "client_request_id",
    "request_date",
    "request_time",
    "status_code",
    "execution_duration_ms",
    "request",
    "response",
)
"""Required in an AI Gateway inference table; the others are optional."""

GATEWAY_OPTIONAL: tuple[str, ...] = (
    "sampling_fraction",
    "served_entity_id",
    "logging_error_codes",
    "requester",
)

LEGACY_COLUMNS: tuple[str, ...] = (
    "databricks_request_id",
    "client_request_id",
    "date",
    "timestamp_ms",
    "status_code",
    "execution_time_ms",
    "request",
    "response",
    "request_metadata",
)
"""Required in a legacy payload table."""

UNITY_GATEWAY_COLUMNS: tuple[str, ...] = (
    "request_id",
    "event_time",
    "status_code",
    "latency_ms",
    "request",
    "response",
)
"""Required in a Unity AI Gateway inference table; ``GATEWAY_OPTIONAL`` and ``client_request_id`` are read when present."""

KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "gateway": (GATEWAY_COLUMNS, "AI Gateway inference table"),
    "unity_gateway": (UNITY_GATEWAY_COLUMNS, "Unity AI Gateway inference table"),
    "legacy": (LEGACY_COLUMNS, "legacy payload table"),
}
"""Each schema kind: its required columns and its name in errors, in the order they are tried."""


@dataclass(frozen=True)
class SourceTable:
    """A checked inference table: where it is and which schema it has."""

    settings: SourceSettings
    kind: str  # "gateway" | "unity_gateway" | "legacy"
    is_path: bool

    @property
    def name(self) -> str:
        """The table as the user named it (path or catalog name)."""
        return self.settings.table

    @property
    def sql_name(self) -> str:
        """The table in SQL: ``delta.`/path``` or its catalog name."""
        return sql_name(self.settings.table)


def sql_name(table: str) -> str:
    """A source table in SQL: ``delta.`/path``` for a path, else the catalog name."""
    return delta_sql.path_name(table) if is_path(table) else table


def is_path(table: str) -> bool:
    """True when ``table`` is a filesystem or object-store path rather than a catalog name."""
    return "/" in table or "\\" in table or table.startswith(("file:", "s3:", "abfss:", "gs:", "dbfs:"))


def detect_kind(schema: StructType, source: str) -> str:
    """The first kind of ``KINDS`` whose required columns are all there, else ``SourceSchemaError``.

    The error names the kind missing the smallest share of its required columns (the first of a tie)
    and that kind's missing columns.
    """
    names = {f.name for f in schema.fields}
    missing = {kind: [c for c in required if c not in names] for kind, (required, _) in KINDS.items()}
    for kind, absent in missing.items():
        if not absent:
            return kind
    closest = min(missing, key=lambda k: len(missing[k]) / len(KINDS[k][0]))
    raise SourceSchemaError(source, missing[closest], KINDS[closest][1])


def _optional(names: set[str], column: str, type_: str) -> Column:
    return F.col(column).cast(type_) if column in names else F.lit(None).cast(type_)


def to_canonical(df: DataFrame, kind: str, source: SourceSettings) -> DataFrame:
    """Map a change-feed DataFrame of any of the three schemas onto CANONICAL_INPUT.

    Reads: the table's own columns and ``_change_type``, ``_commit_version``,
    ``_commit_timestamp``. Returns exactly the CANONICAL_INPUT columns; the
    ``endpoint`` comes from the legacy ``request_metadata`` or else from the
    source settings; ``source_table`` is the table as configured.
    """
    names = set(df.columns)
    if kind == "legacy":
        meta = F.col("request_metadata")
        mapped: dict[str, Column] = {
            "request_date": F.col("date").cast("date"),
            "request_time": F.timestamp_millis(F.col("timestamp_ms").cast("long")),
            "execution_duration_ms": F.col("execution_time_ms").cast("long"),
            "served_entity_id": F.coalesce(meta["served_entity_id"], meta["served_entity_name"],
                                           F.concat_ws("/", meta["model_name"], meta["model_version"])),
            "logging_error_codes": _optional(names, "logging_error_codes", "array<string>"),
            "requester": _optional(names, "requester", "string"),
            "endpoint": F.coalesce(meta["endpoint_name"], F.lit(source.endpoint_name)),
            "request_metadata": meta.cast("map<string,string>"),
        }
    elif kind == "unity_gateway":
        mapped = {
            "databricks_request_id": F.col("request_id").cast("string"),
            "client_request_id": _optional(names, "client_request_id", "string"),
            "request_date": F.to_date(F.col("event_time").cast("timestamp")),
            "request_time": F.col("event_time").cast("timestamp"),
            "execution_duration_ms": F.col("latency_ms").cast("long"),
            "served_entity_id": _optional(names, "served_entity_id", "string"),
            "logging_error_codes": _optional(names, "logging_error_codes", "array<string>"),
            "requester": _optional(names, "requester", "string"),
            "endpoint": F.lit(source.endpoint_name),
            "request_metadata": F.lit(None).cast("map<string,string>"),
        }
    else:
        mapped = {
            "request_date": F.col("request_date").cast("date"),
            "request_time": F.col("request_time").cast("timestamp"),
            "execution_duration_ms": F.col("execution_duration_ms").cast("long"),
            "served_entity_id": _optional(names, "served_entity_id", "string"),
            "logging_error_codes": _optional(names, "logging_error_codes", "array<string>"),
            "requester": _optional(names, "requester", "string"),
            "endpoint": F.lit(source.endpoint_name),
            "request_metadata": F.lit(None).cast("map<string,string>"),
        }
    mapped["sampling_fraction"] = _optional(names, "sampling_fraction", "double")
    mapped["source_table"] = F.lit(source.table)
    return df.select(
        *[
            (mapped[f.name] if f.name in mapped else F.col(f.name)).cast(f.dataType).alias(f.name)
            for f in CANONICAL_INPUT.fields
        ]
    )


def check_source(spark: SparkSession, source: SourceSettings) -> SourceTable:
    """Check that the table exists, has change data feed on and a known schema."""
    path = is_path(source.table)
    try:
        if not path:
            check_catalog(spark, source.table, "source table")
            if not spark.catalog.tableExists(source.table):
                raise SourceNotFoundError(source.table)
        detail = delta_sql.detail(spark, sql_name(source.table))
        if detail is None or detail["format"] != "delta":
            raise SourceNotFoundError(source.table)
        schema = (spark.read.format("delta").load(source.table) if path else spark.table(source.table)).schema
    except (SourceNotFoundError, UnknownCatalogError):
        raise
    except Exception as err:  # noqa: BLE001 - any read failure means the table is not usable
        if delta_sql.is_missing(err):
            raise SourceNotFoundError(source.table) from None
        raise
    properties = detail["properties"] or {}
    if str(properties.get("delta.enableChangeDataFeed", "false")).lower() != "true":
        raise ChangeFeedDisabledError(source.table, is_path=path)
    kind = detect_kind(schema, source.table)
    return SourceTable(settings=source, kind=kind, is_path=path)


def read_change_feed(spark: SparkSession, table: SourceTable) -> DataFrame:
    """The table's change feed as a streaming DataFrame of canonical rows.

    ``startingVersion`` applies on first start only (then the checkpoint
    decides); ``earliest`` reads the current snapshot as inserts and every
    change after it. ``maxFilesPerTrigger`` counts files, so a commit of
    several files may be split across micro-batches.
    """
    s = table.settings
    reader = spark.readStream.format("delta").option("readChangeFeed", "true")
    if s.starting_version != "earliest":
        reader = reader.option("startingVersion", str(s.starting_version))
    if s.max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", str(s.max_files_per_trigger))
    if s.max_bytes_per_trigger:
        reader = reader.option("maxBytesPerTrigger", s.max_bytes_per_trigger)
    raw = reader.load(s.table) if table.is_path else reader.table(s.table)
    return to_canonical(raw, table.kind, s)


DEFAULT_GROUP = "sources"
"""The query of every source without a ``group``."""


@dataclass(frozen=True)
class QueryGroup:
    """The sources one streaming query reads, and where its checkpoint lives.

    A group of one ungrouped source keeps the checkpoint it always had,
    ``<checkpoint_root>/<source name>``; any other group's is
    ``<checkpoint_root>/<group>``.
    """

    name: str
    checkpoint: str
    tables: tuple[SourceTable, ...]
    indexes: tuple[int, ...]
    """Each table's position in ``sources`` (the fixes a user reads name it)."""

    @property
    def source_names(self) -> dict[str, str]:
        """The source name of each table, by the ``source_table`` its rows carry."""
        return {t.name: t.settings.source_name for t in self.tables}


def query_groups(tables: list[SourceTable], checkpoint_root: str) -> list[QueryGroup]:
    """The streaming queries of a job: one per ``group``, the ungrouped sources together, in config order."""
    members: dict[str, list[int]] = {}
    for i, t in enumerate(tables):
        members.setdefault(t.settings.group or DEFAULT_GROUP, []).append(i)
    root = checkpoint_root.rstrip("/")
    groups = []
    for name, indexes in members.items():
        mine = tuple(tables[i] for i in indexes)
        if name == DEFAULT_GROUP and len(mine) == 1:
            name = mine[0].settings.source_name
        groups.append(QueryGroup(name=name, checkpoint=f"{root}/{name}", tables=mine, indexes=tuple(indexes)))
    return groups


def has_offsets(checkpoint: str) -> bool:
    """True when ``checkpoint`` is a local folder holding a query's offsets."""
    folder = Path(checkpoint.removeprefix("file:")) / "offsets"
    return folder.is_dir() and any(f.name.isdigit() for f in folder.iterdir())


def read_change_feeds(spark: SparkSession, group: QueryGroup) -> DataFrame:
    """The change feeds of a group's tables as one streaming DataFrame of canonical rows (``source_table`` tells them apart)."""
    feeds = [read_change_feed(spark, t) for t in group.tables]
    union = feeds[0]
    for feed in feeds[1:]:
        union = union.unionByName(feed)
    return union
