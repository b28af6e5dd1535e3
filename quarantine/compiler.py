"""The expectation compiler: Great Expectations configurations to Spark ``Column`` predicates.

Every supported expectation type registers, with ``@register(type)``, a
function that takes the expectation's keyword arguments and returns a
boolean ``Column`` that is TRUE when a row FAILS it, with the null
semantics Great Expectations applies on Spark (see ``expectation_types``).
``compile_expectation`` adds what every type shares:

- ``row_condition``: a row outside the condition passes, as GX filters such
  rows out of the domain. The Condition objects of GX 1.x (comparison,
  nullity, and, or) are compiled to Columns; a pass-through condition (the
  Spark SQL string of ``condition_parser: "spark"``) is parsed by Spark as a
  row-level expression.
- a null predicate counts as a pass, as GX keeps only rows whose unexpected
  condition is TRUE.
- refusals, each with a message naming the expectation: an unregistered
  type; ``mostly`` below 1 (a fraction of a batch cannot be decided one row at
  a time); suite parameters (``$PARAMETER``); a severity other than
  ``critical`` (every expectation of the contract quarantines); ``windows``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import reduce
from string import Formatter
from typing import Any

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from gatewatch.errors import UnsupportedExpectationError
from gatewatch.streams.logs import quiet_spark_errors

FailPredicate = Callable[[Mapping[str, Any]], Column]
"""``(kwargs) -> Column``: TRUE when a row fails the expectation."""

COMPILERS: dict[str, FailPredicate] = {}

_SUBQUERY_OR_WINDOW = re.compile(r"\b(SELECT|OVER)\b", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`")


def register(expectation_type: str) -> Callable[[FailPredicate], FailPredicate]:
    """Register ``fn`` as the row-level compiler of one GX expectation type."""

    def deco(fn: FailPredicate) -> FailPredicate:
        COMPILERS[expectation_type] = fn
        return fn

    return deco


def supported_types() -> tuple[str, ...]:
    """The expectation types the compiler can check row by row, sorted."""
    return tuple(sorted(COMPILERS))


def label(expectation_id: str | None, expectation_type: str) -> str:
    """How messages name an expectation: ``expectation <id> (<type>)``."""
    return f"expectation {expectation_id or '<no id>'} ({expectation_type})"


def unsupported(
    expectation_id: str | None, expectation_type: str, why: str, fix: str | None = None
) -> UnsupportedExpectationError:
    """The error refusing one expectation of the suite, its message naming it."""
    return UnsupportedExpectationError(f"{label(expectation_id, expectation_type)} {why}", fix=fix)


def compile_expectation(expectation_id: str | None, expectation_type: str, kwargs: Mapping[str, Any]) -> Column:
    """The fail predicate of one expectation, never null.

    Args:
        expectation_id: the expectation's id (for messages).
        expectation_type: the GX type, e.g. ``expect_column_values_to_be_between``.
        kwargs: the expectation's fields, defaults filled in (as GX's model holds them).

    Raises:
        UnsupportedExpectationError: the expectation cannot be checked one row at a time.
    """
    fn = COMPILERS.get(expectation_type)
    if fn is None:
        raise unsupported(
            expectation_id,
            expectation_type,
            "is not a type the row-level compiler supports; supported types: " + ", ".join(supported_types()) + ".",
        )
    _check_common(expectation_id, expectation_type, kwargs)
    try:
        fail = F.coalesce(fn(kwargs), F.lit(False))
    except UnsupportedExpectationError as err:
        raise unsupported(expectation_id, expectation_type, err.message, err.fix) from err
    condition = kwargs.get("row_condition")
    if not condition:
        return fail
    try:
        in_domain = condition_column(condition)
    except UnsupportedExpectationError as err:
        raise unsupported(expectation_id, expectation_type, f"has a row_condition that {err.message}", err.fix) from err
    return F.coalesce(in_domain, F.lit(False)) & fail


def _check_common(expectation_id: str | None, expectation_type: str, kwargs: Mapping[str, Any]) -> None:
    mostly = kwargs.get("mostly")
    if mostly is not None and mostly < 1:
        raise unsupported(
            expectation_id,
            expectation_type,
            f"sets mostly={mostly}: a fraction of a batch cannot be decided one row at a time.",
            fix="remove `mostly` (every row must pass) or check this expectation on batches outside the contract.",
        )
    for name, value in kwargs.items():
        if isinstance(value, dict) and "$PARAMETER" in value:
            raise unsupported(
                expectation_id,
                expectation_type,
                f"takes '{name}' from a suite parameter ({value['$PARAMETER']}); the contract has no run parameters.",
                fix=f"write the value of '{name}' into the suite.",
            )
    severity = getattr(kwargs.get("severity"), "value", kwargs.get("severity"))
    if severity not in (None, "critical"):
        raise unsupported(
            expectation_id,
            expectation_type,
            f"has severity '{severity}': every expectation of the contract sends failing rows to quarantine.",
            fix="set its severity to 'critical' or remove it from the contract suite.",
        )
    if kwargs.get("windows"):
        raise unsupported(expectation_id, expectation_type, "uses windows, which compare batches, not rows.")


def condition_column(condition: Any) -> Column:
    """A GX 1.x row condition as a Column (TRUE for rows inside the expectation's domain).

    Raises:
        UnsupportedExpectationError: a condition of an unknown kind or an unusable Spark SQL string.
    """
    from great_expectations.expectations.row_conditions import (
        AndCondition,
        ComparisonCondition,
        NullityCondition,
        Operator,
        OrCondition,
        PassThroughCondition,
        deserialize_row_condition,
    )

    if isinstance(condition, (str, dict)):
        condition = deserialize_row_condition(condition)
        if isinstance(condition, str):
            condition = PassThroughCondition(pass_through_filter=condition)
    if isinstance(condition, PassThroughCondition):
        return sql_condition(condition.pass_through_filter)
    if isinstance(condition, NullityCondition):
        column = F.col(condition.column.name)
        return column.isNull() if condition.is_null else column.isNotNull()
    if isinstance(condition, ComparisonCondition):
        column, value = F.col(condition.column.name), condition.parameter
        op = Operator(condition.operator)
        if op in (Operator.IN, Operator.NOT_IN):
            inside = column.isin(list(value))
            return inside if op == Operator.IN else ~inside
        compare: dict[Operator, Callable[[Column, Column], Column]] = {
            Operator.EQUAL: lambda a, b: a == b,
            Operator.NOT_EQUAL: lambda a, b: a != b,
            Operator.LESS_THAN: lambda a, b: a < b,
            Operator.LESS_THAN_OR_EQUAL: lambda a, b: a <= b,
            Operator.GREATER_THAN: lambda a, b: a > b,
            Operator.GREATER_THAN_OR_EQUAL: lambda a, b: a >= b,
        }
        return compare[op](column, F.lit(value))
    if isinstance(condition, (AndCondition, OrCondition)):
        parts = [condition_column(c) for c in condition.conditions]
        join = (lambda a, b: a & b) if isinstance(condition, AndCondition) else (lambda a, b: a | b)
        return reduce(join, parts)
    raise UnsupportedExpectationError(f"is of an unknown kind ({type(condition).__name__}).")


def sql_condition(text: str) -> Column:
    """A Spark SQL boolean expression over one row, parsed now.

    Subqueries (``SELECT``) and window functions (``OVER``) are refused: they
    would look beyond the row. Aggregates are refused by Spark itself when the
    predicate is projected next to the row's columns.

    Raises:
        UnsupportedExpectationError: the text is not a row-level Spark SQL expression.
    """
    found = _SUBQUERY_OR_WINDOW.search(_QUOTED.sub("''", text))
    if found:
        raise UnsupportedExpectationError(
            f"uses {found.group(1).upper()} in '{text}': only conditions over one row's columns can be checked."
        )
    condition = F.expr(text)
    session = SparkSession.getActiveSession()
    if session is not None:
        try:  # parse now (F.expr parses lazily); the columns are resolved later, on the real rows
            with quiet_spark_errors():
                session.range(0).select(condition).schema  # noqa: B018 - analysis parses the text
        except ParseException as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UnsupportedExpectationError(f"does not parse as a Spark SQL condition: '{text}' ({first}).") from err
        except AnalysisException:  # it parsed: its columns are not those of ``range``
            pass
    return condition


_UNEXPECTED_ROWS = re.compile(
    r"^\s*SELECT\s+\*\s+FROM\s+\{batch\}\s+WHERE\s+(?P<predicate>.+?)[\s;]*$",
    re.IGNORECASE | re.DOTALL,
)


def where_predicate(query: str) -> str:
    """The WHERE condition of an ``unexpected_rows_query`` of the one supported form.

    The form is ``SELECT * FROM {batch} WHERE <condition over one row>``:
    the rows it selects are the rows that fail. Doubled braces are literal
    braces, as in GX's own substitution.

    Raises:
        UnsupportedExpectationError: the query has another form.
    """
    found = _UNEXPECTED_ROWS.match(query)
    if not found:
        raise UnsupportedExpectationError(
            f"has the query '{query}', which is not of the form 'SELECT * FROM {{batch}} WHERE <condition>'.",
            fix="write the failing rows' condition after WHERE, over the columns of one row.",
        )
    pieces = list(Formatter().parse(found.group("predicate")))
    fields = [name for _, name, _, _ in pieces if name is not None]
    if fields:
        raise UnsupportedExpectationError(f"uses the placeholder {{{fields[0]}}} after WHERE; only {{batch}} is known.")
    return "".join(text for text, _, _, _ in pieces)
