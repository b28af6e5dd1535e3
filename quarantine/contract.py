"""The quarantine contract: a Great Expectations suite checked row by row inside the stream.

The contract is a GX 1.x ``ExpectationSuite`` kept as JSON
(``conf/expectations/requests.json``, as ``ExpectationSuite.to_json_dict()``
writes it). ``load_suite`` reads it with GX's own classes; ``compile_suite``
turns every expectation into a Spark ``Column`` that is TRUE when a row fails
it (``compiler`` and ``expectation_types``); ``with_contract_results`` adds
the failed expectations of each row in one projection, so no GX run and no
extra pass over the data happens per micro-batch.

Decisions, each checked by the tests:

- Row-level semantics are GX's own on Spark, nulls included (a differential
  test runs GX next to the compiler on the same DataFrames).
- ``mostly`` below 1 is refused when the suite is compiled: a fraction of a
  batch cannot be decided one row at a time.
- A severity other than ``critical``, suite parameters and ``windows`` are
  refused; an unsupported type is refused with the list of supported ones.
- Rules GX has no row-level type for (the token sum, the safety-flag
  vocabularies) are ``unexpected_rows_expectation``s of the form
  ``SELECT * FROM {batch} WHERE <condition over one row>``; their
  ``meta.column`` names the column reported in ``failed_expectations``.
"""

from __future__ import annotations

import functools

import json
import threading
from concurrent.futures import Future
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType

from gatewatch.errors import ConfigError
from gatewatch.quarantine import expectation_types as _registered  # noqa: F401  (registers the types)
from gatewatch.quarantine.compiler import compile_expectation, label, supported_types, unsupported
from gatewatch.schemas import FAILED_EXPECTATION

if TYPE_CHECKING:
    from gatewatch.settings import Settings
    from importlib.resources.abc import Traversable

    from great_expectations.core.expectation_suite import ExpectationSuite

__all__ = [
    "CompiledExpectation",
    "Contract",
    "compile_suite",
    "load_suite",
    "packaged_suite",
    "split_by_contract",
    "supported_types",
    "with_contract_results",
]

Transform = Callable[[DataFrame], DataFrame]

FAILED_EXPECTATIONS = ArrayType(FAILED_EXPECTATION)


def packaged_suite() -> Traversable:
    """The suite shipped with gatewatch: ``conf/expectations/requests.json``."""
    return files("gatewatch") / "conf" / "expectations" / "requests.json"


def load_suite(path: str | Path | None = None) -> ExpectationSuite:
    """Read an expectation suite JSON file into a GX ``ExpectationSuite``.

    Every expectation is built by GX's own model, so its arguments are
    validated and its defaults filled in; unlike GX's suite constructor, an
    invalid expectation stops the load instead of being left out.

    Args:
        path: the suite file; ``None`` for the packaged suite.

    Raises:
        ConfigError: the file cannot be read, is not a suite, or an expectation is invalid.
        UnsupportedExpectationError: an expectation type GX does not know.
    """
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    source = packaged_suite() if path is None else Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError("contract.suite", "a readable expectation suite JSON file", f"{source}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list) or not data.get("name"):
        raise ConfigError("contract.suite", "a JSON object with 'name' and a list of 'expectations'", str(source))
    configurations = [_configuration(i, item, ExpectationConfiguration) for i, item in enumerate(data["expectations"])]
    suite = ExpectationSuite(
        name=data["name"],
        expectations=configurations,
        suite_parameters=data.get("suite_parameters"),
        meta=data.get("meta"),
        notes=data.get("notes"),
        id=data.get("id"),
    )
    if len(suite.expectations) != len(configurations):
        raise ConfigError("contract.suite", "every expectation accepted by Great Expectations", str(source))
    return suite


def _configuration(index: int, item: Any, configuration_class: type) -> Any:
    from great_expectations.exceptions import ExpectationNotFoundError

    if not isinstance(item, Mapping) or "type" not in item:
        raise ConfigError(f"contract.suite expectations[{index}]", "an object with 'type' and 'kwargs'", item)
    type_, id_ = item["type"], item.get("id")
    try:
        configuration = configuration_class(**item)
        configuration.to_domain_obj()
    except ExpectationNotFoundError:
        raise unsupported(
            id_, type_, "is not a Great Expectations type; supported types: " + ", ".join(supported_types()) + "."
        ) from None
    except Exception as err:  # GX reports bad arguments as pydantic or its own errors
        detail = " ".join(str(err).split())[:300]
        raise ConfigError(f"contract.suite expectations[{index}]", f"valid arguments for {type_}", detail) from err
    return configuration


@dataclass(frozen=True, eq=False)
class CompiledExpectation:
    """One expectation ready to run: its identity and the Column TRUE when a row fails it."""

    id: str
    type: str
    column: str | None
    """The column(s) it checks, comma-separated (``meta.column`` for an unexpected-rows query)."""
    reads: tuple[str, ...]
    """The columns named in its arguments (checked to exist before a run)."""
    fail: Column


@dataclass(frozen=True, eq=False)
class Contract:
    """A compiled expectation suite."""

    name: str
    expectations: tuple[CompiledExpectation, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        """The expectation ids, in suite order."""
        return tuple(e.id for e in self.expectations)

    @functools.cached_property
    def failed_expectations(self) -> Column:
        """The ``failed_expectations`` column over checked rows, built once and reused for every batch.

        A row that fails nothing (nearly every row) gets the empty array
        from one ``OR`` of the fail predicates; the array of the failed ones
        is built only for a row that fails some (building it for every row
        was about a quarter of the contract's cost on the 1M-row feed of
        ``bench/throughput.py --mode contract``).
        """
        empty = F.array().cast(FAILED_EXPECTATIONS)
        if not self.expectations:
            return empty
        checks = [
            F.when(
                e.fail,
                F.struct(
                    F.lit(e.id).alias("id"), F.lit(e.type).alias("type"), F.lit(e.column).cast("string").alias("column")
                ),
            )
            for e in self.expectations
        ]
        failed = F.filter(F.array(*checks), lambda r: r.isNotNull()).cast(FAILED_EXPECTATIONS)
        fails_some = functools.reduce(lambda a, b: a | b, (e.fail for e in self.expectations))
        return F.when(fails_some, failed).otherwise(empty)


def compile_suite(suite: ExpectationSuite) -> Contract:
    """Compile every expectation of ``suite`` into a row-level fail predicate.

    Needs an active SparkSession (Columns are built, and SQL conditions
    parsed, here, so a bad suite fails at start and not in a batch).

    Raises:
        ConfigError: an expectation without an id, or two with the same id.
        UnsupportedExpectationError: an expectation the compiler cannot run row by row.
    """
    compiled: list[CompiledExpectation] = []
    for expectation in suite.expectations:
        type_, id_ = expectation.expectation_type, expectation.id
        if not id_:
            raise ConfigError(f"contract.suite {label(id_, type_)}", "a stable id (a UUID written in the suite)")
        if id_ in {c.id for c in compiled}:
            raise ConfigError("contract.suite", "a different id for every expectation", id_)
        kwargs = dict(expectation)
        reads = _columns(kwargs)
        column = ",".join(reads) or (expectation.meta or {}).get("column")
        compiled.append(
            CompiledExpectation(
                id=str(id_), type=type_, column=column, reads=reads, fail=compile_expectation(id_, type_, kwargs)
            )
        )
    return Contract(name=suite.name, expectations=tuple(compiled))


def _columns(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    if kwargs.get("column"):
        return (kwargs["column"],)
    if kwargs.get("column_A") and kwargs.get("column_B"):
        return (kwargs["column_A"], kwargs["column_B"])
    return tuple(kwargs.get("column_list") or ())


def with_contract_results(contract: Contract) -> Transform:
    """Check every row against the contract in one projection.

    Reads: the columns the suite's expectations name.
    Adds: ``failed_expectations`` (``array<struct<id, type, column>>``, in
    suite order; empty when the row passes every expectation).

    Raises:
        ConfigError: an expectation names a column the DataFrame does not have.
    """

    def apply(df: DataFrame) -> DataFrame:
        require_columns(df, contract)
        return df.withColumn("failed_expectations", contract.failed_expectations)

    return apply


def require_columns(df: DataFrame, contract: Contract) -> None:
    """Check that ``df`` has every column the contract's expectations read.

    Raises:
        ConfigError: an expectation names a column ``df`` does not have.
    """
    present = {c.lower() for c in df.columns}
    for e in contract.expectations:
        missing = [c for c in e.reads if c.lower() not in present and c.split(".")[0].lower() not in present]
        if missing:
            raise ConfigError(
                "contract.suite",
                "expectations over columns of the checked rows",
                f"{label(e.id, e.type)} reads missing column {', '.join(missing)}",
            )


def split_by_contract(df: DataFrame, contract: Contract) -> tuple[DataFrame, DataFrame]:
    """Split rows into those that pass the contract and those that fail it.

    Reads: the columns the suite's expectations name.
    Returns: ``(passed, failed)``: ``passed`` has the columns of ``df``;
    ``failed`` adds ``failed_expectations`` (never empty there). Both come
    from one checked plan: persist ``df`` first if both are written.
    """
    checked = df.transform(with_contract_results(contract))
    passes = F.size("failed_expectations") == 0
    return checked.where(passes).drop("failed_expectations"), checked.where(~passes)


def load_contract(settings: Settings) -> Contract | None:
    """The compiled expectation contract, or None when disabled."""
    if not settings.contract.enabled:
        return None
    return compile_suite(load_suite(settings.contract.suite))


def load_contract_soon(settings: Settings) -> Callable[[], Contract | None]:
    """Start reading the suite in a thread of its own; the call returned compiles it (``load_contract``'s answer).

    Reading the suite imports Great Expectations, pure Python that takes
    seconds on a cold start; the job checks its sources (waiting on Spark)
    meanwhile. The call raises what ``load_suite`` raised, when it is made;
    a suite nobody asks for is read and dropped.
    """
    if not settings.contract.enabled:
        return lambda: None
    found: Future[ExpectationSuite] = Future()

    def read() -> None:
        try:
            found.set_result(load_suite(settings.contract.suite))
        except BaseException as err:  # noqa: BLE001 - handed to the caller by ``result``
            found.set_exception(err)

    threading.Thread(target=read, name="gatewatch-contract", daemon=True).start()
    return lambda: compile_suite(found.result())
