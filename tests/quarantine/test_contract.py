"""The quarantine contract: loading the suite, compiling it, and splitting rows by it."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql.types import ArrayType

from gatewatch.errors import ConfigError, UnsupportedExpectationError
from gatewatch.quarantine.contract import (
    compile_suite,
    load_suite,
    packaged_suite,
    split_by_contract,
    supported_types,
    with_contract_results,
)
from gatewatch.schemas import FAILED_EXPECTATION, REQUESTS

SUITE_FILE = Path(__file__).resolve().parents[2] / "conf" / "expectations" / "requests.json"
SUITE_JSON = json.loads(SUITE_FILE.read_text())
TOKENS_SUM_ID = "793d10e3-7898-4b47-befc-b93c41df36cf"


def expectation(type_: str, kwargs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One expectation as a suite file holds it, with a fresh id."""
    return {"type": type_, "kwargs": kwargs, "meta": {}, "id": str(uuid.uuid4()), **extra}


def write_suite(folder: Path, *expectations: dict[str, Any]) -> Path:
    """A suite JSON file holding ``expectations``."""
    path = folder / "suite.json"
    path.write_text(json.dumps({"name": "t", "expectations": list(expectations), "meta": {}}))
    return path


def compile_one(folder: Path, type_: str, kwargs: dict[str, Any], **extra: Any):
    """Load and compile a suite of one expectation."""
    return compile_suite(load_suite(write_suite(folder, expectation(type_, kwargs, **extra))))


class TestLoadSuite:
    def test_packaged_suite_loads_with_stable_ids_and_descriptions(self):
        """The packaged suite loads under its name, every expectation with a UUID id and a description."""
        suite = load_suite()
        assert suite.name == "gatewatch_requests"
        assert len(suite.expectations) == len(SUITE_JSON["expectations"]) >= 20
        ids = [e.id for e in suite.expectations]
        assert ids == [e["id"] for e in SUITE_JSON["expectations"]]
        assert len(set(ids)) == len(ids) and all(uuid.UUID(i) for i in ids)
        assert all(e.meta["description"].strip() for e in suite.expectations)

    def test_packaged_suite_is_what_gx_writes(self):
        """The suite file is exactly ``ExpectationSuite.to_json_dict()`` of the loaded suite."""
        written = load_suite().to_json_dict()
        for d in (written, SUITE_JSON):
            d["meta"] = {k: v for k, v in d["meta"].items() if k != "great_expectations_version"}
        assert written == SUITE_JSON

    def test_default_is_the_packaged_file(self):
        """Without a path the packaged suite is read, the same as the file in conf/."""
        assert packaged_suite().is_file()
        assert [e.id for e in load_suite(None).expectations] == [e.id for e in load_suite(SUITE_FILE).expectations]

    def test_invalid_expectation_stops_the_load(self, tmp_path):
        """An expectation GX rejects is an error naming it, not silently left out as GX's suite does."""
        path = write_suite(
            tmp_path,
            expectation("expect_column_values_to_not_be_null", {"column": "outcome"}),
            expectation("expect_column_values_to_be_between", {"min_value": 0}),
        )
        with pytest.raises(ConfigError, match=r"expectations\[1\].*expect_column_values_to_be_between"):
            load_suite(path)

    def test_unknown_type_is_refused_on_load(self, tmp_path):
        """A type Great Expectations does not know is refused with its name, its id and the supported types."""
        e = expectation("expect_column_values_to_be_shiny", {"column": "outcome"})
        with pytest.raises(UnsupportedExpectationError) as err:
            load_suite(write_suite(tmp_path, e))
        assert "expect_column_values_to_be_shiny" in str(err.value) and e["id"] in str(err.value)
        assert "expect_column_values_to_be_between" in str(err.value)

    def test_unreadable_file_is_a_config_error(self, tmp_path):
        """A missing or non-JSON suite file is a config error naming the file."""
        with pytest.raises(ConfigError, match="missing.json"):
            load_suite(tmp_path / "missing.json")
        (tmp_path / "bad.json").write_text("{not json")
        with pytest.raises(ConfigError, match="bad.json"):
            load_suite(tmp_path / "bad.json")


class TestLoadContractSoon:
    def test_the_suite_read_in_the_background_compiles_to_the_same_contract(self, spark, tmp_path):
        """The call ``load_contract_soon`` returns gives the packaged suite's contract; off gives None."""
        from gatewatch.quarantine.contract import load_contract_soon
        from gatewatch.settings import ContractSettings, Settings

        contract = load_contract_soon(Settings())()
        assert contract.ids == tuple(e["id"] for e in SUITE_JSON["expectations"])
        assert load_contract_soon(Settings(contract=ContractSettings(enabled=False)))() is None

    def test_a_bad_suite_read_in_the_background_raises_its_config_error_when_asked_for(self, tmp_path):
        """The background read's error reaches the caller, naming the key and the file."""
        from gatewatch.quarantine.contract import load_contract_soon
        from gatewatch.settings import ContractSettings, Settings

        soon = load_contract_soon(Settings(contract=ContractSettings(suite=str(tmp_path / "missing.json"))))
        with pytest.raises(ConfigError, match=r"contract\.suite.*missing\.json"):
            soon()


class TestCompileSuite:
    def test_packaged_suite_compiles(self, spark):
        """Every packaged expectation compiles, in suite order, with the column it reports."""
        contract = compile_suite(load_suite())
        assert contract.name == "gatewatch_requests"
        assert contract.ids == tuple(e["id"] for e in SUITE_JSON["expectations"])
        by_id = {e.id: e for e in contract.expectations}
        assert (by_id[TOKENS_SUM_ID].type, by_id[TOKENS_SUM_ID].column) == ("unexpected_rows_expectation", "total_tokens")
        assert all(e.column for e in contract.expectations)

    def test_unsupported_type_is_refused(self, spark, tmp_path):
        """A GX type the compiler cannot run row by row is refused naming it, its id and the supported types."""
        e = expectation(
            "expect_column_kl_divergence_to_be_less_than",
            {"column": "input_tokens", "partition_object": {"values": [1, 2], "weights": [0.5, 0.5]}, "threshold": 0.1},
        )
        with pytest.raises(UnsupportedExpectationError) as err:
            compile_suite(load_suite(write_suite(tmp_path, e)))
        message = str(err.value)
        assert "expect_column_kl_divergence_to_be_less_than" in message and e["id"] in message
        assert all(t in message for t in supported_types())

    def test_mostly_below_one_is_refused(self, spark, tmp_path):
        """``mostly`` below 1 is refused at compile time: a fraction cannot be decided per row."""
        with pytest.raises(UnsupportedExpectationError, match=r"mostly=0\.95.*one row at a time"):
            compile_one(tmp_path, "expect_column_values_to_not_be_null", {"column": "outcome", "mostly": 0.95})

    def test_mostly_of_one_is_accepted(self, spark, tmp_path):
        """``mostly: 1`` means every row must pass, which a row-level check honours."""
        contract = compile_one(tmp_path, "expect_column_values_to_not_be_null", {"column": "outcome", "mostly": 1.0})
        assert contract.expectations[0].column == "outcome"

    def test_non_critical_severity_is_refused(self, spark, tmp_path):
        """A warning-severity expectation is refused: every contract expectation quarantines."""
        with pytest.raises(UnsupportedExpectationError, match="severity 'warning'"):
            compile_one(tmp_path, "expect_column_values_to_not_be_null", {"column": "outcome"}, severity="warning")

    def test_suite_parameter_is_refused(self, spark, tmp_path):
        """A value taken from a suite parameter is refused: the contract has no run parameters."""
        kwargs = {"column": "status_code", "min_value": {"$PARAMETER": "low"}, "max_value": 599}
        with pytest.raises(UnsupportedExpectationError, match="min_value.*suite parameter"):
            compile_one(tmp_path, "expect_column_values_to_be_between", kwargs)

    @pytest.mark.parametrize(
        ("query", "match"),
        [
            ("SELECT count(*) FROM {batch} WHERE outcome IS NULL", "not of the form"),
            ("SELECT * FROM {batch} b JOIN other o ON b.x = o.x WHERE o.y > 1", "not of the form"),
            ("SELECT * FROM {batch} WHERE outcome IN (SELECT outcome FROM other)", "uses SELECT"),
            ("SELECT * FROM {batch} WHERE row_number() OVER (ORDER BY status_code) > 1", "uses OVER"),
            ("SELECT * FROM {batch} WHERE status_code = = 1", "does not parse"),
        ],
    )
    def test_unexpected_rows_query_beyond_one_row_is_refused(self, spark, tmp_path, query, match):
        """Only ``SELECT * FROM {batch} WHERE <condition over one row>`` queries compile."""
        with pytest.raises(UnsupportedExpectationError, match=match):
            compile_one(tmp_path, "unexpected_rows_expectation", {"unexpected_rows_query": query})

    def test_expectation_without_id_is_refused(self, spark, tmp_path):
        """An expectation without an id cannot be reported in quarantine and is refused."""
        e = expectation("expect_column_values_to_not_be_null", {"column": "outcome"})
        del e["id"]
        with pytest.raises(ConfigError, match="stable id"):
            compile_suite(load_suite(write_suite(tmp_path, e)))

    def test_duplicate_ids_are_refused(self, spark, tmp_path):
        """Two expectations with one id are refused, naming the id."""
        a = expectation("expect_column_values_to_not_be_null", {"column": "outcome"})
        b = {**expectation("expect_column_values_to_not_be_null", {"column": "model"}), "id": a["id"]}
        with pytest.raises(ConfigError, match=a["id"]):
            compile_suite(load_suite(write_suite(tmp_path, a, b)))


def request(row_id: str, **changes: Any) -> tuple:
    """A requests row (valid ``predict_ok`` unless ``changes`` break it) as a tuple in REQUESTS order."""
    row: dict[str, Any] = {f.name: None for f in REQUESTS.fields}
    row.update(
        databricks_request_id=row_id,
        request_time=datetime(2026, 1, 5, 12, 0, 0),
        status_code=200,
        outcome="predict_ok",
        is_stream=False,
        input_tokens=10,
        output_tokens=5,
        total_tokens=15,
        blocked=False,
        safety_flags=[],
        parser_version="predict_ok@1.0.0",
        source_table="main.serving.bot_payload",
    )
    row.update(changes)
    return tuple(row[f.name] for f in REQUESTS.fields)


@pytest.fixture(scope="module")
def contract(spark):
    """The packaged suite, compiled."""
    return compile_suite(load_suite())


@pytest.fixture(scope="module")
def requests_df(spark):
    """Two valid request rows and two that break the contract."""
    rows = [
        request("ok-1"),
        request("bad-sum", total_tokens=99),
        request("ok-2", outcome="stream_ok", is_stream=True),
        request("bad-stage", blocked_stage="prompt", status_code=700),
    ]
    return spark.createDataFrame(rows, REQUESTS)


class TestWithContractResults:
    def test_failed_expectations_per_row(self, contract, requests_df):
        """Each row gets the (id, type, column) of every expectation it fails, in suite order; [] when it passes."""
        by_id = {e.id: e for e in contract.expectations}
        rows = {
            r["databricks_request_id"]: [tuple(f) for f in r["failed_expectations"]]
            for r in requests_df.transform(with_contract_results(contract)).collect()
        }
        assert rows["ok-1"] == [] and rows["ok-2"] == []
        assert rows["bad-sum"] == [(TOKENS_SUM_ID, "unexpected_rows_expectation", "total_tokens")]
        stage = [(e.id, e.type, e.column) for e in contract.expectations if e.column in ("status_code", "blocked_stage")]
        got = rows["bad-stage"]
        assert {c for _, _, c in got} == {"status_code", "blocked_stage"}
        assert got == [f for f in stage if f in got] and all(by_id[i].type == t for i, t, _ in got)

    def test_adds_the_quarantine_column_type(self, contract, requests_df):
        """The added column has the FAILED_EXPECTATION element type of the quarantine table."""
        out = requests_df.transform(with_contract_results(contract))
        assert out.schema["failed_expectations"].dataType == ArrayType(FAILED_EXPECTATION)
        assert out.columns == [*requests_df.columns, "failed_expectations"]

    def test_checks_in_one_projection(self, contract, requests_df):
        """The whole suite is one projection: no join, aggregate or shuffle in the plan."""
        out = requests_df.transform(with_contract_results(contract))
        plan = out._jdf.queryExecution().executedPlan().toString()
        assert "Project" in plan
        assert not any(op in plan for op in ("Join", "Aggregate", "Exchange", "Union"))

    def test_missing_column_is_named(self, contract, requests_df):
        """Checking rows that lack a column the suite reads is an error naming the column."""
        with pytest.raises(ConfigError, match="missing column blocked_stage"):
            requests_df.drop("blocked_stage").transform(with_contract_results(contract))


class TestSplitByContract:
    def test_returns_passed_then_failed(self, contract, requests_df):
        """``split_by_contract`` returns (passed, failed): passed without the column, failed with its failures."""
        passed, failed = split_by_contract(requests_df, contract)
        assert sorted(r["databricks_request_id"] for r in passed.collect()) == ["ok-1", "ok-2"]
        assert passed.columns == requests_df.columns
        failures = {r["databricks_request_id"]: r["failed_expectations"] for r in failed.collect()}
        assert sorted(failures) == ["bad-stage", "bad-sum"]
        assert [f["id"] for f in failures["bad-sum"]] == [TOKENS_SUM_ID]
        assert all(len(f) >= 1 for f in failures.values())
