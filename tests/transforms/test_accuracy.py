"""Parser accuracy against generated traffic whose ground truth is known, in each table schema.

3,000 rows of ``traffic.generate`` per schema (every endpoint behaviour,
malformed rows among them, a seed of its own so no schema sees another's
rows) are written in that schema's columns (the AI Gateway inference table,
the legacy payload table, the Unity AI Gateway inference table), mapped by
the source adapter (``streams.source.to_canonical``), and go through
``parse_inference_rows``, the quarantine contract and both views in one
plan; one collect brings back what landed where, and each test compares one
aspect of it with the generator's truth, per schema.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType

from gatewatch.quarantine.contract import compile_suite, load_suite, with_contract_results
from gatewatch.schemas import FAILED_EXPECTATION
from gatewatch.settings import SourceSettings
from gatewatch.streams.source import to_canonical
from gatewatch.traffic import generate as traffic
from gatewatch.traffic.generate import GeneratedRow, Truth, generate
from gatewatch.transforms.pipeline import parse_inference_rows, quarantine_view, requests_view

SEEDS = {"gateway": 20_240_917, "legacy": 20_240_918, "unity_gateway": 20_240_919}  # used by no other test
KINDS = tuple(SEEDS)
ROWS = 3_000
THRESHOLD = 0.98
COMMITTED = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
FIELDS = ("tokens", "blocked_stage", "categories", "model")
ENDPOINT = "chat-prod"  # the gateway and Unity tables do not name their endpoint: the config does


def source_table(kind: str) -> str:
    """The table name a schema's rows are read as (``source_table`` tells the schemas apart)."""
    return f"main.serving.generated_{kind}_payload"


def table_rows(spark, kind: str, generated: list[GeneratedRow]):
    """The rows in the schema of ``kind`` as one insert commit of its change feed, mapped by the source adapter."""
    df = traffic.frame(spark, generated, kind=kind).withColumns(
        {"_change_type": F.lit("insert"), "_commit_version": F.lit(1).cast("long"),
         "_commit_timestamp": F.lit(COMMITTED).cast("timestamp")}
    )
    return to_canonical(df, kind, SourceSettings(table=source_table(kind), endpoint=ENDPOINT))


def with_contract(parsed: DataFrame) -> DataFrame:
    """Rows with an outcome that fail the packaged contract are set aside as ``expectation_failed``."""
    checked = parsed.withColumns(
        {"source_commit_version": F.col("_commit_version"), "source_commit_timestamp": F.col("_commit_timestamp")}
    ).transform(with_contract_results(compile_suite(load_suite())))
    failed = F.col("outcome").isNotNull() & (F.size("failed_expectations") > 0)
    return checked.withColumns(
        {
            "failed_expectations": F.when(F.col("outcome").isNotNull(), F.col("failed_expectations")).otherwise(
                F.array().cast(ArrayType(FAILED_EXPECTATION))
            ),
            "quarantine_reason": F.when(failed, F.lit("expectation_failed")).otherwise(F.col("quarantine_reason")),
            "outcome": F.when(failed, F.lit(None).cast("string")).otherwise(F.col("outcome")),
        }
    )


def land(spark, generated: dict[str, list[GeneratedRow]]) -> dict[str, list[dict[str, Any]]]:
    """Every row of requests and quarantine after parsing each schema's rows, by schema (one collect)."""
    frames = [table_rows(spark, kind, rows) for kind, rows in generated.items()]
    source = frames[0]
    for frame in frames[1:]:
        source = source.unionByName(frame)
    parsed = source.transform(parse_inference_rows()).transform(with_contract).cache()
    try:
        filtered = F.filter("safety_flags", lambda f: F.coalesce(f["filtered"], F.lit(False)))
        requests = parsed.transform(requests_view()).select(
            "source_table",
            "databricks_request_id",
            F.lit("requests").alias("table"),
            "outcome",
            F.lit(None).cast("string").alias("reason"),
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "blocked_stage",
            F.array_sort(F.array_distinct(F.transform(filtered, lambda f: f["category"]))).alias("categories"),
            "model",
            "is_stream",
        )
        quarantine = parsed.transform(quarantine_view(COMMITTED)).select(
            "source_table",
            "databricks_request_id",
            F.lit("quarantine").alias("table"),
            F.lit(None).cast("string").alias("outcome"),
            "reason",
            *[F.lit(None).cast("bigint").alias(c) for c in ("input_tokens", "output_tokens", "total_tokens")],
            F.lit(None).cast("string").alias("blocked_stage"),
            F.lit(None).cast("array<string>").alias("categories"),
            F.lit(None).cast("string").alias("model"),
            F.lit(None).cast("boolean").alias("is_stream"),
        )
        landed: dict[str, list[dict[str, Any]]] = {kind: [] for kind in generated}
        by_table = {source_table(kind): kind for kind in generated}
        for r in requests.unionByName(quarantine).collect():
            landed[by_table[r["source_table"]]].append(r.asDict())
        return landed
    finally:
        parsed.unpersist()


@pytest.fixture(scope="module")
def results(spark) -> dict[str, tuple[list[GeneratedRow], list[dict[str, Any]]]]:
    """Per schema: the generated rows and where they landed."""
    generated = {kind: generate(ROWS, seed=seed) for kind, seed in SEEDS.items()}
    landed = land(spark, generated)
    return {kind: (generated[kind], landed[kind]) for kind in KINDS}


@pytest.fixture(params=KINDS)
def result(request, results) -> tuple[list[GeneratedRow], list[dict[str, Any]]]:
    """One schema's generated rows and where they landed."""
    return results[request.param]


def label(outcome: str | None, reason: str | None) -> str:
    """The outcome, or ``quarantine:<reason>``."""
    return outcome if outcome is not None else f"quarantine:{reason}"


def field_values(field: str, truth: Truth | None, got: dict[str, Any]) -> tuple[Any, Any]:
    """(expected, found) for one compared field."""
    if field == "tokens":
        return (
            (truth.input_tokens, truth.output_tokens, truth.total_tokens),
            (got["input_tokens"], got["output_tokens"], got["total_tokens"]),
        )
    if field == "categories":
        return tuple(truth.categories), tuple(got["categories"] or ())
    return getattr(truth, field), got[field]


def confusion(pairs: list[tuple[str, str]]) -> str:
    """A per-outcome summary: for each true label, what the parser gave and how often."""
    by_truth: dict[str, Counter[str]] = {}
    for expected, found in pairs:
        by_truth.setdefault(expected, Counter())[found] += 1
    lines = []
    for expected in sorted(by_truth):
        counts = by_truth[expected]
        total, right = sum(counts.values()), counts[expected]
        wrong = ", ".join(f"{k}={v}" for k, v in counts.most_common() if k != expected) or "-"
        lines.append(f"  {expected:<34} {right:>5}/{total:<5} wrong: {wrong}")
    return "\n".join(lines)


def by_id(landed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Landed rows by request id (ids are unique once the landing test passes)."""
    return {r["databricks_request_id"]: r for r in landed}


def test_every_row_lands_exactly_once(result):
    """In each schema, each generated row is in requests or quarantine, once, and nothing else is."""
    generated, landed = result
    ids = Counter(r["databricks_request_id"] for r in landed)
    assert len(landed) == ROWS, f"{len(landed)} rows landed for {ROWS} generated"
    assert set(ids) == {g.row["databricks_request_id"] for g in generated}
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1][:5]


def test_outcome_accuracy(result, request):
    """In each schema, at least 98% of rows get their true outcome, or their true quarantine reason."""
    generated, landed = result
    got = by_id(landed)
    pairs = []
    for g in generated:
        found = got.get(g.row["databricks_request_id"])
        pairs.append((label(g.truth.outcome, g.truth.quarantine_reason),
                      label(found["outcome"], found["reason"]) if found else "missing"))
    accuracy = sum(e == f for e, f in pairs) / len(pairs)
    print(f"accuracy {request.node.callspec.id} outcome {accuracy:.4f} over {len(pairs)} rows")  # shown with -s
    assert accuracy >= THRESHOLD, f"outcome accuracy {accuracy:.3f}\n{confusion(pairs)}"


@pytest.mark.parametrize("field", FIELDS)
def test_field_accuracy(result, field, request):
    """In each schema, at least 98% of rows with a true outcome that land in requests carry the true value of the field."""
    generated, landed = result
    got = by_id(landed)
    checked = [
        (g, got[g.row["databricks_request_id"]])
        for g in generated
        if g.truth.outcome is not None and got.get(g.row["databricks_request_id"], {}).get("table") == "requests"
    ]
    values = [(g, *field_values(field, g.truth, r)) for g, r in checked]
    wrong = [(g, expected, found) for g, expected, found in values if expected != found]
    accuracy = 1 - len(wrong) / len(checked)
    print(f"accuracy {request.node.callspec.id} {accuracy:.4f} over {len(checked)} rows")  # shown with -s
    by_scenario = Counter(g.truth.scenario for g, _, _ in wrong)
    examples = {}
    for g, expected, found in wrong:
        examples.setdefault(g.truth.scenario, f"expected {expected!r}, got {found!r}")
    detail = "\n".join(f"  {s:<28} {n:>4} e.g. {examples[s]}" for s, n in by_scenario.most_common())
    assert accuracy >= THRESHOLD, f"{field} accuracy {accuracy:.3f} over {len(checked)} rows\n{detail}"
