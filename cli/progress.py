"""Live progress of long runs on a terminal, drawn with rich.

``gatewatch run --available-now`` (a first backfill of months of traffic)
shows one bar per source: the commit versions read and rows done of the
total, rows/s and the time left. The totals are read once at start from
each source table's history (rows written per commit version, from Delta's
operation metrics), from the version the run starts at: the version after
the one the last run read entirely (the status file), else the source's
``starting_version``. The job's ``on_metrics`` callback then adds each
micro-batch's rows. ``replay`` shows the Spark tasks of its steps.

Only on a terminal: jobs and pipes keep their JSON lines.
"""

from __future__ import annotations

import bisect
import contextlib
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from gatewatch.settings import Settings, SourceSettings


def wanted(stream: TextIO | None = None) -> bool:
    """Whether to draw progress: only when ``stream`` (stdout) is a terminal."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


# Change-feed rows a commit adds, by operation: Delta's operation metrics per commit.
_ROW_METRICS: dict[str, tuple[tuple[str, int], ...]] = {
    "MERGE": (("numTargetRowsInserted", 1), ("numTargetRowsUpdated", 2), ("numTargetRowsDeleted", 1)),
    "UPDATE": (("numUpdatedRows", 2),),
    "DELETE": (("numDeletedRows", 1),),
}


def change_rows(operation: str, metrics: Mapping[str, str] | None) -> int:
    """Change-feed rows one commit holds: appended rows, or an update's pre- and post-images, or deleted rows."""
    metrics = metrics or {}
    parts = _ROW_METRICS.get(operation, (("numOutputRows", 1),))
    return sum(int(metrics.get(k) or 0) * n for k, n in parts)


@dataclass
class SourcePlan:
    """What one source has to read: its versions from ``start`` to ``latest`` and rows per version."""

    name: str
    start: int
    latest: int
    versions: list[int] = field(default_factory=list)
    cumulative: list[int] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        """Rows in the versions still to read."""
        return self.cumulative[-1] if self.cumulative else 0

    def version_at(self, rows_done: int) -> int | None:
        """The newest version whose rows are all done, once ``rows_done`` rows are (``None`` before the first)."""
        i = bisect.bisect_right(self.cumulative, rows_done)
        return self.versions[i - 1] if i else None


def plan_source(spark: Any, source: SourceSettings, resume_after: int | None) -> SourcePlan:
    """The versions and rows one source's run will read, from its table history."""
    from gatewatch.streams import delta_sql
    from gatewatch.streams.source import sql_name

    history = sorted((r["version"], r["operation"], r["operationMetrics"])
                     for r in delta_sql.history(spark, sql_name(source.table))
                     .select("version", "operation", "operationMetrics").collect())
    latest = history[-1][0] if history else 0
    if resume_after is not None:
        start = resume_after + 1
    elif source.starting_version == "latest":
        start = latest + 1
    elif source.starting_version == "earliest":
        start = history[0][0] if history else 0
    else:
        start = int(source.starting_version)
    plan = SourcePlan(source.source_name, start, latest)
    total = 0
    for version, operation, metrics in history:
        if version >= start:
            total += change_rows(operation, metrics)
            plan.versions.append(version)
            plan.cumulative.append(total)
    return plan


def plan_run(spark: Any, settings: Settings) -> list[SourcePlan]:
    """Every source's plan; a source resumes after the version its last run read entirely (the status file)."""
    from gatewatch.streams.observe import read_status

    status = read_status(settings.checkpoint_root) or {}
    plans = []
    for source in settings.sources:
        lag = (status.get("sources", {}).get(source.source_name) or {}).get("lag") or {}
        plans.append(plan_source(spark, source, lag.get("processed_version")))
    return plans


class _Rate(ProgressColumn):
    """Rows per second over the recent updates."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} rows/s" if task.speed else "- rows/s", style="cyan")


def _versions_text(plan: SourcePlan, done: int | None) -> str:
    if not plan.versions:
        return f"v{plan.latest}: nothing to read"
    return f"v{plan.versions[0]}..{'-' if done is None else done} of {plan.versions[-1]}"


class RunProgress:
    """One bar per source, fed by the job's ``on_metrics``; a context manager around the run."""

    def __init__(self, plans: Sequence[SourcePlan], console: Console | None = None) -> None:
        self.plans = {p.name: p for p in plans}
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[versions]}"),
            MofNCompleteColumn(),
            TextColumn("rows"),
            _Rate(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            speed_estimate_period=60,
        )
        self.rows: dict[str, int] = {name: 0 for name in self.plans}
        self.lock = threading.Lock()
        self.tasks = {
            name: self.progress.add_task(name, total=max(p.total_rows, 1) if p.versions else 1,
                                         completed=0 if p.versions else 1, versions=_versions_text(p, None))
            for name, p in self.plans.items()
        }

    def __call__(self, metrics: Mapping[str, Any]) -> None:
        """A micro-batch's figures (``source``, ``rows``, ``skipped_change_types``): advance its source."""
        per_source = metrics.get("sources")  # a query of several sources: each one's own figures
        if per_source:
            for name, own in per_source.items():
                self._advance(name, int(own.get("rows") or 0) + int(own.get("skipped") or 0))
            return
        self._advance(metrics.get("source"),
                      int(metrics.get("rows") or 0) + sum((metrics.get("skipped_change_types") or {}).values()))

    def _advance(self, name: str | None, done_now: int) -> None:
        if name not in self.plans:
            return
        with self.lock:
            self.rows[name] += done_now
            plan = self.plans[name]
            done = min(self.rows[name], plan.total_rows)
            self.progress.update(self.tasks[name], completed=done,
                                 versions=_versions_text(plan, plan.version_at(self.rows[name])))

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


class SparkTasks:
    """Spark tasks done of the total of the jobs running now, polled from the status tracker; a context manager.

    ``replay`` runs as a few Spark jobs (re-parse, merge, update): the bar
    shows how many of their stages' tasks are done, and the stage running.
    """

    def __init__(self, spark: Any, title: str, console: Console | None = None, poll_s: float = 0.25) -> None:
        self.spark = spark
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("tasks  {task.fields[step]}"), TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task(title, total=None, step="starting")
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True, name="gatewatch-progress")
        self.done_tasks = 0
        self.total_tasks = 0

    def _poll(self) -> None:
        tracker = self.spark.sparkContext.statusTracker()
        seen: dict[int, tuple[int, int]] = {}
        while True:
            stopping = self._stop.wait(self.poll_s)
            active = tracker.getActiveStageIds()
            for stage_id in {*seen, *active}:  # finished stages too: their last tasks count
                info = tracker.getStageInfo(stage_id)
                if info is not None:
                    seen[stage_id] = (info.numCompletedTasks, info.numTasks)
            self.done_tasks = sum(d for d, _ in seen.values())
            self.total_tasks = sum(t for _, t in seen.values())
            running = f", stage {max(active)} running" if active else ""
            self.progress.update(self.task, completed=self.done_tasks, total=max(self.total_tasks, 1),
                                 step=f"{len(seen)} Spark stages{running}")
            if stopping:
                return

    def __enter__(self) -> SparkTasks:
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.progress.update(self.task, step="done")
        self.progress.stop()


@contextlib.contextmanager
def live_run(spark: Any, settings: Settings, log_format: str = "auto",
             stream: TextIO | None = None) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """Around an ``available_now`` run on a terminal: the live display, yielding its ``on_metrics``; else ``None``.

    While it shows, per-batch log lines are left out (``--log-format auto``):
    the bars say the same, and warnings and errors still print above them.
    """
    if settings.trigger.mode != "available_now" or not wanted(stream):
        yield None
        return
    from gatewatch.streams.logs import configure

    display = RunProgress(plan_run(spark, settings))
    if log_format == "auto":
        configure(log_format, level="WARNING")
    with display:
        yield display


@contextlib.contextmanager
def live_tasks(spark: Any, title: str, stream: TextIO | None = None) -> Iterator[SparkTasks | None]:
    """Around a batch command (``replay``) on a terminal: its Spark tasks as a live bar; else ``None``.

    Over Spark Connect there is no status tracker to poll: no bar.
    """
    from gatewatch.streams.spark import is_connect

    if not wanted(stream) or is_connect(spark):
        yield None
        return
    with SparkTasks(spark, title) as tasks:
        yield tasks
