"""The parser registry: one parser per outcome, registered by decorator.

A parser is a function returning the parsed requests columns (``dict`` of
name to ``Column``) for rows of its outcome. The classifier
(``transforms.outcome``) routes; ``dispatch`` applies every parser in one
projection, each column chosen by the row's outcome, so the payloads are
parsed once and no row is read twice. ``parse_with(outcome)`` gives each
parser module its ``parse(df) -> DataFrame`` for use on its own.

A user adds a parser for a shape of their own with ``register_shape`` (see
the README) without editing gatewatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gatewatch.errors import ParserRegistrationError
from gatewatch.schemas import OUTCOMES, PARSED_COLUMNS, REQUESTS
from gatewatch.transforms import staging as S
from gatewatch.transforms import variant as V

ColumnsFn = Callable[[], dict[str, Column]]
MatchFn = Callable[[], Column]

_TYPES = {f.name: f.dataType for f in REQUESTS.fields}
_CLASSIFIER_COLUMNS = ("outcome", "is_stream", "blocked", "blocked_stage", "safety_flags")


@dataclass(frozen=True)
class Parser:
    """A registered parser: what it handles, its version and its columns."""

    name: str
    version: str
    columns: ColumnsFn
    outcome: str | None = None
    matches: MatchFn | None = None

    @property
    def label(self) -> str:
        """``name@version``, recorded on every row it produces."""
        return f"{self.name}@{self.version}"


OUTCOME_PARSERS: dict[str, Parser] = {}
SHAPE_PARSERS: dict[str, Parser] = {}


def register(outcome: str, *, version: str) -> Callable[[ColumnsFn], ColumnsFn]:
    """Register ``columns`` as the parser for one outcome of the taxonomy."""
    if outcome not in OUTCOMES:
        raise ParserRegistrationError(f"'{outcome}' is not an outcome; known: {', '.join(OUTCOMES)}.")

    def deco(fn: ColumnsFn) -> ColumnsFn:
        OUTCOME_PARSERS[outcome] = Parser(name=outcome, version=version, columns=fn, outcome=outcome)
        return fn

    return deco


def register_shape(name: str, *, version: str, matches: MatchFn) -> Callable[[ColumnsFn], ColumnsFn]:
    """Register a parser for a response shape the built-in classifier does not know.

    ``matches()`` returns a boolean Column over the helper columns (``_resp``,
    ``_req``, ``_chunks``...) that claims rows otherwise quarantined as
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


def _builtin() -> None:
    from gatewatch.transforms import parsers  # noqa: F401  (importing registers the built-ins)


def _typed(name: str, value: Column) -> Column:
    return value.cast(_TYPES[name])


def emit(df: DataFrame, **parsed: Column) -> DataFrame:
    """Set every parsed column: the given ones, the classifier's or null for the rest."""
    values = {
        name: _typed(name, parsed.get(name, F.col(name) if name in _CLASSIFIER_COLUMNS else F.lit(None)))
        for name in PARSED_COLUMNS
    }
    values["safety_flags"] = F.coalesce(values["safety_flags"], V.no_flags())
    return df.withColumns(values)


def parse_with(outcome: str) -> Callable[[DataFrame], DataFrame]:
    """A ``parse(df)`` running one outcome's parser alone on the rows of that outcome."""

    def parse(df: DataFrame) -> DataFrame:
        parser = OUTCOME_PARSERS[outcome]
        out = emit(df.where(F.col("outcome") == outcome), **parser.columns())
        return out.withColumns({"parser": F.lit(parser.name), "parser_version": F.lit(parser.label)})

    return parse


def parser_version_tag() -> str:
    """All registered parsers and versions, as recorded on quarantined rows."""
    _builtin()
    parsers = sorted([*OUTCOME_PARSERS.values(), *SHAPE_PARSERS.values()], key=lambda p: p.name)
    return ",".join(p.label for p in parsers)


def _registry_key() -> tuple:
    _builtin()
    parsers = (*OUTCOME_PARSERS.values(), *SHAPE_PARSERS.values())
    return (S.gateway_key(), tuple((p.name, p.version, id(p.columns), id(p.matches)) for p in parsers))


def _dispatch_steps() -> list[S.Step]:
    _builtin()
    # Shape parsers first: they may claim unknown rows and give them an outcome.
    claimed_by = F.lit(None).cast("string")
    for parser in reversed(list(SHAPE_PARSERS.values())):
        assert parser.matches is not None
        mine = (F.col("quarantine_reason") == "unknown_shape") & F.coalesce(parser.matches(), F.lit(False))
        claimed_by = F.when(mine, F.lit(parser.name)).otherwise(claimed_by)
    shape_values = {p.name: p.columns() for p in SHAPE_PARSERS.values()}
    outcome_values = {o: p.columns() for o, p in OUTCOME_PARSERS.items()}

    def pick(name: str) -> Column:
        default = F.col(name) if name in _CLASSIFIER_COLUMNS else F.lit(None)
        value = default
        for outcome, cols in outcome_values.items():
            if name in cols and name not in _CLASSIFIER_COLUMNS:
                value = F.when(F.col("outcome") == outcome, _typed(name, cols[name])).otherwise(value)
        for shape, cols in shape_values.items():
            if name in cols:
                value = F.when(F.col("_claimed_by") == shape, _typed(name, cols[name])).otherwise(value)
        return _typed(name, value)

    parsed = {name: pick(name) for name in PARSED_COLUMNS}
    parsed["safety_flags"] = F.coalesce(parsed["safety_flags"], V.no_flags())
    label = F.lit(None).cast("string")
    name = F.lit(None).cast("string")
    for outcome, parser in OUTCOME_PARSERS.items():
        label = F.when(F.col("outcome") == outcome, F.lit(parser.label)).otherwise(label)
        name = F.when(F.col("outcome") == outcome, F.lit(parser.name)).otherwise(name)
    for parser in SHAPE_PARSERS.values():
        label = F.when(F.col("_claimed_by") == parser.name, F.lit(parser.label)).otherwise(label)
        name = F.when(F.col("_claimed_by") == parser.name, F.lit(parser.name)).otherwise(name)
    resolved = F.col("outcome").isin(*OUTCOMES)
    return [
        S.with_columns({"_claimed_by": claimed_by}),
        S.with_columns(parsed),
        S.with_columns({"parser": name, "parser_version": F.coalesce(label, F.lit(parser_version_tag()))}),
        S.with_columns(
            {
                "outcome": F.when(resolved, F.col("outcome")),
                "quarantine_reason": F.when(resolved, F.lit(None).cast("string")).otherwise(
                    F.coalesce(F.col("quarantine_reason"), F.lit("unknown_shape"))
                ),
            }
        ),
        S.drop("_claimed_by"),
    ]


dispatch = S.Steps(
    _dispatch_steps,
    key=_registry_key,
    doc="""Run every row through the parser of its outcome, or a shape parser that claims it.

    Reads: ``outcome``, ``quarantine_reason`` and the helper columns.
    Adds: every parsed requests column, ``parser`` and ``parser_version``;
    ``outcome`` and ``quarantine_reason`` are updated for rows a shape parser
    claimed. Rows no parser handled keep a null ``outcome``. The columns are
    rebuilt when a parser is registered or removed.
    """,
)
