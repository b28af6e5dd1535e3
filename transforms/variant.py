"""Column helpers over Spark's VARIANT: safe paths, escaped JSON, arrays, safety flags.

Every helper returns a ``Column`` and never raises on an unexpected shape:
a path that is absent or of another type yields null, so parsers can probe
every place a value may be without assuming the happy path.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType

from gatewatch.schemas import SAFETY_FLAG

SEVERITIES: tuple[str, ...] = ("safe", "low", "medium", "high")
FLAGS_TYPE = ArrayType(SAFETY_FLAG)


def get(v: Column, path: str, type_: str = "string") -> Column:
    """The value at a JSON path as ``type_``, or null when absent or of another type."""
    return F.try_variant_get(v, path, type_)


def items(v: Column, path: str = "$") -> Column:
    """The array at ``path`` as ``array<variant>``, or null when it is not an array."""
    return F.try_variant_get(v, path, "array<variant>")


def parse(text: Column) -> Column:
    """A JSON string parsed into a VARIANT, or null when it is not valid JSON."""
    return F.try_parse_json(text)


def nested(v: Column, path: str) -> Column:
    """Parse the escaped JSON held in the string at ``path`` (a second parse)."""
    return parse(get(v, path, "string"))


def first(*cols: Column) -> Column:
    """The first non-null of several probes."""
    return F.coalesce(*cols)


def or_empty(arr: Column, element: str = "variant") -> Column:
    """An array column, or an empty array of the same type when null."""
    return F.coalesce(arr, F.array().cast(f"array<{element}>"))


def last_non_null(arr: Column) -> Column:
    """The last non-null element of an array, or null (never an index error)."""
    return F.try_element_at(F.filter(arr, lambda x: x.isNotNull()), F.lit(-1))


def first_non_null(arr: Column) -> Column:
    """The first non-null element of an array, or null."""
    return F.try_element_at(F.filter(arr, lambda x: x.isNotNull()), F.lit(1))


def no_flags() -> Column:
    """An empty ``array<safety_flag>``."""
    return F.array().cast(FLAGS_TYPE)


def flags_from_results(results: Column, stage: str | Column) -> Column:
    """Safety flags from an Azure ``content_filter_results`` object.

    Each ``{category: {filtered, severity | detected}}`` entry becomes one
    flag; entries with none of those fields (``error`` objects, for example)
    are skipped. Null or non-object input gives an empty array.
    """
    stage_col = F.lit(stage) if isinstance(stage, str) else stage
    entries = F.map_entries(F.try_variant_get(results, "$", "map<string,variant>"))
    flags = F.transform(
        entries,
        lambda e: F.struct(
            stage_col.alias("stage"),
            e["key"].alias("category"),
            F.lower(get(e["value"], "$.severity")).alias("severity"),
            get(e["value"], "$.filtered", "boolean").alias("filtered"),
            get(e["value"], "$.detected", "boolean").alias("detected"),
        ),
    )
    kept = F.filter(
        flags,
        lambda f: f["severity"].isNotNull() | f["filtered"].isNotNull() | f["detected"].isNotNull(),
    )
    return F.coalesce(kept.cast(FLAGS_TYPE), no_flags())


def prompt_flags(v: Column) -> Column:
    """Flags from ``prompt_filter_results`` (also logged as ``prompt_annotations``)."""
    entries = first(items(v, "$.prompt_filter_results"), items(v, "$.prompt_annotations"))
    per_prompt = F.transform(
        or_empty(entries), lambda p: flags_from_results(get(p, "$.content_filter_results", "variant"), "prompt")
    )
    return F.flatten(per_prompt)


def completion_flags(v: Column) -> Column:
    """Flags from every ``choices[].content_filter_results`` of one completion or chunk."""
    per_choice = F.transform(
        or_empty(items(v, "$.choices")),
        lambda c: flags_from_results(get(c, "$.content_filter_results", "variant"), "completion"),
    )
    return F.flatten(per_choice)


def error_flags(err: Column) -> Column:
    """Flags from a provider error's ``innererror.content_filter_result(s)`` (prompt stage)."""
    results = first(
        get(err, "$.innererror.content_filter_result", "variant"),
        get(err, "$.innererror.content_filter_results", "variant"),
        get(err, "$.content_filter_result", "variant"),
        get(err, "$.content_filter_results", "variant"),
    )
    return flags_from_results(results, "prompt")


def _severity_rank(severity: Column) -> Column:
    rank = F.lit(None).cast("int")
    for i, name in enumerate(SEVERITIES):
        rank = F.when(severity == name, F.lit(i)).otherwise(rank)
    return rank


_RANKED_FLAGS = "array<struct<stage:string,category:string,rank:int,filtered:boolean,detected:boolean>>"


def merge_flags(flags: Column) -> Column:
    """One flag per (stage, category): the worst severity, and filtered/detected if any says so.

    Streams repeat a category on every annotation frame; this keeps one entry
    for each, sorted by stage then category. The flags are ranked (a severity
    outside the vocabulary ranks as unknown), sorted so each (stage,
    category) is contiguous, and folded once: a flag of the same stage and
    category as the last kept one merges into it (``greatest`` skips nulls,
    so ``filtered`` is true if any flag says so, false if one says false and
    none true, null if none tells).
    """
    ranked = F.transform(
        flags,
        lambda f: F.struct(
            f["stage"].alias("stage"),
            f["category"].alias("category"),
            _severity_rank(f["severity"]).alias("rank"),
            f["filtered"].alias("filtered"),
            f["detected"].alias("detected"),
        ),
    ).cast(_RANKED_FLAGS)

    def fold(kept: Column, f: Column) -> Column:
        last = F.try_element_at(kept, F.lit(-1))
        same = (F.size(kept) > 0) & last["stage"].eqNullSafe(f["stage"]) & last["category"].eqNullSafe(f["category"])
        merged = F.struct(
            f["stage"].alias("stage"),
            f["category"].alias("category"),
            F.greatest(last["rank"], f["rank"]).alias("rank"),
            F.greatest(last["filtered"], f["filtered"]).alias("filtered"),
            F.greatest(last["detected"], f["detected"]).alias("detected"),
        )
        return (
            F.when(same, F.concat(F.slice(kept, 1, F.size(kept) - 1), F.array(merged)))
            .otherwise(F.concat(kept, F.array(f)))
            .cast(_RANKED_FLAGS)
        )

    folded = F.aggregate(F.array_sort(ranked), F.array().cast(_RANKED_FLAGS), fold)
    severities = F.array(*[F.lit(s) for s in SEVERITIES])
    return F.transform(
        folded,
        lambda m: F.struct(
            m["stage"].alias("stage"),
            m["category"].alias("category"),
            F.try_element_at(severities, m["rank"] + 1).alias("severity"),
            m["filtered"].alias("filtered"),
            m["detected"].alias("detected"),
        ),
    ).cast(FLAGS_TYPE)


def any_filtered(flags: Column, stage: str | None = None) -> Column:
    """True when any flag (of ``stage``, if given) has ``filtered: true``."""
    if stage is None:
        return F.coalesce(F.exists(flags, lambda f: F.coalesce(f["filtered"], F.lit(False))), F.lit(False))
    return F.coalesce(
        F.exists(flags, lambda f: (f["stage"] == stage) & F.coalesce(f["filtered"], F.lit(False))),
        F.lit(False),
    )


def non_empty_string(c: Column) -> Column:
    """True when ``c`` is a string of at least one character."""
    return F.coalesce(F.length(c) > 0, F.lit(False))


STRING_ARRAY = ArrayType(StringType())
