"""The output tables: where they live, creating them, and idempotent writes.

An append is written once per (app id, batch id): the app id is stable per
streaming query (new for a new checkpoint), the batch id is the micro-batch's.
Every append records both in its commit (``userMetadata``, shown by
``DESCRIBE HISTORY``). A process looks an append up only when it may have
been written before: the first append it makes for that app id and table
(the batch a restart re-runs), unless the process created that table
itself, and a batch id not above the newest it knows.
That lookup reads the table's recent history for the app's newest batch and
writes with Delta's own ``txnAppId``/``txnVersion`` as well (a batch written
by an older release, which recorded only those, is skipped by Delta). Every
other batch id is new and is appended without a lookup: on Delta 4.4 a
``txnVersion`` lookup rebuilds the table's whole state (three Spark jobs)
on every append.

A MERGE is idempotent by what it writes (it sets rows to the values of its
source; merging the same rows again changes nothing), not by session
configuration, which a Spark Connect session shares between all its queries
and threads. Outputs are created without table features that other Delta
readers (delta-rs, DuckDB, Polars) cannot read. Tables are reached through
SQL and DataFrame reads only (``streams.delta_sql``), the same on classic
Spark and over Spark Connect.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import structlog
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructField, StructType

from gatewatch.settings import OutputSettings, Settings
from gatewatch.streams import delta_sql

log = structlog.get_logger("gatewatch.outputs")


@dataclass(frozen=True)
class Table:
    """One output table: a path or a catalog name."""

    ref: str
    is_path: bool

    def read(self, spark: SparkSession) -> DataFrame:
        """The table as a batch DataFrame."""
        return spark.read.format("delta").load(self.ref) if self.is_path else spark.table(self.ref)

    @property
    def sql_name(self) -> str:
        """The table in SQL: ``delta.`/path``` or its catalog name."""
        return f"delta.`{self.ref}`" if self.is_path else self.ref

    def merge(self, rows: DataFrame, on: str, **actions: str | None) -> None:
        """``MERGE INTO`` this table ``t`` from ``rows`` ``s`` (``delta_sql.merge``'s actions)."""
        delta_sql.merge(rows, self.sql_name, on, **actions)

    def holds_rows(self, spark: SparkSession, created: Collection[str] = ()) -> bool:
        """False when the table has no data file (``DESCRIBE DETAIL``: read from its log, no Spark job).

        A table created empty holds none: reading it to learn so costs a job
        (at a job's start, before its code is warm, 0.3-5 s each). A table
        whose ``ref`` is in ``created`` (``ensure_tables``: created empty just
        now) is not asked: its first ``DESCRIBE DETAIL`` rebuilds its state.
        """
        return self.ref not in created and (delta_sql.detail(spark, self.sql_name)["numFiles"] or 0) > 0

    def latest_version(self, spark: SparkSession) -> int:
        """The table's latest version."""
        found = delta_sql.latest_commit(spark, self.sql_name)
        return found[0] if found else 0


_CATALOG_SCHEMA = re.compile(r"^[A-Za-z_][\w-]*\.[A-Za-z_][\w-]*$")


def table(output: OutputSettings, name: str) -> Table:
    """The output table ``name`` under the location: ``catalog.schema.name`` or ``<dir>/name``."""
    loc = output.location
    if _CATALOG_SCHEMA.match(loc):
        return Table(ref=f"{loc}.{name}", is_path=False)
    if "://" in loc or loc.startswith(("dbfs:", "file:")):
        return Table(ref=f"{loc.rstrip('/')}/{name}", is_path=True)
    return Table(ref=str(Path(loc).expanduser().resolve() / name), is_path=True)


def check_catalog(spark: SparkSession, name: str, what: str) -> None:
    """Refuse a ``catalog.schema.table`` name whose catalog the session does not have.

    Local Spark has one catalog (``spark_catalog``), so a Unity Catalog name
    would otherwise fail deep inside Spark with a parse or namespace error.

    Raises:
        UnknownCatalogError: naming ``what`` (``source``, ``output``), the name and the catalog.
    """
    from gatewatch.errors import UnknownCatalogError

    parts = name.split(".")
    if len(parts) != 3:
        return
    catalog = parts[0].strip("`")
    if catalog not in {c.name for c in spark.catalog.listCatalogs()}:
        raise UnknownCatalogError(what, name, catalog)


def ensure_table(spark: SparkSession, target: Table, schema: StructType,
                 properties: Mapping[str, str] | None = None) -> bool:
    """Create the table empty with ``schema`` if it does not exist yet; add the columns and set the ``properties`` it lacks.

    ``properties`` (``OutputSettings.table_properties``: auto compaction,
    checkpoint interval, log and deleted-file retention) are set at creation,
    and on a table created without them by one ``ALTER TABLE`` at start.
    Returns True when the table was created now (so it holds no row).
    """
    fresh = not _exists(spark, target)
    delta_sql.create_table(spark, target.sql_name, schema, properties)
    if fresh:  # created just now with these columns and properties: nothing to add
        with _newest_lock:
            _created.add(target.ref)
        return True
    present = {f.name.lower() for f in target.read(spark).schema.fields}
    missing_columns = [f for f in schema.fields if f.name.lower() not in present]
    if missing_columns:  # a table created by an earlier version: new columns are added, null for its rows
        columns = ", ".join(delta_sql.column_ddl(StructField(f.name, f.dataType, True, f.metadata))
                            for f in missing_columns)
        spark.sql(f"ALTER TABLE {target.sql_name} ADD COLUMNS ({columns})")
    if properties:
        current = delta_sql.properties(spark, target.sql_name)
        missing = {k: v for k, v in properties.items() if current.get(k) != v}
        if missing:
            spark.sql(f"ALTER TABLE {target.sql_name} SET TBLPROPERTIES ({delta_sql.properties_sql(missing)})")
    return False


def _exists(spark: SparkSession, target: Table) -> bool:
    """Whether ``target`` exists already; True when that cannot be told cheaply (an object-store path)."""
    if not target.is_path:
        return spark.catalog.tableExists(target.ref)
    ref = target.ref.removeprefix("file:")
    if "://" in ref or ref.startswith("dbfs:"):
        return True
    return (Path(ref) / "_delta_log").is_dir()


def ensure_tables(spark: SparkSession, tables: Sequence[tuple[Table, StructType, Mapping[str, str]]],
                  created: set[str] | None = None) -> None:
    """``ensure_table`` each of ``tables`` (table, schema, properties), in parallel threads.

    Each creation is a Delta commit of its own: run together, their fixed
    costs overlap. The first failure is raised once all have finished. The
    ``ref`` of each table created now is added to ``created``.
    """
    from gatewatch.streams.spark import in_parallel

    fresh = in_parallel(spark, *(functools.partial(ensure_table, spark, target, schema, properties)
                                 for target, schema, properties in tables), name="gatewatch-tables")
    if created is not None:
        created.update(target.ref for (target, _, _), new in zip(tables, fresh) if new)


def local_rows(spark: SparkSession, rows: Sequence[Any], schema: StructType) -> DataFrame:
    """A few rows made on the driver (alert records, outbox entries), in one partition: written as one file.

    Made in the session's default parallelism, they went out as two files a
    commit, and Delta's auto compaction rewrote each such commit of the
    alert tables at once (an OPTIMIZE per table on a job's first alert).
    """
    return spark.createDataFrame(list(rows), schema).coalesce(1)


def append_plain(df: DataFrame, target: Table) -> None:
    """A plain append, tied to no micro-batch (delivery records; alert state into a table without a row)."""
    writer = df.write.format("delta").mode("append")
    writer.save(target.ref) if target.is_path else writer.saveAsTable(target.ref)


ROWS_PER_FILE = 200_000
"""An append of at most this many rows is written as one file (fewer small files to compact)."""


_newest: dict[tuple[str, str], int] = {}
"""The newest batch id each (app id, table) is known to have reached in this process: attempted here or found written."""
_created: set[str] = set()
"""The tables this process created: no batch was written to them before (their first append needs no lookup)."""
_newest_lock = threading.Lock()


def append(df: DataFrame, target: Table, app_id: str, batch_id: int, rows: int | None = None,
           rows_per_file: int = ROWS_PER_FILE, *, events: bool = False) -> bool:
    """Append ``df`` once per (app_id, batch_id); False when that batch was written already (nothing is appended).

    ``rows``, when known, lets an append of at most ``rows_per_file`` rows
    go out as one file. ``events`` marks a requests commit whose batch
    writes its token-usage and safety events itself (``batch_marker``). See
    the module's doc for when the batch is looked up.
    """
    key = (app_id, target.ref)
    with _newest_lock:
        newest = _newest.get(key)
        _newest[key] = batch_id if newest is None else max(newest, batch_id)
        looked_up = target.ref not in _created if newest is None else batch_id <= newest
    if looked_up:
        written = newest_written(df.sparkSession, target, app_id)
        if written is not None:
            with _newest_lock:
                _newest[key] = max(_newest[key], written)
            if written >= batch_id:  # batches run in order: a newer one written means this one was
                log.info("append_skipped", table=target.ref, app_id=app_id, batch_id=batch_id, newest=written)
                return False
    if rows is not None and rows <= rows_per_file:
        df = df.coalesce(1)
    writer = df.write.format("delta").mode("append").option("userMetadata", batch_marker(app_id, batch_id, events=events))
    if looked_up:
        writer = writer.option("txnAppId", app_id).option("txnVersion", str(batch_id))
    if target.is_path:
        writer.save(target.ref)
    else:
        writer.saveAsTable(target.ref)
    return True


def batch_marker(app_id: str, batch_id: int, *, events: bool = False) -> str:
    """What an append records in its commit's ``userMetadata``: ``{"gatewatch_app_id": ..., "batch_id": ...}``.

    ``events``: a requests commit whose batch writes the events of its
    requests itself adds ``"events":true``; the events query skips the
    changes of such a commit (``streams.events``).
    """
    marker = {"gatewatch_app_id": app_id, "batch_id": batch_id, **({"events": True} if events else {})}
    return json.dumps(marker, separators=(",", ":"))


def marks_events(text: str | None) -> bool:
    """True for a ``batch_marker`` made with ``events``: the batch wrote its requests' events itself."""
    if read_marker(text) is None:
        return False
    return json.loads(text).get("events") is True  # type: ignore[arg-type]


def read_marker(text: str | None) -> tuple[str, int] | None:
    """The (app id, batch id) of a ``batch_marker``, or None for any other ``userMetadata``."""
    if not text or not text.startswith('{"gatewatch_app_id"'):
        return None
    try:
        found = json.loads(text)
        return str(found["gatewatch_app_id"]), int(found["batch_id"])
    except (ValueError, KeyError, TypeError):
        return None


HISTORY_PAGES = (100, 1_000, 10_000, None)
"""Commits read when looking up an app's newest batch, page after page (None: the whole history)."""
CLOCK_SKEW_S = 300
"""How much earlier than an app id's creation time its commits are still looked for."""


def newest_written(spark: SparkSession, target: Table, app_id: str) -> int | None:
    """The newest batch id ``app_id`` appended to ``target`` (from the commits' markers), or None.

    The history is read newest first, page after page, up to the app's
    newest marker; for an app id that carries its creation time
    (``new_app_id``), no further back than that time.
    """
    return next((batch_id for batch_id, _ in app_commits(spark, target, app_id)), None)


def history_rows(spark: SparkSession, target: Table) -> Iterator[tuple[int, int, str | None, str]]:
    """The (version, commit time in microseconds, ``userMetadata``, operation) of ``target``'s commits, newest first.

    Reads the history page after page (``HISTORY_PAGES``), only as far as
    it is iterated.
    """
    from pyspark.sql import functions as F

    seen = 0
    for limit in HISTORY_PAGES:
        rows = (delta_sql.history(spark, target.sql_name, limit)
                .select("version", F.unix_micros("timestamp").alias("us"), "userMetadata", "operation").collect())
        # a longer page starts with the shorter one's commits (commits made since push them down: some are seen
        # twice, none is missed)
        yield from ((int(v), us, text, operation) for v, us, text, operation in rows[seen:])
        if limit is None or len(rows) < limit:
            return
        seen = len(rows)


def app_commits(spark: SparkSession, target: Table, app_id: str) -> Iterator[tuple[int, str]]:
    """The (batch id, ``userMetadata``) of each append ``app_id`` made to ``target``, newest first.

    For an app id that carries its creation time (``new_app_id``), no
    further back than that time (``history_rows``).
    """
    started = app_started_us(app_id)
    floor = None if started is None else started - CLOCK_SKEW_S * 1_000_000
    for _, us, text, _ in history_rows(spark, target):
        found = read_marker(text)
        if found is not None and found[0] == app_id:
            yield found[1], text
        if floor is not None and us < floor:
            return


def may_be_written(target: Table, app_id: str, batch_id: int) -> bool:
    """True when an append of ``batch_id`` to ``target`` is looked up first (``append``): it may be written already.

    False for a batch id above the newest this process attempted or found
    for ``app_id``: a new batch.
    """
    with _newest_lock:
        newest = _newest.get((app_id, target.ref))
    return newest is None or batch_id <= newest


def written_marker(spark: SparkSession, target: Table, app_id: str, batch_id: int) -> str | None:
    """The ``userMetadata`` of the commit that appended ``batch_id`` of ``app_id`` to ``target``; None if none did.

    Reads the app's commits newest first (``app_commits``) down to its
    first batch not above ``batch_id`` (batches are appended in order).
    """
    for found, text in app_commits(spark, target, app_id):
        if found <= batch_id:
            return text if found == batch_id else None
    return None


NO_ROW_CHANGES = frozenset({"CREATE TABLE", "SET TBLPROPERTIES", "UNSET TBLPROPERTIES", "OPTIMIZE", "VACUUM START",
                            "VACUUM END"})
"""Delta operations whose commits add, remove or change no row (their change feed is empty)."""


def versions_with_events(spark: SparkSession, target: Table, versions: set[int], *,
                         or_no_rows: bool = False) -> set[int]:
    """Which of ``versions`` of ``target`` are commits marked ``events`` (``batch_marker``): their batch wrote their events.

    With ``or_no_rows``, also those whose operation changes no row
    (``NO_ROW_CHANGES``: the table's creation, its properties, compaction).
    Reads the history newest first, page after page, down to the oldest of
    ``versions``. A version no longer in the history (older than the log's
    retention) counts as unmarked.
    """
    marked: set[int] = set()
    if not versions:
        return marked
    oldest = min(versions)
    for version, _, text, operation in history_rows(spark, target):
        if version in versions and (marks_events(text) or (or_no_rows and operation in NO_ROW_CHANGES)):
            marked.add(version)
        if version <= oldest:
            break
    return marked


def new_app_id(purpose: str) -> str:
    """A new app id: ``gatewatch-<purpose>-<creation time, ms since the epoch>-<uuid>``."""
    return f"gatewatch-{purpose}-{time.time_ns() // 1_000_000}-{uuid.uuid4()}"


def app_started_us(app_id: str) -> int | None:
    """The creation time (microseconds since the epoch) a ``new_app_id`` carries; None for an id without one."""
    found = re.match(r"^gatewatch-[\w-]*?-(\d{13})-[0-9a-f-]{36}$", app_id)
    return None if found is None else int(found.group(1)) * 1000


def checkpoint_app_id(checkpoint: str, purpose: str = "sink") -> str:
    """The app id of the query using ``checkpoint``: created with it, kept with it.

    Stored as a file inside the checkpoint folder, so moving the checkpoint
    aside (a new checkpoint) gives a new id and a fresh txnVersion sequence.
    """
    folder = Path(checkpoint.removeprefix("file:"))
    marker = folder / f"gatewatch_{purpose}_app_id"
    if marker.exists():
        return marker.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    app_id = new_app_id(purpose)
    marker.write_text(app_id + "\n")
    return app_id


REQUESTS_STATS_COLUMNS: tuple[str, ...] = (
    "databricks_request_id", "request_time", "request_date", "endpoint", "served_entity_id", "requester", "model",
    "outcome", "status_code", "error_type", "source_table", "source_commit_version",
)
"""The requests columns Delta keeps file statistics of (``delta.dataSkippingStatsColumns``): those readers filter by
and the id a replay's MERGE matches on. Delta's default is the first 32 columns, which also computes them for error
messages, flags and tokens on every append (100k-row appends in 0.85-0.95 s against 1.15-1.3 s)."""


def prepare_outputs(spark: SparkSession, settings: Settings, created: set[str] | None = None) -> dict[str, Table]:
    """Create the requests, quarantine and event tables if needed; return them by role.

    The ``ref`` of each table created now is added to ``created``.
    """
    from gatewatch.schemas import QUARANTINE, REQUESTS, SAFETY_EVENTS, TOKEN_EVENTS

    o = settings.output
    tables = {
        "requests": table(o, o.requests_table),
        "quarantine": table(o, o.quarantine_table),
        "token_events": table(o, o.token_events_table),
        "safety_events": table(o, o.safety_events_table),
    }
    schemas = {"requests": REQUESTS, "quarantine": QUARANTINE, "token_events": TOKEN_EVENTS,
               "safety_events": SAFETY_EVENTS}
    if not tables["requests"].is_path:
        check_catalog(spark, tables["requests"].ref, "output table")
    # statistics of the columns readers filter by
    defaults = {"requests": {"delta.dataSkippingStatsColumns": ",".join(REQUESTS_STATS_COLUMNS)}}
    # requests keeps a change feed: the events query derives the event tables from it (streams.events)
    required = {"requests": {"delta.enableChangeDataFeed": "true"}}
    ensure_tables(spark, [(tables[role], schema,
                           {**defaults.get(role, {}), **o.table_properties(), **required.get(role, {})})
                          for role, schema in schemas.items()], created)
    return tables
