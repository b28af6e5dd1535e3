"""Plain-text tables for the terminal: the demo's summary, ``replay`` and ``gatewatch status``."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table, numbers right-aligned."""
    cells = [[("-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int) or row[i] is None for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if numeric[i] else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _alive(job: Mapping[str, Any]) -> bool:
    """False only when the job ran on this host and its process is gone."""
    if job.get("host") != socket.gethostname() or not job.get("pid"):
        return True
    try:
        os.kill(int(job["pid"]), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def format_status(status: Mapping[str, Any]) -> str:
    """``gatewatch status`` as text: one row per source, then the errors."""
    job = status.get("job", {})
    gone = not _alive(job)
    rows, errors = [], []
    for name, s in status.get("sources", {}).items():
        batch, lagged = s.get("last_batch") or {}, s.get("lag") or {}
        state = s.get("state", "-") + (" (process gone)" if gone and s.get("state") in ("running", "starting") else "")
        rows.append([name, state, s.get("last_batch_id"), batch.get("rows"), batch.get("requests"),
                     batch.get("quarantined"), lagged.get("versions"),
                     None if lagged.get("seconds") is None else f"{lagged['seconds']:.1f}", s.get("updated_at")])
        if s.get("error"):
            errors.append(f"{name}: {s['error']}")
    head = (f"job pid {job.get('pid')} on {job.get('host')}, started {job.get('started_at')}, "
            f"updated {job.get('updated_at')}")
    table = format_table(["source", "state", "last batch", "rows", "requests", "quarantined", "lag (versions)",
                          "lag (s)", "updated"], rows)
    return "\n".join([head, "", table, *([""] + errors if errors else [])])
