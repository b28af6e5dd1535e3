"""The parse of every row, run over Arrow batches in Spark's Python workers.

An Arrow UDF (``arrow_udf``, Spark 4.1 and later) receives the four columns
the parse reads as Arrow arrays; their ``request``/``response`` strings are
parsed once with ``orjson``, located (``payload``), classified
(``outcome``) and parsed by the parser of their outcome (``parsers``), and
the results come back as one typed Arrow struct. Spark keeps the other
columns in the JVM and joins the results back to them row by row, so the
payloads cross to Python once and nothing crosses back but the parsed
values (a 100k-row batch parsed in 2.9 s instead of 4.1 s with
``mapInArrow``, which sends every column both ways: README, "Benchmarks").
An older Spark gets the same parse through ``mapInArrow``.

Why Python and not Spark's VARIANT functions: the payloads are probed in
dozens of places, most of them inside arrays (chunks, spans, choices), which
Spark evaluates with interpreted higher-order functions; the same probes in
Python over one ``orjson`` parse run several times faster (README,
"Benchmarks", has the figures).
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, IntegerType, StringType, StructField, StructType

from gatewatch.schemas import PARSED_COLUMNS, REQUESTS
from gatewatch.transforms.fields import Row
from gatewatch.transforms.outcome import classify
from gatewatch.transforms.registry import OUTCOME_PARSERS, Parser, dispatch_shapes, parse_row, parser_version_tag
from gatewatch.transforms.payload import read_payloads
from gatewatch.transforms.staging import gateway_key

Transform = Callable[[DataFrame], DataFrame]

_TYPES = {f.name: f.dataType for f in REQUESTS.fields}
PARSE_OUTPUT = StructType(
    [StructField(name, _TYPES[name]) for name in PARSED_COLUMNS]
    + [
        StructField("quarantine_reason", StringType()),
        StructField("parser", StringType()),
        StructField("parser_version", StringType()),
        StructField("_req_invalid", BooleanType()),
        StructField("_resp_invalid", BooleanType()),
        StructField("_flagged", IntegerType()),
    ]
)
"""The columns the parse adds; ``_req_invalid``/``_resp_invalid`` say a payload was present but not JSON,
``_flagged`` counts the row's flags that make safety events (``transforms.events.is_flagged``)."""

_INPUT = ("request", "response", "status_code", "logging_error_codes")
_OUTPUT_NAMES = tuple(f.name for f in PARSE_OUTPUT.fields)


@functools.cache
def _output_types(large: bool) -> tuple[pa.DataType, ...]:
    """The Arrow type of each PARSE_OUTPUT column, with large strings when Spark sends them.

    Spark wants large strings back when it sends them (``useLargeVarTypes``),
    but in plain lists: it refuses ``LargeList``.
    """
    from pyspark.sql.pandas.types import to_arrow_type

    def adapt(t: pa.DataType) -> pa.DataType:
        if large and pa.types.is_string(t):
            return pa.large_string()
        if large and pa.types.is_list(t) and pa.types.is_struct(t.value_type):
            return pa.list_(pa.struct([pa.field(f.name, adapt(f.type)) for f in t.value_type]))
        return t

    return tuple(adapt(to_arrow_type(f.dataType)) for f in PARSE_OUTPUT.fields)


def parse_values(
    requests: list[str | None],
    responses: list[str | None],
    statuses: list[int | None],
    logging_error_codes: list[list[str] | None],
    parsers: Mapping[str, Parser] | None = None,
) -> dict[str, list[Any]]:
    """Parse rows given as columns of Python values; return the PARSE_OUTPUT columns as lists.

    ``parsers`` maps each outcome to its parser (default: those registered now).
    """
    parsers = OUTCOME_PARSERS if parsers is None else parsers
    with _no_cyclic_gc():
        rows = []
        for request, response, status, codes in zip(requests, responses, statuses, logging_error_codes):
            payload = read_payloads(request, response)
            parsed = parse_row(Row(payload, classify(payload, status, codes), status), parsers)
            parsed["_req_invalid"] = payload.req_invalid
            parsed["_resp_invalid"] = payload.resp_invalid
            # filtered or detected, as transforms.events.is_flagged: counted here, not by a Spark higher-order function
            parsed["_flagged"] = sum(1 for f in parsed["safety_flags"] or () if f["filtered"] or f["detected"])
            rows.append(parsed)
        columns = _columns(rows)
        # The row dicts go before the collector resumes: its first pass then walks the columns only.
        del rows
    return columns


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The rows' values as one list per PARSE_OUTPUT column.

    ``parse_row`` gives its columns in PARSE_OUTPUT order, so a row of as
    many keys as PARSE_OUTPUT holds exactly them in that order and the
    columns are its values transposed; a parser that adds a key of its own
    makes the rows be read by name instead.
    """
    width = len(_OUTPUT_NAMES)
    if rows and tuple(rows[0]) == _OUTPUT_NAMES and all(len(parsed) == width for parsed in rows):
        return dict(zip(_OUTPUT_NAMES, map(list, zip(*[parsed.values() for parsed in rows]))))
    return {name: [parsed[name] for parsed in rows] for name in _OUTPUT_NAMES}


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one batch's parse, then restore it.

    The parse allocates many short-lived objects (JSON trees, flags) that
    hold no reference cycles, so reference counting frees them; the cyclic
    collector's passes over the growing batch output are wasted work (about
    a tenth of the parse, ``bench/parse_rate.py``).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_arrays(inputs: Sequence[pa.Array], parsers: Mapping[str, Parser] | None = None) -> list[pa.Array]:
    """The PARSE_OUTPUT columns, as Arrow arrays, of the ``_INPUT`` columns given as Arrow arrays."""
    large = pa.types.is_large_string(inputs[0].type)
    columns = parse_values(*(array.to_pylist() for array in inputs), parsers=parsers)
    return [pa.array(columns[f.name], type=t) for f, t in zip(PARSE_OUTPUT.fields, _output_types(large))]


def parse_batch(batch: pa.RecordBatch, parsers: Mapping[str, Parser] | None = None) -> pa.RecordBatch:
    """One Arrow batch of canonical rows, with the PARSE_OUTPUT columns appended."""
    arrays = parse_arrays([batch.column(name) for name in _INPUT], parsers)
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *arrays], names=[*batch.schema.names, *(f.name for f in PARSE_OUTPUT.fields)]
    )


def _parse_batches(parsers: Mapping[str, Parser], batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        yield parse_batch(batch, parsers)


def _struct_parser(parsers: Mapping[str, Parser]) -> Callable[..., pa.Array]:
    """The Arrow UDF's body: the PARSE_OUTPUT columns of the ``_INPUT`` arrays, as one struct array.

    A plain function with type hints: ``arrow_udf`` reads its kind from them.
    """

    def parse(request: pa.Array, response: pa.Array, status_code: pa.Array, logging_error_codes: pa.Array) -> pa.Array:
        arrays = parse_arrays([request, response, status_code, logging_error_codes], parsers)
        return pa.StructArray.from_arrays(arrays, names=list(_OUTPUT_NAMES))

    return parse


def arrow_udf_supported(spark: SparkSession) -> bool:
    """True when both this PySpark and the Spark it talks to run Arrow UDFs (4.1 and later)."""
    return hasattr(F, "arrow_udf") and _server_version(spark) >= (4, 1)


@functools.lru_cache(maxsize=8)
def _server_version(spark: SparkSession) -> tuple[int, int]:
    """The (major, minor) version of the Spark a session talks to, asked once per session ((0, 0): unknown)."""
    try:
        major, minor = (int(part) for part in spark.version.split(".")[:2])
    except ValueError:
        return (0, 0)
    return (major, minor)


_PARSED = "_parsed"


def _parse_udf(parsers: Mapping[str, Parser]) -> Callable[..., Any]:
    """The Arrow UDF of one set of parsers, made once per set and Spark gateway.

    Making it pickles the parsers for the workers; a micro-batch reuses the
    one made for the first.
    """
    return _udf_of(gateway_key(), tuple(parsers.items()))


@functools.lru_cache(maxsize=8)
def _udf_of(gateway: Hashable, parsers: tuple[tuple[str, Parser], ...]) -> Callable[..., Any]:
    return F.arrow_udf(_struct_parser(dict(parsers)), PARSE_OUTPUT)


def with_parsed_rows(version_tag: str, parsers: Mapping[str, Parser]) -> Transform:
    """Parse, classify and run the parser of each row's outcome.

    Reads: ``request``, ``response``, ``status_code``, ``logging_error_codes``.
    Adds: every parsed requests column (``schemas.PARSED_COLUMNS``),
    ``quarantine_reason`` (``json_parse_error`` | ``unknown_shape`` | null),
    ``parser``, ``parser_version`` (``version_tag``, every registered parser,
    on rows no parser took), ``_req_invalid`` / ``_resp_invalid`` and
    ``_flagged``.
    ``parsers`` (outcome to parser) travels to the Python workers with the
    function, so a worker needs no registration of its own.
    """

    def apply(df: DataFrame) -> DataFrame:
        if arrow_udf_supported(df.sparkSession):
            out = df.withColumn(_PARSED, _parse_udf(parsers)(*_INPUT)).select(*df.columns, f"{_PARSED}.*")
        else:
            out = df.mapInArrow(functools.partial(_parse_batches, dict(parsers)),
                                StructType([*df.schema.fields, *PARSE_OUTPUT.fields]))
        return out.withColumn("parser_version", F.coalesce(F.col("parser_version"), F.lit(version_tag)))

    return apply


def parse_registered() -> Transform:
    """Parse with the parsers registered now, then let the shape parsers claim unknown shapes.

    Reads: the CANONICAL_INPUT columns. Adds: what ``with_parsed_rows`` adds;
    ``dispatch_shapes`` then updates the rows a shape parser claims.
    """

    def apply(df: DataFrame) -> DataFrame:
        return df.transform(with_parsed_rows(parser_version_tag(), OUTCOME_PARSERS)).transform(dispatch_shapes)

    return apply


def parse_with(outcome: str) -> Transform:
    """A ``parse(df)`` running the whole parse on canonical rows and keeping those of one outcome."""

    def parse(df: DataFrame) -> DataFrame:
        return df.transform(parse_registered()).where(F.col("outcome") == outcome)

    return parse
