"""What a stopped query tells its user: a checkpoint file that cannot be read, and where to resume.

A query's checkpoint holds ``metadata`` (one JSON line) and the ``offsets``
and ``commits`` logs (a ``v1`` line, then JSON lines, per batch). When Spark
stops on one of them, ``damaged_file`` names it. Restarting on a new
checkpoint is safe from ``resume_version``: the first source version the
outputs do not hold entirely, so nothing already written is read twice and
nothing is skipped (unless a rate limit had split that version across
batches, or the process also died in the middle of a batch's writes).
"""

from __future__ import annotations

import json
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from gatewatch.streams import outputs as out
from gatewatch.streams.source import QueryGroup, SourceTable
from gatewatch.transforms.pipeline import PROCESSED_CHANGE_TYPES


def _readable(file: Path, versioned: bool) -> bool:
    try:
        lines = file.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    if versioned:
        if not lines or not lines[0].startswith("v") or not lines[0][1:].isdigit():
            return False
        lines = lines[1:]
    if not lines:
        return False
    try:
        for line in lines:
            if line.strip() != "-":
                json.loads(line)
    except ValueError:
        return False
    return True


def damaged_file(checkpoint: str) -> str | None:
    """The first of ``metadata``, the latest ``offsets`` and the latest ``commits`` file that cannot be parsed.

    Returns its path relative to the checkpoint, or None when they all parse
    (or the checkpoint is not a local folder).
    """
    folder = Path(checkpoint.removeprefix("file:"))
    if not folder.is_dir():
        return None
    if (folder / "metadata").exists() and not _readable(folder / "metadata", versioned=False):
        return "metadata"
    for log in ("offsets", "commits"):
        batches = [int(f.name) for f in (folder / log).glob("*") if f.name.isdigit()]
        if batches and not _readable(folder / log / str(max(batches)), versioned=True):
            return f"{log}/{max(batches)}"
    return None


def resume_version(spark: SparkSession, tables: dict[str, out.Table], table: SourceTable) -> tuple[int | None, bool]:
    """Where a new checkpoint of ``table`` resumes, and whether that version is already written in part.

    The newest commit version of the source in requests or quarantine is
    compared with the table's change feed at that version: when every
    processed request of it landed, the next version; when only some did (a
    rate limit split the version across batches), that version again, its
    landed rows then being written a second time. ``(None, False)`` when the
    outputs hold nothing of the source.
    """
    landed = {
        "requests": tables["requests"].read(spark).where(F.col("source_table") == table.name)
        .select("databricks_request_id", F.col("source_commit_version").alias("v")),
        "quarantine": tables["quarantine"].read(spark).where(F.col("source_table") == table.name)
        .select("databricks_request_id", F.col("_commit_version").alias("v")),
    }
    rows = landed["requests"].unionByName(landed["quarantine"])
    newest = rows.agg(F.max("v")).first()[0]
    if newest is None:
        return None, False
    written = rows.where(F.col("v") == newest).select("databricks_request_id").distinct().count()
    reader = (spark.read.format("delta").option("readChangeFeed", "true")
              .option("startingVersion", newest).option("endingVersion", newest))
    feed = reader.load(table.name) if table.is_path else reader.table(table.name)
    expected = (feed.where(F.col("_change_type").isin(*PROCESSED_CHANGE_TYPES))
                .select("databricks_request_id").distinct().count())
    return (newest + 1, False) if written >= expected else (newest, True)


def offsets_of(checkpoint: str) -> list[dict] | None:
    """Each source's offset in the newest readable ``offsets`` file of a checkpoint, in the query's source order."""
    folder = Path(checkpoint.removeprefix("file:")) / "offsets"
    if not folder.is_dir():
        return None
    for batch in sorted((int(f.name) for f in folder.iterdir() if f.name.isdigit()), reverse=True):
        found = batch_offsets(checkpoint, batch)
        if found is not None:
            return found
    return None


def batch_offsets(checkpoint: str, batch_id: int) -> list[dict] | None:
    """Each source's end offset of batch ``batch_id`` in a local checkpoint (None: no such file, or not readable)."""
    file = Path(checkpoint.removeprefix("file:")) / "offsets" / str(batch_id)
    try:
        lines = file.read_text().splitlines()
        return [json.loads(line) if line.strip() not in ("", "-") else {} for line in lines[2:]]
    except (OSError, ValueError):
        return None


def replaced_source(spark: SparkSession, group: QueryGroup) -> int | None:
    """The position in ``group`` of the source whose table is not the one its checkpoint read (dropped and recreated)."""
    from gatewatch.streams import delta_sql

    offsets = offsets_of(group.checkpoint) or []
    for i, (table, offset) in enumerate(zip(group.tables, offsets)):
        try:
            current = delta_sql.table_id(spark, table.sql_name)
        except Exception:  # noqa: BLE001 - a table that cannot be read is the one that changed
            return i
        if offset.get("reservoirId") not in (None, current):
            return i
    return None
