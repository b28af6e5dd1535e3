"""The alert every sink delivers: rule, group, numbers and links, never payload text.

An ``Alert`` is what the alert rules emit and what the Delta outbox stores (as
JSON through ``to_dict``/``from_dict``). It deliberately has no field for a
prompt or a response: only counts, rates, the rule, the group and links, so no
sink can leak request content. ``details`` takes a few extra scalar fields and
refuses keys and values that look like payload text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal, get_args

Status = Literal["firing", "resolved"]
Severity = Literal["critical", "error", "warning", "info"]
DetailValue = str | int | float | bool | None

STATUSES: tuple[str, ...] = get_args(Status)
SEVERITIES: tuple[str, ...] = get_args(Severity)

#: Longest rule-name prefix kept in a dedup key (PagerDuty allows 255 characters in all).
MAX_RULE_PREFIX = 200
#: Longest string accepted as a ``details`` value.
MAX_DETAIL_CHARS = 256
#: ``details`` keys refused because they name request or response content.
FORBIDDEN_DETAIL_KEYS = frozenset(
    {"prompt", "prompts", "response", "responses", "request", "messages", "message_text",
     "content", "completion", "input", "output", "text", "body", "payload"}
)


def make_dedup_key(rule: str, group: Mapping[str, str]) -> str:
    """A stable key for one rule and group: ``<rule>:<sha1 of rule and sorted group>``.

    Args:
        rule: the alert rule's name.
        group: the group values, e.g. ``{"endpoint": "chat-bot"}``; order does not matter.

    Returns:
        The same string for the same rule and group on every run and machine.
    """
    canonical = json.dumps([rule, sorted((str(k), str(v)) for k, v in group.items())], separators=(",", ":"))
    digest = hashlib.sha1(canonical.encode("utf-8")).hexdigest()  # noqa: S324 - an identifier, not security
    return f"{rule[:MAX_RULE_PREFIX]}:{digest}"


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is refused rather than guessed."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"datetime {value.isoformat()} has no time zone: pass an aware UTC datetime")
    return value.astimezone(timezone.utc)


def iso(value: datetime) -> str:
    """RFC 3339 text in UTC with a ``Z`` suffix (what PagerDuty and Alertmanager accept)."""
    return to_utc(value).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """The inverse of ``iso``: an aware UTC datetime."""
    return to_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _check_details(details: Mapping[str, Any]) -> dict[str, DetailValue]:
    clean: dict[str, DetailValue] = {}
    for key, value in details.items():
        if str(key).lower() in FORBIDDEN_DETAIL_KEYS:
            raise ValueError(f"alert details may not carry '{key}': alerts never include payload text")
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise ValueError(f"alert detail '{key}' must be a scalar, got {type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_DETAIL_CHARS:
            raise ValueError(f"alert detail '{key}' is longer than {MAX_DETAIL_CHARS} characters")
        clean[str(key)] = value
    return clean


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One alert instance: a rule's state for one group over one window.

    Attributes:
        rule: the alert rule's name, e.g. ``content_filter_blocks``.
        group: the group values, e.g. ``{"endpoint": "chat-bot"}``.
        dedup_key: stable per rule and group; computed by ``make_dedup_key`` when empty.
        status: ``firing`` or ``resolved``.
        severity: ``critical``, ``error``, ``warning`` or ``info``.
        summary: one line for humans, built from numbers (no payload text).
        value: the measured value the threshold was compared with.
        threshold: the rule's threshold.
        window_start: start of the window that was evaluated (UTC).
        window_end: end of that window (UTC).
        started_at: when the alert started firing (UTC).
        ended_at: when it resolved (UTC); ``None`` while firing.
        counts: the counts behind the value, e.g. ``{"blocked": 12, "requests": 40}``.
        links: ``(text, url)`` pairs, e.g. a dashboard or a runbook.
        details: a few extra scalar, non-sensitive fields.
    """

    rule: str
    group: Mapping[str, str] = field(default_factory=dict)
    dedup_key: str = ""
    status: Status = "firing"
    severity: Severity = "warning"
    summary: str
    value: float
    threshold: float
    window_start: datetime
    window_end: datetime
    started_at: datetime
    ended_at: datetime | None = None
    counts: Mapping[str, float] = field(default_factory=dict)
    links: tuple[tuple[str, str], ...] = ()
    details: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rule:
            raise ValueError("an alert needs a rule name")
        if self.status not in STATUSES:
            raise ValueError(f"alert status must be one of {STATUSES}, got {self.status!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity must be one of {SEVERITIES}, got {self.severity!r}")
        group = {str(k): str(v) for k, v in sorted(self.group.items())}
        sets = {
            "group": group,
            "dedup_key": self.dedup_key or make_dedup_key(self.rule, group),
            "value": float(self.value),
            "threshold": float(self.threshold),
            "window_start": to_utc(self.window_start),
            "window_end": to_utc(self.window_end),
            "started_at": to_utc(self.started_at),
            "ended_at": None if self.ended_at is None else to_utc(self.ended_at),
            "counts": {str(k): float(v) for k, v in self.counts.items()},
            "links": tuple((str(text), str(url)) for text, url in self.links),
            "details": _check_details(self.details),
        }
        for name, value in sets.items():
            object.__setattr__(self, name, value)

    def __hash__(self) -> int:
        return hash((self.dedup_key, self.status, self.started_at, self.ended_at, self.window_end))

    @property
    def firing(self) -> bool:
        """True while the alert's condition holds."""
        return self.status == "firing"

    def resolve(self, ended_at: datetime, **changes: Any) -> Alert:
        """A resolved copy of this alert (same dedup key), ending at ``ended_at``."""
        return replace(self, status="resolved", ended_at=ended_at, **changes)

    def group_text(self) -> str:
        """The group as ``k=v, k=v`` in key order (``-`` for an ungrouped rule)."""
        return ", ".join(f"{k}={v}" for k, v in self.group.items()) or "-"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as RFC 3339 UTC text), the outbox format."""
        return {
            "rule": self.rule,
            "group": dict(self.group),
            "dedup_key": self.dedup_key,
            "status": self.status,
            "severity": self.severity,
            "summary": self.summary,
            "value": self.value,
            "threshold": self.threshold,
            "window_start": iso(self.window_start),
            "window_end": iso(self.window_end),
            "started_at": iso(self.started_at),
            "ended_at": None if self.ended_at is None else iso(self.ended_at),
            "counts": dict(self.counts),
            "links": [{"text": text, "href": url} for text, url in self.links],
            "details": dict(self.details),
        }

    def to_json(self) -> str:
        """``to_dict`` as compact JSON with sorted keys (stable bytes for the outbox)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Rebuild an alert from ``to_dict`` output (or its JSON, parsed)."""
        ended = data.get("ended_at")
        return cls(
            rule=data["rule"],
            group=data.get("group") or {},
            dedup_key=data.get("dedup_key") or "",
            status=data["status"],
            severity=data["severity"],
            summary=data["summary"],
            value=data["value"],
            threshold=data["threshold"],
            window_start=parse_iso(data["window_start"]),
            window_end=parse_iso(data["window_end"]),
            started_at=parse_iso(data["started_at"]),
            ended_at=None if ended is None else parse_iso(ended),
            counts=data.get("counts") or {},
            links=tuple((link["text"], link["href"]) for link in data.get("links") or ()),
            details=data.get("details") or {},
        )

    @classmethod
    def from_json(cls, text: str) -> Alert:
        """Rebuild an alert from ``to_json`` output."""
        return cls.from_dict(json.loads(text))
