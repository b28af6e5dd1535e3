"""The safe JSON reads and flag helpers the parse is built on (no Spark)."""

from __future__ import annotations

import pytest

from gatewatch.transforms import values as V
import gatewatch.transforms.parsers  # noqa: F401  (registers the built-in parsers)
from gatewatch.transforms.rows import parse_values


class TestLoads:
    def test_strict_json_is_parsed(self):
        """Objects, arrays and JSON null parse; what orjson refuses but is JSON still parses."""
        assert V.loads('{"a": [1, null]}') == {"a": [1, None]}
        assert V.loads("null") is None
        assert V.loads('"\\ud800"') == "\ud800"

    @pytest.mark.parametrize("text", ['{"a": 1', "NaN", '{"a": Infinity}', "", "{'a': 1}"])
    def test_what_is_not_json_is_refused(self, text):
        """Truncated text, NaN/Infinity, empty text and Python reprs raise ``Invalid``."""
        with pytest.raises(V.Invalid):
            V.loads(text)

    def test_parse_of_escaped_json_gives_none_when_not_json(self):
        """A second parse of a string that is not JSON gives None, never raises."""
        assert V.parse('{"model": "gpt"}') == {"model": "gpt"}
        assert V.parse("gpt-4.1") is None
        assert V.parse(None) is None


class TestTypedReads:
    def test_paths_through_objects_and_arrays(self):
        """Keys and indexes navigate; a missing step or another type gives None."""
        v = {"choices": [{"finish_reason": "stop"}], "n": 3}
        assert V.get(v, "choices", 0, "finish_reason") == "stop"
        assert V.get(v, "choices", 1, "finish_reason") is None
        assert V.get(v, "n", "x") is None
        assert V.items(v, "n") is None and V.obj(v, "choices") is None

    def test_text_integer_boolean_read_like_spark(self):
        """Numbers read as text give their JSON text; numeric text reads as an integer; "true" as True."""
        v = {"code": 429, "tokens": "12", "stream": "true", "f": 2.9, "empty": ""}
        assert V.text(v, "code") == "429"
        assert V.integer(v, "tokens") == 12 and V.integer(v, "f") == 2 and V.integer(v, "stream") is None
        assert V.boolean(v, "stream") is True and V.boolean(v, "tokens") is None
        assert V.name(v, "empty") is None


class TestFlags:
    def test_merge_keeps_worst_severity_and_any_filtered(self):
        """Repeated (stage, category) flags fold into one: worst severity, filtered if any says so."""
        flags = [
            {"stage": "completion", "category": "violence", "severity": "low", "filtered": False, "detected": None},
            {"stage": "completion", "category": "violence", "severity": "medium", "filtered": True, "detected": None},
            {"stage": "prompt", "category": "hate", "severity": "odd", "filtered": None, "detected": None},
            {"stage": "completion", "category": "hate", "severity": "safe", "filtered": False, "detected": None},
        ]
        assert V.merge_flags(flags) == [
            {"stage": "completion", "category": "hate", "severity": "safe", "filtered": False, "detected": None},
            {"stage": "completion", "category": "violence", "severity": "medium", "filtered": True, "detected": None},
            {"stage": "prompt", "category": "hate", "severity": None, "filtered": None, "detected": None},
        ]

    def test_results_without_filter_fields_give_no_flag(self):
        """An ``error`` entry of a filter result, or a non-object, is skipped."""
        results = {"error": {"code": "x"}, "hate": {"filtered": False, "severity": "SAFE"}, "odd": 3}
        assert V.flags_from_results(results, "prompt") == [
            {"stage": "prompt", "category": "hate", "severity": "safe", "filtered": False, "detected": None}
        ]


def test_parse_values_gives_one_row_per_input_and_never_raises():
    """Any text at all gives one parsed row: JSON or not, null or odd shapes."""
    texts = [None, "", "null", "[]", "[1, 2]", '{"a":', '"just a string"', "{}", '{"choices": 5}']
    out = parse_values(texts, texts, [200] * len(texts), [None] * len(texts))
    assert all(len(column) == len(texts) for column in out.values())
    assert out["quarantine_reason"][5] == "json_parse_error"
    assert out["quarantine_reason"][0] == "unknown_shape"
