"""Safe reads of parsed JSON values: paths, typed reads, escaped JSON, safety flags.

Every helper takes what ``orjson`` returns (dicts, lists, scalars, ``None``)
and never raises on an unexpected shape: a path that is absent or of another
type gives ``None``, so the parse can probe every place a value may sit
without assuming the happy path. The typed reads follow what Spark's
``try_variant_get`` gives for the same JSON (a number read as a string is its
text, a numeric string read as an integer is the number).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import orjson

SEVERITIES: tuple[str, ...] = ("safe", "low", "medium", "high")
_RANK = {name: i for i, name in enumerate(SEVERITIES)}
_SEVERITY_OF_RANK: dict[int | None, str | None] = {None: None, **{i: name for i, name in enumerate(SEVERITIES)}}
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}

Flag = dict[str, Any]
"""``{"stage", "category", "severity", "filtered", "detected"}`` (``schemas.SAFETY_FLAG``)."""


class Invalid(ValueError):
    """Text that is not JSON."""


def _reject_constant(name: str) -> Any:
    raise Invalid(name)


def loads(text: str) -> Any:
    """Parse JSON text; raise ``Invalid`` when it is not JSON.

    ``orjson`` first (strict RFC 8259); the standard library only for the
    JSON orjson refuses (a lone surrogate escape, a number beyond a double).
    ``NaN`` and ``Infinity`` are not JSON and are refused by both.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise Invalid(text[:40]) from None


def parse(text: Any) -> Any:
    """The JSON held in a string, or ``None`` when absent or not JSON (a second parse)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return loads(text)
    except Invalid:
        return None


def get(v: Any, *path: str | int) -> Any:
    """The value at ``path`` (object keys and array indexes), or ``None``."""
    # ``type(...) is`` rather than ``isinstance``: orjson gives exact dicts and
    # lists, and this runs tens of times per row.
    for step in path:
        if type(step) is str:
            if type(v) is not dict:
                return None
            v = v.get(step)
        else:
            if type(v) is not list or not -len(v) <= step < len(v):
                return None
            v = v[step]
    return v


def key(v: Any, name: str) -> Any:
    """The value of one object key, or ``None`` (``get(v, name)`` without the path walk, for hot loops)."""
    return v.get(name) if type(v) is dict else None


def key_text(v: Any, name: str) -> str | None:
    """The value of one object key as a string (``text(v, name)`` without the path walk, for hot loops)."""
    out = v.get(name) if type(v) is dict else None
    return out if out is None or type(out) is str else as_text(out)


def obj(v: Any, *path: str | int) -> dict | None:
    """The object at ``path``, or ``None`` (JSON null and scalars included)."""
    out = get(v, *path)
    return out if type(out) is dict else None


def items(v: Any, *path: str | int) -> list | None:
    """The array at ``path``, or ``None`` when it is not an array."""
    out = get(v, *path)
    return out if type(out) is list else None


def as_text(out: Any) -> str | None:
    """A value as a string: strings as they are, numbers and booleans as JSON text, containers as JSON."""
    if out is None or type(out) is str:
        return out
    if isinstance(out, bool):
        return "true" if out else "false"
    if isinstance(out, (int, float)):
        return json.dumps(out)
    return orjson.dumps(out).decode()


def as_integer(out: Any) -> int | None:
    """A value as an integer: integers, integral text, finite numbers truncated."""
    if isinstance(out, bool):
        return int(out)
    if isinstance(out, int):
        return out if -(2**63) <= out < 2**63 else None
    if isinstance(out, float):
        return int(out) if math.isfinite(out) and abs(out) < 2**63 else None
    if isinstance(out, str):
        try:
            return int(out.strip())
        except ValueError:
            return None
    return None


def as_boolean(out: Any) -> bool | None:
    """A value as a boolean: booleans, ``"true"``/``"false"`` text, numbers (non-zero)."""
    if out is None or type(out) is bool:
        return out
    if isinstance(out, (int, float)):
        return out != 0
    if isinstance(out, str):
        low = out.strip().lower()
        return True if low in _TRUE else False if low in _FALSE else None
    return None


def text(v: Any, *path: str | int) -> str | None:
    """The value at ``path`` as a string (``as_text``)."""
    out = get(v, *path)
    return out if out is None or type(out) is str else as_text(out)


def name(v: Any, *path: str | int) -> str | None:
    """The string at ``path``, or ``None`` when absent or empty."""
    return as_text(get(v, *path)) or None


def integer(v: Any, *path: str | int) -> int | None:
    """The value at ``path`` as an integer (``as_integer``)."""
    return as_integer(get(v, *path))


def boolean(v: Any, *path: str | int) -> bool | None:
    """The value at ``path`` as a boolean (``as_boolean``)."""
    return as_boolean(get(v, *path))


def first(*values: Any) -> Any:
    """The first of several probes that is not ``None``."""
    for value in values:
        if value is not None:
            return value
    return None


def first_of(values: Iterable[Any]) -> Any:
    """The first element that is not ``None``."""
    for value in values:
        if value is not None:
            return value
    return None


def non_empty(value: Any) -> bool:
    """A string of at least one character."""
    return isinstance(value, str) and len(value) > 0


def flags_from_results(results: Any, stage: str) -> list[Flag]:
    """Safety flags from an Azure ``content_filter_results`` object.

    Each ``{category: {filtered, severity | detected}}`` entry becomes one
    flag; entries with none of those fields (``error`` objects, for example)
    are skipped. Anything but an object gives no flags.
    """
    if type(results) is not dict:
        return []
    flags = []
    for category, value in results.items():
        if type(value) is not dict:
            continue
        severity, filtered, detected = value.get("severity"), value.get("filtered"), value.get("detected")
        if severity is not None and type(severity) is not str:
            severity = as_text(severity)
        if filtered is not None and type(filtered) is not bool:
            filtered = as_boolean(filtered)
        if detected is not None and type(detected) is not bool:
            detected = as_boolean(detected)
        if severity is not None or filtered is not None or detected is not None:
            flags.append(
                {
                    "stage": stage,
                    "category": category,
                    "severity": None if severity is None else severity.lower(),
                    "filtered": filtered,
                    "detected": detected,
                }
            )
    return flags


def prompt_flags(v: Any) -> list[Flag]:
    """Flags from ``prompt_filter_results`` (also logged as ``prompt_annotations``)."""
    if type(v) is not dict:
        return []
    entries = v.get("prompt_filter_results")
    if type(entries) is not list:
        entries = v.get("prompt_annotations")
        if type(entries) is not list:
            return []
    flags: list[Flag] = []
    for p in entries:
        if type(p) is dict:
            flags += flags_from_results(p.get("content_filter_results"), "prompt")
    return flags


def completion_flags(v: Any) -> list[Flag]:
    """Flags from every ``choices[].content_filter_results`` of one completion or chunk."""
    choices = v.get("choices") if type(v) is dict else None
    if type(choices) is not list:
        return []
    flags: list[Flag] = []
    for c in choices:
        if type(c) is dict:
            results = c.get("content_filter_results")
            if results is not None:
                flags += flags_from_results(results, "completion")
    return flags


def error_flags(err: Any) -> list[Flag]:
    """Flags from a provider error's ``innererror.content_filter_result(s)`` (prompt stage)."""
    results = first(
        get(err, "innererror", "content_filter_result"),
        get(err, "innererror", "content_filter_results"),
        get(err, "content_filter_result"),
        get(err, "content_filter_results"),
    )
    return flags_from_results(results, "prompt")


def _flag(stage: str, category: str, filtered: bool | None, detected: bool | None) -> Flag:
    return {"stage": stage, "category": category, "severity": None, "filtered": filtered, "detected": detected}


def guardrail_flags(entry: Any, stage: str) -> list[Flag]:
    """Flags from one AI Gateway guardrail verdict (an ``input_guardrail``/``output_guardrail`` entry).

    Every category set true in ``categories`` becomes a flag of that name, and
    ``pii_detection`` (true, or an object with ``flagged: true``) a flag of
    category ``pii``; each is ``detected``, and ``filtered`` when the verdict
    is ``flagged`` (the guardrail blocked). Categories set false give none.
    """
    if type(entry) is not dict:
        return []
    flagged = as_boolean(entry.get("flagged")) is True
    found = [c for c, hit in (obj(entry, "categories") or {}).items() if as_boolean(hit) is True]
    pii = entry.get("pii_detection")
    if as_boolean(pii) is True or (type(pii) is dict and as_boolean(pii.get("flagged")) is True):
        found.append("pii")
    return [_flag(stage, category, flagged, True) for category in found]


def policy_flag(stage: str, denied: bool) -> Flag:
    """The flag of a Unity AI Gateway service policy that acted on a call (category ``service_policy``)."""
    return _flag(stage, "service_policy", denied, True)


def has_text(value: Any) -> bool:
    """Message content with text in it: a non-empty string, or a list of parts one of which has text.

    Chat content may be a list of parts (``{"type": "text", "text": ...}``,
    reasoning parts with a ``summary`` list of ``{"text"}``); an empty list has no text.
    """
    if type(value) is str:
        return len(value) > 0
    if type(value) is list:
        for part in value:
            if type(part) is str and part:
                return True
            if type(part) is dict and (
                non_empty(part.get("text")) or any(has_text(s.get("text")) for s in items(part, "summary") or () if type(s) is dict)
            ):
                return True
    return False


def _greatest(a: bool | int | None, b: bool | int | None) -> bool | int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class FlagTable:
    """Safety flags merged as they are found: one entry per (stage, category).

    What ``merge_flags`` gives for the flags added, without building a flag
    per frame first: Azure streams repeat every category on every annotation
    frame, so the parse adds filter results straight into the table.
    """

    __slots__ = ("_merged", "_seen", "_last")

    def __init__(self) -> None:
        self._merged: dict[tuple[str, str], list] = {}
        self._seen: dict[str, dict[str, dict]] = {}
        self._last: dict[str, dict] = {}

    def add(self, stage: str, category: str, severity: str | None, filtered: bool | None,
            detected: bool | None) -> None:
        """Merge one flag: the worst severity, and filtered/detected if any says so."""
        self._keep((stage, category), _RANK.get(severity), filtered, detected)

    def _keep(self, key: tuple[str, str], rank: int | None, filtered: bool | None, detected: bool | None) -> None:
        kept = self._merged.get(key)
        if kept is None:
            self._merged[key] = [rank, filtered, detected]
            return
        if rank is not None and (kept[0] is None or rank > kept[0]):
            kept[0] = rank
        if filtered is not None and (kept[1] is None or filtered > kept[1]):
            kept[1] = filtered
        if detected is not None and (kept[2] is None or detected > kept[2]):
            kept[2] = detected

    def add_flags(self, flags: list[Flag]) -> None:
        """Merge flags already built (``Flag`` dicts)."""
        for f in flags:
            self._keep((f["stage"], f["category"]), _RANK.get(f["severity"]), f["filtered"], f["detected"])

    def add_results(self, results: Any, stage: str) -> None:
        """Merge the flags of an Azure ``content_filter_results`` object (as ``flags_from_results`` reads it).

        An entry equal to the last one read for its stage and category is
        skipped, and so is an object equal to the last one read for its
        stage: a stream repeats them frame after frame, and merging a flag
        twice changes nothing.
        """
        if type(results) is not dict or not results:
            return
        last = self._last
        if last.get(stage) == results:
            return
        last[stage] = results
        seen = self._seen.get(stage)
        if seen is None:
            seen = self._seen[stage] = {}
        merged = self._merged
        for category, value in results.items():
            if type(value) is not dict or seen.get(category) == value:
                continue
            seen[category] = value
            severity, filtered, detected = value.get("severity"), value.get("filtered"), value.get("detected")
            if filtered is not None and type(filtered) is not bool:
                filtered = as_boolean(filtered)
            if detected is not None and type(detected) is not bool:
                detected = as_boolean(detected)
            if severity is not None:
                rank = _RANK.get(severity) if type(severity) is str else None
                if rank is None:
                    rank = _RANK.get((severity if type(severity) is str else as_text(severity)).lower())
            elif filtered is None and detected is None:
                continue
            else:
                rank = None
            key = (stage, category)
            kept = merged.get(key)
            if kept is None:
                merged[key] = [rank, filtered, detected]
                continue
            if rank is not None and (kept[0] is None or rank > kept[0]):
                kept[0] = rank
            if filtered is not None and (kept[1] is None or filtered > kept[1]):
                kept[1] = filtered
            if detected is not None and (kept[2] is None or detected > kept[2]):
                kept[2] = detected

    def flags(self) -> list[Flag]:
        """The merged flags, sorted by stage then category."""
        merged = self._merged
        out: list[Flag] = []
        for key in sorted(merged):
            rank, filtered, detected = merged[key]
            out.append({"stage": key[0], "category": key[1], "severity": _SEVERITY_OF_RANK[rank],
                        "filtered": filtered, "detected": detected})
        return out


def merge_flags(flags: list[Flag]) -> list[Flag]:
    """One flag per (stage, category): the worst severity, and filtered/detected if any says so.

    Streams repeat a category on every annotation frame; this keeps one entry
    for each, sorted by stage then category. A severity outside the
    vocabulary counts as unknown; ``filtered`` is true if any flag says so,
    false if one says false and none true, ``None`` if none tells.
    """
    if not flags:
        return []
    table = FlagTable()
    table.add_flags(flags)
    return table.flags()


def any_filtered(flags: list[Flag], stage: str | None = None) -> bool:
    """True when any flag (of ``stage``, if given) has ``filtered: true``."""
    return any(f["filtered"] is True and (stage is None or f["stage"] == stage) for f in flags)
