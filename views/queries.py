"""The SQL of every dataset the dashboard and the report show, written once.

Each dataset is a Spark / Databricks SQL ``SELECT`` over gatewatch's output
tables, with the tables as placeholders (``{requests}``, ``{quarantine}``,
``{alerts}``, ``{outbox}``). ``dataset_sql`` fills them in with the output
location: a ``catalog.schema`` gives ``catalog.schema.requests``, a folder
gives the path form ``delta.`/path/requests```; the dashboard gets that text
as it is. The report fills them in with a filtered subquery instead (a date
range and endpoints, ``filtered_refs``), so both show the same figures from
the same text.

Token and safety figures are read from ``requests`` (its token and
``safety_flags`` columns), not from the event tables, so the views do not
depend on how those are written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gatewatch.settings import OutputSettings


@dataclass(frozen=True)
class Dataset:
    """One dataset: its name, its title, the tables it reads and its SQL with ``{role}`` placeholders."""

    name: str
    title: str
    roles: tuple[str, ...]
    sql: str


DATASETS: tuple[Dataset, ...] = (
    Dataset(
        "overview", "Overview", ("requests", "quarantine"),
        """SELECT
  r.requests,
  r.blocked,
  r.errors,
  r.input_tokens,
  r.output_tokens,
  r.total_tokens,
  q.quarantined,
  q.quarantined_open
FROM (
  SELECT
    COUNT(*) AS requests,
    COUNT_IF(blocked) AS blocked,
    COUNT_IF(outcome = 'error') AS errors,
    COALESCE(SUM(input_tokens), 0) AS input_tokens,
    COALESCE(SUM(output_tokens), 0) AS output_tokens,
    COALESCE(SUM(total_tokens), 0) AS total_tokens
  FROM {requests}
) r
CROSS JOIN (
  SELECT COUNT(*) AS quarantined, COUNT_IF(status = 'open') AS quarantined_open
  FROM {quarantine}
) q""",
    ),
    Dataset(
        "tokens_by_endpoint", "Tokens per endpoint over time", ("requests",),
        """SELECT
  DATE_TRUNC('HOUR', request_time) AS hour,
  endpoint,
  COUNT(*) AS requests,
  COALESCE(SUM(input_tokens), 0) AS input_tokens,
  COALESCE(SUM(output_tokens), 0) AS output_tokens,
  COALESCE(SUM(total_tokens), 0) AS total_tokens
FROM {requests}
GROUP BY 1, 2
ORDER BY 1, 2""",
    ),
    Dataset(
        "tokens_by_requester", "Tokens per requester over time", ("requests",),
        """SELECT
  DATE_TRUNC('HOUR', request_time) AS hour,
  COALESCE(requester, '(unknown)') AS requester,
  COUNT(*) AS requests,
  COALESCE(SUM(total_tokens), 0) AS total_tokens
FROM {requests}
GROUP BY 1, 2
ORDER BY 1, 2""",
    ),
    Dataset(
        "outcomes", "Requests and blocks per outcome", ("requests",),
        """SELECT
  DATE_TRUNC('HOUR', request_time) AS hour,
  outcome,
  COUNT(*) AS requests,
  COUNT_IF(blocked) AS blocked
FROM {requests}
GROUP BY 1, 2
ORDER BY 1, 2""",
    ),
    Dataset(
        "blocked_by_layer", "Blocked rate per endpoint by safety layer and category", ("requests",),
        """WITH totals AS (
  SELECT endpoint, COUNT(*) AS endpoint_requests FROM {requests} GROUP BY endpoint
),
blocked AS (
  SELECT
    endpoint,
    COALESCE(blocked_stage, flag.stage, '(unknown)') AS layer,
    COALESCE(flag.category, '(unspecified)') AS category,
    databricks_request_id
  FROM {requests}
  LATERAL VIEW OUTER EXPLODE(FILTER(safety_flags, f -> f.filtered)) flags AS flag
  WHERE blocked
)
SELECT
  b.endpoint,
  b.layer,
  b.category,
  COUNT(DISTINCT b.databricks_request_id) AS blocked,
  MAX(t.endpoint_requests) AS endpoint_requests,
  ROUND(COUNT(DISTINCT b.databricks_request_id) / MAX(t.endpoint_requests), 4) AS blocked_rate
FROM blocked b
JOIN totals t ON t.endpoint <=> b.endpoint
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3""",
    ),
    Dataset(
        "errors", "Errors by type", ("requests",),
        """SELECT
  endpoint,
  COALESCE(error_type, '(none)') AS error_type,
  status_code,
  COUNT(*) AS errors
FROM {requests}
WHERE outcome = 'error'
GROUP BY 1, 2, 3
ORDER BY 4 DESC, 1, 2, 3""",
    ),
    Dataset(
        "quarantine", "Quarantine by reason and shape fingerprint", ("quarantine",),
        """SELECT
  reason,
  COALESCE(shape_fingerprint, '(none)') AS shape_fingerprint,
  COUNT(*) AS rows,
  COUNT_IF(status = 'open') AS open_rows,
  MIN(quarantined_at) AS first_seen,
  MAX(quarantined_at) AS last_seen
FROM {quarantine}
GROUP BY 1, 2
ORDER BY 3 DESC, 1, 2""",
    ),
    Dataset(
        "alert_transitions", "Alerts fired and resolved", ("outbox",),
        """SELECT
  DATE_TRUNC('HOUR', created_at) AS hour,
  rule,
  status,
  COUNT(DISTINCT event_id) AS transitions
FROM {outbox}
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3""",
    ),
    Dataset(
        "alerts", "Alert state", ("alerts",),
        """SELECT
  rule,
  TO_JSON(`group`) AS alert_group,
  status,
  severity,
  summary,
  value,
  threshold,
  started_at,
  ended_at
FROM {alerts}
ORDER BY started_at DESC""",
    ),
    Dataset(
        "source_lag", "Source lag", ("requests",),
        """SELECT
  source_table,
  COUNT(*) AS requests,
  MAX(source_commit_version) AS newest_commit_version,
  MAX(source_commit_timestamp) AS newest_commit_at,
  ROUND(PERCENTILE_APPROX(
    UNIX_MICROS(source_commit_timestamp) - UNIX_MICROS(request_time), 0.5) / 1e6, 1) AS median_landing_s,
  ROUND(MAX(UNIX_MICROS(source_commit_timestamp) - UNIX_MICROS(request_time)) / 1e6, 1) AS max_landing_s
FROM {requests}
GROUP BY 1
ORDER BY 1""",
    ),
)
"""Every dataset, in the order the dashboard and the report show them."""

ALERT_ROLES = ("alerts", "outbox")

_CATALOG_SCHEMA = re.compile(r"^[A-Za-z_][\w-]*\.[A-Za-z_][\w-]*$")


def by_name(name: str) -> Dataset:
    """The dataset called ``name``."""
    return next(d for d in DATASETS if d.name == name)


def table_names(output: OutputSettings) -> dict[str, str]:
    """The output table name of each role the datasets read."""
    return {"requests": output.requests_table, "quarantine": output.quarantine_table,
            "alerts": output.alerts_table, "outbox": output.outbox_table}


def _quote(part: str) -> str:
    return "`" + part.replace("`", "``") + "`"


def table_refs(output: OutputSettings) -> dict[str, str]:
    """SQL references of the output tables by role: ``catalog.schema.name`` or ``delta.`<dir>/name```."""
    loc = output.location
    refs = {}
    for role, name in table_names(output).items():
        if _CATALOG_SCHEMA.match(loc):
            refs[role] = ".".join(_quote(p) for p in (*loc.split("."), name))
        else:
            base = loc.rstrip("/") if "://" in loc or loc.startswith(("dbfs:", "file:")) else str(
                Path(loc).expanduser().resolve())
            refs[role] = f"delta.{_quote(base + '/' + name)}"
    return refs


def dataset_sql(dataset: Dataset, refs: Mapping[str, str]) -> str:
    """The dataset's SQL with its tables filled in from ``refs`` (by role)."""
    return dataset.sql.format(**{role: refs[role] for role in dataset.roles})


def _ts(at: datetime) -> str:
    at = at.astimezone(timezone.utc) if at.tzinfo else at.replace(tzinfo=timezone.utc)
    return "TIMESTAMP '" + at.strftime("%Y-%m-%d %H:%M:%S.%f") + "+00:00'"


def _text(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def filtered_refs(
    refs: Mapping[str, str],
    since: datetime | None = None,
    until: datetime | None = None,
    endpoints: Sequence[str] = (),
) -> dict[str, str]:
    """``refs`` narrowed to a date range (``since`` inclusive, ``until`` exclusive) and endpoints.

    Requests and quarantine rows are placed in time by ``request_time`` (a
    quarantined row without one by ``quarantined_at``); alerts by
    ``started_at`` and their group's ``endpoint``; outbox entries by
    ``created_at`` and the endpoint of their alert.
    """
    def where(time_col: str, endpoint_cond: str | None) -> str:
        conds = []
        if since is not None:
            conds.append(f"{time_col} >= {_ts(since)}")
        if until is not None:
            conds.append(f"{time_col} < {_ts(until)}")
        if endpoints and endpoint_cond:
            conds.append(endpoint_cond.format(values=", ".join(_text(e) for e in endpoints)))
        return " AND ".join(conds)

    alert_endpoint = "(element_at(`group`, 'endpoint') IS NULL OR element_at(`group`, 'endpoint') IN ({values}))"
    conditions = {
        "requests": where("request_time", "endpoint IN ({values})"),
        "quarantine": where("COALESCE(request_time, quarantined_at)", "endpoint IN ({values})"),
        "alerts": where("started_at", alert_endpoint),
        "outbox": where("created_at", f"dedup_key IN (SELECT dedup_key FROM {refs['alerts']} WHERE "
                                      f"{alert_endpoint})"),
    }
    return {role: (f"(SELECT * FROM {ref} WHERE {conditions[role]}) AS _{role}" if conditions.get(role) else ref)
            for role, ref in refs.items()}
