"""The parser registry: one parser per outcome, registered by decorator.

An outcome parser is a function of one ``fields.Row`` returning that row's
parsed requests columns (``dict`` of name to value). The classifier
(``transforms.outcome``) routes; ``parse_row`` runs the parser of the row's
outcome, inside the Arrow parse of ``transforms.rows``, so each payload is
parsed once. ``rows.parse_with(outcome)`` gives each parser module its
``parse(df) -> DataFrame`` for use on its own. This module imports no
parser: importing ``transforms.parsers`` registers the built-ins.

A user adds a parser for a shape of their own with ``register_shape`` (see
the README) without editing gatewatch: its ``matches`` and columns are
Spark column expressions over the helper columns ``_req``, ``_resp``
(VARIANT) and ``_chunks`` (``array<variant>``), applied by
``dispatch_shapes`` to the rows the classifier left as ``unknown_shape``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gatewatch.errors import ParserRegistrationError
from gatewatch.schemas import OUTCOMES, PARSED_COLUMNS, REQUESTS
from gatewatch.transforms import staging as S
from gatewatch.transforms import variant as V
from gatewatch.transforms.events import is_flagged

RowFn = Callable[[Any], dict[str, Any]]
ColumnsFn = Callable[[], dict[str, Column]]
MatchFn = Callable[[], Column]

_TYPES = {f.name: f.dataType for f in REQUESTS.fields}


@dataclass(frozen=True)
class Parser:
    """A registered parser: what it handles, its version and its columns."""

    name: str
    version: str
    columns: Callable[..., dict[str, Any]]
    outcome: str | None = None
    matches: MatchFn | None = None

    @functools.cached_property
    def label(self) -> str:
        """``name@version``, recorded on every row it produces (made once: it is read for every row)."""
        return f"{self.name}@{self.version}"


OUTCOME_PARSERS: dict[str, Parser] = {}
SHAPE_PARSERS: dict[str, Parser] = {}


def register(outcome: str, *, version: str) -> Callable[[RowFn], RowFn]:
    """Register ``columns(row)`` as the parser for one outcome of the taxonomy."""
    if outcome not in OUTCOMES:
        raise ParserRegistrationError(f"'{outcome}' is not an outcome; known: {', '.join(OUTCOMES)}.")

    def deco(fn: RowFn) -> RowFn:
        OUTCOME_PARSERS[outcome] = Parser(name=outcome, version=version, columns=fn, outcome=outcome)
        return fn

    return deco


def register_shape(name: str, *, version: str, matches: MatchFn) -> Callable[[ColumnsFn], ColumnsFn]:
    """Register a parser for a response shape the built-in classifier does not know.

    ``matches()`` returns a boolean Column over the helper columns (``_resp``,
    ``_req``, ``_chunks``) that claims rows otherwise quarantined as
    ``unknown_shape``. The parser's columns must include ``outcome``, one of
    the known outcomes; a row it leaves without one stays quarantined.
    """
    if name in OUTCOMES:
        raise ParserRegistrationError(f"'{name}' is a built-in outcome; give the shape parser its own name.")

    def deco(fn: ColumnsFn) -> ColumnsFn:
        SHAPE_PARSERS[name] = Parser(name=name, version=version, columns=fn, matches=matches)
        return fn

    return deco


def unregister_shape(name: str) -> None:
    """Remove a shape parser (tests and replays of a parser change use this)."""
    SHAPE_PARSERS.pop(name, None)


def parser_version_tag() -> str:
    """All registered parsers and versions, as recorded on quarantined rows."""
    parsers = sorted([*OUTCOME_PARSERS.values(), *SHAPE_PARSERS.values()], key=lambda p: p.name)
    return ",".join(p.label for p in parsers)


def parse_row(row: Any, parsers: Mapping[str, Parser] | None = None) -> dict[str, Any]:
    """The parsed columns of one classified row: its outcome parser's, the classifier's, ``None`` for the rest.

    A row without an outcome gets the classifier's columns only, and no
    parser or version (``transforms.rows`` records the tag of every
    registered parser on it).
    """
    c = row.classified
    out: dict[str, Any] = _EMPTY_ROW.copy()
    out["quarantine_reason"] = c.quarantine_reason
    outcome = c.outcome
    parser = (OUTCOME_PARSERS if parsers is None else parsers).get(outcome) if outcome is not None else None
    if parser is not None:
        out.update(parser.columns(row))
        out["parser"] = parser.name
        out["parser_version"] = parser.label
    # The classifier's columns win over any the parser gives.
    out["outcome"] = outcome
    out["is_stream"] = c.is_stream
    out["blocked"] = c.blocked
    out["blocked_stage"] = c.blocked_stage
    out["safety_flags"] = c.safety_flags
    return out


_EMPTY_ROW: dict[str, Any] = dict.fromkeys((*PARSED_COLUMNS, "quarantine_reason", "parser", "parser_version"))
"""What ``parse_row`` starts each row from: every column, in order, ``None``."""


def _typed(name: str, value: Column) -> Column:
    return value.cast(_TYPES[name])


def _registry_key() -> tuple:
    parsers = tuple(SHAPE_PARSERS.values())
    return (S.gateway_key(), tuple((p.name, p.version, id(p.columns), id(p.matches)) for p in parsers))


def _shape_steps() -> list[S.Step]:
    unknown = F.col("quarantine_reason") == "unknown_shape"
    claimed_by = F.lit(None).cast("string")
    for parser in reversed(list(SHAPE_PARSERS.values())):
        assert parser.matches is not None
        mine = unknown & F.coalesce(parser.matches(), F.lit(False))
        claimed_by = F.when(mine, F.lit(parser.name)).otherwise(claimed_by)
    shape_values = {p.name: p.columns() for p in SHAPE_PARSERS.values()}

    def pick(name: str) -> Column:
        value = F.col(name)
        for shape, cols in shape_values.items():
            if name in cols:
                value = F.when(F.col("_claimed_by") == shape, _typed(name, cols[name])).otherwise(value)
        return _typed(name, value)

    parsed = {name: pick(name) for name in PARSED_COLUMNS}
    parsed["safety_flags"] = F.coalesce(parsed["safety_flags"], V.no_flags())
    label, name = F.col("parser_version"), F.col("parser")
    for parser in SHAPE_PARSERS.values():
        label = F.when(F.col("_claimed_by") == parser.name, F.lit(parser.label)).otherwise(label)
        name = F.when(F.col("_claimed_by") == parser.name, F.lit(parser.name)).otherwise(name)
    resolved = F.col("outcome").isin(*OUTCOMES)
    return [
        S.with_columns(
            {
                "_req": F.when(unknown, V.parse(F.col("request"))),
                "_resp": F.when(unknown, V.parse(F.col("response"))),
            }
        ),
        S.with_columns({"_chunks": V.items(F.col("_resp"))}),
        S.with_columns({"_claimed_by": claimed_by}),
        S.with_columns(parsed),
        S.with_columns({"parser": name, "parser_version": label,
                        "_flagged": F.when(F.col("_claimed_by").isNotNull(),
                                           F.size(F.filter("safety_flags", is_flagged))).otherwise(F.col("_flagged"))}),
        S.with_columns(
            {
                "outcome": F.when(resolved, F.col("outcome")),
                "quarantine_reason": F.when(resolved, F.lit(None).cast("string")).otherwise(
                    F.coalesce(F.col("quarantine_reason"), F.lit("unknown_shape"))
                ),
            }
        ),
        S.drop("_claimed_by", "_req", "_resp", "_chunks"),
    ]


_SHAPES = S.Steps(_shape_steps, key=_registry_key)


def dispatch_shapes(df: DataFrame) -> DataFrame:
    """Let the registered shape parsers claim rows left as ``unknown_shape``.

    Reads: the parsed columns, ``quarantine_reason``, ``request`` and
    ``response``. Updates, for the rows a shape parser claims: every parsed
    requests column, ``parser``, ``parser_version``, ``outcome``,
    ``quarantine_reason`` and ``_flagged``. Without shape parsers it returns ``df`` as it is.
    The columns are rebuilt when a shape parser is registered or removed.
    """
    if not SHAPE_PARSERS:
        return df
    return _SHAPES(df)
