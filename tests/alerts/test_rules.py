"""Alert rules as config: the packaged rules load, and a bad rule is refused with its key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gatewatch.errors import ConfigError
from gatewatch.settings import Settings
from gatewatch.alerts.rules import AlertRule, RatioCondition, SumCondition, duration_seconds
from gatewatch.cli.main import main
from gatewatch.streams.config import load_settings, read_rules


def rule(**changes) -> dict:
    """A valid rule mapping, with ``changes`` applied."""
    base = {"name": "blocks", "stream": "requests", "group_by": ["endpoint"], "window": "5 minutes",
            "slide": "1 minute", "condition": {"type": "ratio", "numerator": "blocked", "threshold": 0.5}}
    base.update(changes)
    return base


def refused(rules: list[dict], **settings) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Settings.model_validate({"alerts": {"rules": rules}, **settings})
    return info.value


class TestPackagedRules:
    def test_the_packaged_rules_load_with_the_default_config(self):
        """The default config reads conf/alerts.yaml: five rules, all going to the console sink."""
        settings = load_settings()
        names = [r.name for r in settings.alerts.rules]
        assert names == ["content_filter_spike", "databricks_safety_spike", "token_budget", "error_rate",
                         "quarantine_rate"]
        spike = settings.alerts.rules[0]
        assert isinstance(spike.condition, RatioCondition) and spike.condition.min_rows == 20
        assert (spike.window_s, spike.slide_s, spike.watermark_s) == (300, 60, 120)
        assert isinstance(settings.alerts.rules[2].condition, SumCondition)
        assert [s.name for s in settings.sinks] == ["console"]

    def test_alerts_can_be_switched_off(self):
        """With alerts.enabled false no rules file is read."""
        assert load_settings(overrides=["alerts.enabled=false"]).alerts.rules == ()


class TestRefused:
    @pytest.mark.parametrize(
        ("changes", "key", "reason"),
        [
            ({"window": "5 minutez"}, "alerts.rules.1.window", "a duration such as"),
            ({"slide": "10 minutes"}, "alerts.rules.1.slide", "at most the window"),
            ({"slide": "1 second", "window": "1 hour"}, "alerts.rules.1.slide", "1/60 of the window"),
            ({"group_by": ["endpoint", "prompt"]}, "alerts.rules.1.group_by.1", "one of endpoint"),
            ({"stream": "quarantine", "group_by": ["model"]}, "alerts.rules.1.group_by.0", "stream quarantine"),
            ({"stream": "events"}, "alerts.rules.1.stream", "input should be"),
            ({"condition": {"type": "ratio", "numerator": "blocked", "threshold": 2}},
             "alerts.rules.1.condition.threshold", "less than or equal to 1"),
            ({"condition": {"type": "sum", "column": "blocked", "threshold": 5}},
             "alerts.rules.1.condition.column", "a numeric column of requests"),
            ({"condition": {"type": "avg", "threshold": 5}}, "alerts.rules.1.condition", "does not match"),
            ({"condition": {"type": "count", "threshold": 5, "op": "<"}}, "alerts.rules.1.condition.op", "'>'"),
            ({"severity": "page"}, "alerts.rules.1.severity", "'critical'"),
            ({"thresold": 3}, "alerts.rules.1.thresold", "no such key"),
            ({"window": None}, "alerts.rules.1.window", "valid string"),
        ],
    )
    def test_a_bad_rule_names_its_key_and_the_reason(self, changes, key, reason):
        """The first problem of the second rule is reported as ``alerts.rules.1.<key>`` with why."""
        err = refused([rule(name="ok"), rule(**changes)])
        assert err.key == key
        assert reason in str(err)

    def test_a_missing_key_is_named(self):
        """A rule without a window names ``alerts.rules.0.window`` as required."""
        bad = rule()
        del bad["window"]
        err = refused([bad])
        assert (err.key, "required" in str(err)) == ("alerts.rules.0.window", True)

    def test_duplicate_rule_names_are_refused(self):
        """Two rules with one name: the second one is named."""
        assert refused([rule(), rule()]).key == "alerts.rules.1.name"

    def test_a_rule_naming_an_unknown_sink_is_refused(self):
        """A rule may only name configured sinks."""
        err = refused([rule(sinks=["pager"])], sinks=[{"name": "console", "type": "console"}])
        assert err.key == "alerts.rules.0.sinks" and "pager" in str(err) and "console" in str(err)

    def test_a_bad_rules_file_is_named_with_the_key(self, tmp_path: Path):
        """A rules file with a bad window is refused naming the key and the file."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(yaml.safe_dump({"rules": [rule(), rule(name="b", watermark="soon")]}))
        config = tmp_path / "gatewatch.yaml"
        config.write_text(yaml.safe_dump({"alerts": {"rules_file": "rules.yaml"}}))
        with pytest.raises(ConfigError) as info:
            load_settings(str(config))
        assert info.value.key == "alerts.rules.1.watermark"
        assert str(rules) in str(info.value)

    def test_the_cli_prints_one_line_and_exits_2(self, tmp_path: Path, capsys):
        """``gatewatch run`` with a bad rule prints one error line naming the key, no stack trace."""
        config = tmp_path / "gatewatch.yaml"
        config.write_text(yaml.safe_dump({"alerts": {"rules": [rule(window="5 parsecs")]}}))
        code = main(["run", "--config", str(config), "--source", str(tmp_path / "t")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert len(err) == 1 and "alerts.rules.0.window" in err[0] and "Traceback" not in err[0]


class TestRuleModel:
    def test_durations(self):
        """Durations read as whole seconds in the usual spellings."""
        assert [duration_seconds(t) for t in ("30s", "30 seconds", "5 minutes", "1 min", "1 hour", "2 days")] == [
            30, 30, 300, 60, 3600, 172800]

    def test_slide_defaults_to_the_window(self):
        """Without a slide, windows tumble."""
        r = AlertRule.model_validate(rule(slide=None, window="10 minutes"))
        assert (r.window_s, r.slide_s, r.watermark_s) == (600, 600, 0)

    def test_read_rules_returns_the_list(self):
        """``read_rules`` gives the packaged rules file's list unvalidated."""
        assert [r["name"] for r in read_rules()][:1] == ["content_filter_spike"]
