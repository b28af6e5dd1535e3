"""Live progress on a terminal: the plan read from a source's history, and the bars the job's metrics move."""

from __future__ import annotations

import io

from rich.console import Console

from gatewatch.cli.progress import RunProgress, SourcePlan, change_rows, live_run, plan_source
from gatewatch.settings import OutputSettings, Settings, SourceSettings, TriggerSettings
from gatewatch.traffic import generate as traffic


def test_the_plan_counts_each_commits_rows_from_where_the_run_starts(spark, tmp_path) -> None:
    """A table of three appends plans all their rows from the start, and only the later ones after a resume."""
    table = tmp_path / "chat"
    traffic.create_inference_table(spark, str(table))
    sizes = (30, 50, 20)
    for i, n in enumerate(sizes):
        traffic.write_rows(spark, str(table), [g.row for g in traffic.generate(n, seed=i)])
    source = SourceSettings(table=str(table), endpoint="chat-prod")
    whole = plan_source(spark, source, None)
    assert (whole.start, whole.latest) == (0, 3)
    assert whole.total_rows == sum(sizes)
    assert whole.cumulative[-3:] == [30, 80, 100]
    assert whole.version_at(79) == 1 and whole.version_at(80) == 2
    resumed = plan_source(spark, source, 2)
    assert (resumed.versions, resumed.total_rows) == ([3], 20)
    latest = plan_source(spark, SourceSettings(table=str(table), starting_version="latest"), None)
    assert latest.versions == [] and latest.total_rows == 0


def test_change_rows_reads_the_operation_metrics_delta_records() -> None:
    """Appends count their output rows; a MERGE counts inserts, updates twice (pre- and post-image) and deletes."""
    assert change_rows("WRITE", {"numOutputRows": "400"}) == 400
    assert change_rows("MERGE", {"numTargetRowsInserted": "5", "numTargetRowsUpdated": "3",
                                 "numTargetRowsDeleted": "1"}) == 12
    assert change_rows("CREATE TABLE", {}) == 0


def test_the_bars_show_versions_rows_and_rate_as_batches_land() -> None:
    """Each batch's rows (skipped change types too) move its source's bar; the versions shown follow the rows."""
    plan = SourcePlan("chat", start=1, latest=3, versions=[1, 2, 3], cumulative=[100, 250, 300])
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    with RunProgress([plan], console=console) as display:
        display({"source": "chat", "rows": 90, "skipped_change_types": {"delete": 10}})
        display({"source": "chat", "rows": 150})
        display({"source": "other", "rows": 999})
        console.print(display.progress)
    text = out.getvalue()
    assert display.rows == {"chat": 250}
    assert "250/300" in text and "v1..2 of 3" in text and "rows/s" in text


def test_a_batch_of_several_sources_moves_each_sources_bar_by_its_own_rows() -> None:
    """A query reading two tables reports each one's rows under ``sources``: each bar moves by its own."""
    plans = [SourcePlan("chat", start=1, latest=1, versions=[1], cumulative=[100]),
             SourcePlan("support", start=1, latest=1, versions=[1], cumulative=[60])]
    console = Console(file=io.StringIO(), force_terminal=True, width=160, color_system=None)
    with RunProgress(plans, console=console) as display:
        display({"source": "sources", "rows": 70,
                 "sources": {"chat": {"rows": 40, "skipped": 5}, "support": {"rows": 25, "skipped": 0}}})
    assert display.rows == {"chat": 45, "support": 25}


def test_no_display_off_a_terminal_or_on_a_continuous_run(tmp_path) -> None:
    """A pipe, or a processing-time run, gets no bars: the job keeps its JSON lines."""
    settings = Settings(sources=(SourceSettings(table=str(tmp_path / "t")),),
                        output=OutputSettings(location=str(tmp_path / "o")), checkpoint_root=str(tmp_path / "c"),
                        trigger=TriggerSettings(mode="available_now"))
    with live_run(None, settings, stream=io.StringIO()) as on_metrics:
        assert on_metrics is None
    continuous = settings.model_copy(update={"trigger": TriggerSettings(mode="processing_time")})

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    with live_run(None, continuous, stream=Tty()) as on_metrics:
        assert on_metrics is None


def test_replays_bar_counts_the_spark_tasks_of_its_steps(spark) -> None:
    """The task bar sees the stages a Spark job runs and ends with all their tasks done."""
    from gatewatch.cli.progress import SparkTasks

    out = io.StringIO()
    with SparkTasks(spark, "replay", console=Console(file=out, force_terminal=True, width=120), poll_s=0.01) as bar:
        # Slow enough for the tracker to see its stage: 4 tasks, each sleeping a moment per row.
        spark.range(0, 40, 1, 4).rdd.map(lambda x: __import__("time").sleep(0.05) or x).count()
    assert bar.total_tasks >= 4 and bar.done_tasks == bar.total_tasks
    assert "replay" in out.getvalue()
