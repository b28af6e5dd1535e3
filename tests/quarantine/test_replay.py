"""Quarantine replay: an unknown shape is set aside, a parser for it is registered,
and replay moves exactly those rows into requests, once, whatever happens."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from gatewatch.quarantine import replay as replay_mod
from gatewatch.schemas import CANONICAL_INPUT
from gatewatch.settings import OutputSettings, ParserSettings, Settings
from gatewatch.streams.batch import BatchContext, handle_batch
from gatewatch.quarantine.contract import load_contract
from gatewatch.streams.outputs import prepare_outputs
from gatewatch.transforms.registry import unregister_shape

USER_PARSERS = Path(__file__).parent / "user_parsers"


def _row(i: int, response, status: int = 200) -> dict:
    return dict(
        databricks_request_id=f"req-{i:03d}", client_request_id=None, request_date=date(2026, 11, 1),
        request_time=datetime(2026, 11, 1, 12, 0, i % 60), status_code=status, sampling_fraction=1.0,
        execution_duration_ms=40, request=json.dumps({"inputs": [[1, 2, 3]]}),
        response=response if isinstance(response, str) else json.dumps(response), served_entity_id="ranker-1",
        logging_error_codes=[], requester="svc@example.com", endpoint="ranker", request_metadata=None,
        source_table="main.serving.ranker_payload", _change_type="insert", _commit_version=3,
        _commit_timestamp=datetime(2026, 11, 1, 12, 0, 59),
    )


PREDICTIONS = [_row(i, {"predictions": [0.1 * i, 0.2], "token_count": i}) for i in range(1, 6)]
OTHERS = [
    _row(20, {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}, "model": "m"}),
    _row(21, '{"choices": [', 200),
]


@pytest.fixture()
def quarantined(spark, tmp_path, monkeypatch):
    """Outputs after one batch: 5 unknown-shape rows and 1 truncated row quarantined."""
    settings = Settings(output=OutputSettings(location=str(tmp_path / "out")))
    tables = prepare_outputs(spark, settings)
    ctx = BatchContext(source="ranker", app_id="test", requests=tables["requests"],
                       quarantine=tables["quarantine"], contract=load_contract(settings))
    handle_batch(ctx, spark.createDataFrame(PREDICTIONS + OTHERS, CANONICAL_INPUT), 0)
    monkeypatch.syspath_prepend(str(USER_PARSERS))
    yield settings, tables
    unregister_shape("custom_predictions")
    sys.modules.pop("predictions_parser", None)


def _with_parser(settings: Settings) -> Settings:
    return settings.model_copy(update={"parsers": ParserSettings(modules=("predictions_parser",))})


def _state(spark, tables):
    req = tables["requests"].read(spark)
    q = tables["quarantine"].read(spark)
    return (
        sorted(r[0] for r in req.select("databricks_request_id").collect()),
        {r["databricks_request_id"]: (r["status"], r["reason"], r["resolved_by_parser_version"])
         for r in q.collect()},
    )


def test_unknown_shape_is_quarantined_then_replayed_into_requests_once(spark, quarantined):
    settings, tables = quarantined
    requests, quarantine = _state(spark, tables)
    assert requests == ["req-020"]
    assert {k: v[1] for k, v in quarantine.items()} == {
        **{f"req-{i:03d}": "unknown_shape" for i in range(1, 6)}, "req-021": "json_parse_error"}

    dry = replay_mod.replay(spark, _with_parser(settings), dry_run=True)
    assert (dry.considered, dry.resolved, dry.still_open) == (6, 5, 1)
    assert _state(spark, tables) == (requests, quarantine), "a dry run wrote something"

    result = replay_mod.replay(spark, _with_parser(settings))
    assert (result.resolved, result.still_open) == (5, 1)
    requests, quarantine = _state(spark, tables)
    assert requests == ["req-001", "req-002", "req-003", "req-004", "req-005", "req-020"]
    for i in range(1, 6):
        assert quarantine[f"req-{i:03d}"] == ("resolved", "unknown_shape", "custom_predictions@1.0.0")
    assert quarantine["req-021"][:2] == ("open", "json_parse_error")
    parsed = tables["requests"].read(spark).where(F.col("databricks_request_id") == "req-004").first()
    assert (parsed["outcome"], parsed["output_tokens"], parsed["parser_version"]) == (
        "predict_ok", 4, "custom_predictions@1.0.0")

    again = replay_mod.replay(spark, _with_parser(settings))
    assert (again.considered, again.resolved) == (1, 0)
    assert _state(spark, tables) == (requests, quarantine)


def test_replay_killed_between_its_two_writes_then_rerun_duplicates_nothing(spark, quarantined, monkeypatch):
    settings, tables = quarantined

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed after the requests merge, before the quarantine update")

    with monkeypatch.context() as m:
        m.setattr(replay_mod, "_update_quarantine", crash)
        with pytest.raises(KeyboardInterrupt):
            replay_mod.replay(spark, _with_parser(settings))
    requests, quarantine = _state(spark, tables)
    assert len(requests) == 6 and all(v[0] == "open" for v in quarantine.values())

    result = replay_mod.replay(spark, _with_parser(settings))
    assert result.resolved == 5
    requests, quarantine = _state(spark, tables)
    assert requests == ["req-001", "req-002", "req-003", "req-004", "req-005", "req-020"]
    assert sum(v[0] == "resolved" for v in quarantine.values()) == 5


def test_replay_without_the_parser_changes_nothing(spark, quarantined):
    settings, tables = quarantined
    before = _state(spark, tables)
    result = replay_mod.replay(spark, settings)
    assert (result.considered, result.resolved, result.still_open) == (6, 0, 6)
    assert _state(spark, tables) == before


def test_a_bad_parser_module_is_named(spark, quarantined):
    from gatewatch.errors import ConfigError

    settings, _ = quarantined
    bad = settings.model_copy(update={"parsers": ParserSettings(modules=("no_such_parsers",))})
    with pytest.raises(ConfigError, match=r"parsers\.modules\.0"):
        replay_mod.replay(spark, bad)
