"""Typed, frozen settings for each sink, chosen by a ``type`` field, and secret references.

A secret (PagerDuty routing key, Slack webhook URL, HMAC secret, auth headers)
is a ``SecretStr``: it prints as ``**********`` in ``repr``, ``str`` and logs.
Its value may be written literally or as a reference resolved only when the
sink is built: ``${env:NAME}`` (an environment variable) or
``${secret:scope/key}`` (a Databricks secret, read through the Databricks SDK).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, model_validator

from gatewatch.errors import ConfigError

#: PagerDuty's documented Events API v2 endpoint.
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

_REFERENCE = re.compile(r"\$\{(env|secret):([^}]*)\}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetrySettings(_Frozen):
    """Retries of one delivery (see ``base.RetryPolicy``)."""

    max_attempts: int = Field(5, ge=1, le=20)
    base_delay_s: float = Field(0.5, ge=0)
    max_delay_s: float = Field(30.0, ge=0)
    jitter: bool = True
    max_retry_after_s: float = Field(300.0, ge=0)


class RateLimitSettings(_Frozen):
    """A token bucket: ``rate_per_s`` requests a second, bursts of up to ``burst``."""

    rate_per_s: float = Field(..., gt=0)
    burst: int = Field(1, ge=1)


class SinkSettingsBase(_Frozen):
    """What every sink has: a name, a timeout, retries and an optional rate limit."""

    name: str = Field(..., min_length=1)
    timeout_s: float = Field(10.0, gt=0)
    retry: RetrySettings = RetrySettings()
    rate_limit: RateLimitSettings | None = None


class PagerDutySinkSettings(SinkSettingsBase):
    """PagerDuty Events API v2: ``trigger`` when firing, ``resolve`` with the same dedup key.

    ``source`` is the affected system: the alert's ``endpoint`` group value when
    it has one, else this setting.
    """

    type: Literal["pagerduty"] = "pagerduty"
    url: str = PAGERDUTY_EVENTS_URL
    routing_key: SecretStr
    source: str = "databricks-model-serving"
    component: str | None = None
    client: str = "gatewatch"
    client_url: str | None = None


class AlertmanagerSinkSettings(SinkSettingsBase):
    """Prometheus Alertmanager API v2 (``POST <url>/api/v2/alerts``).

    A firing alert is sent with ``endsAt = now + ends_at_horizon_s`` and must be
    re-sent every ``resend_interval_s``; the horizon defaults to four resend
    intervals (as Prometheus does), so three missed resends do not resolve it.
    """

    type: Literal["alertmanager"] = "alertmanager"
    url: str
    resend_interval_s: float = Field(60.0, ge=1, le=180)
    ends_at_horizon_s: float | None = Field(None, gt=0)
    labels: dict[str, str] = Field(default_factory=dict)
    bearer_token: SecretStr | None = None

    @model_validator(mode="after")
    def _horizon(self) -> AlertmanagerSinkSettings:
        if self.ends_at_horizon_s is not None and self.ends_at_horizon_s <= self.resend_interval_s:
            raise ValueError("ends_at_horizon_s must be longer than resend_interval_s")
        return self

    @property
    def horizon_s(self) -> float:
        """Seconds a firing alert stays valid in Alertmanager after it was sent."""
        return self.ends_at_horizon_s if self.ends_at_horizon_s is not None else 4 * self.resend_interval_s


class SlackSinkSettings(SinkSettingsBase):
    """A Slack incoming webhook; the whole URL is the secret. One message a second by default."""

    type: Literal["slack"] = "slack"
    webhook_url: SecretStr
    rate_limit: RateLimitSettings | None = RateLimitSettings(rate_per_s=1.0, burst=1)


class WebhookSinkSettings(SinkSettingsBase):
    """A generic JSON POST of ``{"version": 1, "sent_at": ..., "alert": {...}}``.

    With ``hmac_secret`` set, each request carries ``X-Gatewatch-Timestamp`` and
    ``X-Gatewatch-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>``.
    ``headers`` are sent as given (their values are treated as secrets).
    """

    type: Literal["webhook"] = "webhook"
    url: str
    hmac_secret: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)


class ConsoleSinkSettings(SinkSettingsBase):
    """One line per alert on stdout or stderr."""

    type: Literal["console"] = "console"
    stream: Literal["stdout", "stderr"] = "stdout"


class DeltaSinkSettings(SinkSettingsBase):
    """Alerts appended to a Delta table; written by the streaming job, not by a ``Sink``.

    ``table`` is a path or catalog name; ``None`` means ``output.alerts_table``.
    """

    type: Literal["delta"] = "delta"
    table: str | None = None


SinkSettings = Annotated[
    Union[
        PagerDutySinkSettings,
        AlertmanagerSinkSettings,
        SlackSinkSettings,
        WebhookSinkSettings,
        ConsoleSinkSettings,
        DeltaSinkSettings,
    ],
    Field(discriminator="type"),
]

_SINKS = TypeAdapter(tuple[SinkSettings, ...])
SINK_TYPES = frozenset({"pagerduty", "alertmanager", "slack", "webhook", "console", "delta"})
S = TypeVar("S", bound=BaseModel)


def parse_sinks(data: Iterable[Mapping[str, Any]], prefix: str = "sinks") -> tuple[SinkSettings, ...]:
    """Validate a list of sink mappings, naming the first bad key in a ``ConfigError``."""
    try:
        sinks = _SINKS.validate_python(list(data))
    except ValidationError as err:
        errors = err.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        parts = [str(p) for p in first["loc"]]
        if len(parts) > 1 and parts[1] in SINK_TYPES:
            del parts[1]
        loc = ".".join([prefix, *parts])
        if first["type"] == "extra_forbidden":
            raise ConfigError(loc, "no such key: remove or rename it") from None
        if first["type"] == "missing":
            raise ConfigError(loc, "a value (it is required)") from None
        raise ConfigError(loc, first["msg"].lower()) from None
    names = [s.name for s in sinks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{prefix}.name", "a unique name per sink", ", ".join(duplicates))
    return sinks


def _secret_from_workspace(scope: str, key: str, field: str) -> str:
    reference = f"${{secret:{scope}/{key}}}"
    try:
        from databricks.sdk import WorkspaceClient
    except ImportError:
        raise ConfigError(field, f"the databricks-sdk package to read {reference}") from None
    try:
        response = WorkspaceClient().secrets.get_secret(scope=scope, key=key)
    except Exception as err:  # noqa: BLE001 - any SDK failure means the same to the user
        raise ConfigError(
            field,
            f"a Databricks workspace that can read {reference} (configure DATABRICKS_HOST and "
            "authentication, and grant READ on the scope)",
            type(err).__name__,
        ) from None
    if response.value is None:
        raise ConfigError(field, f"a value stored under {reference}", "empty secret")
    try:
        return base64.b64decode(response.value).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(field, f"base64-encoded UTF-8 text under {reference}", "undecodable value") from None


def resolve_secret(value: str, field: str = "secret") -> str:
    """Replace ``${env:NAME}`` and ``${secret:scope/key}`` references in ``value``.

    Args:
        value: a literal secret, a reference, or text holding references
            (``Bearer ${env:TOKEN}``).
        field: the config key, named in errors (the value never is).

    Returns:
        The value with every reference replaced.

    Raises:
        ConfigError: an environment variable is not set, a reference is
            malformed, or the Databricks secret cannot be read.
    """

    def one(match: re.Match[str]) -> str:
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ref):
                raise ConfigError(field, "${env:NAME} with a valid variable name", ref)
            if ref not in os.environ:
                raise ConfigError(field, f"environment variable {ref} to be set")
            return os.environ[ref]
        scope, _, key = ref.partition("/")
        if not scope or not key:
            raise ConfigError(field, "${secret:scope/key}", ref)
        return _secret_from_workspace(scope.strip(), key.strip(), field)

    return _REFERENCE.sub(one, value)


def _resolve(value: Any, field: str) -> Any:
    if isinstance(value, SecretStr):
        return SecretStr(resolve_secret(value.get_secret_value(), field))
    if isinstance(value, dict):
        return {k: _resolve(v, f"{field}.{k}") for k, v in value.items()}
    return value


def _holds_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return any(isinstance(v, SecretStr) for v in value.values())
    return isinstance(value, SecretStr)


def with_resolved_secrets(settings: S) -> S:
    """A copy of ``settings`` whose secret fields hold resolved values (still ``SecretStr``)."""
    name = getattr(settings, "name", type(settings).__name__)
    updates = {key: _resolve(value, f"sinks.{name}.{key}") for key, value in settings if _holds_secret(value)}
    return settings.model_copy(update=updates) if updates else settings
