"""Sink settings: the ``type`` discriminator, defaults, validation errors and secret references."""

from __future__ import annotations

import base64
import types

import databricks.sdk
import pytest
from pydantic import SecretStr, ValidationError

from gatewatch.errors import ConfigError
from gatewatch.alerts.sinks.config import (
    PAGERDUTY_EVENTS_URL,
    AlertmanagerSinkSettings,
    DeltaSinkSettings,
    PagerDutySinkSettings,
    SlackSinkSettings,
    WebhookSinkSettings,
    parse_sinks,
    resolve_secret,
    with_resolved_secrets,
)


class TestParseSinks:
    def test_discriminated_by_type(self):
        """Each mapping becomes the settings class its ``type`` names."""
        sinks = parse_sinks([
            {"type": "pagerduty", "name": "pd", "routing_key": "k"},
            {"type": "alertmanager", "name": "am", "url": "http://127.0.0.1:9093"},
            {"type": "slack", "name": "slack", "webhook_url": "http://127.0.0.1:1/x"},
            {"type": "webhook", "name": "hook", "url": "http://127.0.0.1:1/y", "hmac_secret": "s"},
            {"type": "console", "name": "console"},
            {"type": "delta", "name": "delta"},
        ])
        assert [type(s).__name__ for s in sinks] == [
            "PagerDutySinkSettings", "AlertmanagerSinkSettings", "SlackSinkSettings", "WebhookSinkSettings",
            "ConsoleSinkSettings", "DeltaSinkSettings",
        ]

    def test_defaults(self):
        """PagerDuty defaults to its documented endpoint, Slack to one message a second, Alertmanager to 60 s."""
        pd = PagerDutySinkSettings(name="pd", routing_key="k")
        slack = SlackSinkSettings(name="s", webhook_url="u")
        am = AlertmanagerSinkSettings(name="am", url="http://127.0.0.1:1")
        assert pd.url == PAGERDUTY_EVENTS_URL == "https://events.pagerduty.com/v2/enqueue"
        assert (slack.rate_limit.rate_per_s, slack.rate_limit.burst) == (1.0, 1)
        assert (am.resend_interval_s, am.horizon_s) == (60.0, 240.0)
        assert isinstance(pd.routing_key, SecretStr)

    def test_unknown_type(self):
        """An unknown ``type`` is a ConfigError naming the key."""
        with pytest.raises(ConfigError, match=r"sinks\.0"):
            parse_sinks([{"type": "email", "name": "x"}])

    def test_unknown_key(self):
        """A misspelt key is named in the error."""
        with pytest.raises(ConfigError, match=r"sinks\.0\.routingkey.*no such key"):
            parse_sinks([{"type": "pagerduty", "name": "pd", "routingkey": "k"}])

    def test_missing_secret(self):
        """A missing routing key is reported as required."""
        with pytest.raises(ConfigError, match=r"sinks\.0\.routing_key.*required"):
            parse_sinks([{"type": "pagerduty", "name": "pd"}])

    def test_duplicate_names(self):
        """Two sinks with one name are refused."""
        with pytest.raises(ConfigError, match="unique name"):
            parse_sinks([{"type": "console", "name": "a"}, {"type": "delta", "name": "a"}])

    def test_horizon_must_exceed_interval(self):
        """An endsAt horizon not longer than the resend interval is refused."""
        with pytest.raises(ValidationError, match="ends_at_horizon_s"):
            AlertmanagerSinkSettings(name="am", url="http://x", resend_interval_s=60, ends_at_horizon_s=60)

    def test_frozen(self):
        """Settings cannot be changed after validation."""
        settings = DeltaSinkSettings(name="d")
        with pytest.raises(ValidationError):
            settings.name = "e"


class FakeSecrets:
    def __init__(self, store: dict[tuple[str, str], str], error: Exception | None = None) -> None:
        self.store = store
        self.error = error

    def get_secret(self, scope: str, key: str):
        if self.error is not None:
            raise self.error
        return types.SimpleNamespace(key=key, value=base64.b64encode(self.store[(scope, key)].encode()).decode())


@pytest.fixture()
def workspace(monkeypatch):
    """Replace ``databricks.sdk.WorkspaceClient`` with one whose secrets come from a dict."""
    state: dict = {"store": {}, "error": None}

    class FakeWorkspaceClient:
        def __init__(self) -> None:
            self.secrets = FakeSecrets(state["store"], state["error"])

    monkeypatch.setattr(databricks.sdk, "WorkspaceClient", FakeWorkspaceClient)
    return state


class TestResolveSecret:
    def test_literal_unchanged(self):
        """A value without references is returned as is."""
        assert resolve_secret("plain-value") == "plain-value"

    def test_env(self, monkeypatch):
        """``${env:NAME}`` is replaced by the variable, also inside other text."""
        monkeypatch.setenv("GW_TOKEN", "t0k3n")
        assert resolve_secret("${env:GW_TOKEN}") == "t0k3n"
        assert resolve_secret("Bearer ${env:GW_TOKEN}") == "Bearer t0k3n"

    def test_env_missing(self, monkeypatch):
        """A missing variable is a ConfigError naming the field and the variable."""
        monkeypatch.delenv("GW_MISSING", raising=False)
        with pytest.raises(ConfigError, match="sinks.pd.routing_key.*GW_MISSING"):
            resolve_secret("${env:GW_MISSING}", "sinks.pd.routing_key")

    def test_databricks_secret(self, workspace):
        """``${secret:scope/key}`` is read through the SDK and base64-decoded."""
        workspace["store"][("alerts", "pd-key")] = "r0uting"
        assert resolve_secret("${secret:alerts/pd-key}") == "r0uting"

    def test_databricks_unreachable(self, workspace):
        """An SDK failure is a ConfigError saying how to fix access, without any value."""
        workspace["error"] = RuntimeError("default auth: cannot configure default credentials")
        with pytest.raises(ConfigError, match=r"Databricks workspace that can read \$\{secret:alerts/pd-key\}"):
            resolve_secret("${secret:alerts/pd-key}", "sinks.pd.routing_key")

    def test_malformed_reference(self):
        """A secret reference without a key is refused."""
        with pytest.raises(ConfigError, match="scope/key"):
            resolve_secret("${secret:onlyscope}")

    def test_resolved_settings_stay_secret(self, monkeypatch):
        """Resolving keeps secrets as SecretStr, headers included, and never prints them."""
        monkeypatch.setenv("GW_HMAC", "hmac-value-123")
        monkeypatch.setenv("GW_AUTH", "auth-value-456")
        settings = WebhookSinkSettings(name="hook", url="http://127.0.0.1:1", hmac_secret="${env:GW_HMAC}",
                                       headers={"Authorization": "Bearer ${env:GW_AUTH}"})
        resolved = with_resolved_secrets(settings)
        assert resolved.hmac_secret.get_secret_value() == "hmac-value-123"
        assert resolved.headers["Authorization"].get_secret_value() == "Bearer auth-value-456"
        assert "hmac-value-123" not in repr(resolved) and "auth-value-456" not in repr(resolved)
        assert settings.hmac_secret.get_secret_value() == "${env:GW_HMAC}"
