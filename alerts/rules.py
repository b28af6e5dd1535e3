"""Alert rules: the rule model, its conditions and its validation.

A rule (``conf/alerts.yaml``) watches one stream of rows, groups them,
counts them over event-time windows and fires while its condition holds.
``parse_rules`` validates a list of rules and names the first bad key.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from gatewatch.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_DURATION = re.compile(r"^\s*(\d+)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """Whole seconds of a duration such as ``"5 minutes"``, ``"1 hour"``, ``"30s"``.

    Raises:
        ValueError: the text is not a count and a unit (seconds, minutes, hours, days).
    """
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError("a duration such as '5 minutes', '30 seconds' or '1 hour'")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()]


ALERT_STREAMS: dict[str, tuple[str, ...]] = {
    "requests": ("endpoint", "served_entity_id", "requester", "model", "source_table"),
    "token_events": ("endpoint", "served_entity_id", "requester", "model", "source_table"),
    "safety_events": ("endpoint", "served_entity_id", "requester", "model", "source_table", "stage", "category"),
    "quarantine": ("endpoint", "served_entity_id", "requester", "source_table"),
    "rows": ("endpoint", "served_entity_id", "requester", "model", "source_table"),
}
"""The streams a rule can watch, each with the columns it may group by.

``rows`` is every processed row, requests and quarantine together, with a
``quarantined`` flag: the stream a quarantine *rate* needs.
"""

SUMMABLE: dict[str, tuple[str, ...]] = {
    "requests": ("input_tokens", "output_tokens", "total_tokens", "execution_duration_ms"),
    "token_events": ("input_tokens", "output_tokens", "total_tokens"),
    "safety_events": (),
    "quarantine": ("execution_duration_ms",),
    "rows": ("execution_duration_ms",),
}
"""The numeric columns a ``sum`` condition may add up, per stream."""

Op = Literal[">", ">="]


class _Condition(_Frozen):
    op: Op = ">="
    threshold: float = Field(..., ge=0)
    min_rows: int = Field(1, ge=1)


class CountCondition(_Condition):
    """Fires when the rows of a group in the window reach ``threshold``."""

    type: Literal["count"] = "count"


class RatioCondition(_Condition):
    """Fires when the share of the group's rows matching ``numerator`` (a Spark SQL filter) reaches ``threshold``."""

    type: Literal["ratio"] = "ratio"
    numerator: str = Field(..., min_length=1)
    threshold: float = Field(..., ge=0, le=1)


class SumCondition(_Condition):
    """Fires when the sum of ``column`` over the group's rows in the window reaches ``threshold``."""

    type: Literal["sum"] = "sum"
    column: str


Condition = Annotated[Union[CountCondition, RatioCondition, SumCondition], Field(discriminator="type")]
CONDITION_TYPES = frozenset({"count", "ratio", "sum"})


class RuleLink(_Frozen):
    """A link carried by the rule's alerts (a dashboard, a runbook)."""

    text: str = Field(..., min_length=1)
    url: str = Field(..., min_length=1)


class AlertRule(_Frozen):
    """One windowed alert rule (``conf/alerts.yaml``).

    Each group of ``group_by`` values is evaluated over event-time windows of
    ``window`` every ``slide`` on ``request_time``; windows that closed less
    than ``watermark`` ago still count, so late rows can tip them. The alert
    of a group fires once while ``condition`` holds and resolves when it no
    longer does.
    """

    name: str = Field(..., pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=120)
    description: str = ""
    stream: Literal["requests", "token_events", "safety_events", "quarantine", "rows"]
    group_by: tuple[str, ...] = ()
    window: str
    slide: str | None = None
    watermark: str = "0 seconds"
    where: str | None = None
    condition: Condition
    severity: Literal["critical", "error", "warning", "info"] = "warning"
    sinks: tuple[str, ...] = ()
    include_text: bool = False
    links: tuple[RuleLink, ...] = ()

    @field_validator("window", "slide", "watermark")
    @classmethod
    def _duration(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return None
        seconds = duration_seconds(value)
        if seconds <= 0 and info.field_name != "watermark":
            raise ValueError("a duration longer than zero")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AlertRule:
        allowed = ALERT_STREAMS[self.stream]
        for i, key in enumerate(self.group_by):
            if key not in allowed:
                raise _RuleError(f"group_by.{i}", f"one of {', '.join(allowed)} (stream {self.stream})", key)
        if len(set(self.group_by)) != len(self.group_by):
            raise _RuleError("group_by", "distinct columns", list(self.group_by))
        if self.slide_s > self.window_s:
            raise _RuleError("slide", f"at most the window ({self.window})", self.slide)
        if self.window_s // self.slide_s > 60:
            raise _RuleError("slide", "at least 1/60 of the window (each row counts in window/slide windows)",
                             self.slide)
        if isinstance(self.condition, SumCondition) and self.condition.column not in SUMMABLE[self.stream]:
            summable = ", ".join(SUMMABLE[self.stream]) or "none"
            raise _RuleError("condition.column", f"a numeric column of {self.stream} ({summable})",
                             self.condition.column)
        return self

    @property
    def window_s(self) -> int:
        """The window length in seconds."""
        return duration_seconds(self.window)

    @property
    def slide_s(self) -> int:
        """The slide in seconds (the window itself when no slide is set: tumbling windows)."""
        return duration_seconds(self.slide) if self.slide is not None else self.window_s

    @property
    def watermark_s(self) -> int:
        """How long after its end a window still takes late rows, in seconds."""
        return duration_seconds(self.watermark)


class IdleEntityRule(_Frozen):
    """An advisory rule: served entities that stay provisioned and billed for no traffic (``alerts.advisories``).

    Per endpoint, a served entity is idle when the endpoint's configuration
    gives it 0% of the traffic, without scale-to-zero, and the inference
    table holds no request for it over ``window``. Its alert (one dedup key
    per endpoint and entity) fires once and resolves when the entity is gone
    from the configuration or gets traffic. ``endpoints`` limits the check
    (default: every endpoint in the requests table).
    """

    type: Literal["idle_served_entity"] = "idle_served_entity"
    name: str = Field("idle_served_entity", pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=120)
    description: str = ""
    window: str = "24 hours"
    endpoints: tuple[str, ...] = ()
    severity: Literal["critical", "error", "warning", "info"] = "info"
    sinks: tuple[str, ...] = ()
    links: tuple[RuleLink, ...] = ()

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if duration_seconds(value) <= 0:
            raise ValueError("a duration longer than zero")
        return value

    @property
    def window_s(self) -> int:
        """The window length in seconds."""
        return duration_seconds(self.window)


class _RuleError(Exception):
    """A rule-level consistency problem, turned into a ``ConfigError`` with the rule's key."""

    def __init__(self, key: str, expected: str, got: object = None) -> None:
        super().__init__(key)
        self.key, self.expected, self.got = key, expected, got


_RULE = TypeAdapter(AlertRule)


def _validate(adapter: TypeAdapter, item: Any, prefix: str, i: int) -> Any:
    """One rule mapping validated by ``adapter``; a problem names its dotted key."""
    try:
        return adapter.validate_python(item)
    except _RuleError as err:
        raise ConfigError(f"{prefix}.{i}.{err.key}", err.expected, err.got) from None
    except ValidationError as err:
        errors = err.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        parts = [str(p) for p in first["loc"]]
        if len(parts) > 1 and parts[0] == "condition" and parts[1] in CONDITION_TYPES:
            del parts[1]
        key = ".".join([prefix, str(i), *parts])
        if first["type"] == "extra_forbidden":
            raise ConfigError(key, "no such key: remove or rename it") from None
        if first["type"] == "missing":
            raise ConfigError(key, "a value (it is required)") from None
        message = re.sub(r"^value error, ", "", first["msg"], flags=re.IGNORECASE)
        got = first.get("input") if not isinstance(first.get("input"), dict) else None
        raise ConfigError(key, message[:1].lower() + message[1:], got) from None


def _unique_names(rules: tuple[Any, ...], prefix: str) -> tuple[Any, ...]:
    names = [r.name for r in rules]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{prefix}.{i}.name", "a name no other rule has", name)
    return rules


def parse_rules(data: Any, prefix: str = "alerts.rules") -> tuple[AlertRule, ...]:
    """Validate a list of rule mappings, naming the first bad key (``alerts.rules.2.window``).

    Raises:
        ConfigError: with the dotted key of the first problem and the reason.
    """
    if isinstance(data, (AlertRule, dict)) or not isinstance(data, (list, tuple)):
        raise ConfigError(prefix, "a list of rules", type(data).__name__)
    rules = tuple(item if isinstance(item, AlertRule) else _validate(_RULE, item, prefix, i)
                  for i, item in enumerate(data))
    return _unique_names(rules, prefix)


_IDLE_RULE = TypeAdapter(IdleEntityRule)
ADVISORY_TYPES = ("idle_served_entity",)


def parse_advisories(data: Any, prefix: str = "alerts.advisories") -> tuple[IdleEntityRule, ...]:
    """Validate a list of advisory rules (``type: idle_served_entity``), naming the first bad key.

    Raises:
        ConfigError: with the dotted key of the first problem and the reason.
    """
    if isinstance(data, (IdleEntityRule, dict)) or not isinstance(data, (list, tuple)):
        raise ConfigError(prefix, "a list of advisory rules", type(data).__name__)
    rules = []
    for i, item in enumerate(data):
        if isinstance(item, dict) and item.get("type", ADVISORY_TYPES[0]) not in ADVISORY_TYPES:
            raise ConfigError(f"{prefix}.{i}.type", f"one of {', '.join(ADVISORY_TYPES)}", item.get("type"))
        rules.append(item if isinstance(item, IdleEntityRule) else _validate(_IDLE_RULE, item, prefix, i))
    return _unique_names(tuple(rules), prefix)
