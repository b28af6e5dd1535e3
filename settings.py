"""Typed, frozen settings. Only ``streams.config`` reads YAML into these.

Every other module receives these objects; none reads files or the
environment for configuration.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gatewatch.errors import ConfigError
from gatewatch.alerts.rules import AlertRule, IdleEntityRule, duration_seconds, parse_advisories, parse_rules
from gatewatch.alerts.sinks.config import SinkSettings, parse_sinks


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SparkSettings(_Frozen):
    """How to build the local SparkSession (ignored on Databricks)."""

    master: str = "local[2]"
    shuffle_partitions: int = Field(4, ge=1)
    driver_memory: str = "4g"
    ui: bool = False
    conf: dict[str, str] = Field(default_factory=dict)
    remote: str | None = Field(None, pattern=r"^sc://[^/\s]+")
    """A Spark Connect server (``sc://host:port``) to run on instead of local Spark; ``SPARK_REMOTE`` when unset."""
    class_archive: bool = True
    """Start the JVM from the class-data archive ``gatewatch setup`` made (when there is one): a faster start."""
    parallel_gc: bool = True
    """Run the driver's JVM with the parallel garbage collector (unless ``spark.driver.extraJavaOptions`` picks one)."""
    jit_threshold_scaling: float = Field(4.0, gt=0)
    """The JIT compiler's thresholds scaled by this (``-XX:CompileThresholdScaling``, unless
    ``spark.driver.extraJavaOptions`` sets it): a method is compiled after this many times the JVM's default number
    of calls, so the compiler threads, which otherwise take a core in two through the first minutes, spend less
    CPU on code that runs a few times. 1: the JVM's default."""


StartingVersion = int | Literal["earliest", "latest"]


class SourceSettings(_Frozen):
    """One inference table to tail through its change feed."""

    table: str
    name: str | None = None
    endpoint: str | None = None
    group: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$", max_length=100)
    """The streaming query that reads this source: sources of one group share one query and one checkpoint."""
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
    events_interval: str = "1 minute"
    """How often the token-usage and safety event tables catch up with requests (their own query)."""
    auto_compact: bool = True
    """Delta auto compaction on the tables gatewatch creates: small files are merged after a write."""
    checkpoint_interval: int = Field(100, ge=1)
    """A Delta checkpoint every this many commits: writing one is a few seconds inside that commit."""
    log_retention: str = "7 days"
    deleted_file_retention: str = "1 day"
    properties: dict[str, str] = Field(default_factory=dict)
    """More Delta table properties for the tables gatewatch creates (e.g. a reader-incompatible feature)."""

    @field_validator("events_interval", "log_retention", "deleted_file_retention")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value

    def table_properties(self) -> dict[str, str]:
        """The Delta properties set on every table gatewatch creates (none is a feature other readers lack)."""
        return {
            "delta.autoOptimize.autoCompact": str(self.auto_compact).lower(),
            "delta.checkpointInterval": str(self.checkpoint_interval),
            "delta.logRetentionDuration": f"interval {self.log_retention}",
            "delta.deletedFileRetentionDuration": f"interval {self.deleted_file_retention}",
            **self.properties,
        }


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
    batch). A batch's or a recount's rows are counted on the driver; a
    batch of more than ``max_rows_per_rule`` rows is first aggregated by
    Spark per group and minute, and a rule whose windows held more than
    that at the last recount is aggregated by Spark instead.
    ``advisories`` are advice rules checked on the delivery tick rather
    than per batch (``alerts.advise``): by default one
    ``idle_served_entity`` rule with a 24 hour window.
    """

    enabled: bool = True
    rules_file: str | None = None
    rules: tuple[AlertRule, ...] = ()
    deliver_interval_s: float = Field(15.0, ge=0)
    max_rows_per_rule: int = Field(200_000, ge=0)
    recount_interval_s: float = Field(300.0, ge=0)
    advisories: tuple[IdleEntityRule, ...] = (IdleEntityRule(),)

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        return parse_rules(value) if value is not None else ()

    @field_validator("advisories", mode="before")
    @classmethod
    def _advisories(cls, value: Any) -> Any:
        return parse_advisories(value) if value is not None else ()


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


class DashboardSettings(_Frozen):
    """The AI/BI dashboard ``gatewatch deploy`` creates or updates next to the job (views/dashboard.py).

    Deployed when ``warehouse_id`` (the SQL warehouse its datasets run on)
    is set; named ``name``, else after the job, in the workspace folder
    ``parent_path``.
    """

    warehouse_id: str | None = Field(None, min_length=1)
    name: str | None = Field(None, min_length=1, max_length=4096)
    parent_path: str | None = None
    embed_credentials: bool = False

    @field_validator("parent_path")
    @classmethod
    def _parent_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("/Workspace/", "/Users/", "/Shared/")):
            raise _deploy_error("dashboard.parent_path", "a workspace folder: /Workspace/..., /Users/... or "
                                "/Shared/...", value)
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
    dashboard: DashboardSettings = DashboardSettings()

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
        rules = [(f"alerts.rules.{i}", r) for i, r in enumerate(self.alerts.rules)]
        rules += [(f"alerts.advisories.{i}", r) for i, r in enumerate(self.alerts.advisories)]
        for key, rule in rules:
            unknown = [n for n in rule.sinks if n not in names]
            if unknown:
                raise ConfigError(
                    f"{key}.sinks", f"names of sinks configured under sinks: ({', '.join(names) or 'none'})",
                    ", ".join(unknown),
                )
        return self
