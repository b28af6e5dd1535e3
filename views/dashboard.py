"""The AI/BI (Lakeview) dashboard over gatewatch's outputs, and deploying it by name.

``build_dashboard`` makes the serialized dashboard (the ``.lvdash.json``
format: ``datasets`` with their SQL as ``queryLines``, ``pages`` with a
``layout`` of widgets, each widget a query on a dataset and a ``spec``) with
the output location filled into the datasets' SQL, the same text
``views.queries`` gives the report. ``deploy_dashboard`` looks the dashboard
up by display name (and folder), updates it or creates it through the
workspace's Lakeview API, then publishes it.

API: https://docs.databricks.com/api/workspace/lakeview (create, update,
publish, list); format: https://docs.databricks.com/dashboards/api-tutorials/lakeview-crud-api.html
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import structlog

from gatewatch.errors import DeployError
from gatewatch.settings import Settings
from gatewatch.views import queries

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

log = structlog.get_logger("gatewatch.dashboard")

DEFAULT_PARENT = "/Workspace/Shared/gatewatch"
"""The workspace folder of the dashboard unless ``deploy.dashboard.parent_path`` says otherwise."""


@dataclass(frozen=True)
class DashboardPlan:
    """What is sent: the display name, the folder, the warehouse and the serialized dashboard."""

    display_name: str
    parent_path: str
    warehouse_id: str | None
    serialized: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The plan as the dry run prints it (the serialized dashboard as an object)."""
        return {"display_name": self.display_name, "parent_path": self.parent_path,
                "warehouse_id": self.warehouse_id, "serialized_dashboard": self.serialized}


@dataclass(frozen=True)
class DashboardResult:
    """What ``deploy_dashboard`` did: ``created`` or ``updated``, then published."""

    action: Literal["created", "updated"]
    dashboard_id: str
    display_name: str
    path: str | None


def alerting_on(settings: Settings) -> bool:
    """Alert tables exist only when alerting is enabled with rules (``streams.job.alerting_enabled``)."""
    return settings.alerts.enabled and bool(settings.alerts.rules)


def dashboard_datasets(settings: Settings) -> list[queries.Dataset]:
    """The datasets of this config's dashboard: all, less the alert ones when alerting is off."""
    keep_alerts = alerting_on(settings)
    return [d for d in queries.DATASETS if keep_alerts or not set(d.roles) & set(queries.ALERT_ROLES)]


def dataset_texts(settings: Settings) -> dict[str, str]:
    """Each dataset's SQL as the dashboard gets it: the output location filled in."""
    refs = queries.table_refs(settings.output)
    return {d.name: queries.dataset_sql(d, refs) for d in dashboard_datasets(settings)}


def _field(name: str, expression: str) -> dict[str, str]:
    return {"name": name, "expression": expression}


def _widget(name: str, dataset: str, fields: Sequence[dict[str, str]], spec: dict[str, Any], *,
            disaggregated: bool) -> dict[str, Any]:
    return {
        "name": name,
        "queries": [{"name": "main_query", "query": {"datasetName": dataset, "fields": list(fields),
                                                     "disaggregated": disaggregated}}],
        "spec": spec,
    }


def _counter(dataset: str, column: str, title: str) -> dict[str, Any]:
    return _widget(f"counter_{column}", dataset, [_field(column, f"`{column}`")], {
        "version": 2, "widgetType": "counter",
        "encodings": {"value": {"fieldName": column, "displayName": title}},
        "frame": {"showTitle": True, "title": title},
    }, disaggregated=True)


def _bar(dataset: str, title: str, x: str, y: str, color: str, *, temporal: bool) -> dict[str, Any]:
    y_sum = f"sum({y})"
    return _widget(f"bar_{dataset}", dataset, [
        _field(x, f"`{x}`"), _field(y_sum, f"SUM(`{y}`)"), _field(color, f"`{color}`"),
    ], {
        "version": 3, "widgetType": "bar",
        "encodings": {
            "x": {"fieldName": x, "scale": {"type": "temporal" if temporal else "categorical"}, "displayName": x},
            "y": {"fieldName": y_sum, "scale": {"type": "quantitative"}, "displayName": y},
            "color": {"fieldName": color, "scale": {"type": "categorical"}, "displayName": color},
        },
        "frame": {"showTitle": True, "title": title},
    }, disaggregated=False)


def _table(dataset: queries.Dataset, columns: Sequence[str]) -> dict[str, Any]:
    return _widget(f"table_{dataset.name}", dataset.name, [_field(c, f"`{c}`") for c in columns], {
        "version": 1, "widgetType": "table",
        "encodings": {"columns": [{"fieldName": c, "displayName": c} for c in columns]},
        "frame": {"showTitle": True, "title": dataset.title},
    }, disaggregated=True)


CHARTS: dict[str, tuple[str, str, str, bool]] = {
    "tokens_by_endpoint": ("hour", "total_tokens", "endpoint", True),
    "tokens_by_requester": ("hour", "total_tokens", "requester", True),
    "outcomes": ("hour", "requests", "outcome", True),
    "blocked_by_layer": ("endpoint", "blocked_rate", "layer", False),
    "errors": ("error_type", "errors", "endpoint", False),
    "quarantine": ("reason", "rows", "shape_fingerprint", False),
    "alert_transitions": ("hour", "transitions", "status", True),
}
"""The datasets drawn as bar charts: x, y (summed), colour, and whether x is time."""

TABLES: dict[str, tuple[str, ...]] = {
    "blocked_by_layer": ("endpoint", "layer", "category", "blocked", "endpoint_requests", "blocked_rate"),
    "quarantine": ("reason", "shape_fingerprint", "rows", "open_rows", "first_seen", "last_seen"),
    "alerts": ("rule", "alert_group", "status", "severity", "value", "threshold", "started_at", "ended_at"),
    "source_lag": ("source_table", "requests", "newest_commit_version", "newest_commit_at", "median_landing_s",
                   "max_landing_s"),
}
"""The datasets shown as tables (as well as, or instead of, a chart)."""

COUNTERS = (("requests", "Requests"), ("blocked", "Blocked"), ("quarantined_open", "Quarantined, open"),
            ("total_tokens", "Total tokens"))


def serialized_dashboard(settings: Settings) -> dict[str, Any]:
    """The dashboard definition: every dataset with its SQL, one page of counters, charts and tables."""
    datasets = dashboard_datasets(settings)
    texts = dataset_texts(settings)
    layout: list[dict[str, Any]] = []
    y = 0
    for i, (column, title) in enumerate(COUNTERS):
        layout.append({"widget": _counter("overview", column, title),
                       "position": {"x": (i % 2) * 3, "y": (i // 2) * 2, "width": 3, "height": 2}})
    y = (len(COUNTERS) + 1) // 2 * 2
    half = 0
    for d in datasets:
        widgets = []
        if d.name in CHARTS:
            x, y_col, color, temporal = CHARTS[d.name]
            widgets.append(_bar(d.name, d.title, x, y_col, color, temporal=temporal))
        if d.name in TABLES:
            widgets.append(_table(d, TABLES[d.name]))
        for w in widgets:
            layout.append({"widget": w, "position": {"x": half * 3, "y": y, "width": 3, "height": 6}})
            half ^= 1
            if half == 0:
                y += 6
    return {
        "datasets": [{"name": d.name, "displayName": d.title, "queryLines": texts[d.name].splitlines(keepends=True)}
                     for d in datasets],
        "pages": [{"name": "gatewatch", "displayName": "gatewatch", "layout": layout}],
    }


def plan(settings: Settings, job_name: str) -> DashboardPlan:
    """The dashboard ``deploy_dashboard`` sends for ``settings`` (no workspace needed).

    Named ``deploy.dashboard.name``, else after the job (``job_name``).
    """
    cfg = settings.deploy.dashboard
    return DashboardPlan(display_name=cfg.name or job_name, parent_path=cfg.parent_path or DEFAULT_PARENT,
                         warehouse_id=cfg.warehouse_id, serialized=serialized_dashboard(settings))


def find_dashboards(client: WorkspaceClient, display_name: str, parent_path: str) -> list[str]:
    """Ids of the active dashboards named exactly ``display_name`` in ``parent_path`` (when the list says)."""
    from databricks.sdk.service.dashboards import DashboardView

    found = []
    for d in client.lakeview.list(view=DashboardView.DASHBOARD_VIEW_BASIC):
        if d.display_name != display_name or d.dashboard_id is None:
            continue
        if d.parent_path and d.parent_path.rstrip("/") != parent_path.rstrip("/"):
            continue
        found.append(d.dashboard_id)
    return sorted(found)


def deploy_dashboard(settings: Settings, client: WorkspaceClient, job_name: str) -> DashboardResult:
    """Create the dashboard or update the one of the same name, then publish it.

    Raises:
        DeployError: more than one dashboard has the name, or the workspace refused a call.
    """
    from databricks.sdk.errors import DatabricksError
    from databricks.sdk.service.dashboards import Dashboard

    p = plan(settings, job_name)
    body = json.dumps(p.serialized)
    try:
        ids = find_dashboards(client, p.display_name, p.parent_path)
        if len(ids) > 1:
            raise DeployError(f"{len(ids)} dashboards are named '{p.display_name}' in {p.parent_path} "
                              f"({', '.join(ids)}); delete all but one")
        if ids:
            action: Literal["created", "updated"] = "updated"
            done = client.lakeview.update(ids[0], Dashboard(display_name=p.display_name, serialized_dashboard=body,
                                                            warehouse_id=p.warehouse_id))
            dashboard_id = done.dashboard_id or ids[0]
        else:
            action = "created"
            done = client.lakeview.create(Dashboard(display_name=p.display_name, parent_path=p.parent_path,
                                                    serialized_dashboard=body, warehouse_id=p.warehouse_id))
            if not done.dashboard_id:
                raise DeployError(f"the workspace created the dashboard '{p.display_name}' but sent no id")
            dashboard_id = done.dashboard_id
        client.lakeview.publish(dashboard_id, embed_credentials=settings.deploy.dashboard.embed_credentials,
                                warehouse_id=p.warehouse_id)
    except DatabricksError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DeployError(f"the workspace refused the dashboard '{p.display_name}': {first}") from None
    log.info(f"dashboard.{action}", dashboard=p.display_name, dashboard_id=dashboard_id)
    return DashboardResult(action, dashboard_id, p.display_name, done.path)
