"""The local session is real Spark with the Delta connector."""

from __future__ import annotations


class TestSession:
    def test_delta_table_round_trip(self, spark, tmp_path):
        """A DataFrame written as Delta reads back with its rows."""
        path = str(tmp_path / "t")
        spark.range(5).write.format("delta").save(path)
        assert spark.read.format("delta").load(path).count() == 5
