"""Typed, frozen settings. Only ``streams.config`` reads YAML into these.

Every other module receives these objects; none reads files or the
environment for configuration.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from gatewatch.errors import ConfigError
from gatewatch.streams.sinks.config import SinkSettings, parse_sinks


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SparkSettings(_Frozen):
    """How to build the local SparkSession (ignored on Databricks)."""

    master: str = "local[2]"
    shuffle_partitions: int = Field(4, ge=1)
    driver_memory: str = "4g"
    ui: bool = False
    conf: dict[str, str] = Field(default_factory=dict)


StartingVersion = int | Literal["earliest", "latest"]


class SourceSettings(_Frozen):
    """One inference table to tail through its change feed."""

    table: str
    name: str | None = None
    endpoint: str | None = None
    starting_version: StartingVersion = "earliest"
    max_files_per_trigger: int | None = Field(None, ge=1)
    max_bytes_per_trigger: str | None = None

    @field_validator("starting_version", mode="before")
    @classmethod
    def _version(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @property
    def source_name(self) -> str:
        """A filesystem-safe name for this source (checkpoints, app ids, logs)."""
        raw = self.name or self.table.rstrip("/").replace("\\", "/").split("/")[-1]
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in raw.split(".")[-1])

    @property
    def endpoint_name(self) -> str:
        """The endpoint this table logs, from config or the table's name."""
        if self.endpoint:
            return self.endpoint
        base = self.table.rstrip("/").replace("\\", "/").split("/")[-1].split(".")[-1]
        return base[: -len("_payload")] if base.endswith("_payload") else base


class OutputSettings(_Frozen):
    """Where the output tables live: a directory or a ``catalog.schema``."""

    location: str = "output"
    requests_table: str = "requests"
    quarantine_table: str = "quarantine"
    token_events_table: str = "token_usage_events"
    safety_events_table: str = "safety_events"
    alerts_table: str = "alerts"
    outbox_table: str = "alert_outbox"
    deliveries_table: str = "alert_deliveries"


class TriggerSettings(_Frozen):
    """``processing_time`` runs continuously; ``available_now`` drains and exits."""

    mode: Literal["processing_time", "available_now"] = "processing_time"
    interval: str = "10 seconds"


class ContractSettings(_Frozen):
    """The expectation suite every parsed row is checked against."""

    suite: str | None = None
    enabled: bool = True


class ParserSettings(_Frozen):
    """Extra parser modules to import; each registers parsers by decorator."""

    modules: tuple[str, ...] = ()


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


class _RuleError(Exception):
    """A rule-level consistency problem, turned into a ``ConfigError`` with the rule's key."""

    def __init__(self, key: str, expected: str, got: object = None) -> None:
        super().__init__(key)
        self.key, self.expected, self.got = key, expected, got


_RULE = TypeAdapter(AlertRule)


def parse_rules(data: Any, prefix: str = "alerts.rules") -> tuple[AlertRule, ...]:
    """Validate a list of rule mappings, naming the first bad key (``alerts.rules.2.window``).

    Raises:
        ConfigError: with the dotted key of the first problem and the reason.
    """
    if isinstance(data, (AlertRule, dict)) or not isinstance(data, (list, tuple)):
        raise ConfigError(prefix, "a list of rules", type(data).__name__)
    rules: list[AlertRule] = []
    for i, item in enumerate(data):
        if isinstance(item, AlertRule):
            rules.append(item)
            continue
        try:
            rules.append(_RULE.validate_python(item))
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
    names = [r.name for r in rules]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{prefix}.{i}.name", "a name no other rule has", name)
    return tuple(rules)


class AlertSettings(_Frozen):
    """Alert rules and how their alerts are delivered.

    ``rules`` come from ``rules_file`` (default: the packaged
    ``conf/alerts.yaml``) when the config file does not list them itself.
    ``deliver_interval_s`` is how often a running job retries pending outbox
    entries and re-sends firing alerts to Alertmanager between micro-batches
    (0 turns that off; batches still deliver). Each batch's rows are added
    to running counts per rule, group and window; every
    ``recount_interval_s`` (and after a restart or a failed batch) the counts
    are taken from the tables instead, which also picks up rows written by
    others, such as a quarantine replay (0: from the tables after every
    batch). A batch's or a recount's rows are counted on the driver; for a
    batch of more than ``max_rows_per_rule`` rows, or a rule whose windows
    held more than that at the last recount, Spark aggregates them instead.
    """

    enabled: bool = True
    rules_file: str | None = None
    rules: tuple[AlertRule, ...] = ()
    deliver_interval_s: float = Field(15.0, ge=0)
    max_rows_per_rule: int = Field(200_000, ge=0)
    recount_interval_s: float = Field(300.0, ge=0)

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        return parse_rules(value) if value is not None else ()


WORKSPACE_FILE_PREFIXES = ("/Workspace/", "/Volumes/", "/dbfs/")
"""Where a job on Databricks reads a file as a local path."""

WHEEL_PREFIXES = ("/Workspace/", "/Volumes/", "dbfs:/", "s3://", "s3a://", "abfss://", "gs://")
"""Where a Databricks job can install a wheel from."""


def _deploy_error(key: str, expected: str, got: object = None) -> ConfigError:
    return ConfigError(f"deploy.{key}", expected, got)


class ClusterSettings(_Frozen):
    """The job cluster created for each run when ``deploy.compute`` is ``cluster``.

    ``num_workers: 0`` makes a single-node cluster. With ``policy_id`` the
    policy may supply ``node_type_id``; otherwise it is required at deploy.
    """

    spark_version: str = Field("17.3.x-scala2.13", min_length=1)
    node_type_id: str | None = None
    num_workers: int = Field(1, ge=0)
    data_security_mode: Literal[
        "SINGLE_USER", "USER_ISOLATION", "DATA_SECURITY_MODE_DEDICATED", "DATA_SECURITY_MODE_STANDARD",
        "DATA_SECURITY_MODE_AUTO",
    ] = "SINGLE_USER"
    policy_id: str | None = None
    spark_conf: dict[str, str] = Field(default_factory=dict)


class ServerlessSettings(_Frozen):
    """The serverless environment when ``deploy.compute`` is ``serverless``.

    Serverless jobs run only ``available_now`` streams and never continuously.
    ``dependencies`` are pip requirement lines installed next to the wheel.
    """

    environment_version: str = "4"
    dependencies: tuple[str, ...] = ()

    @field_validator("environment_version", mode="before")
    @classmethod
    def _version(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip().isdigit():
            raise _deploy_error("serverless.environment_version", "a serverless environment version such as '4'",
                                value)
        return value


class ScheduleSettings(_Frozen):
    """When an ``available_now`` job runs: a Quartz cron expression in a time zone."""

    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) not in (6, 7):
            raise _deploy_error("schedule.cron", "a Quartz cron expression of 6 or 7 fields, e.g. '0 0/15 * * * ?'",
                                value)
        return value


class RetrySettings(_Frozen):
    """Task retries of a scheduled or on-demand (``available_now``) job.

    A continuous job takes no retry policy: Databricks restarts a failed run
    itself with exponential backoff (and retries the task first when
    ``deploy.task_retry_mode`` is ``ON_FAILURE``), so these keys do not apply to it.
    """

    max_retries: int = Field(3, ge=-1)
    min_retry_interval_s: int = Field(60, ge=0)
    retry_on_timeout: bool = False


class EmailSettings(_Frozen):
    """Addresses Databricks mails when a run of the job starts, succeeds or fails."""

    on_start: tuple[str, ...] = ()
    on_success: tuple[str, ...] = ()
    on_failure: tuple[str, ...] = ()

    @field_validator("on_start", "on_success", "on_failure")
    @classmethod
    def _addresses(cls, value: tuple[str, ...], info: Any) -> tuple[str, ...]:
        for i, address in enumerate(value):
            if not re.match(r"^[^@\s]+@[^@\s]+$", address):
                raise _deploy_error(f"email_notifications.{info.field_name}.{i}", "an email address", address)
        return value


class DeploySettings(_Frozen):
    """The Databricks job ``gatewatch deploy`` creates or updates (ignored by ``run``).

    The job runs the wheel's ``gatewatch run --config <config_path>``: upload
    this config there, and the wheel to ``wheel``. A ``processing_time``
    trigger makes a continuous job; ``available_now`` makes a job that runs on
    ``schedule``, or when started if there is none.
    """

    name: str | None = Field(None, min_length=1, max_length=4096)
    config_path: str | None = None
    wheel: str | None = None
    compute: Literal["cluster", "serverless"] = "cluster"
    cluster: ClusterSettings = ClusterSettings()
    serverless: ServerlessSettings = ServerlessSettings()
    paused: bool = False
    task_retry_mode: Literal["ON_FAILURE", "NEVER"] = "ON_FAILURE"
    schedule: ScheduleSettings | None = None
    retries: RetrySettings = RetrySettings()
    tags: dict[str, str] = Field(default_factory=dict)
    email_notifications: EmailSettings = EmailSettings()
    run_args: tuple[str, ...] = ()

    @field_validator("config_path")
    @classmethod
    def _config_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(WORKSPACE_FILE_PREFIXES):
            raise _deploy_error("config_path", "the path where the job reads this config: /Workspace/..., "
                                "/Volumes/... or /dbfs/...", value)
        return value

    @field_validator("wheel")
    @classmethod
    def _wheel(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.endswith(".whl"):
            raise _deploy_error("wheel", "a .whl file (build it with `python -m build --wheel`)", value)
        if not value.startswith(WHEEL_PREFIXES):
            raise _deploy_error("wheel", "a wheel the workspace can read: /Volumes/..., /Workspace/..., dbfs:/... or "
                                "a cloud URI (upload a local wheel first, e.g. `databricks fs cp "
                                "dist/<wheel> dbfs:/Volumes/<catalog>/<schema>/<volume>/`)", value)
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 24:
            raise _deploy_error("tags", "at most 24 tags (a job takes 25, and gatewatch adds app: gatewatch)",
                                len(value))
        return value


class Settings(_Frozen):
    """The whole gatewatch configuration."""

    sources: tuple[SourceSettings, ...] = ()
    output: OutputSettings = OutputSettings()
    checkpoint_root: str = "checkpoints"
    trigger: TriggerSettings = TriggerSettings()
    spark: SparkSettings = SparkSettings()
    contract: ContractSettings = ContractSettings()
    parsers: ParserSettings = ParserSettings()
    alerts: AlertSettings = AlertSettings()
    sinks: tuple[SinkSettings, ...] = ()
    deploy: DeploySettings = DeploySettings()

    @field_validator("sinks", mode="before")
    @classmethod
    def _sinks(cls, value: Any) -> Any:
        if value is None:
            return ()
        if all(isinstance(v, BaseModel) for v in value):
            return value
        return parse_sinks([v.model_dump() if isinstance(v, BaseModel) else v for v in value], prefix="sinks")

    @model_validator(mode="after")
    def _rule_sinks(self) -> Settings:
        names = [s.name for s in self.sinks]
        for i, rule in enumerate(self.alerts.rules):
            unknown = [n for n in rule.sinks if n not in names]
            if unknown:
                raise ConfigError(
                    f"alerts.rules.{i}.sinks", f"names of sinks configured under sinks: ({', '.join(names) or 'none'})",
                    ", ".join(unknown),
                )
        return self
