"""Validate a parser change on a snapshot of production: what the candidate parsers would do differently.

``validate`` reads one version of an inference table (Delta time travel:
``versionAsOf`` or ``timestampAsOf``), optionally a deterministic sample of
it, and parses the same rows twice: with the parsers as shipped (the
built-ins and the config's ``parsers.modules``) and with the candidate set
(the shipped one with the ``--parsers`` modules loaded on top; a candidate
module may re-register a built-in outcome or a shape parser under the same
name). Both runs end with the contract, as a job would. The rows are then
compared one by one and the differences grouped:

- ``outcome``: rows whose outcome moved (``predict_ok -> error``);
- ``field``: rows of one outcome with a parsed field that changed
  (``predict_ok.output_tokens``);
- ``quarantined``: rows the shipped parsers handled and the candidate
  quarantines, by the candidate's shape fingerprint, with the reasons and
  the columns of the expectations they fail;
- ``parsed``: rows the shipped parsers quarantined and the candidate parses.

Each group has an ``id`` (``outcome:predict_ok->error``,
``field:predict_ok.output_tokens``, ``quarantined:<fingerprint>``,
``parsed:<fingerprint>``). The first three change rows the shipped parsers
handled: unless ``accept`` names them (or ``all``), the report fails. Nothing
is written anywhere; the report is plain data (``to_json``) and text
(``format_report``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from gatewatch.errors import ConfigError
from gatewatch.schemas import PARSED_COLUMNS
from gatewatch.settings import Settings, SourceSettings
from gatewatch.transforms import registry

log = structlog.get_logger("gatewatch.validate")

COMPARED: tuple[str, ...] = tuple(c for c in PARSED_COLUMNS if c != "outcome")
"""The parsed columns compared per row (the outcome is compared on its own)."""
SAMPLE_IDS = 5
_SIDE = ("outcome", "quarantine_reason", "parser_version", *COMPARED)


@dataclass(frozen=True)
class ParserSet:
    """One set of parsers: outcome parsers by outcome, shape parsers by name."""

    outcomes: Mapping[str, registry.Parser]
    shapes: Mapping[str, registry.Parser]

    @classmethod
    def registered(cls) -> ParserSet:
        """A copy of the parsers registered now."""
        return cls(dict(registry.OUTCOME_PARSERS), dict(registry.SHAPE_PARSERS))

    @property
    def tag(self) -> str:
        """Every parser and version of the set, as recorded on quarantined rows."""
        return ",".join(p.label for p in sorted([*self.outcomes.values(), *self.shapes.values()],
                                                key=lambda p: p.name))


@dataclass(frozen=True)
class Report:
    """What the candidate parsers change on a snapshot (see the module docstring)."""

    source: str
    version: int | None
    timestamp: str | None
    rows: int
    shipped: str
    candidate: str
    outcome_changes: list[dict[str, Any]] = field(default_factory=list)
    field_changes: list[dict[str, Any]] = field(default_factory=list)
    newly_quarantined: list[dict[str, Any]] = field(default_factory=list)
    newly_parsed: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    unaccepted: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        """True when any row parses differently."""
        return bool(self.outcome_changes or self.field_changes or self.newly_quarantined or self.newly_parsed)

    @property
    def passed(self) -> bool:
        """True when every change to a row the shipped parsers handled is accepted."""
        return not self.unaccepted

    def to_json(self) -> str:
        """The report as JSON (what ``--json`` writes)."""
        return json.dumps({**asdict(self), "differs": self.differs, "passed": self.passed}, indent=2,
                          sort_keys=True, default=str)


# ---------------------------------------------------------------------------- the two parser sets


def _import(spec: str, i: int) -> None:
    """Import a module by name, or a ``.py`` file by path (under a name of its own).

    Its functions travel to Spark's Python workers by value, so a worker
    needs neither the file nor the module on its path.
    """
    from pyspark import cloudpickle

    try:
        if spec.endswith(".py"):
            path = Path(spec).resolve()
            if not path.is_file():
                raise ImportError(f"no file {path}")
            name = f"gatewatch_candidate_{i}_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(spec)
    except ImportError as err:
        raise ConfigError(f"--parsers {spec}", "an importable Python module or a .py file", str(err)) from None
    cloudpickle.register_pickle_by_value(module)


def parser_sets(settings: Settings, candidates: Sequence[str]) -> tuple[ParserSet, ParserSet]:
    """The shipped set (built-ins and ``parsers.modules``) and the candidate set (``candidates`` loaded on top).

    The registry is left as the shipped set: a candidate module that
    re-registers an outcome or a shape replaces it in the candidate set only.
    """
    from gatewatch.streams.parsers import load_parser_modules
    from gatewatch.transforms import parsers as _builtins  # noqa: F401  (importing registers the built-ins)

    load_parser_modules(settings)
    shipped = ParserSet.registered()
    try:
        for i, spec in enumerate(candidates):
            _import(spec, i)
        candidate = ParserSet.registered()
    finally:
        _restore(shipped)
    return shipped, candidate


def _restore(parsers: ParserSet) -> None:
    registry.OUTCOME_PARSERS.clear()
    registry.OUTCOME_PARSERS.update(parsers.outcomes)
    registry.SHAPE_PARSERS.clear()
    registry.SHAPE_PARSERS.update(parsers.shapes)


@contextlib.contextmanager
def _registered(parsers: ParserSet) -> Iterator[None]:
    """The registry holds ``parsers`` while a parse is planned (its column expressions are built then)."""
    before = ParserSet.registered()
    _restore(parsers)
    try:
        yield
    finally:
        _restore(before)


def parse_with(rows: DataFrame, parsers: ParserSet, contract: Any | None) -> DataFrame:
    """Parse canonical rows with one parser set and check them against the contract, as a job would.

    Reads: the CANONICAL_INPUT columns. Adds: what ``streams.batch.process`` adds.
    """
    from gatewatch.streams.batch import apply_contract
    from gatewatch.transforms.rows import with_parsed_rows

    with _registered(parsers):
        parsed = rows.transform(with_parsed_rows(parsers.tag, parsers.outcomes)).transform(registry.dispatch_shapes)
    return apply_contract(parsed, contract)


# ---------------------------------------------------------------------------- the snapshot


def read_snapshot(spark: SparkSession, source: SourceSettings, *, version: int | None = None,
                  timestamp: str | None = None, sample: int | None = None) -> tuple[DataFrame, int | None]:
    """One version of an inference table as canonical rows (``_change_type`` insert), and that version.

    ``sample`` keeps that many rows, chosen by a hash of the request id, so
    the same snapshot gives the same sample on every run.
    """
    from gatewatch.errors import ChangeFeedDisabledError
    from gatewatch.streams.source import check_source, detect_kind, is_path, to_canonical

    try:
        table = check_source(spark, source)
        kind, path = table.kind, table.is_path
    except ChangeFeedDisabledError:  # a snapshot needs no change feed (a deep clone of the table, say)
        kind, path = None, is_path(source.table)
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", str(version))
    elif timestamp is not None:
        reader = reader.option("timestampAsOf", timestamp)
    raw = reader.load(source.table) if path else reader.table(source.table)
    kind = kind or detect_kind(raw.schema, source.table)
    from gatewatch.streams import delta_sql
    from gatewatch.streams.source import sql_name

    history = delta_sql.history(spark, sql_name(source.table)).select("version", "timestamp")
    if version is not None:
        at = history.where(F.col("version") == version).first()
    elif timestamp is not None:
        at = history.where(F.col("timestamp") <= F.to_timestamp(F.lit(timestamp))).orderBy(F.desc("version")).first()
    else:
        at = history.orderBy(F.desc("version")).first()
    snap_version = None if at is None else int(at["version"])
    rows = raw.withColumns({
        "_change_type": F.lit("insert"),
        "_commit_version": F.lit(snap_version).cast("long"),
        "_commit_timestamp": F.lit(None if at is None else at["timestamp"]).cast("timestamp"),
    })
    if sample:
        rows = rows.orderBy(F.xxhash64(F.coalesce(F.col("databricks_request_id"), F.lit("")))).limit(sample)
    return to_canonical(rows, kind, source), snap_version


# ---------------------------------------------------------------------------- the comparison


def _changed(name: str) -> F.Column:
    return ~F.col(f"s.{name}").eqNullSafe(F.col(f"c.{name}"))


def compare(rows: DataFrame, shipped: ParserSet, candidate: ParserSet,
            contract: Any | None) -> tuple[int, list[dict[str, Any]]]:
    """The number of rows, and the rows that parse differently, grouped (``kind``, ``group``, ``rows``, ...).

    ``rows`` are canonical rows, read once (kept while both parses run).
    """
    from gatewatch.streams.batch import materialize, release
    from gatewatch.transforms.fingerprint import with_shape_fingerprint

    kept = materialize(rows.withColumn("_row", F.monotonically_increasing_id()))
    try:
        total = kept.count()
        s = parse_with(kept, shipped, contract).select("_row", *_SIDE)
        c = parse_with(kept, candidate, contract).select(
            "_row", "databricks_request_id", "request", "response", "_req_invalid", "_resp_invalid",
            F.transform("failed_expectations", lambda e: e["column"]).alias("failed_columns"), *_SIDE)
        joined = c.alias("c").join(s.alias("s"), "_row")
        s_ok, c_ok = F.col("s.outcome").isNotNull(), F.col("c.outcome").isNotNull()
        fields = F.filter(F.array(*[F.when(_changed(n), F.lit(n)) for n in COMPARED]), lambda x: x.isNotNull())
        kind = (
            F.when(s_ok & ~c_ok, F.lit("quarantined"))
            .when(~s_ok & c_ok, F.lit("parsed"))
            .when(s_ok & c_ok & _changed("outcome"), F.lit("outcome"))
            .when(s_ok & c_ok & (F.size(fields) > 0), F.lit("field"))
        )
        diff = joined.select(
            kind.alias("kind"), F.col("c.databricks_request_id").alias("id"),
            F.col("s.outcome").alias("from_outcome"), F.col("c.outcome").alias("to_outcome"),
            F.col("s.quarantine_reason").alias("from_reason"), F.col("c.quarantine_reason").alias("to_reason"),
            F.col("c.parser_version").alias("to_parser"), fields.alias("fields"),
            "c.request", "c.response", "c._req_invalid", "c._resp_invalid", "c.failed_columns",
        ).where(F.col("kind").isNotNull())
        diff = diff.transform(with_shape_fingerprint()).withColumn(
            "field", F.explode_outer(F.when(F.col("kind") == "field", F.col("fields"))))
        key = (
            F.when(F.col("kind") == "outcome", F.concat(F.lit("outcome:"), "from_outcome", F.lit("->"), "to_outcome"))
            .when(F.col("kind") == "field", F.concat(F.lit("field:"), "from_outcome", F.lit("."), "field"))
            .otherwise(F.concat(F.col("kind"), F.lit(":"), "shape_fingerprint"))
        )
        grouped = diff.withColumn("group", key).groupBy("kind", "group").agg(
            F.count("*").alias("rows"),
            F.slice(F.sort_array(F.collect_set("id")), 1, SAMPLE_IDS).alias("sample_ids"),
            F.sort_array(F.collect_set("from_outcome")).alias("from_outcomes"),
            F.sort_array(F.collect_set("to_outcome")).alias("to_outcomes"),
            F.sort_array(F.collect_set("to_reason")).alias("reasons"),
            F.sort_array(F.collect_set("to_parser")).alias("parsers"),
            F.sort_array(F.array_distinct(F.flatten(F.collect_list("failed_columns")))).alias("failed_columns"),
            F.first("shape").alias("shape"), F.first("shape_fingerprint").alias("fingerprint"),
            F.first("field", ignorenulls=True).alias("field"),
        ).orderBy("kind", F.desc("rows"), "group")
        return total, [r.asDict(recursive=True) for r in grouped.collect()]
    finally:
        release(kept)


def build_report(groups: Sequence[Mapping[str, Any]], *, source: str, version: int | None, timestamp: str | None,
                 rows: int, shipped: ParserSet, candidate: ParserSet, accept: Sequence[str] = ()) -> Report:
    """The report of ``compare``'s groups; those changing handled rows fail unless ``accept`` names them."""
    by_kind: dict[str, list[dict[str, Any]]] = {"outcome": [], "field": [], "quarantined": [], "parsed": []}
    for g in groups:
        item: dict[str, Any] = {"id": g["group"], "rows": g["rows"], "sample_ids": g["sample_ids"]}
        if g["kind"] == "outcome":
            item.update({"from": g["from_outcomes"][0], "to": g["to_outcomes"][0]})
        elif g["kind"] == "field":
            item.update({"outcome": g["from_outcomes"][0], "field": g["field"]})
        elif g["kind"] == "quarantined":
            item.update({"fingerprint": g["fingerprint"], "reasons": g["reasons"], "from": g["from_outcomes"],
                         "failed_columns": [c for c in g["failed_columns"] if c], "shape": g["shape"]})
        else:
            item.update({"fingerprint": g["fingerprint"], "to": g["to_outcomes"], "parsers": g["parsers"],
                         "shape": g["shape"]})
        by_kind[g["kind"]].append(item)
    gating = [i["id"] for k in ("outcome", "field", "quarantined") for i in by_kind[k]]
    accepted = [i for i in gating if "all" in accept or i in accept]
    return Report(
        source=source, version=version, timestamp=timestamp, rows=rows, shipped=shipped.tag,
        candidate=candidate.tag, outcome_changes=by_kind["outcome"], field_changes=by_kind["field"],
        newly_quarantined=by_kind["quarantined"], newly_parsed=by_kind["parsed"], accepted=accepted,
        unaccepted=[i for i in gating if i not in accepted],
    )


def validate(spark: SparkSession, settings: Settings, *, candidates: Sequence[str] = (), version: int | None = None,
             timestamp: str | None = None, sample: int | None = None, accept: Sequence[str] = ()) -> Report:
    """Compare the shipped and candidate parsers on a snapshot of ``settings.sources[0]``; write nothing."""
    from gatewatch.quarantine.contract import load_contract

    if not settings.sources:
        raise ConfigError("--source", "the inference table to validate on (a Delta path or catalog table)")
    if version is not None and timestamp is not None:
        raise ConfigError("--version/--timestamp", "one of them, not both")
    source = settings.sources[0]
    shipped, candidate = parser_sets(settings, candidates)
    rows, snap_version = read_snapshot(spark, source, version=version, timestamp=timestamp, sample=sample)
    total, groups = compare(rows, shipped, candidate, load_contract(settings))
    report = build_report(groups, source=source.table, version=snap_version, timestamp=timestamp, rows=total,
                          shipped=shipped, candidate=candidate, accept=accept)
    log.info("validate", rows=total, differs=report.differs, unaccepted=len(report.unaccepted))
    return report
