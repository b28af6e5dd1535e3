"""Source lag, the progress line, the status file and ``gatewatch status``, without Spark."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from gatewatch.cli.main import main
from gatewatch.cli.tables import format_status
from gatewatch.streams.observe import (
    Observer,
    lag,
    processed_version,
    progress_fields,
    read_status,
    status_path,
)
from gatewatch.streams.recovery import damaged_file

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _offset(version: int, index: int = -1) -> str:
    return json.dumps({"sourceVersion": 1, "reservoirId": "r", "reservoirVersion": version, "index": index,
                       "isStartingVersion": False})


def _progress(batch_id: int, end_version: int, rows: int = 5, query_id: str = "q-1") -> dict:
    return {"id": query_id, "batchId": batch_id, "numInputRows": rows, "processedRowsPerSecond": 2.5,
            "batchDuration": 2000, "sources": [{"endOffset": _offset(end_version)}]}


class TestLag:
    def test_an_offset_before_a_version_has_read_the_one_before(self):
        """Delta's end offset names the next version to read: the one before it is processed."""
        assert processed_version(_offset(4)) == 3

    def test_an_offset_at_the_end_of_a_version_has_read_it(self):
        """An index near Long.MaxValue marks the version as read to its end."""
        assert processed_version(_offset(4, 9223372036854775707)) == 4

    def test_no_offset_gives_no_version(self):
        """Before the first batch there is no end offset."""
        assert processed_version("null") is None and processed_version(None) is None

    def test_caught_up_is_zero(self):
        """With every version processed the lag is 0 versions and 0 seconds."""
        assert lag(7, (7, T0), {}, T0 + timedelta(hours=1))["versions"] == 0
        assert lag(7, (7, T0), {}, T0 + timedelta(hours=1))["seconds"] == 0.0

    def test_behind_counts_from_the_oldest_waiting_commit_when_seen(self):
        """The seconds are the age of the first version not processed when its commit time was seen."""
        got = lag(5, (7, T0 + timedelta(seconds=50)), {6: T0}, T0 + timedelta(seconds=90))
        assert (got["versions"], got["seconds"], got["latest_version"]) == (2, 90.0, 7)

    def test_behind_falls_back_to_the_latest_commit(self):
        """Without the waiting commit's time, the latest commit's age is the (lower) figure."""
        got = lag(5, (7, T0), {}, T0 + timedelta(seconds=30))
        assert (got["versions"], got["seconds"]) == (2, 30.0)

    def test_progress_fields(self):
        """The progress line reads the query id, batch, rows, rate, duration and the processed version."""
        assert progress_fields(_progress(3, 9)) == {
            "query_id": "q-1", "batch_id": 3, "input_rows": 5, "processed_rows_per_s": 2.5,
            "batch_duration_ms": 2000, "processed_version": 8,
        }

    def test_progress_fields_carry_sparks_steps_of_the_trigger(self):
        """Spark's own step durations come along (the trigger's total is batch_duration_ms already)."""
        progress = {**_progress(3, 9), "durationMs": {"triggerExecution": 2000, "latestOffset": 40, "addBatch": 1900}}
        assert progress_fields(progress)["spark_ms"] == {"latestOffset": 40, "addBatch": 1900}


def _observer(tmp_path, latest=(9, T0)):
    table = SimpleNamespace(name="/tables/chat", settings=SimpleNamespace(source_name="chat"))
    obs = Observer(str(tmp_path / "ckpt"), [table], lambda t: latest, clock=lambda: T0 + timedelta(seconds=10))
    obs.attach("chat", SimpleNamespace(id="q-1"))
    return obs


class TestObserver:
    def test_progress_merges_the_batch_metrics_and_writes_the_status_file(self, tmp_path):
        """A progress event carries the lag and the batch's own metrics; the status file holds both."""
        obs = _observer(tmp_path)
        obs.on_metrics({"source": "chat", "batch_id": 0, "rows": 5, "requests": 4, "quarantined": 1})
        line = obs.on_progress(_progress(0, 8))
        assert line["lag_versions"] == 2 and line["lag_s"] == 10.0
        assert (line["requests"], line["quarantined"], line["source"]) == (4, 1, "chat")
        status = read_status(str(tmp_path / "ckpt"))
        chat = status["sources"]["chat"]
        assert (chat["state"], chat["query_id"], chat["last_batch_id"], chat["lag"]["versions"]) == (
            "running", "q-1", 0, 2)
        assert not list((tmp_path / "ckpt").glob(".status-*")), "the temporary file is replaced, not left"

    def test_a_batch_reported_twice_is_logged_once(self, tmp_path):
        """The job's final progress and the listener's may both arrive: the second and older ones are ignored."""
        obs = _observer(tmp_path)
        assert obs.on_progress(_progress(1, 9)) is not None
        assert obs.on_progress(_progress(1, 9)) is None
        assert obs.on_progress(_progress(0, 8)) is None

    def test_other_queries_are_ignored(self, tmp_path):
        """Progress of a query the job did not start is not the job's."""
        assert _observer(tmp_path).on_progress(_progress(0, 8, query_id="someone-else")) is None

    def test_a_failed_source_shows_its_error(self, tmp_path):
        """``finish`` records the state and the one-line error; the text view lists it under the table."""
        obs = _observer(tmp_path)
        obs.finish("chat", "failed", "source '/tables/chat' was dropped and recreated")
        text = format_status(read_status(str(tmp_path / "ckpt")))
        assert "failed" in text and "chat: source '/tables/chat' was dropped and recreated" in text


class TestStatusCommand:
    def test_no_status_yet_is_one_line(self, tmp_path, capsys):
        """Before any run the command says so in one line and exits 1."""
        code = main(["status", "--checkpoint-root", str(tmp_path / "none")])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 1 and len(err) == 1 and err[0].startswith("No status yet")

    def test_json_prints_the_status_file(self, tmp_path, capsys):
        """``--json`` prints the file as it is; a failed source makes the exit code 1."""
        obs = _observer(tmp_path)
        obs.finish("chat", "failed", "boom")
        code = main(["status", "--checkpoint", str(tmp_path / "ckpt"), "--json"])
        assert code == 1
        assert json.loads(capsys.readouterr().out)["sources"]["chat"]["error"] == "boom"
        assert status_path(str(tmp_path / "ckpt")).exists()


class TestDamagedCheckpoint:
    @pytest.fixture
    def checkpoint(self, tmp_path):
        folder = tmp_path / "chat"
        (folder / "offsets").mkdir(parents=True)
        (folder / "commits").mkdir()
        (folder / "metadata").write_text('{"id":"q"}\n')
        (folder / "offsets" / "0").write_text('v1\n{"batchWatermarkMs":0}\n' + _offset(2) + "\n")
        (folder / "commits" / "0").write_text('v1\n{"nextBatchWatermarkMs":0}\n')
        return folder

    def test_a_sound_checkpoint_has_nothing_damaged(self, checkpoint):
        """Parsable metadata, offsets and commits: nothing to report."""
        assert damaged_file(str(checkpoint)) is None

    @pytest.mark.parametrize("text", ["", "v1\n{\"batchWatermarkMs\":0", "\x00\x00garbage"])
    def test_a_truncated_latest_offsets_file_is_named(self, checkpoint, text):
        """An empty, cut or garbled latest offsets file is named relative to the checkpoint."""
        (checkpoint / "offsets" / "1").write_text(text)
        assert damaged_file(str(checkpoint)) == "offsets/1"


class TestStatusPath:
    @pytest.mark.parametrize(
        ("root", "path"),
        [("checkpoints", "checkpoints/_status.json"), ("file:/tmp/c", "/tmp/c/_status.json"),
         ("/Volumes/main/gw/ckpt", "/Volumes/main/gw/ckpt/_status.json"),
         ("dbfs:/gatewatch/ckpt", "/dbfs/gatewatch/ckpt/_status.json"), ("s3://bucket/ckpt", None)],
    )
    def test_local_and_mounted_roots_only(self, root, path):
        """The status file sits in local or mounted folders; an object-store root has none."""
        got = status_path(root)
        assert (None if got is None else str(got)) == path
