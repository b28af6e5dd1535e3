"""``gatewatch validate``: a changed parser's effect on a snapshot of a real inference table, row by row."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from gatewatch.cli.main import main
from gatewatch.quarantine.validate import validate
from gatewatch.settings import ParserSettings, Settings, SourceSettings
from gatewatch.traffic.generate import create_inference_table, write_rows
from gatewatch.transforms import registry

USER_PARSERS = Path(__file__).parent / "user_parsers"
CHANGED = str(USER_PARSERS / "predictions_parser_v2.py")
UNCHANGED = str(USER_PARSERS / "predictions_parser.py")


def _row(rid: str, response, i: int) -> dict:
    return dict(
        databricks_request_id=rid, client_request_id=None, request_date=date(2026, 11, 1),
        request_time=datetime(2026, 11, 1, 12, 0, i, tzinfo=timezone.utc), status_code=200, sampling_fraction=1.0,
        execution_duration_ms=40, request=json.dumps({"inputs": [[1, 2, 3]]}),
        response=response if isinstance(response, str) else json.dumps(response), served_entity_id="ranker-1",
        logging_error_codes=[], requester="svc@example.com",
    )


CHAT_OK = {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}, "model": "m"}
ROWS = (
    [_row(f"ok-{i}", {"predictions": [0.1, 0.2], "token_count": i, "status": "ok"}, i) for i in range(1, 7)]
    + [_row(f"failed-{i}", {"predictions": [], "token_count": 0, "status": "failed"}, 10 + i) for i in range(1, 4)]
    + [_row(f"bare-{i}", {"predictions": [0.5]}, 20 + i) for i in range(1, 3)]
    + [_row(f"chat-{i}", CHAT_OK, 30 + i) for i in range(1, 3)]
    + [_row("cut-1", '{"choices": [', 40)]
)
"""6 predictions rows the change leaves alone, 3 it moves to ``error``, 2 it quarantines; 2 chat rows; 1 malformed."""


@pytest.fixture()
def snapshot(spark, tmp_path, monkeypatch):
    """An AI Gateway inference table (change feed on) holding ROWS at version 1, then more rows at version 2."""
    table = str(tmp_path / "ranker_payload")
    create_inference_table(spark, table)
    write_rows(spark, table, ROWS)
    write_rows(spark, table, [_row("later-1", {"predictions": [0.9]}, 50)])
    monkeypatch.syspath_prepend(str(USER_PARSERS))
    yield table
    registry.unregister_shape("custom_predictions")
    sys.modules.pop("predictions_parser", None)


def _settings(table: str) -> Settings:
    """The source and, as shipped, the user's predictions parser (``parsers.modules``)."""
    return Settings(sources=(SourceSettings(table=table, endpoint="ranker"),),
                    parsers=ParserSettings(modules=("predictions_parser",)))


def test_changed_parser_reports_exactly_the_rows_it_moves_and_quarantines(spark, snapshot):
    """A changed shape parser's report names the 3 rows moved to error and the 2 rows of the shape it dropped, nothing else."""
    report = validate(spark, _settings(snapshot), candidates=[CHANGED], version=1)

    assert report.rows == len(ROWS)
    assert report.version == 1
    assert "custom_predictions@1.0.0" in report.shipped and "custom_predictions@1.1.0" in report.candidate
    assert [(c["id"], c["from"], c["to"], c["rows"], c["sample_ids"]) for c in report.outcome_changes] == [
        ("outcome:predict_ok->error", "predict_ok", "error", 3, ["failed-1", "failed-2", "failed-3"])]
    assert report.field_changes == []
    [quarantined] = report.newly_quarantined
    assert quarantined["rows"] == 2 and quarantined["sample_ids"] == ["bare-1", "bare-2"]
    assert quarantined["reasons"] == ["unknown_shape"] and quarantined["from"] == ["predict_ok"]
    assert quarantined["failed_columns"] == []  # an unknown shape, not a failed expectation
    assert quarantined["id"] == f"quarantined:{quarantined['fingerprint']}" and len(quarantined["fingerprint"]) == 16
    assert report.newly_parsed == []
    assert not report.passed
    assert report.unaccepted == ["outcome:predict_ok->error", quarantined["id"]]
    # the registry is left as shipped: the candidate module replaced the parser in the candidate set only
    assert registry.SHAPE_PARSERS["custom_predictions"].version == "1.0.0"


def test_cli_exit_code_follows_accept_and_json_holds_the_same_report(spark, snapshot, tmp_path, capsys):
    """The changed parser exits 1 and prints the change ids; accepting every id exits 0; --json writes the report."""
    args = ["validate", "--source", snapshot, "--version", "1", "--set", "parsers.modules=[predictions_parser]",
            "--parsers", CHANGED, "--json", str(tmp_path / "report.json")]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "outcome:predict_ok->error" in printed and "FAILED: 2 change(s)" in printed
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["passed"] is False and written["rows"] == len(ROWS)
    assert [c["id"] for c in written["outcome_changes"]] == ["outcome:predict_ok->error"]
    accept = [a for i in written["unaccepted"] for a in ("--accept", i)]
    assert main([*args, *accept]) == 0
    assert "PASSED" in capsys.readouterr().out


def test_unchanged_parser_reports_no_difference_and_exits_0(spark, snapshot, capsys):
    """The same parser given as the candidate (loaded again from its file) reports no difference and exits 0."""
    code = main(["validate", "--source", snapshot, "--version", "1", "--set", "parsers.modules=[predictions_parser]",
                 "--parsers", UNCHANGED])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"{snapshot} at version 1: {len(ROWS)} rows" in printed
    assert "No difference" in printed


def test_sample_and_latest_version(spark, snapshot):
    """Without --version the latest version is read (the later row counts); --sample keeps that many rows, the same on every run."""
    settings = _settings(snapshot)
    latest = validate(spark, settings, candidates=[CHANGED])
    assert latest.version == 2 and latest.rows == len(ROWS) + 1
    first = validate(spark, settings, candidates=[CHANGED], version=1, sample=5)
    again = validate(spark, settings, candidates=[CHANGED], version=1, sample=5)
    assert first.rows == 5
    assert first.to_json() == again.to_json()
