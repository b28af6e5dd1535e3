"""Typed, frozen settings. Only ``streams.config`` reads YAML into these.

Every other module receives these objects; none reads files or the
environment for configuration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


class Settings(_Frozen):
    """The whole gatewatch configuration."""

    sources: tuple[SourceSettings, ...] = ()
    output: OutputSettings = OutputSettings()
    checkpoint_root: str = "checkpoints"
    trigger: TriggerSettings = TriggerSettings()
    spark: SparkSettings = SparkSettings()
    contract: ContractSettings = ContractSettings()
    parsers: ParserSettings = ParserSettings()
