"""The parsers over every payload shape in ``tests/fixtures/payloads``.

Each fixture is one inference-table row (status, request, response, logging
error codes) and the values its parse must give. All fixtures go through
``parse_inference_rows`` together as one DataFrame, and both views of the
result come back in a single collect; each fixture is then one test.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from gatewatch.schemas import CANONICAL_INPUT, OUTCOMES, PARSED_COLUMNS, REQUEST_COLUMNS
from gatewatch.transforms.pipeline import parse_inference_rows, quarantine_view, requests_view

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"
SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed"  # the two real payloads, kept with the tests
FIXTURES: dict[str, dict[str, Any]] = {p.stem: json.loads(p.read_text()) for p in sorted(PAYLOADS.glob("*.json"))}

REQUEST_TIME = datetime(2025, 12, 2, 16, 52, 20)
QUARANTINED_AT = datetime(2025, 12, 2, 17, 0, 0)
EXPECTED_KEYS = {"categories", "quarantine_reason", *REQUEST_COLUMNS}


def payload_text(value: Any) -> str | None:
    """A payload as the inference table logs it: JSON text, or a string kept as logged."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def response_text(fixture: dict[str, Any]) -> str | None:
    """The fixture's response, read from the seed folder when it names a seed file."""
    if "response_seed" in fixture:
        return (SEED / fixture["response_seed"]).read_text()
    return payload_text(fixture["response"])


def canonical_row(version: int, name: str, fixture: dict[str, Any]) -> dict[str, Any]:
    """One CANONICAL_INPUT row carrying the fixture, its name as the request id."""
    return {
        "databricks_request_id": name,
        "client_request_id": None,
        "request_date": date(2025, 12, 2),
        "request_time": REQUEST_TIME,
        "status_code": fixture["status_code"],
        "sampling_fraction": 1.0,
        "execution_duration_ms": 1200,
        "request": payload_text(fixture["request"]),
        "response": response_text(fixture),
        "served_entity_id": "entity-0001",
        "logging_error_codes": fixture["logging_error_codes"],
        "requester": "someone@example.com",
        "endpoint": "agents-prod",
        "request_metadata": None,
        "source_table": "main.serving.agents_prod_payload",
        "_change_type": "insert",
        "_commit_version": version,
        "_commit_timestamp": REQUEST_TIME,
    }


@pytest.fixture(scope="module")
def landed(spark) -> dict[str, list[dict[str, Any]]]:
    """Every fixture parsed once: request id -> the rows it left in requests and in quarantine."""
    rows = [canonical_row(i, name, fx) for i, (name, fx) in enumerate(FIXTURES.items(), start=1)]
    source = spark.createDataFrame(
        [tuple(r[f.name] for f in CANONICAL_INPUT.fields) for r in rows], CANONICAL_INPUT
    )
    parsed = source.transform(parse_inference_rows()).cache()
    try:
        requests = parsed.transform(requests_view()).select(
            "databricks_request_id",
            F.lit("requests").alias("table"),
            F.to_json(F.struct(*REQUEST_COLUMNS)).alias("row"),
        )
        quarantine = parsed.transform(quarantine_view(QUARANTINED_AT)).select(
            "databricks_request_id",
            F.lit("quarantine").alias("table"),
            F.to_json(F.struct("reason", "shape_fingerprint")).alias("row"),
        )
        collected = requests.unionByName(quarantine).collect()
    finally:
        parsed.unpersist()
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in FIXTURES}
    for r in collected:
        out[r["databricks_request_id"]].append({"table": r["table"], **json.loads(r["row"])})
    return out


FLAG_FIELDS = ("stage", "category", "severity", "filtered", "detected")


def flags_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's safety flags with every field present (JSON leaves nulls out)."""
    return [{k: f.get(k) for k in FLAG_FIELDS} for f in row.get("safety_flags") or []]


def filtered_categories(row: dict[str, Any]) -> list[str]:
    """The sorted categories of the row's safety flags that have ``filtered: true``."""
    return sorted({f["category"] for f in row.get("safety_flags") or [] if f.get("filtered")})


class TestFixtures:
    def test_fixtures_are_well_formed(self):
        """Every fixture has the row fields and asserts only keys the parse produces."""
        assert len(FIXTURES) >= 40
        for name, fx in FIXTURES.items():
            assert {"description", "status_code", "request", "response", "logging_error_codes", "expected"} <= fx.keys(), name
            assert set(fx["expected"]) <= EXPECTED_KEYS, (name, set(fx["expected"]) - EXPECTED_KEYS)
            if "response_seed" in fx:
                assert (SEED / fx["response_seed"]).is_file(), name

    def test_fixtures_cover_every_outcome_and_quarantine_reason(self):
        """Each outcome and both parse-time quarantine reasons have at least one fixture."""
        outcomes = {fx["expected"].get("outcome") for fx in FIXTURES.values()}
        reasons = {fx["expected"].get("quarantine_reason") for fx in FIXTURES.values()}
        assert set(OUTCOMES) <= outcomes
        assert {"json_parse_error", "unknown_shape"} <= reasons


def test_every_row_lands_exactly_once(landed):
    """Every fixture row ends in exactly one of requests or quarantine."""
    misplaced = {name: [r["table"] for r in rows] for name, rows in landed.items() if len(rows) != 1}
    assert misplaced == {}


@pytest.mark.parametrize("name", list(FIXTURES))
def test_parse(landed, name):
    """The fixture's row is parsed to every value its ``expected`` lists."""
    expected = FIXTURES[name]["expected"]
    (row,) = landed[name]
    reason = expected.get("quarantine_reason")
    if reason is not None:
        assert row["table"] == "quarantine"
        assert row["reason"] == reason
        assert expected.get("outcome") is None
        return
    assert row["table"] == "requests", row
    derived = {"categories": filtered_categories, "safety_flags": flags_of}
    actual = {key: derived[key](row) if key in derived else row.get(key) for key in expected}
    actual["quarantine_reason"] = None
    assert actual == expected


def test_the_parse_is_the_same_when_spark_sends_large_arrow_strings(spark):
    """With ``useLargeVarTypes`` on (large Arrow strings, as some runtimes send), every fixture parses the same."""
    rows = [canonical_row(i, name, fx) for i, (name, fx) in enumerate(FIXTURES.items(), start=1)]
    source = spark.createDataFrame([tuple(r[f.name] for f in CANONICAL_INPUT.fields) for r in rows], CANONICAL_INPUT)
    columns = ["databricks_request_id", "quarantine_reason", "parser_version", *PARSED_COLUMNS]

    def parse() -> list[tuple]:
        return sorted(tuple(r) for r in source.transform(parse_inference_rows()).select(*columns).collect())

    key = "spark.sql.execution.arrow.useLargeVarTypes"
    before = spark.conf.get(key, "false")
    plain = parse()
    try:
        spark.conf.set(key, "true")
        large = parse()
    finally:
        spark.conf.set(key, before)
    assert len(plain) == len(FIXTURES)
    assert large == plain
