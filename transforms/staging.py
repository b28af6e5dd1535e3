"""Transforms as fixed steps whose column expressions are built once.

Building column expressions is a fixed cost of every micro-batch: every
``F.*`` call is a round trip to the JVM, and the contract alone has hundreds
of them. The expressions name columns and never depend on the DataFrame they
are applied to, so a ``Steps`` transform builds them on first use and applies
the same ones to every batch. ``key`` says when they must be rebuilt (a
shape parser registered since, another Spark gateway).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar, Union

from pyspark.sql import Column, DataFrame


@dataclass(frozen=True)
class WithColumns:
    """Add or replace columns (one projection)."""

    columns: dict[str, Column]


@dataclass(frozen=True)
class Drop:
    """Drop helper columns."""

    names: tuple[str, ...]


Step = Union[WithColumns, Drop]
T = TypeVar("T")


def with_columns(columns: dict[str, Column]) -> WithColumns:
    return WithColumns(columns)


def drop(*names: str) -> Drop:
    return Drop(tuple(names))


def gateway_key() -> Hashable:
    """Which Spark gateway the expressions belong to (None under Spark Connect)."""
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    return None if sc is None else id(sc._gateway)


class Steps:
    """A ``DataFrame -> DataFrame`` transform made of steps built once per ``key``.

    ``build`` returns the steps; it is called again only when ``key()``
    changes. Calling the object applies the steps in order.
    """

    def __init__(
        self, build: Callable[[], Sequence[Step]], key: Callable[[], Hashable] = gateway_key, doc: str | None = None
    ) -> None:
        self.__doc__ = doc or build.__doc__
        self.steps: Callable[[], tuple[Step, ...]] = built_once(lambda: tuple(build()), key=key)
        """The steps, built now if the key changed since they were last built."""

    def __call__(self, df: DataFrame) -> DataFrame:
        for step in self.steps():
            if isinstance(step, WithColumns):
                df = df.withColumns(step.columns)
            else:
                df = df.drop(*step.names)
        return df


def built_once(build: Callable[[], T], key: Callable[[], Hashable] = gateway_key) -> Callable[[], T]:
    """``build()``'s result, built on the first call and again only when ``key()`` changes.

    For column expressions a transform applies to every batch: building them
    is a round trip to the JVM per ``F.*`` call, applying built ones is not.
    The default key is the Spark gateway, so another session's JVM gets
    expressions of its own.
    """
    built: list[tuple[Hashable, T]] = []
    lock = threading.Lock()

    def get() -> T:
        now = key()
        with lock:
            if not built or built[0][0] != now:
                built[:] = [(now, build())]
            return built[0][1]

    get.__doc__ = build.__doc__
    return get
