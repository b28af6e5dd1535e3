"""The error line logged for a failure (no Spark)."""

from __future__ import annotations

from gatewatch.streams.logs import error_summary


def test_a_py4j_error_logs_the_java_exception_not_the_call():
    """The wrapper line naming the JVM call is skipped; the exception and its message are kept."""
    err = Exception(
        "An error occurred while calling o412.save.\n"
        ": io.delta.exceptions.ConcurrentAppendException: [DELTA_CONCURRENT_APPEND] Files were added\n"
        "\tat org.apache.spark.sql.delta.ConflictChecker.checkForAddedFiles(ConflictChecker.scala:1)\n"
    )
    assert error_summary(err) == (
        "io.delta.exceptions.ConcurrentAppendException: [DELTA_CONCURRENT_APPEND] Files were added"
    )


def test_a_plain_error_logs_its_first_line_cut_to_the_limit():
    """Any other error gives its first line, at most ``limit`` characters; an empty one its type."""
    assert error_summary(ValueError("x" * 500 + "\nmore"), 10) == "x" * 10
    assert error_summary(ValueError("")) == "ValueError"
