"""``gatewatch report``: the dashboard's views as one self-contained HTML page.

The charts are drawn with plotly: its wheel ships plotly.js, which the page
inlines once, so the file opens anywhere without a network, and plotly draws
into SVG, which a browser test can check. The numbers come from the
dashboard's own datasets (``views.queries``), run by ``views.data.collect``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gatewatch.errors import MissingExtraError
from gatewatch.views.data import ReportData
from gatewatch.views.queries import by_name

KPIS: tuple[tuple[str, str], ...] = (
    ("requests", "Requests"),
    ("blocked", "Blocked"),
    ("errors", "Errors"),
    ("quarantined", "Quarantined"),
    ("quarantined_open", "Quarantined, open"),
    ("total_tokens", "Total tokens"),
)
"""The overview figures shown as tiles: the ``overview`` dataset's column and its label."""

TOP_REQUESTERS = 8

_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 24px; color: #1f2937; background: #f8fafc; }
h1 { margin: 0 0 4px; font-size: 24px; }
.meta { color: #6b7280; margin-bottom: 20px; }
.kpis { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 20px; }
.kpi { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px 18px; min-width: 140px; }
.kpi .label { color: #6b7280; font-size: 13px; }
.kpi .value { font-size: 26px; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; }
section { min-width: 0; overflow-x: auto; background: #fff; border: 1px solid #e5e7eb; border-radius: 8px;
          padding: 12px 16px; }
section h2 { font-size: 16px; margin: 0 0 8px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { color: #9ca3af; font-style: italic; }
"""


def _plotly():
    try:
        import plotly.graph_objects as go
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise MissingExtraError("the HTML report (plotly)", "report") from None
    return go, get_plotlyjs


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], limit: int = 50) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows[:limit]:
        cells = []
        for c in columns:
            v = row.get(c)
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="meta">{len(rows) - limit:,} more rows not shown.</p>' if len(rows) > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def _series(rows: Sequence[Mapping[str, Any]], x: str, y: str, by: str) -> dict[str, tuple[list, list]]:
    series: dict[str, tuple[list, list]] = {}
    for row in rows:
        xs, ys = series.setdefault(str(row[by]), ([], []))
        xs.append(row[x])
        ys.append(row[y])
    return series


def _bar(go, rows, x: str, y: str, by: str, *, stacked: bool = True, y_title: str = "", x_title: str = ""):
    fig = go.Figure([go.Bar(name=name, x=xs, y=ys) for name, (xs, ys) in _series(rows, x, y, by).items()])
    fig.update_layout(barmode="stack" if stacked else "group", height=340, margin=dict(l=50, r=10, t=10, b=40),
                      legend=dict(orientation="h", y=-0.2), yaxis_title=y_title, xaxis_title=x_title,
                      template="plotly_white")
    return fig


def _top_requesters(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The requester rows, with all but the ``TOP_REQUESTERS`` biggest spenders summed as ``(others)``."""
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["requester"]] = totals.get(r["requester"], 0) + (r["total_tokens"] or 0)
    top = set(sorted(totals, key=lambda k: -totals[k])[:TOP_REQUESTERS])
    merged: dict[tuple[Any, str], dict[str, Any]] = {}
    for r in rows:
        who = r["requester"] if r["requester"] in top else "(others)"
        m = merged.setdefault((r["hour"], who), {"hour": r["hour"], "requester": who, "total_tokens": 0})
        m["total_tokens"] += r["total_tokens"] or 0
    return list(merged.values())


def _blocked_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "layer / category": f"{r['layer']} / {r['category']}"} for r in rows]


Chart = Callable[[Any, list[dict[str, Any]]], Any]

CHARTS: tuple[tuple[str, str, Chart, tuple[str, ...]], ...] = (
    ("tokens_by_endpoint", "Tokens per endpoint (per hour)",
     lambda go, rows: _bar(go, rows, "hour", "total_tokens", "endpoint", y_title="total tokens"), ()),
    ("tokens_by_requester", f"Tokens per requester (per hour, top {TOP_REQUESTERS})",
     lambda go, rows: _bar(go, _top_requesters(rows), "hour", "total_tokens", "requester", y_title="total tokens"),
     ()),
    ("outcomes", "Requests per outcome (per hour)",
     lambda go, rows: _bar(go, rows, "hour", "requests", "outcome", y_title="requests"), ()),
    ("blocked_by_layer", "Blocked rate per endpoint, by safety layer and category",
     lambda go, rows: _bar(go, _blocked_rows(rows), "endpoint", "blocked_rate", "layer / category",
                           y_title="share of the endpoint's requests"),
     ("endpoint", "layer", "category", "blocked", "endpoint_requests", "blocked_rate")),
    ("errors", "Errors by type",
     lambda go, rows: _bar(go, rows, "error_type", "errors", "endpoint", y_title="errors"),
     ("endpoint", "error_type", "status_code", "errors")),
    ("quarantine", "Quarantine by reason and shape fingerprint",
     lambda go, rows: _bar(go, rows, "reason", "rows", "shape_fingerprint", y_title="rows"),
     ("reason", "shape_fingerprint", "rows", "open_rows", "first_seen", "last_seen")),
    ("alert_transitions", "Alerts fired and resolved (per hour)",
     lambda go, rows: _bar(go, [{**r, "rule / status": f"{r['rule']} / {r['status']}"} for r in rows],
                           "hour", "transitions", "rule / status", y_title="transitions"), ()),
    ("source_lag", "Source lag: newest commit read, and commit time minus request time",
     lambda go, rows: _bar(go, [{**r, "measure": m, "seconds": r[k]} for r in rows
                                for m, k in (("median", "median_landing_s"), ("max", "max_landing_s"))],
                           "source_table", "seconds", "measure", stacked=False, y_title="seconds"),
     ("source_table", "requests", "newest_commit_version", "newest_commit_at", "median_landing_s", "max_landing_s")),
)
"""Each chart: its dataset, its title, how it is drawn and the dataset's columns shown as a table under it."""

TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("alerts", ("rule", "alert_group", "status", "severity", "value", "threshold", "started_at", "ended_at")),
)
"""Datasets shown as tables only."""


def _kpis(data: ReportData) -> str:
    overview = (data.rows.get("overview") or [{}])[0]
    tiles = []
    for key, label in KPIS:
        value = overview.get(key)
        tiles.append(f'<div class="kpi"><div class="label">{html.escape(label)}</div>'
                     f'<div class="value" id="kpi-{key}" data-value="{"" if value is None else value}">'
                     f"{html.escape(_fmt(value))}</div></div>")
    return f'<div class="kpis">{"".join(tiles)}</div>'


def render(data: ReportData, title: str = "gatewatch report") -> str:
    """The whole page: figures, charts (plotly.js inlined once) and tables."""
    go, get_plotlyjs = _plotly()
    sections = []
    for name, heading, draw, columns in CHARTS:
        body: str
        if name in data.missing:
            body = f'<p class="missing">{html.escape(data.missing[name])}</p>'
        elif not data.rows.get(name):
            body = '<p class="missing">No rows in this range.</p>'
        else:
            rows = data.rows[name]
            fig = draw(go, rows)
            body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}",
                               config={"displaylogo": False, "responsive": True})
            if columns:
                body += _table(rows, columns)
        sections.append(f'<section class="chart" id="chart-{name}" data-dataset="{name}">'
                        f"<h2>{html.escape(heading)}</h2>{body}</section>")
    for name, columns in TABLES:
        if name in data.missing:
            body = f'<p class="missing">{html.escape(data.missing[name])}</p>'
        else:
            body = _table(data.rows.get(name, []), columns) if data.rows.get(name) else \
                '<p class="missing">No rows in this range.</p>'
        sections.append(f'<section class="table" id="table-{name}"><h2>{html.escape(by_name(name).title)}</h2>'
                        f"{body}</section>")
    meta = (f"Output {html.escape(data.location)} &middot; {html.escape(data.filters.describe())} &middot; "
            f"generated {data.generated_at.strftime('%Y-%m-%d %H:%M:%S UTC')}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
        f"<h1>{html.escape(title)}</h1><div class=\"meta\">{meta}</div>{_kpis(data)}"
        f"<div class=\"grid\">{''.join(sections)}</div></body></html>\n"
    )


def write_report(settings: Any, html_path: str | Path, *, since: str | None = None, until: str | None = None,
                 endpoints: Sequence[str] = (), spark: Any = None) -> Path:
    """Read the output tables of ``settings`` and write the report to ``html_path``; return its absolute path.

    Raises:
        ConfigError: ``--since`` or ``--until`` is not a duration or a date.
        MissingExtraError: plotly is not installed.
    """
    from datetime import timezone

    from gatewatch.views.data import Filters, collect, parse_when

    now = datetime.now(timezone.utc)
    filters = Filters(parse_when(since, "--since", now), parse_when(until, "--until", now), tuple(endpoints))
    _plotly()
    if spark is None:
        from gatewatch.streams.spark import build_spark

        spark = build_spark(settings.spark, app_name="gatewatch-report")
    page = render(collect(spark, settings.output, filters))
    path = Path(html_path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
