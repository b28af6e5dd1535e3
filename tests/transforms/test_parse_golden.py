"""The per-row parse gives, row for row, the output recorded before its speed-ups.

``tests/fixtures/parse_golden.jsonl.gz`` holds one JSON line per row: its
input (``request``, ``response``, ``status_code``, ``logging_error_codes``)
and the ``parse_values`` output the code gave before the parse was made
faster (every payload fixture in ``tests/fixtures/payloads``, then 1,500
rows of ``traffic.generate(1500, seed=20)``). The inputs are kept in the
file, so the check does not depend on the traffic generator staying the same.
A change meant to alter the parse's output regenerates the file on purpose.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson

import gatewatch.transforms.parsers  # noqa: F401  (registers the built-in parsers)
from gatewatch.transforms.rows import parse_values

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "parse_golden.jsonl.gz"
_INPUT = ("request", "response", "status_code", "logging_error_codes")


def _golden() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in gzip.decompress(GOLDEN.read_bytes()).splitlines()]


def test_parse_output_equals_the_golden_rows():
    """Every golden row's parse gives exactly its recorded columns and values."""
    golden = _golden()
    out = parse_values(*([g["input"][k] for g in golden] for k in _INPUT))
    names = sorted(out)
    assert len(golden) > 1500 and {g["output"]["outcome"] for g in golden} >= {"predict_ok", "stream_ok", "error"}
    for i, g in enumerate(golden):
        got = orjson.loads(orjson.dumps({k: out[k][i] for k in names if k != "_flagged"}))
        assert got == g["output"], g["input"]["name"]


def test_the_flag_count_is_that_of_the_golden_rows_flags():
    """``_flagged`` (added after the golden rows were recorded) counts each row's filtered or detected flags."""
    golden = _golden()
    out = parse_values(*([g["input"][k] for g in golden] for k in _INPUT))
    expected = [sum(1 for f in g["output"]["safety_flags"] or () if f["filtered"] or f["detected"]) for g in golden]
    assert out["_flagged"] == expected and sum(expected) > 100 and max(expected) > 1


def _spark_parse(spark, golden: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The golden inputs parsed by ``with_parsed_rows`` in Spark, one dict per row in input order."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, IntegerType, LongType, StringType, StructField, StructType

    from gatewatch.transforms.registry import OUTCOME_PARSERS
    from gatewatch.transforms.rows import PARSE_OUTPUT, with_parsed_rows

    schema = StructType([StructField("i", LongType()), StructField("request", StringType()),
                         StructField("response", StringType()), StructField("status_code", IntegerType()),
                         StructField("logging_error_codes", ArrayType(StringType()))])
    df = spark.createDataFrame([(i, *(g["input"][k] for k in _INPUT)) for i, g in enumerate(golden)], schema)
    parsed = df.transform(with_parsed_rows("golden", dict(OUTCOME_PARSERS)))
    assert parsed.columns == [*df.columns, *(f.name for f in PARSE_OUTPUT.fields)]
    rows = parsed.orderBy(F.col("i")).collect()
    return [r.asDict(recursive=True) for r in rows]


def test_the_arrow_udf_and_map_in_arrow_parses_give_the_same_rows(spark, monkeypatch):
    """Spark's two ways of running the parse (Arrow UDF; ``mapInArrow`` on Spark before 4.1) agree row for row."""
    from gatewatch.transforms import rows as R

    golden = _golden()
    assert R.arrow_udf_supported(spark), "this Spark runs Arrow UDFs: the test compares the two paths"
    by_udf = _spark_parse(spark, golden)
    monkeypatch.setattr(R, "arrow_udf_supported", lambda session: False)
    by_map = _spark_parse(spark, golden)
    assert len(by_udf) == len(golden)
    assert by_udf == by_map
    assert [r["outcome"] for r in by_udf] == [g["output"]["outcome"] for g in golden]
    assert [r["request"] for r in by_udf] == [g["input"]["request"] for g in golden]
