"""Running the datasets of ``views.queries`` against the output tables with Spark."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pyspark.sql import SparkSession

from gatewatch.errors import ConfigError
from gatewatch.settings import OutputSettings
from gatewatch.views import queries


@dataclass(frozen=True)
class Filters:
    """What the report shows: a date range (``since`` inclusive, ``until`` exclusive) and endpoints (all if empty)."""

    since: datetime | None = None
    until: datetime | None = None
    endpoints: tuple[str, ...] = ()

    def describe(self) -> str:
        """The filters in words, for the page's header."""
        def when(at: datetime | None, default: str) -> str:
            return at.strftime("%Y-%m-%d %H:%M UTC") if at else default

        span = f"{when(self.since, 'the first row')} to {when(self.until, 'now')}"
        return f"{span}; endpoints: {', '.join(self.endpoints) if self.endpoints else 'all'}"


@dataclass
class ReportData:
    """Each dataset's rows (as dicts) by name, and the datasets left out with why."""

    location: str
    filters: Filters
    generated_at: datetime
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str | None, key: str, now: datetime) -> datetime | None:
    """``24h``, ``7d``, ``30m``, ``2w`` (before ``now``) or an ISO date / date-time (UTC unless it says otherwise).

    Raises:
        ConfigError: naming ``key`` and what is expected.
    """
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(key, "a duration before now (30m, 24h, 7d, 2w) or an ISO date or date-time", text) from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def table_exists(spark: SparkSession, output: OutputSettings, role: str) -> bool:
    """Whether the output table of ``role`` exists (a Delta folder, or a catalog table)."""
    from gatewatch.streams import delta_sql, outputs

    target = outputs.table(output, queries.table_names(output)[role])
    if target.is_path:
        return delta_sql.is_delta(spark, target.ref)
    return bool(spark.catalog.tableExists(target.ref))


def run_dataset(spark: SparkSession, sql: str) -> list[dict[str, Any]]:
    """The rows of one dataset's SQL, as dicts (timestamps as UTC datetimes)."""
    return [r.asDict(recursive=True) for r in spark.sql(sql).collect()]


def collect(
    spark: SparkSession,
    output: OutputSettings,
    filters: Filters = Filters(),
    datasets: Sequence[queries.Dataset] = queries.DATASETS,
) -> ReportData:
    """Every dataset's rows from the output tables of ``output``, narrowed by ``filters``.

    A dataset whose tables do not exist (no alerting: no alert tables) is
    listed in ``missing`` instead.
    """
    refs = queries.filtered_refs(queries.table_refs(output), filters.since, filters.until, filters.endpoints)
    exists: dict[str, bool] = {}
    data = ReportData(location=output.location, filters=filters, generated_at=datetime.now(timezone.utc))
    previous_tz = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    try:
        for dataset in datasets:
            absent = [r for r in dataset.roles if not exists.setdefault(r, table_exists(spark, output, r))]
            if absent:
                data.missing[dataset.name] = f"no {', '.join(absent)} table in {output.location}"
                continue
            data.rows[dataset.name] = run_dataset(spark, queries.dataset_sql(dataset, refs))
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous_tz)
    return data
