"""The row-level compiler of each supported Great Expectations type.

Each function returns a Column that is TRUE when a row fails, built the way
GX 1.x builds its own Spark condition for the type (its ``_spark`` metric
partials), so that the two agree row for row, nulls included:

- single-column map types skip a null value (GX filters ``column IS NOT
  NULL`` first), except ``..._to_be_null`` / ``..._to_not_be_null``;
- column-pair types drop rows by ``ignore_row_if`` (default
  ``both_values_are_missing``); a comparison with a null that is left is
  null, which GX does not count as unexpected (``a_to_be_greater_than_b``),
  while ``pair_values_to_be_equal`` compares null-safely;
- multicolumn types drop rows by ``ignore_row_if`` (default
  ``all_values_are_missing``); ``multicolumn_sum_to_equal`` counts a missing
  value as 0, as GX does;
- ``unexpected_rows_expectation``: the rows its query selects fail (see
  ``compiler.where_predicate`` for the one query form supported).

``tests/spark/test_contract_differential.py`` runs GX itself next to every
function here and checks that they flag the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import reduce
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

from gatewatch.errors import UnsupportedExpectationError
from gatewatch.quarantine.compiler import register, sql_condition, where_predicate

Kwargs = Mapping[str, Any]


def _column_map(kwargs: Kwargs, expected: Callable[[Column], Column], *, skip_null: bool = True) -> Column:
    column = F.col(kwargs["column"])
    unexpected = ~expected(column)
    return column.isNotNull() & unexpected if skip_null else unexpected


def _bounds(value: Column, kwargs: Kwargs) -> Column:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is None and high is None:
        raise UnsupportedExpectationError("sets neither min_value nor max_value.")
    if low is not None and high is not None and low > high:
        raise UnsupportedExpectationError(f"sets min_value {low} above max_value {high}.")
    checks = []
    if low is not None:
        checks.append(value > F.lit(low) if kwargs.get("strict_min") else value >= F.lit(low))
    if high is not None:
        checks.append(value < F.lit(high) if kwargs.get("strict_max") else value <= F.lit(high))
    return reduce(lambda a, b: a & b, checks)


@register("expect_column_values_to_not_be_null")
def not_null(kwargs: Kwargs) -> Column:
    """Fails a null value."""
    return _column_map(kwargs, lambda c: c.isNotNull(), skip_null=False)


@register("expect_column_values_to_be_null")
def null(kwargs: Kwargs) -> Column:
    """Fails a value that is not null."""
    return _column_map(kwargs, lambda c: c.isNull(), skip_null=False)


@register("expect_column_values_to_be_in_set")
def in_set(kwargs: Kwargs) -> Column:
    """Fails a non-null value outside ``value_set`` (no set: nothing fails, as in GX)."""
    values = kwargs.get("value_set")
    if values is None:
        return _column_map(kwargs, lambda c: F.lit(True))
    return _column_map(kwargs, lambda c: c.isin(list(values)))


@register("expect_column_values_to_not_be_in_set")
def not_in_set(kwargs: Kwargs) -> Column:
    """Fails a non-null value inside ``value_set``."""
    values = kwargs.get("value_set")
    if values is None:
        raise UnsupportedExpectationError("has no value_set.")
    return _column_map(kwargs, lambda c: ~c.isin(list(values)))


@register("expect_column_values_to_be_between")
def between(kwargs: Kwargs) -> Column:
    """Fails a non-null value outside the bounds (inclusive unless ``strict_min``/``strict_max``)."""
    return _column_map(kwargs, lambda c: _bounds(c, kwargs))


@register("expect_column_value_lengths_to_be_between")
def lengths_between(kwargs: Kwargs) -> Column:
    """Fails a non-null value whose length is outside the bounds."""
    for name in ("min_value", "max_value"):
        value = kwargs.get(name)
        if value is not None and not float(value).is_integer():
            raise UnsupportedExpectationError(f"sets {name} {value}, which is not a whole number.")
    return _column_map(kwargs, lambda c: _bounds(F.length(c), kwargs))


@register("expect_column_values_to_match_regex")
def match_regex(kwargs: Kwargs) -> Column:
    """Fails a non-null value in which ``regex`` finds no match (Java regex, anywhere in the string)."""
    return _column_map(kwargs, lambda c: c.rlike(kwargs["regex"]))


@register("expect_column_values_to_not_match_regex")
def not_match_regex(kwargs: Kwargs) -> Column:
    """Fails a non-null value in which ``regex`` finds a match."""
    return _column_map(kwargs, lambda c: ~c.rlike(kwargs["regex"]))


def _column_pair(kwargs: Kwargs, expected: Callable[[Column, Column], Column]) -> Column:
    a, b = F.col(kwargs["column_A"]), F.col(kwargs["column_B"])
    ignore_row_if = kwargs.get("ignore_row_if") or "both_values_are_missing"
    ignored = {
        "both_values_are_missing": a.isNull() & b.isNull(),
        "either_value_is_missing": a.isNull() | b.isNull(),
        "neither": F.lit(False),
    }.get(ignore_row_if)
    if ignored is None:
        raise UnsupportedExpectationError(f"sets ignore_row_if to '{ignore_row_if}', which GX does not know.")
    return ~ignored & ~expected(a, b)


@register("expect_column_pair_values_to_be_equal")
def pair_equal(kwargs: Kwargs) -> Column:
    """Fails a row whose two values differ (null equals null; one null differs)."""
    return _column_pair(kwargs, lambda a, b: a.eqNullSafe(b))


@register("expect_column_pair_values_a_to_be_greater_than_b")
def pair_greater(kwargs: Kwargs) -> Column:
    """Fails a row where A is not greater than B (or equal, with ``or_equal``); a null compares as a pass."""
    if kwargs.get("or_equal"):
        return _column_pair(kwargs, lambda a, b: (a >= b) | a.eqNullSafe(b))
    return _column_pair(kwargs, lambda a, b: a > b)


def _multicolumn(kwargs: Kwargs, unexpected: Callable[[list[Column]], Column]) -> Column:
    names = list(kwargs.get("column_list") or [])
    if len(names) < 2:
        raise UnsupportedExpectationError("needs at least two columns in column_list.")
    columns = [F.col(n) for n in names]
    ignore_row_if = kwargs.get("ignore_row_if") or "all_values_are_missing"
    missing = [c.isNull() for c in columns]
    ignored = {
        "all_values_are_missing": reduce(lambda a, b: a & b, missing),
        "any_value_is_missing": reduce(lambda a, b: a | b, missing),
        "never": F.lit(False),
    }.get(ignore_row_if)
    if ignored is None:
        raise UnsupportedExpectationError(f"sets ignore_row_if to '{ignore_row_if}', which GX does not know.")
    return ~ignored & unexpected(columns)


@register("expect_multicolumn_sum_to_equal")
def multicolumn_sum(kwargs: Kwargs) -> Column:
    """Fails a row whose values, a missing one counted as 0, do not add up to ``sum_total``.

    The sum is taken with ``try_add`` so it cannot overflow into an error; a
    sum too large for its type (null) fails, as GX's exact DECIMAL sum of such
    values cannot equal any ``sum_total`` that fits a long.
    """
    total = kwargs.get("sum_total")
    if total is None:
        raise UnsupportedExpectationError("has no sum_total.")

    def unexpected(columns: list[Column]) -> Column:
        summed = reduce(F.try_add, [F.coalesce(c, F.lit(0)) for c in columns])
        return F.coalesce(summed != F.lit(total), F.lit(True))

    return _multicolumn(kwargs, unexpected)


@register("expect_select_column_values_to_be_unique_within_record")
def unique_within_record(kwargs: Kwargs) -> Column:
    """Fails a row in which two of the columns hold the same value (two nulls count as the same)."""

    def unexpected(columns: list[Column]) -> Column:
        pairs = [a.eqNullSafe(b) for i, a in enumerate(columns) for b in columns[i + 1 :]]
        return reduce(lambda a, b: a | b, pairs)

    return _multicolumn(kwargs, unexpected)


@register("unexpected_rows_expectation")
def unexpected_rows(kwargs: Kwargs) -> Column:
    """Fails the rows ``SELECT * FROM {batch} WHERE <condition>`` would return."""
    return sql_condition(where_predicate(kwargs["unexpected_rows_query"]))
