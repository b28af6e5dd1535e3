"""The output tables gatewatch creates: their Delta properties, and tables created by an earlier version."""

from __future__ import annotations

from pyspark.sql.types import StructType

from gatewatch.schemas import REQUESTS
from gatewatch.settings import OutputSettings, Settings
from gatewatch.streams import outputs as out


def _properties(spark, table: out.Table) -> dict:
    return spark.sql(f"DESCRIBE DETAIL {table.sql_name}").first()["properties"]


def test_new_tables_carry_compaction_retention_and_requests_keeps_a_change_feed(spark, tmp_path):
    """Every output gets auto compaction, checkpoint interval and retentions; requests also a change feed."""
    settings = Settings(output=OutputSettings(location=str(tmp_path / "out"), checkpoint_interval=20))
    tables = out.prepare_outputs(spark, settings)
    for role, table in tables.items():
        props = _properties(spark, table)
        assert props["delta.autoOptimize.autoCompact"] == "true", role
        assert props["delta.checkpointInterval"] == "20", role
        assert props["delta.logRetentionDuration"] == "interval 7 days", role
        assert props["delta.deletedFileRetentionDuration"] == "interval 1 day", role
    assert _properties(spark, tables["requests"])["delta.enableChangeDataFeed"] == "true"
    assert "delta.enableChangeDataFeed" not in _properties(spark, tables["quarantine"])


def test_requests_keeps_statistics_of_the_columns_readers_filter_by(spark, tmp_path):
    """A requests file's statistics cover the listed columns (time, endpoint, id...), not its error messages or
    tokens."""
    import json

    settings = Settings(output=OutputSettings(location=str(tmp_path / "out")))
    tables = out.prepare_outputs(spark, settings)
    assert _properties(spark, tables["requests"])["delta.dataSkippingStatsColumns"] == ",".join(
        out.REQUESTS_STATS_COLUMNS)
    assert "delta.dataSkippingStatsColumns" not in _properties(spark, tables["quarantine"])
    row = {f.name: None for f in REQUESTS.fields} | {"databricks_request_id": "r1", "endpoint": "chat",
                                                     "error_message": "boom", "total_tokens": 7}
    spark.createDataFrame([row], REQUESTS).write.format("delta").mode("append").save(tables["requests"].ref)
    (path,) = (tmp_path / "out" / "requests" / "_delta_log").glob("*1.json")
    add = next(json.loads(line)["add"] for line in path.read_text().splitlines() if '"add"' in line)
    stats = json.loads(add["stats"])
    assert stats["minValues"]["databricks_request_id"] == "r1" and stats["minValues"]["endpoint"] == "chat"
    assert "error_message" not in stats["nullCount"] and "total_tokens" not in stats["nullCount"]


def test_a_requests_table_of_an_earlier_version_gains_the_new_columns_and_properties(spark, tmp_path):
    """A requests table without today's last column and properties gets both at start, its rows kept."""
    old = StructType(REQUESTS.fields[:-1])
    path = tmp_path / "out" / "requests"
    spark.createDataFrame([], old).write.format("delta").save(str(path))
    spark.sql(f"INSERT INTO delta.`{path}` (databricks_request_id) VALUES ('kept')")
    tables = out.prepare_outputs(spark, Settings(output=OutputSettings(location=str(tmp_path / "out"))))
    requests = tables["requests"].read(spark)
    assert requests.columns == REQUESTS.fieldNames()
    assert [r[0] for r in requests.select("databricks_request_id").collect()] == ["kept"]
    assert _properties(spark, tables["requests"])["delta.autoOptimize.autoCompact"] == "true"


def _commits(path) -> list[dict]:
    """Each commit of the table at ``path``: its actions by kind (``commitInfo``, ``txn``, ``add``, ...)."""
    import json

    commits = []
    for f in sorted((path / "_delta_log").glob("*.json")):
        actions: dict = {}
        for line in f.read_text().splitlines():
            (kind, body), = json.loads(line).items()
            actions.setdefault(kind, []).append(body)
        commits.append(actions)
    return commits


def _appended(spark, path) -> list[int]:
    return sorted(r[0] for r in spark.read.format("delta").load(str(path)).collect())


def test_an_append_is_written_once_per_batch_and_only_a_batch_that_may_repeat_is_looked_up(spark, tmp_path, monkeypatch):
    """Batches 0..5 land once each; a batch re-run in the process, or after a restart, is skipped.

    Every commit records (app id, batch id) in ``userMetadata``; only the
    first append of a process to a table it did not create, and re-runs,
    carry Delta's ``txn`` (their lookup); other new batches are appended
    without one.
    """
    from pyspark.sql.types import LongType, StructField, StructType

    path = tmp_path / "t"
    target = out.Table(ref=str(path), is_path=True)
    monkeypatch.setattr(out, "_newest", {})
    monkeypatch.setattr(out, "_created", set())
    assert out.ensure_table(spark, target, StructType([StructField("batch", LongType())])) is True
    app = out.new_app_id("sink")

    def batch(b: int):
        return spark.range(1).selectExpr(f"CAST({b} AS BIGINT) AS batch")

    def new_process():  # it knows no batch and created no table: its first batch may be a re-run
        monkeypatch.setattr(out, "_newest", {})
        monkeypatch.setattr(out, "_created", set())

    assert [out.append(batch(b), target, app, b) for b in range(4)] == [True] * 4  # a table created here: no lookup
    assert out.append(batch(3), target, app, 3) is False  # re-run in this process
    new_process()
    assert out.append(batch(2), target, app, 2) is False  # a restored older checkpoint: newer batches written
    assert out.append(batch(3), target, app, 3) is False
    assert out.append(batch(4), target, app, 4) is True
    new_process()
    assert out.append(batch(5), target, app, 5) is True  # the first append of a process: looked up
    assert _appended(spark, path) == [0, 1, 2, 3, 4, 5]

    appends = [c for c in _commits(path) if "add" in c]
    markers = [out.read_marker(c["commitInfo"][0].get("userMetadata")) for c in appends]
    assert markers == [(app, b) for b in range(6)]
    assert [bool(c.get("txn")) for c in appends] == [False, False, False, False, False, True]


def test_a_batch_written_by_delta_txn_alone_is_skipped_by_the_first_lookup(spark, tmp_path, monkeypatch):
    """A table written by an earlier release (``txnAppId``/``txnVersion``, no marker): its re-run batch lands once."""
    from pyspark.sql.types import LongType, StructField, StructType

    path = tmp_path / "t"
    target = out.Table(ref=str(path), is_path=True)
    out.ensure_table(spark, target, StructType([StructField("batch", LongType())]))
    app = "gatewatch-sink-8e050cc3-6600-475b-924b-5e0e60646f47"  # an id of an earlier release
    rows = spark.range(1).selectExpr("CAST(7 AS BIGINT) AS batch")
    rows.write.format("delta").mode("append").option("txnAppId", app).option("txnVersion", "7").save(str(path))
    monkeypatch.setattr(out, "_newest", {})  # a new process
    monkeypatch.setattr(out, "_created", set())
    out.append(rows, target, app, 7)
    assert _appended(spark, path) == [7]
    assert out.append(spark.range(1).selectExpr("CAST(8 AS BIGINT) AS batch"), target, app, 8) is True
    assert _appended(spark, path) == [7, 8]


def test_the_lookup_of_a_new_app_stops_at_its_creation_time(spark, tmp_path, monkeypatch):
    """An app id carries its creation time: its first lookup reads no commit made before it, page after page."""
    from pyspark.sql.types import LongType, StructField, StructType

    path = tmp_path / "t"
    target = out.Table(ref=str(path), is_path=True)
    out.ensure_table(spark, target, StructType([StructField("batch", LongType())]))
    old = "gatewatch-sink-1600000000000-005efb86-e987-45af-8044-a7f0b37275af"
    assert out.app_started_us(old) == 1_600_000_000_000_000
    assert out.app_started_us("gatewatch-sink-8e050cc3-6600-475b-924b-5e0e60646f47") is None
    for b in range(3):
        out.append(spark.range(1).selectExpr(f"CAST({b} AS BIGINT) AS batch"), target, "other-app", b)
    pages = []
    real = out.delta_sql.history
    monkeypatch.setattr(out, "HISTORY_PAGES", (1, 2, None))
    monkeypatch.setattr(out.delta_sql, "history", lambda s, n, limit: pages.append(limit) or real(s, n, limit))
    assert out.newest_written(spark, target, out.new_app_id("sink")) is None
    assert pages == [1, 2, None]  # every commit is younger than the skew allowance: read to the end
    pages.clear()
    monkeypatch.setattr(out, "CLOCK_SKEW_S", -3600)  # as if the app were created an hour from now
    assert out.newest_written(spark, target, out.new_app_id("sink")) is None
    assert pages == [1]
