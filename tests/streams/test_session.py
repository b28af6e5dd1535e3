"""The local session is real Spark with the Delta connector."""

from __future__ import annotations


class TestSession:
    def test_delta_table_round_trip(self, spark, tmp_path):
        """A DataFrame written as Delta reads back with its rows."""
        path = str(tmp_path / "t")
        spark.range(5).write.format("delta").save(path)
        assert spark.read.format("delta").load(path).count() == 5


class _Writer:
    """A stream writer whose first ``start`` calls fail with ``errors`` (what a Spark Connect server answers)."""

    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        self.calls = 0

    def start(self) -> str:
        self.calls += 1
        if self.errors:
            raise RuntimeError(self.errors.pop(0))
        return "query"


class TestStartWriter:
    def test_a_python_worker_slow_to_connect_back_is_tried_again(self):
        """The server's fixed 10 s wait for a foreachBatch worker ran out twice: the third start is the query."""
        from gatewatch.streams.spark import WORKER_SLOW_TO_START, start_writer

        writer = _Writer(f"[STREAM_FAILED] {WORKER_SLOW_TO_START}", WORKER_SLOW_TO_START)
        assert start_writer(writer, "chat") == "query"
        assert writer.calls == 3

    def test_any_other_refusal_and_a_third_timeout_are_raised(self):
        """Only the worker's slow start is tried again, and only so often."""
        import pytest

        from gatewatch.streams.spark import START_ATTEMPTS, WORKER_SLOW_TO_START, start_writer

        other = _Writer("DIFFERENT_DELTA_TABLE_READ_BY_STREAMING_SOURCE")
        with pytest.raises(RuntimeError, match="DIFFERENT_DELTA_TABLE"):
            start_writer(other, "chat")
        assert other.calls == 1
        slow = _Writer(*[WORKER_SLOW_TO_START] * START_ATTEMPTS)
        with pytest.raises(RuntimeError, match="connect back"):
            start_writer(slow, "chat")
        assert slow.calls == START_ATTEMPTS
