"""``gatewatch validate`` and ``gatewatch advise`` as text for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gatewatch.cli.tables import format_table


SHOWN_IDS = 2
"""Sample ids per group in the text (the JSON report has them all)."""


def _ids(ids: Sequence[str]) -> str:
    shown = [i for i in ids if i]
    return ", ".join(shown[:SHOWN_IDS]) + (", ..." if len(shown) > SHOWN_IDS else "") if shown else "-"


def format_report(report: Any) -> str:
    """A ``quarantine.validate.Report`` as text: one table per kind of change, the shapes, then the verdict."""
    at = f"version {report.version}" if report.version is not None else f"as of {report.timestamp}"
    lines = [f"{report.source} at {at}: {report.rows:,} rows",
             f"shipped:   {report.shipped}", f"candidate: {report.candidate}", ""]
    if not report.differs:
        return "\n".join([*lines, "No difference: every row parses the same with the candidate parsers."])
    mark = {i: "accepted" for i in report.accepted}
    sections = [
        ("Rows that change outcome", ["id", "rows", "sample ids", ""], report.outcome_changes,
         lambda i: [i["id"], i["rows"], _ids(i["sample_ids"]), mark.get(i["id"], "")]),
        ("Fields that change", ["id", "rows", "sample ids", ""], report.field_changes,
         lambda i: [i["id"], i["rows"], _ids(i["sample_ids"]), mark.get(i["id"], "")]),
        ("Rows newly quarantined", ["id", "rows", "was", "reason", "failing", "sample ids", ""],
         report.newly_quarantined,
         lambda i: [i["id"], i["rows"], ", ".join(i["from"]), ", ".join(i["reasons"]),
                    ", ".join(i["failed_columns"]) or "-", _ids(i["sample_ids"]), mark.get(i["id"], "")]),
        ("Rows newly parsed", ["id", "rows", "now", "parser", "sample ids"], report.newly_parsed,
         lambda i: [i["id"], i["rows"], ", ".join(i["to"]), ", ".join(i["parsers"]), _ids(i["sample_ids"])]),
    ]
    for title, headers, items, row in sections:
        if items:
            table = format_table(headers, [row(i) for i in items])
            lines += [f"{title}:", *(line.rstrip() for line in table.splitlines()), ""]
    shapes = [f"shape {i['fingerprint']}: {i['shape']}" for i in report.newly_quarantined + report.newly_parsed]
    if shapes:
        lines += [*shapes, ""]
    if report.passed:
        lines.append("PASSED: no change to rows the shipped parsers handled"
                     + (", except the accepted ones." if report.accepted else "."))
    else:
        lines.append(f"FAILED: {len(report.unaccepted)} change(s) to rows the shipped parsers handled. "
                     "If intended, accept each with --accept ID (or --accept all).")
    return "\n".join(lines)


def format_idle(entities: Sequence[Any]) -> str:
    """``gatewatch advise``: one row per idle served entity (``alerts.advise.IdleEntity``) and how to remove it."""
    if not entities:
        return "No idle served entities."
    rows = [[e.endpoint, e.entity, e.last_request_text, e.removal] for e in entities]
    table = format_table(["endpoint", "served entity", "last request", "to remove it"], rows)
    return "\n".join(line.rstrip() for line in table.splitlines()) + (
        f"\n\n{len(entities):,} served entities with 0% of the traffic, no scale-to-zero and no request in the window.")
