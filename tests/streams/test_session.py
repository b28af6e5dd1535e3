"""The local session is real Spark with the Delta connector."""

from __future__ import annotations

import os


class TestSession:
    def test_delta_table_round_trip(self, spark, tmp_path):
        """A DataFrame written as Delta reads back with its rows."""
        path = str(tmp_path / "t")
        spark.range(5).write.format("delta").save(path)
        assert spark.read.format("delta").load(path).count() == 5


    def test_timestamps_are_written_as_int64_microseconds_and_read_back_the_same(self, spark, tmp_path):
        """Local sessions write Parquet timestamps as INT64 microseconds, not INT96; Spark and delta-rs read the instant."""
        from datetime import datetime, timezone

        import pyarrow.parquet as pq
        from deltalake import DeltaTable

        at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
        spark.createDataFrame([(at,)], "at timestamp").coalesce(1).write.format("delta").save(str(tmp_path / "t"))
        (part,) = (tmp_path / "t").glob("*.parquet")
        column = pq.ParquetFile(part).schema.column(0)
        assert column.physical_type == "INT64" and "timeUnit=microseconds" in str(column.logical_type)
        assert spark.read.format("delta").load(str(tmp_path / "t")).first()[0] == at.replace(tzinfo=None)
        assert DeltaTable(str(tmp_path / "t")).to_pyarrow_table().column("at")[0].as_py() == at
        assert spark.conf.get("spark.sql.inMemoryColumnarStorage.compressed") == "false"


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


class TestClassArchive:
    def test_making_an_archive_keeps_it_and_the_newest_others_only(self, tmp_path):
        """Old archives of other installs and stale partial files go; the new one and the two newest others stay."""
        from gatewatch.streams.spark import prune_archives

        made = tmp_path / "classes-new.jsa"
        made.write_bytes(b"n")
        os.utime(made, (1, 1))  # the oldest by time: kept all the same
        others = []
        for age, name in enumerate(["a", "b", "c", "d"]):
            path = tmp_path / f"classes-{name}.jsa"
            path.write_bytes(b"x" * 10)
            os.utime(path, (2_000_000_000 - age * 1000, 2_000_000_000 - age * 1000))
            others.append(path)
        killed = tmp_path / "classes-z.jsa.41.partial"
        killed.write_bytes(b"p")
        os.utime(killed, (1000, 1000))
        running = tmp_path / "classes-y.jsa.42.partial"
        running.write_bytes(b"p")
        jars = tmp_path / "delta.jar"
        jars.write_bytes(b"j")
        deleted = prune_archives(made, keep=3)
        assert sorted(p.name for p in deleted) == ["classes-c.jsa", "classes-d.jsa", "classes-z.jsa.41.partial"]
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "classes-a.jsa", "classes-b.jsa", "classes-new.jsa", "classes-y.jsa.42.partial", "delta.jar"]

    def test_the_archive_is_added_to_the_users_java_options_and_only_when_on(self, monkeypatch, tmp_path):
        """The driver's JVM options keep the user's own and add the archive when there is one and it is wanted."""
        from gatewatch.settings import SparkSettings
        from gatewatch.streams import spark as S

        archive = tmp_path / "classes-x.jsa"
        monkeypatch.setattr(S, "class_archive", lambda: archive)
        user = {"spark.driver.extraJavaOptions": "-Dmine=1"}
        plain = {"parallel_gc": False, "jit_threshold_scaling": 1}
        assert S.java_options(SparkSettings(conf=user, **plain)) == "-Dmine=1"  # no archive made yet
        archive.write_bytes(b"x")
        assert S.java_options(SparkSettings(conf=user, **plain)) == (
            f"-Dmine=1 -XX:SharedArchiveFile={archive} {S.QUIET_CDS}")
        assert S.java_options(SparkSettings(**plain)) == f"-XX:SharedArchiveFile={archive} {S.QUIET_CDS}"
        assert S.java_options(SparkSettings(conf=user, class_archive=False, **plain)) == "-Dmine=1"
        assert S.java_options(SparkSettings(class_archive=False, **plain)) is None

    def test_the_parallel_collector_is_the_default_unless_the_user_picks_a_collector(self, monkeypatch, tmp_path):
        """``-XX:+UseParallelGC`` goes before the archive; a collector in the user's own options is kept alone."""
        from gatewatch.settings import SparkSettings
        from gatewatch.streams import spark as S

        monkeypatch.setattr(S, "class_archive", lambda: None)
        jit = {"jit_threshold_scaling": 1}
        assert S.java_options(SparkSettings(**jit)) == "-XX:+UseParallelGC"
        assert S.java_options(SparkSettings(conf={"spark.driver.extraJavaOptions": "-Dmine=1"}, **jit)) == (
            "-Dmine=1 -XX:+UseParallelGC")
        g1 = {"spark.driver.extraJavaOptions": "-XX:+UseG1GC -Dmine=1"}
        assert S.java_options(SparkSettings(conf=g1, **jit)) == "-XX:+UseG1GC -Dmine=1"  # two collectors would not start
        archive = tmp_path / "classes-x.jsa"
        archive.write_bytes(b"x")
        monkeypatch.setattr(S, "class_archive", lambda: archive)
        assert S.java_options(SparkSettings(**jit)) == (
            f"-XX:+UseParallelGC -XX:SharedArchiveFile={archive} {S.QUIET_CDS}")

    def test_the_jit_thresholds_are_scaled_unless_the_user_sets_them(self, monkeypatch):
        """``-XX:CompileThresholdScaling=4`` by default, the setting's value otherwise, none at 1 or when the user's own
        options set it."""
        from gatewatch.settings import SparkSettings
        from gatewatch.streams import spark as S

        monkeypatch.setattr(S, "class_archive", lambda: None)
        assert S.java_options(SparkSettings()) == "-XX:+UseParallelGC -XX:CompileThresholdScaling=4"
        assert S.java_options(SparkSettings(jit_threshold_scaling=0.5, parallel_gc=False)) == (
            "-XX:CompileThresholdScaling=0.5")
        assert S.java_options(SparkSettings(jit_threshold_scaling=1, parallel_gc=False)) is None
        own = {"spark.driver.extraJavaOptions": "-XX:CompileThresholdScaling=2"}
        assert S.java_options(SparkSettings(conf=own, parallel_gc=False)) == "-XX:CompileThresholdScaling=2"

    def test_the_archive_is_named_for_this_java_and_pyspark(self, monkeypatch, tmp_path):
        """Another Java runtime or PySpark install means another archive file, not a stale one; no Java, no archive."""
        from gatewatch.streams import spark as S

        first = S.class_archive()
        assert first is not None and first.parent == S.jars_dir() and first.suffix == ".jsa"
        java_home = tmp_path / "jdk"
        (java_home / "bin").mkdir(parents=True)
        (java_home / "bin" / "java").write_text("")
        monkeypatch.setenv("JAVA_HOME", str(java_home))
        other = S.class_archive()
        assert other is not None and other != first
        import pyspark

        fake = tmp_path / "pyspark"
        (fake / "jars").mkdir(parents=True)
        monkeypatch.setattr(pyspark, "__file__", str(fake / "__init__.py"))
        installed = S.class_archive()
        os.utime(fake / "jars", ns=(1, 1))  # PySpark installed again at the same place: new jar files
        assert S.class_archive() not in (installed, other)
        monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
        assert S.class_archive() is None

    def test_the_tests_session_started_from_the_archive_setup_made(self, spark):
        """`make test` runs `gatewatch setup` first: the shared session's JVM maps the archive it made."""
        from gatewatch.streams.spark import class_archive

        archive = class_archive()
        assert archive is not None and archive.exists(), "run `gatewatch setup` (make test does) to make the archive"
        jvm = spark.sparkContext._jvm
        arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
        assert f"-XX:SharedArchiveFile={archive}" in arguments
        assert "-XX:+UseParallelGC" in arguments  # and runs the parallel collector
