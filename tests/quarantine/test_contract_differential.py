"""The compiled contract flags exactly the rows Great Expectations itself flags.

Great Expectations validates the same Spark DataFrames as the compiler, with
``result_format: COMPLETE`` and ``row_id`` as the unexpected-index column;
each case compares the two sets of flagged row ids. A case only counts when
GX flags some rows and passes others, so no comparison is vacuous.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from great_expectations.core.expectation_suite import ExpectationSuite
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
from great_expectations.expectations.row_conditions import Column
from pyspark.sql.types import IntegerType, StructField, StructType

from gatewatch.quarantine.contract import compile_suite, load_suite, supported_types, with_contract_results
from gatewatch.schemas import REQUESTS

SUITE_FILE = Path(__file__).resolve().parents[2] / "conf" / "expectations" / "requests.json"
NAMESPACE = uuid.UUID("5b0c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3")
RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["row_id"]}

SCHEMA = "row_id int, n long, a long, b long, c long, s string, flag boolean, kind string"
ROWS = [
    (1, 0, 1, 1, 1, "alpha", True, "x"),
    (2, 5, 2, 1, 0, "beta", False, "y"),
    (3, 10, 1, 2, 3, "", None, "x"),
    (4, -1, None, 1, 2, "a1", True, None),
    (5, 11, 1, None, None, "ALPHA", False, "z"),
    (6, None, None, None, None, None, True, "y"),
    (7, 3, 3, 3, None, "gamma delta", None, "x"),
    (8, 100, 0, 5, 5, "b", True, "z"),
    (9, 7, None, None, 7, "beta", False, None),
    (10, 2, 4, 0, -4, None, True, "x"),
]


@dataclass(frozen=True)
class Case:
    """One expectation to run both ways."""

    name: str
    type: str
    kwargs: dict[str, Any] = field(hash=False)

    @property
    def id(self) -> str:
        """A stable id derived from the case name."""
        return str(uuid.uuid5(NAMESPACE, self.name))


FLAG_TRUE = Column("flag") == True  # noqa: E712  (a GX condition, not a Python comparison)

CASES = [
    Case("not_null", "expect_column_values_to_not_be_null", {"column": "n"}),
    Case("not_null_where_flag", "expect_column_values_to_not_be_null", {"column": "s", "row_condition": FLAG_TRUE}),
    Case("not_null_where_kind_in", "expect_column_values_to_not_be_null",
         {"column": "a", "row_condition": Column("kind").is_in(["x", "y"])}),
    Case("null", "expect_column_values_to_be_null", {"column": "c"}),
    Case("null_where_flag_false", "expect_column_values_to_be_null",
         {"column": "a", "row_condition": Column("flag") == False}),  # noqa: E712
    Case("in_set", "expect_column_values_to_be_in_set", {"column": "s", "value_set": ["alpha", "beta", "b"]}),
    Case("in_set_where_n_ge", "expect_column_values_to_be_in_set",
         {"column": "kind", "value_set": ["x", "y"], "row_condition": Column("n") >= 5}),
    Case("in_set_boolean_where_kind_ne", "expect_column_values_to_be_in_set",
         {"column": "flag", "value_set": [True], "row_condition": Column("kind") != "z"}),
    Case("not_in_set", "expect_column_values_to_not_be_in_set", {"column": "s", "value_set": ["beta", ""]}),
    Case("not_in_set_spark_condition", "expect_column_values_to_not_be_in_set",
         {"column": "kind", "value_set": ["x"], "row_condition": "n > 2 AND s IS NOT NULL", "condition_parser": "spark"}),
    Case("between", "expect_column_values_to_be_between", {"column": "n", "min_value": 0, "max_value": 10}),
    Case("between_strict", "expect_column_values_to_be_between",
         {"column": "n", "min_value": 0, "max_value": 10, "strict_min": True, "strict_max": True}),
    Case("between_min_only", "expect_column_values_to_be_between", {"column": "n", "min_value": 5}),
    Case("between_max_only_strict", "expect_column_values_to_be_between",
         {"column": "n", "max_value": 10, "strict_max": True}),
    Case("between_where_and", "expect_column_values_to_be_between",
         {"column": "n", "min_value": 1, "max_value": 10, "row_condition": FLAG_TRUE & (Column("kind") != "z")}),
    Case("between_where_or", "expect_column_values_to_be_between",
         {"column": "n", "min_value": 1, "row_condition": (Column("kind") == "z") | Column("kind").is_null()}),
    Case("between_where_legacy_ge", "expect_column_values_to_be_between",
         {"column": "b", "max_value": 2, "row_condition": 'col("n")>2', "condition_parser": "great_expectations"}),
    Case("match_regex", "expect_column_values_to_match_regex", {"column": "s", "regex": "^[a-z]+$"}),
    Case("match_regex_anywhere", "expect_column_values_to_match_regex", {"column": "s", "regex": "a"}),
    Case("not_match_regex", "expect_column_values_to_not_match_regex", {"column": "s", "regex": "\\d"}),
    Case("not_match_regex_where_not_null", "expect_column_values_to_not_match_regex",
         {"column": "s", "regex": "^b", "row_condition": Column("kind").is_not_null()}),
    Case("lengths", "expect_column_value_lengths_to_be_between", {"column": "s", "min_value": 1, "max_value": 5}),
    Case("lengths_strict", "expect_column_value_lengths_to_be_between",
         {"column": "s", "min_value": 1, "max_value": 11, "strict_min": True, "strict_max": True}),
    Case("pair_equal", "expect_column_pair_values_to_be_equal", {"column_A": "a", "column_B": "b"}),
    Case("pair_equal_either", "expect_column_pair_values_to_be_equal",
         {"column_A": "a", "column_B": "b", "ignore_row_if": "either_value_is_missing"}),
    Case("pair_equal_neither", "expect_column_pair_values_to_be_equal",
         {"column_A": "a", "column_B": "b", "ignore_row_if": "neither"}),
    Case("pair_greater", "expect_column_pair_values_a_to_be_greater_than_b", {"column_A": "a", "column_B": "b"}),
    Case("pair_greater_or_equal_neither", "expect_column_pair_values_a_to_be_greater_than_b",
         {"column_A": "c", "column_B": "b", "or_equal": True, "ignore_row_if": "neither"}),
    Case("pair_greater_where_flag", "expect_column_pair_values_a_to_be_greater_than_b",
         {"column_A": "b", "column_B": "a", "row_condition": FLAG_TRUE}),
    Case("sum", "expect_multicolumn_sum_to_equal", {"column_list": ["a", "b", "c"], "sum_total": 3}),
    Case("sum_never", "expect_multicolumn_sum_to_equal",
         {"column_list": ["a", "b", "c"], "sum_total": 0, "ignore_row_if": "never"}),
    Case("sum_any_missing", "expect_multicolumn_sum_to_equal",
         {"column_list": ["a", "b"], "sum_total": 2, "ignore_row_if": "any_value_is_missing"}),
    Case("unique", "expect_select_column_values_to_be_unique_within_record", {"column_list": ["a", "b", "c"]}),
    Case("unique_never", "expect_select_column_values_to_be_unique_within_record",
         {"column_list": ["a", "b", "c"], "ignore_row_if": "never"}),
    Case("unique_any_missing", "expect_select_column_values_to_be_unique_within_record",
         {"column_list": ["a", "c"], "ignore_row_if": "any_value_is_missing"}),
    Case("unexpected_rows", "unexpected_rows_expectation",
         {"unexpected_rows_query": "SELECT * FROM {batch} WHERE a + b > c"}),
    Case("unexpected_rows_lower_case", "unexpected_rows_expectation",
         {"unexpected_rows_query": "select *\n  from {batch}\n where s LIKE 'a%' or kind = 'z';"}),
]


def suite_of(name: str, cases: list[Case]) -> ExpectationSuite:
    """A GX suite holding the cases' expectations, built from configurations as a suite file is."""
    configurations = [ExpectationConfiguration(type=c.type, kwargs=c.kwargs, id=c.id) for c in cases]
    suite = ExpectationSuite(name=name, expectations=configurations)
    assert len(suite.expectations) == len(cases)
    return suite


def _raised(info: Any) -> bool:
    if isinstance(info, dict):
        return bool(info.get("raised_exception")) or any(_raised(v) for v in info.values() if isinstance(v, dict))
    return False


def gx_flagged(batch: Any, suite: ExpectationSuite) -> dict[str, set[int]]:
    """Run GX on the batch; the row ids each expectation finds unexpected, by expectation id."""
    results = batch.validate(suite, result_format=RESULT_FORMAT)
    flagged: dict[str, set[int]] = {}
    for r in results.results:
        assert not _raised(r.exception_info), r.exception_info
        res = r.result
        if "details" in res:
            rows = {row["row_id"] for row in res["details"]["unexpected_rows"]}
            assert len(rows) == res["observed_value"]
        else:
            rows = {item["row_id"] for item in res.get("unexpected_index_list") or []}
            assert len(rows) == res["unexpected_count"]
        flagged[r.expectation_config.id] = rows
    return flagged


def compiled_flagged(df: Any, suite: ExpectationSuite) -> dict[str, set[int]]:
    """Run the compiled contract; the row ids each expectation fails, by expectation id."""
    checked = df.transform(with_contract_results(compile_suite(suite)))
    flagged: dict[str, set[int]] = defaultdict(set)
    for row in checked.select("row_id", "failed_expectations.id").collect():
        for expectation_id in row["id"]:
            flagged[expectation_id].add(row["row_id"])
    return flagged


@pytest.fixture(scope="module")
def gx_batch_for(spark):
    """Validate DataFrames with GX: one ephemeral context and one Spark data source per module."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_spark("contract").add_dataframe_asset("rows")
    definition = asset.add_batch_definition_whole_dataframe("whole")
    return lambda df: definition.get_batch(batch_parameters={"dataframe": df})


@pytest.fixture(scope="module")
def case_results(spark, gx_batch_for):
    """Both sides' flagged row ids for every case, run on the one case DataFrame."""
    df = spark.createDataFrame(ROWS, SCHEMA).cache()
    suite = suite_of("cases", CASES)
    yield gx_flagged(gx_batch_for(df), suite), compiled_flagged(df, suite)
    df.unpersist()


class TestEveryType:
    def test_cases_cover_every_supported_type(self):
        """Every type the compiler supports has at least two differential cases."""
        per_type = defaultdict(int)
        for case in CASES:
            per_type[case.type] += 1
        assert set(per_type) == set(supported_types())
        assert min(per_type.values()) >= 2

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_flags_the_rows_gx_flags(self, case, case_results):
        """The compiled predicate flags exactly the row ids GX flags for this expectation."""
        from_gx, from_contract = case_results
        expected = from_gx[case.id]
        assert expected, "GX flags no row: the case does not discriminate"
        assert expected != {r[0] for r in ROWS}, "GX flags every row: the case does not discriminate"
        assert from_contract.get(case.id, set()) == expected


def request(row_id: int, **changes: Any) -> dict[str, Any]:
    """A valid ``predict_ok`` requests row, with ``changes`` applied."""
    row: dict[str, Any] = {f.name: None for f in REQUESTS.fields}
    row.update(
        databricks_request_id=f"req-{row_id}",
        request_time=datetime(2026, 1, 5, 12, 0, row_id % 60),
        status_code=200,
        execution_duration_ms=850,
        outcome="predict_ok",
        is_stream=False,
        input_tokens=10,
        output_tokens=5,
        total_tokens=15,
        blocked=False,
        safety_flags=[("prompt", "hate", "safe", False, None)],
        parser_version="predict_ok@1.0.0",
        source_table="main.serving.bot_payload",
    )
    row.update(changes)
    return {"row_id": row_id, **row}


def flag(stage: str | None, category: str | None, severity: str | None = "safe") -> tuple:
    """One safety flag struct."""
    return (stage, category, severity, False, None)


BLOCKED = {"outcome": "predict_blocked", "blocked": True, "blocked_stage": "prompt", "error_type": "content_filter"}
VALID = [
    request(1),
    request(2, outcome="stream_ok", is_stream=True, input_tokens=None, output_tokens=None, total_tokens=None),
    request(3, **BLOCKED, safety_flags=[("prompt", "violence", "high", True, None)]),
    request(4, outcome="stream_blocked_partial", is_stream=True, blocked=True, blocked_stage="completion"),
    request(5, outcome="error", status_code=429, error_type="rate_limit", is_stream=None),
    request(6, is_stream=None, input_tokens=None, output_tokens=None, total_tokens=None, safety_flags=[],
            logging_error_codes=["MAX_RESPONSE_SIZE_EXCEEDED"]),
    request(7, safety_flags=[("prompt", "jailbreak", None, False, False), flag("completion", "sexual", "low")]),
    request(8, input_tokens=3, output_tokens=None, total_tokens=40, safety_flags=None),
]
INVALID = [
    request(10, databricks_request_id=None),
    request(11, request_time=None),
    request(12, outcome=None),
    request(13, outcome="weird"),
    request(14, parser_version=None),
    request(15, source_table=None),
    request(16, status_code=99),
    request(17, status_code=600),
    request(18, execution_duration_ms=-1),
    request(19, input_tokens=-1, output_tokens=5, total_tokens=4),
    request(20, output_tokens=-2, total_tokens=8),
    request(21, input_tokens=None, total_tokens=-3),
    request(22, total_tokens=16),
    request(23, blocked=None),
    request(24, **{**BLOCKED, "blocked": False, "blocked_stage": None}),
    request(25, blocked=True, blocked_stage="prompt"),
    request(26, **{**BLOCKED, "blocked_stage": "output"}),
    request(27, **{**BLOCKED, "blocked_stage": None}),
    request(28, blocked_stage="prompt"),
    request(29, outcome="stream_ok", is_stream=None),
    request(30, outcome="stream_ok", is_stream=False),
    request(31, is_stream=True),
    request(32, outcome="error", status_code=500),
    request(33, safety_flags=[flag(None, "hate")]),
    request(34, safety_flags=[flag("response", "hate")]),
    request(35, safety_flags=[flag("prompt", "hatred")]),
    request(36, safety_flags=[flag("prompt", None)]),
    request(37, safety_flags=[flag("prompt", "violence", "critical")]),
    request(38, safety_flags=[None]),
    request(39, safety_flags=[flag("prompt", "hate"), flag("completion", "sexual", "extreme")]),
]
PACKAGED_IDS = [e["id"] for e in json.loads(SUITE_FILE.read_text())["expectations"]]


@pytest.fixture(scope="module")
def mixed_requests(spark):
    """The VALID and INVALID requests rows as one cached DataFrame, with their ``row_id``."""
    schema = StructType([*REQUESTS.fields, StructField("row_id", IntegerType(), nullable=False)])
    names = schema.fieldNames()
    df = spark.createDataFrame([tuple(r[n] for n in names) for r in VALID + INVALID], schema).cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def packaged_results(mixed_requests, gx_batch_for):
    """Both sides' flagged row ids for every packaged expectation, on a mixed requests DataFrame."""
    suite = load_suite()
    return gx_flagged(gx_batch_for(mixed_requests), suite), compiled_flagged(mixed_requests, suite)


class TestPackagedSuite:
    @pytest.mark.parametrize("expectation_id", PACKAGED_IDS)
    def test_expectation_flags_the_rows_gx_flags(self, expectation_id, packaged_results):
        """Each expectation of the packaged suite flags exactly the request rows GX flags, and some."""
        from_gx, from_contract = packaged_results
        assert from_gx[expectation_id], "no row breaks this expectation: the comparison would be vacuous"
        assert from_contract.get(expectation_id, set()) == from_gx[expectation_id]

    def test_valid_rows_pass_both_ways(self, packaged_results):
        """Rows of every outcome that follow the contract are flagged by neither side."""
        valid = {r["row_id"] for r in VALID}
        for flagged in packaged_results:
            assert valid.isdisjoint(set().union(*flagged.values()))

    def test_every_invalid_row_is_flagged(self, packaged_results):
        """Every row built to break the contract is flagged by the compiled contract."""
        _, from_contract = packaged_results
        assert {r["row_id"] for r in INVALID} <= set().union(*from_contract.values())


SAFETY_FLAG_CHECKS = {
    "size(array_except(safety_flags.stage, array('prompt', 'completion'))) > 0":
        "exists(safety_flags, f -> f.stage IS NULL OR f.stage NOT IN ('prompt', 'completion'))",
    "size(array_except(safety_flags.category, array({categories}))) > 0":
        "exists(safety_flags, f -> f.category IS NULL OR f.category NOT IN ({categories}))",
    "size(array_except(safety_flags.severity, array('safe', 'low', 'medium', 'high', NULL))) > 0":
        "exists(safety_flags, f -> f.severity IS NOT NULL AND f.severity NOT IN ('safe', 'low', 'medium', 'high'))",
}
"""The packaged suite's safety-flag conditions and the per-flag ``exists`` each stands for.

The suite uses ``array_except`` over the flags' fields, which Spark runs in
generated code; an ``exists`` lambda is interpreted row by row (three of
them were half the contract's cost on the 1M-row feed).
"""


class TestSafetyFlagConditions:
    @pytest.mark.parametrize("fast", list(SAFETY_FLAG_CHECKS), ids=["stage", "category", "severity"])
    def test_each_condition_flags_the_rows_its_exists_form_flags(self, fast, mixed_requests):
        """The suite's condition is in the suite, and flags exactly the rows of its per-flag ``exists`` form, and some."""
        from pyspark.sql import functions as F

        queries = [e["kwargs"].get("unexpected_rows_query", "") for e in json.loads(SUITE_FILE.read_text())["expectations"]]
        categories = next(re.search(r"\barray\(([^)]*)\)", q).group(1) for q in queries if "safety_flags.category" in q)
        condition, reference = fast.format(categories=categories), SAFETY_FLAG_CHECKS[fast].format(categories=categories)
        assert any(q.endswith(f"WHERE {condition}") for q in queries)

        def flagged(text: str) -> set[int]:
            return {r["row_id"] for r in mixed_requests.where(F.coalesce(F.expr(text), F.lit(False))).collect()}

        assert flagged(reference), "no row breaks it: the comparison would be vacuous"
        assert flagged(condition) == flagged(reference)
