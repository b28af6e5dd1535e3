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
