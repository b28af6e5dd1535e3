"""Logging set-up: structlog, JSON lines for jobs, readable lines on a terminal."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import structlog


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is when a line is logged (it may be replaced later)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    """Configure structlog once for the process.

    Args:
        fmt: ``json``, ``console`` or ``auto`` (console on a terminal, else JSON).
        level: the minimum level to emit.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )


PYSPARK_ERROR_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")
"""PySpark logs every SQL error it raises, with the server's stack trace, on these loggers."""


@contextlib.contextmanager
def quiet_spark_errors() -> Iterator[None]:
    """Around an analysis that is expected to fail (gatewatch names the error itself): PySpark logs nothing."""
    loggers = [logging.getLogger(name) for name in PYSPARK_ERROR_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


_WRAPPER_LINES = ("An error occurred while calling", "Traceback (most recent call last)")


def error_summary(err: BaseException, limit: int = 300) -> str:
    """The line of an error that says what went wrong, for a log field.

    A Py4J error's first line only names the JVM call (``An error occurred
    while calling o123.save.``); the exception and its message follow on
    the next line (``: io.delta.exceptions.ConcurrentAppendException: ...``).
    The first line that is neither such a wrapper nor a stack frame is kept.
    """
    for line in str(err).splitlines():
        text = line.strip().lstrip(":").strip()
        if text and not text.startswith(_WRAPPER_LINES) and not text.startswith("at "):
            return text[:limit]
    return type(err).__name__
