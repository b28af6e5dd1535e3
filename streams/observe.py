"""Watching a job: a ``progress`` line per micro-batch, each source's lag, and a status file.

- ``processed_version`` and ``lag`` turn what Delta reports (the batch's end
  offset) and the table's latest commit (``history(1)``) into the lag of a
  source, in versions and in seconds.
- ``Observer`` keeps the state of every source of one job and rewrites
  ``<checkpoint_root>/_status.json`` (atomically) when it changes.
- ``ProgressListener`` is the ``StreamingQueryListener`` that hands the
  progress of the job's own queries to the ``Observer``.
- ``read_status`` serves ``gatewatch status`` (``cli.tables.format_status`` shows it).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog
from pyspark.sql.streaming import StreamingQueryListener

from gatewatch.errors import GatewatchError
from gatewatch.streams.logs import error_summary

log = structlog.get_logger("gatewatch.observe")

STATUS_FILE = "_status.json"
END_INDEX_MIN = 1 << 62
"""Delta marks a version read to its end with an index close to ``Long.MaxValue``."""
SEEN_VERSIONS = 256
KEPT_PROGRESS = 32

Commit = tuple[int, datetime]
"""A table version and its commit time (UTC)."""


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(timezone.utc)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def processed_version(end_offset: str | Mapping[str, Any] | None) -> int | None:
    """The newest source version a batch has read entirely, from the Delta source's end offset.

    The offset names the next version to read (``index`` -1: none of it
    read yet), a version read part way (``index`` ≥ 0), or a version read
    to its end (``index`` near ``Long.MaxValue``). None when there is none.
    """
    if not end_offset or end_offset == "null":
        return None
    offset = json.loads(end_offset) if isinstance(end_offset, str) else end_offset
    version = offset.get("reservoirVersion")
    if version is None:
        return None
    index = offset.get("index", -1)
    return int(version) if index is not None and index >= END_INDEX_MIN else int(version) - 1


def lag(processed: int | None, latest: Commit | None, seen: Mapping[int, datetime], now: datetime) -> dict[str, Any]:
    """How far a source is behind its table.

    ``versions``: latest table version minus the newest version processed.
    ``seconds``: 0 when nothing waits; otherwise how long the oldest waiting
    commit has waited, or, when its commit time was not seen (``seen`` holds
    the times of earlier ``history(1)`` reads), how long the latest commit
    has: at least that long.
    """
    if processed is None or latest is None:
        return {"versions": None, "seconds": None, "processed_version": processed,
                "latest_version": None if latest is None else latest[0], "latest_commit_at": None}
    version, at = latest
    behind = max(version - processed, 0)
    waiting = seen.get(processed + 1, at)
    seconds = 0.0 if behind == 0 else max((now - waiting).total_seconds(), 0.0)
    return {"versions": behind, "seconds": round(seconds, 3), "processed_version": processed,
            "latest_version": version, "latest_commit_at": _iso(at)}


def progress_fields(progress: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    """The figures of one ``StreamingQueryProgress`` (as its JSON dict) that the ``progress`` line carries.

    ``index`` picks the query's source (a query may read several): its
    rows and the newest version it has read entirely.
    """
    sources = progress.get("sources") or [{}]
    source = sources[index] if index < len(sources) else {}
    fields = {
        "query_id": str(progress.get("id")),
        "batch_id": progress.get("batchId"),
        "input_rows": progress.get("numInputRows") if len(sources) < 2 else source.get("numInputRows"),
        "processed_rows_per_s": round(float(progress.get("processedRowsPerSecond") or 0.0), 3),
        "batch_duration_ms": progress.get("batchDuration"),
        "processed_version": processed_version(source.get("endOffset")),
    }
    phases = {k: v for k, v in (progress.get("durationMs") or {}).items() if k != "triggerExecution"}
    if phases:  # Spark's own steps of the trigger: latestOffset, queryPlanning, addBatch (the batch function), ...
        fields["spark_ms"] = phases
    if source.get("latestOffset"):
        fields["latest_version"] = processed_version(source.get("latestOffset"))
    return fields


def source_index(progress: Mapping[str, Any], table: str, position: int) -> int:
    """Which of a progress's sources reads ``table``: the one whose description names it, else ``position``."""
    for i, source in enumerate(progress.get("sources") or []):
        if table.rstrip("/") and table.rstrip("/") in str(source.get("description", "")):
            return i
    return position


def latest_commit(spark: Any, table: Any) -> Commit | None:
    """The latest version of a source table and its commit time, from ``DESCRIBE HISTORY ... LIMIT 1``."""
    from gatewatch.streams import delta_sql

    return delta_sql.latest_commit(spark, table.sql_name)


def status_path(checkpoint_root: str) -> Path | None:
    """Where a job's status file lives: ``<checkpoint_root>/_status.json``.

    The root must be a local (or mounted: ``/Volumes/...``, ``dbfs:/`` as
    ``/dbfs/``) folder; None for an object-store URI.
    """
    if checkpoint_root.startswith("dbfs:/"):
        return Path("/dbfs") / checkpoint_root.removeprefix("dbfs:/").lstrip("/") / STATUS_FILE
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", checkpoint_root) and not checkpoint_root.startswith("file:"):
        return None
    return Path(checkpoint_root.removeprefix("file:")) / STATUS_FILE


class Observer:
    """The live state of one job's sources, logged as ``progress`` lines and kept in the status file.

    ``latest`` returns a source's latest commit (called at most once per
    progress event). Progress may arrive twice for a batch (from the
    listener and from the job when a query ends): the second is ignored.
    """

    def __init__(self, checkpoint_root: str, sources: Iterable[Any],
                 latest: Callable[[Any], Commit | None], clock: Callable[[], datetime] = utc_now) -> None:
        self.path = status_path(checkpoint_root)
        self._warned = False
        self._tables = {t.settings.source_name: t for t in sources}
        self._latest, self._clock = latest, clock
        self._lock = threading.Condition()
        self._queries: dict[str, list[str]] = {}
        self._seen: dict[str, dict[int, datetime]] = {name: {} for name in self._tables}
        self._batches: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in self._tables}
        self.progress: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in self._tables}
        """The latest ``progress`` lines of each source, by batch id."""
        now = _iso(clock())
        self.status: dict[str, Any] = {
            "job": {"pid": os.getpid(), "host": socket.gethostname(), "started_at": now, "updated_at": now,
                    "checkpoint_root": checkpoint_root},
            "sources": {name: {"table": t.name, "state": "starting", "error": None, "query_id": None,
                               "restarts": 0, "last_batch_id": None, "last_batch": None, "progress": None,
                               "lag": None, "updated_at": now}
                        for name, t in self._tables.items()},
        }

    def attach(self, sources: str | list[str], query: Any, restarts: int = 0) -> None:
        """The query of ``sources`` (re)started: they are running."""
        names = [sources] if isinstance(sources, str) else list(sources)
        with self._lock:
            self._queries[str(query.id)] = names
            for source in names:
                self._update(source, state="running", error=None, query_id=str(query.id), restarts=restarts)

    def on_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Keep a batch's metrics (from the batch handler) for its sources' status and next progress lines.

        The metrics of a query of several sources carry each one's own
        figures under ``sources``; each source keeps the batch's with its own.
        """
        per_source = metrics.get("sources") or {metrics.get("source"): {}}
        shared = {k: v for k, v in metrics.items() if k != "sources"}
        with self._lock:
            for source, own in per_source.items():
                if source not in self._tables:
                    continue
                mine = {**shared, **own, "source": source}
                batches = self._batches[source]
                batches[metrics.get("batch_id")] = mine
                for old in sorted(batches)[:-KEPT_PROGRESS]:
                    del batches[old]
                self._update(source, last_batch_id=metrics.get("batch_id"), last_batch=mine)

    def on_progress(self, progress: Mapping[str, Any]) -> dict[str, Any] | None:
        """Log one ``progress`` line per source of a batch of one of the job's queries and keep its figures.

        Returns the line of the query's first source (None when the batch was reported already).
        """
        with self._lock:
            sources = self._queries.get(str(progress.get("id")), [])
            batch_id = progress.get("batchId")
            fresh = []
            for source in sources:
                reported = self.progress.get(source)
                if batch_id is None or reported is None or (reported and batch_id <= max(reported)):
                    continue
                reported[batch_id] = {}
                fresh.append(source)
        lines = [self._source_progress(progress, source, sources.index(source)) for source in fresh]
        return lines[0] if lines else None

    def _source_progress(self, progress: Mapping[str, Any], source: str, position: int) -> dict[str, Any]:
        table = self._tables[source]
        fields = progress_fields(progress, source_index(progress, table.name, position))
        batch_id = progress.get("batchId")
        latest: Commit | None = None
        caught_up = fields.get("latest_version") is not None and fields["latest_version"] == fields["processed_version"]
        if not caught_up:  # the table's history says how long the oldest unread commit has waited
            try:
                latest = self._latest(table)
            except Exception as err:  # noqa: BLE001 - a lag that cannot be read is reported as unknown
                log.debug("latest_commit_unreadable", source=source, error=error_summary(err, 200))
        with self._lock:
            seen = self._seen[source]
            if latest is not None:
                seen[latest[0]] = latest[1]
                for old in sorted(seen)[:-SEEN_VERSIONS]:
                    del seen[old]
            latest_version = fields.pop("latest_version", None)
            processed = fields.pop("processed_version")
            if caught_up:
                behind = {"versions": 0, "seconds": 0.0, "processed_version": processed,
                          "latest_version": latest_version, "latest_commit_at": _iso(seen.get(latest_version))}
            else:
                behind = lag(processed, latest, seen, self._clock())
            fields = {"source": source, **fields, "lag_versions": behind["versions"], "lag_s": behind["seconds"]}
            batch = self._batches[source].get(batch_id, {})
            fields.update({k: v for k, v in batch.items() if k not in fields})
            reported = self.progress[source]
            reported[batch_id] = fields
            for old in sorted(reported)[:-KEPT_PROGRESS]:
                del reported[old]
            self._update(source, progress={k: fields[k] for k in
                                           ("batch_id", "input_rows", "processed_rows_per_s", "batch_duration_ms")},
                         lag=behind)
            self._lock.notify_all()
        log.info("progress", **fields)
        return fields

    def finish(self, sources: str | list[str], state: str, error: str | None = None, query: Any = None) -> None:
        """The query of ``sources`` ended (``stopped`` or ``failed``); its last progress is taken if still pending."""
        last = getattr(query, "lastProgress", None) if query is not None else None
        if last:
            self.on_progress(last)
        with self._lock:
            for source in [sources] if isinstance(sources, str) else sources:
                self._update(source, state=state, error=error)

    def wait_for(self, source: str, batch_id: int, timeout: float) -> dict[str, Any] | None:
        """The ``progress`` line of batch ``batch_id`` of ``source`` once reported (None after ``timeout`` s)."""
        with self._lock:
            self._lock.wait_for(lambda: bool(self.progress[source].get(batch_id)), timeout)
            return self.progress[source].get(batch_id) or None

    def _update(self, source: str, **values: Any) -> None:
        now = _iso(self._clock())
        self.status["sources"][source].update(values, updated_at=now)
        self.status["job"]["updated_at"] = now
        self.write()

    def write(self) -> None:
        """Replace the status file with the current state (a temporary file, then ``os.replace``)."""
        if self.path is None:
            if not self._warned:
                log.warning("status_not_written", reason="the checkpoint root is not a local or mounted folder")
                self._warned = True
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".json", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(self.status, f, indent=1, default=str)
            os.replace(tmp, self.path)
        except OSError as err:
            log.warning("status_not_written", path=str(self.path), error=str(err))


class ProgressListener(StreamingQueryListener):
    """Hands the progress of the job's queries to its ``Observer`` (other queries are ignored)."""

    def __init__(self, observer: Observer, then: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.observer = observer
        self.then = then
        """Called with each progress (as its JSON dict) after the observer took it."""

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 - Spark's name
        pass

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802
        try:
            progress = json.loads(event.progress.json)
            self.observer.on_progress(progress)
            if self.then is not None:
                self.then(progress)
        except Exception as err:  # noqa: BLE001 - a listener must never stop the query
            log.warning("progress_not_recorded", error=error_summary(err, 200))

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802 - the job records how a query ended
        pass


def read_status(checkpoint_root: str) -> dict[str, Any] | None:
    """The status file under ``checkpoint_root``, or None when no job has written one yet."""
    path = status_path(checkpoint_root)
    if path is None:
        raise GatewatchError(
            f"no status file for checkpoint root {checkpoint_root}: it is kept only under a local or mounted "
            "folder (/Volumes/..., dbfs:/...)."
        )
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise GatewatchError(f"the status file {path} cannot be read ({err}).") from None
