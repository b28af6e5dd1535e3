"""The Alert model: stable dedup keys, UTC times, outbox round trips, no payload text."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from gatewatch.alerts.sinks.model import Alert, make_dedup_key


class TestDedupKey:
    def test_documented_form(self):
        """The key is the rule, a colon and the SHA-1 of the rule and sorted group as JSON."""
        digest = hashlib.sha1(b'["content_filter_blocks",[["endpoint","chat-bot"]]]').hexdigest()
        assert make_dedup_key("content_filter_blocks", {"endpoint": "chat-bot"}) == f"content_filter_blocks:{digest}"

    def test_order_insensitive_and_group_sensitive(self):
        """Group order does not matter; group values do."""
        a = make_dedup_key("r", {"endpoint": "e", "model": "m"})
        assert a == make_dedup_key("r", {"model": "m", "endpoint": "e"})
        assert a != make_dedup_key("r", {"endpoint": "e", "model": "n"})
        assert a != make_dedup_key("s", {"endpoint": "e", "model": "m"})

    def test_long_rule_fits_pagerduty(self):
        """A very long rule name still gives a key of at most 255 characters."""
        assert len(make_dedup_key("r" * 1000, {"endpoint": "e"})) <= 255

    def test_computed_on_alert(self, firing):
        """An alert built without a key gets ``make_dedup_key`` of its rule and group."""
        assert firing.dedup_key == make_dedup_key(firing.rule, firing.group)


class TestAlert:
    def test_naive_datetime_refused(self, firing):
        """A datetime without a time zone is refused, not guessed."""
        with pytest.raises(ValueError, match="no time zone"):
            dataclasses.replace(firing, started_at=datetime(2026, 3, 1, 12, 5))

    def test_times_normalised_to_utc(self, firing):
        """An aware non-UTC time is stored in UTC."""
        cet = timezone(timedelta(hours=1))
        alert = dataclasses.replace(firing, started_at=datetime(2026, 3, 1, 13, 5, tzinfo=cet))
        assert alert.started_at == datetime(2026, 3, 1, 12, 5, tzinfo=timezone.utc)
        assert alert.started_at.tzinfo == timezone.utc

    def test_bad_status_and_severity(self, firing):
        """Unknown status or severity values are refused."""
        with pytest.raises(ValueError, match="status"):
            dataclasses.replace(firing, status="open")
        with pytest.raises(ValueError, match="severity"):
            dataclasses.replace(firing, severity="page")

    def test_resolve_keeps_key(self, firing, resolved):
        """Resolving keeps the dedup key and sets status and end time."""
        assert resolved.dedup_key == firing.dedup_key
        assert (resolved.status, resolved.firing) == ("resolved", False)
        assert resolved.ended_at == datetime(2026, 3, 1, 12, 20, tzinfo=timezone.utc)

    def test_round_trip(self, firing, resolved):
        """``to_dict``/``from_dict`` and ``to_json``/``from_json`` give the same alert back."""
        for alert in (firing, resolved):
            assert Alert.from_dict(alert.to_dict()) == alert
            assert Alert.from_json(alert.to_json()) == alert
            assert json.loads(alert.to_json())["dedup_key"] == alert.dedup_key

    def test_hashable(self, firing, resolved):
        """Alerts can be kept in sets; equal alerts collapse."""
        assert len({firing, Alert.from_dict(firing.to_dict()), resolved}) == 2


class TestNoPayloadText:
    def test_model_has_no_text_fields(self):
        """The Alert has no field for prompt or response content."""
        names = {f.name for f in dataclasses.fields(Alert)}
        assert "rule" in names
        assert not names & {"prompt", "response", "request", "messages", "content", "completion", "input", "output"}

    @pytest.mark.parametrize("key", ["prompt", "response", "messages", "Content"])
    def test_details_refuse_text_keys(self, firing, key):
        """Details keyed like payload text are refused."""
        with pytest.raises(ValueError, match="payload text"):
            dataclasses.replace(firing, details={key: "x"})

    def test_details_refuse_long_or_nested_values(self, firing):
        """Details take short scalars only."""
        with pytest.raises(ValueError, match="longer than"):
            dataclasses.replace(firing, details={"note": "x" * 257})
        with pytest.raises(ValueError, match="scalar"):
            dataclasses.replace(firing, details={"note": {"nested": 1}})
