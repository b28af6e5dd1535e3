"""A user's mistake gets one line naming the problem and the fix, and an exit code; no stack trace."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gatewatch.cli.main import main
from gatewatch.traffic.generate import create_inference_table


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gatewatch.cli.main", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120,
    )


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("trigger.mode=sometimes", "trigger.mode"),
        ("spark.shuffle_partitions=zero", "spark.shuffle_partitions"),
        ("output.colour=blue", "output.colour"),
        ("sources.0.starting_version=yesterday", "sources.0.starting_version"),
    ],
)
def test_bad_config_names_the_key(setting, named, tmp_path):
    run = _cli("run", "--source", str(tmp_path / "t"), "--output", str(tmp_path / "o"), "--set", setting)
    assert run.returncode == 2
    line = _one_line(run.stderr)
    assert line.startswith("gatewatch: error:") and named in line


def test_missing_java_says_so_with_the_fix(tmp_path):
    env = {"PATH": "/nonexistent", "JAVA_HOME": str(tmp_path / "no-java")}
    run = _cli("run", "--source", str(tmp_path / "t"), "--output", str(tmp_path / "o"), env=env)
    line = _one_line(run.stderr)
    assert run.returncode != 0 and "Java" in line and "JAVA_HOME" in line


def test_missing_jars_say_so_with_the_fix(tmp_path):
    run = _cli("run", "--source", str(tmp_path / "t"), "--output", str(tmp_path / "o"),
               env={"GATEWATCH_JARS_DIR": str(tmp_path / "empty")})
    line = _one_line(run.stderr)
    assert run.returncode != 0 and "gatewatch setup" in line and "GATEWATCH_JARS_DIR" in line


def _errors(capsys) -> str:
    return "\n".join(line for line in capsys.readouterr().err.splitlines() if line.startswith("gatewatch:"))


def test_missing_source_is_named(spark, tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    code = main(["run", "--available-now", "--source", missing, "--output", str(tmp_path / "o"),
                 "--checkpoint", str(tmp_path / "c")])
    line = _one_line(_errors(capsys))
    assert code != 0 and missing in line and "not found" in line.lower()


def test_a_table_of_another_schema_is_refused_with_its_missing_columns(spark, tmp_path, capsys):
    other = str(tmp_path / "other")
    spark.sql(f"CREATE TABLE delta.`{other}` (id STRING, payload STRING) USING delta "
              "TBLPROPERTIES ('delta.enableChangeDataFeed'='true')")
    code = main(["run", "--available-now", "--source", other, "--output", str(tmp_path / "o"),
                 "--checkpoint", str(tmp_path / "c")])
    line = _one_line(_errors(capsys))
    assert code != 0 and other in line
    for column in ("databricks_request_id", "request_time", "status_code", "response"):
        assert column in line


def test_a_table_without_change_feed_is_refused(spark, tmp_path, capsys):
    table = str(tmp_path / "no_cdf")
    create_inference_table(spark, table)
    spark.sql(f"ALTER TABLE delta.`{table}` SET TBLPROPERTIES ('delta.enableChangeDataFeed'='false')")
    code = main(["run", "--available-now", "--source", table, "--output", str(tmp_path / "o"),
                 "--checkpoint", str(tmp_path / "c")])
    line = _one_line(_errors(capsys))
    assert code != 0 and "enableChangeDataFeed" in line
    spark.sql(line.split("Fix: ", 1)[1].rstrip("."))  # the fix, as given, is SQL that turns the feed on
    assert main(["run", "--available-now", "--source", table, "--output", str(tmp_path / "o"),
                 "--checkpoint", str(tmp_path / "c")]) == 0


@pytest.mark.parametrize("where", ["source", "output"])
def test_a_unity_catalog_name_on_local_spark_says_so_with_the_fix(spark, tmp_path, capsys, where):
    """``main.default.x`` is a Unity Catalog name: local Spark has no catalog ``main``; one line says to give a path."""
    source = str(tmp_path / "chat")
    create_inference_table(spark, source)
    args = {"source": source, "output": str(tmp_path / "o")}
    args[where] = {"source": "main.default.chat_payload", "output": "main.default"}[where]
    code = main(["run", "--available-now", "--source", args["source"], "--output", args["output"],
                 "--checkpoint", str(tmp_path / "c")])
    line = _one_line(_errors(capsys))
    assert code == 2 and "catalog 'main'" in line and args[where] in line and "give a path" in line
