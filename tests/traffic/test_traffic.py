"""The traffic generator: deterministic rows of every shape, and tables made as Databricks makes them.

The generator tests need no Spark. The table tests share one module fixture
that creates a gateway table, a legacy table and a catalog table, writes to
them once, and reads back their properties and change feeds.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pyspark.sql import functions as F

from gatewatch.schemas import CANONICAL_INPUT, OUTCOMES, QUARANTINE_REASONS
from gatewatch.settings import SourceSettings
from gatewatch.traffic import generate as traffic
from gatewatch.streams.source import check_source, to_canonical
from gatewatch.traffic.shapes import GUARDRAIL_CATEGORIES, MALFORMED, SCENARIOS

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
PROPERTIES = ("delta.enableChangeDataFeed", "delta.enableDeletionVectors", "delta.enableRowTracking")
ENDPOINT = "agent-prod"
# Columns the schemas carry differently: the legacy table has no
# served_entity_id or requester, keeps request_metadata, and is its own table;
# the Unity AI Gateway table has no client_request_id, sampling_fraction or served_entity_id.
DIFFERENT_BY_SCHEMA = {"served_entity_id", "requester", "request_metadata", "source_table", "_commit_timestamp"}
NOT_IN_UNITY = {"client_request_id", "sampling_fraction", "served_entity_id", "request_metadata", "source_table",
                "_commit_timestamp"}
VOCABULARY = {"hate", "sexual", "violence", "self_harm", "jailbreak", "protected_material_text", "pii",
              "service_policy", *GUARDRAIL_CATEGORIES}
"""The safety categories the generator writes: Azure's, the guardrail's and the policy layer's."""


@pytest.fixture(scope="module")
def sample() -> list[traffic.GeneratedRow]:
    """2,000 rows over the three default endpoints."""
    return traffic.generate(2_000, seed=7)


class TestGenerate:
    def test_the_same_seed_gives_the_same_rows(self):
        """Two runs with one seed give identical rows and truth; another seed gives other rows."""
        assert traffic.generate(300, seed=11) == traffic.generate(300, seed=11)
        assert traffic.generate(300, seed=11) != traffic.generate(300, seed=12)

    def test_request_ids_are_unique_uuids_across_seeds(self):
        """Request ids look like UUIDs and do not repeat within or across seeds."""
        ids = [g.row["databricks_request_id"] for s in (1, 2) for g in traffic.generate(2_000, seed=s)]
        assert all(UUID4.match(i) for i in ids)
        assert len(set(ids)) == len(ids)

    def test_every_outcome_reason_and_shape_appears_in_2000_rows(self, sample):
        """A 2,000-row sample holds every outcome, every quarantine reason and every scenario."""
        assert {g.truth.outcome for g in sample} - {None} == set(OUTCOMES)
        assert {g.truth.quarantine_reason for g in sample} - {None} == set(QUARANTINE_REASONS)
        assert {g.truth.scenario for g in sample} == set(SCENARIOS)

    def test_rows_have_the_gateway_columns_and_consistent_times(self, sample):
        """Each row has exactly the gateway columns; times are UTC, in order, at millisecond precision."""
        names = [f.name for f in traffic.GATEWAY_SCHEMA.fields]
        times = [g.row["request_time"] for g in sample]
        for g in sample:
            assert list(g.row) == names
            t = g.row["request_time"]
            assert t.tzinfo is not None and t.microsecond % 1000 == 0
            assert g.row["request_date"] == t.date()
            assert isinstance(g.row["logging_error_codes"], list)
        assert times == sorted(times)

    def test_payloads_are_json_except_where_the_truth_says_not(self, sample):
        """Requests and responses parse as JSON, except in rows whose truth is a JSON parse error."""
        for g in sample:
            texts = [t for t in (g.row["request"], g.row["response"]) if t is not None]
            parses = []
            for text in texts:
                try:
                    json.loads(text)
                    parses.append(True)
                except ValueError:
                    parses.append(False)
            assert all(parses) == (g.truth.quarantine_reason != "json_parse_error"), g.truth.scenario

    def test_truth_is_consistent(self, sample):
        """Tokens add up (input only for embeddings), blocked rows have a stage, categories are the safety vocabulary."""
        vocabulary = VOCABULARY
        for g in sample:
            t = g.truth
            if t.total_tokens is not None:
                assert t.total_tokens == t.input_tokens + (t.output_tokens or 0)
                assert t.output_tokens is not None or t.scenario == "embeddings_ok"
            blocked = t.outcome in ("predict_blocked", "stream_blocked_immediate", "stream_blocked_partial")
            assert (t.blocked_stage is not None) == blocked, t.scenario
            assert set(t.categories) <= vocabulary and list(t.categories) == sorted(t.categories)
            assert (t.outcome is None) == (t.quarantine_reason is not None)

    def test_mix_and_malformed_rate_choose_the_shapes(self):
        """``mix`` replaces the profiles, ``malformed_rate`` draws from the malformed shapes only."""
        only = traffic.generate(200, seed=3, mix={"rate_limited": 1.0}, malformed_rate=0.0)
        assert {g.truth.scenario for g in only} == {"rate_limited"}
        broken = traffic.generate(200, seed=3, malformed_rate=1.0)
        assert {g.truth.scenario for g in broken} == set(MALFORMED)
        with pytest.raises(ValueError, match="unknown scenarios"):
            traffic.generate(1, mix={"no_such_shape": 1.0})

    def test_the_endpoint_picks_the_behaviour_and_is_recorded(self):
        """Rows of one endpoint carry its name in the truth and only shapes of its profile."""
        rows = traffic.generate(500, seed=5, endpoints=(ENDPOINT,), malformed_rate=0.0)
        assert {g.truth.endpoint for g in rows} == {ENDPOINT}
        assert {g.truth.scenario for g in rows} <= set(traffic.PROFILES[traffic.profile_of(ENDPOINT)])
        assert traffic.profile_of("chat-prod") == "azure_chat"
        assert traffic.profile_of("billing-agent") == "agent"
        assert traffic.profile_of("llama-canary") == "foundation"

    def test_a_spike_is_mostly_blocked_and_dense(self):
        """A spike on one endpoint is ~80% blocked calls within a few minutes."""
        rows = traffic.spike(500, endpoint="chat-prod", seed=9, start=datetime(2026, 5, 1, 8, 0))
        blocked = sum(g.truth.blocked_stage is not None for g in rows) / len(rows)
        assert 0.72 <= blocked <= 0.88
        assert {g.truth.endpoint for g in rows} == {"chat-prod"}
        span = rows[-1].row["request_time"] - rows[0].row["request_time"]
        assert rows[0].row["request_time"] >= datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc)
        assert span < timedelta(minutes=5)

    def test_a_databricks_spike_is_blocked_by_guardrails_and_policies(self):
        """``layer='databricks'`` blocks ~80% of a spike with guardrail and service-policy shapes only."""
        rows = traffic.spike(500, endpoint="chat-canary", seed=9, layer="databricks")
        blocked = [g for g in rows if g.truth.blocked_stage is not None]
        assert 0.72 <= len(blocked) / len(rows) <= 0.88
        assert {g.truth.scenario.split("_")[0] for g in blocked} == {"guardrail", "policy"}
        with pytest.raises(ValueError, match="layer must be"):
            traffic.spike(5, endpoint="chat-prod", seed=1, layer="azure")

    def test_unity_rows_carry_the_id_time_and_latency_under_their_names(self, sample):
        """``to_unity_gateway`` keeps each row's values under the Unity AI Gateway column names."""
        unity = traffic.to_unity_gateway(sample[:50])
        for g, row in zip(sample[:50], unity):
            assert list(row) == [f.name for f in traffic.UNITY_GATEWAY_SCHEMA.fields]
            assert (row["request_id"], row["event_time"], row["latency_ms"]) == (
                g.row["databricks_request_id"], g.row["request_time"], g.row["execution_duration_ms"])
            assert (row["request"], row["response"], row["status_code"]) == (
                g.row["request"], g.row["response"], g.row["status_code"])

    def test_legacy_rows_carry_the_model_and_endpoint_in_request_metadata(self, sample):
        """``to_legacy`` keeps each row's values under the legacy column names."""
        legacy = traffic.to_legacy(sample[:50])
        for g, row in zip(sample[:50], legacy):
            assert list(row) == [f.name for f in traffic.LEGACY_SCHEMA.fields]
            assert row["request_metadata"]["endpoint_name"] == g.truth.endpoint
            assert set(row["request_metadata"]) == {"model_name", "model_version", "endpoint_name"}
            assert row["timestamp_ms"] == round(g.row["request_time"].timestamp() * 1000)
            assert (row["response"], row["execution_time_ms"]) == (g.row["response"], g.row["execution_duration_ms"])


@pytest.fixture(scope="module")
def written(spark, tmp_path_factory) -> dict[str, Any]:
    """A gateway, a legacy, a Unity AI Gateway and a catalog table, written once; their properties and change feeds."""
    root = tmp_path_factory.mktemp("traffic")
    rows = traffic.generate(300, seed=31, endpoints=(ENDPOINT,))
    paths = {"gateway": str(root / "gateway"), "legacy": str(root / "legacy"), "unity_gateway": str(root / "unity")}
    spark.sql(f"CREATE DATABASE IF NOT EXISTS traffic_test LOCATION '{root / 'db'}'")
    try:
        traffic.create_inference_table(spark, paths["gateway"])
        traffic.create_inference_table(spark, paths["legacy"], kind="legacy")
        traffic.create_inference_table(spark, paths["unity_gateway"], kind="unity_gateway")
        traffic.create_inference_table(spark, "traffic_test.gateway")
        traffic.create_inference_table(spark, paths["gateway"])  # a second create is a no-op
        traffic.write_rows(spark, paths["gateway"], rows)
        traffic.write_rows(spark, paths["legacy"], traffic.to_legacy(rows), kind="legacy")
        traffic.write_rows(spark, paths["unity_gateway"], rows, kind="unity_gateway")
        traffic.write_rows(spark, "traffic_test.gateway", rows[:20])
        identifiers = {**{k: f"delta.`{p}`" for k, p in paths.items()}, "catalog": "traffic_test.gateway"}
        details = [spark.sql(f"DESCRIBE DETAIL {i}").select(F.lit(t).alias("t"), "properties")
                   for t, i in identifiers.items()]
        union = details[0]
        for d in details[1:]:
            union = union.unionByName(d)
        properties = {r["t"]: r["properties"] for r in union.collect()}
        sources = {k: check_source(spark, SourceSettings(table=p, endpoint=ENDPOINT)) for k, p in paths.items()}
        feeds = [
            spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0).load(path)
            .transform(lambda df, s=sources[kind]: to_canonical(df, s.kind, s.settings))
            .withColumn("kind", F.lit(kind))
            for kind, path in paths.items()
        ]
        canonical = [r.asDict() for r in feeds[0].unionByName(feeds[1]).unionByName(feeds[2]).collect()]
    finally:
        spark.sql("DROP DATABASE IF EXISTS traffic_test CASCADE")
    return {"rows": rows, "properties": properties, "kinds": {k: s.kind for k, s in sources.items()},
            "canonical": canonical}


class TestTables:
    def test_tables_have_change_feed_deletion_vectors_and_row_tracking(self, written):
        """Path and catalog tables are created with the three properties Databricks sets."""
        for table, props in written["properties"].items():
            assert {p: props.get(p) for p in PROPERTIES} == dict.fromkeys(PROPERTIES, "true"), table

    def test_the_source_adapter_recognises_the_three_schemas(self, written):
        """The gateway table reads as ``gateway``, the legacy as ``legacy``, the Unity AI Gateway one as ``unity_gateway``."""
        assert written["kinds"] == {"gateway": "gateway", "legacy": "legacy", "unity_gateway": "unity_gateway"}

    def test_each_row_is_written_once_in_one_commit(self, written):
        """Every generated row is one insert of commit 1 in each table."""
        ids = [g.row["databricks_request_id"] for g in written["rows"]]
        for kind in ("gateway", "legacy", "unity_gateway"):
            feed = [r for r in written["canonical"] if r["kind"] == kind]
            assert Counter(r["databricks_request_id"] for r in feed) == Counter(ids)
            assert {(r["_change_type"], r["_commit_version"]) for r in feed} == {("insert", 1)}

    def test_legacy_rows_read_back_as_the_same_canonical_rows(self, written):
        """Through the adapter, the legacy copy equals the gateway rows in every shared column."""
        by_kind: dict[str, dict[str, dict[str, Any]]] = {"gateway": {}, "legacy": {}, "unity_gateway": {}}
        for r in written["canonical"]:
            by_kind[r["kind"]][r["databricks_request_id"]] = r
        shared = [f.name for f in CANONICAL_INPUT.fields if f.name not in DIFFERENT_BY_SCHEMA]
        for rid, gateway in by_kind["gateway"].items():
            legacy = by_kind["legacy"][rid]
            assert {c: legacy[c] for c in shared} == {c: gateway[c] for c in shared}, rid
            assert gateway["endpoint"] == ENDPOINT
            meta = legacy["request_metadata"]
            assert legacy["served_entity_id"] == f"{meta['model_name']}/{meta['model_version']}"


def test_unity_rows_read_back_as_the_same_canonical_rows(written):
    """Through the adapter, the Unity AI Gateway copy equals the gateway rows in every column it carries."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {"gateway": {}, "unity_gateway": {}}
    for r in written["canonical"]:
        if r["kind"] in by_kind:
            by_kind[r["kind"]][r["databricks_request_id"]] = r
    shared = [f.name for f in CANONICAL_INPUT.fields if f.name not in NOT_IN_UNITY]
    assert len(by_kind["unity_gateway"]) == len(by_kind["gateway"]) > 0
    for rid, gateway in by_kind["gateway"].items():
        unity = by_kind["unity_gateway"][rid]
        assert {c: unity[c] for c in shared} == {c: gateway[c] for c in shared}, rid
