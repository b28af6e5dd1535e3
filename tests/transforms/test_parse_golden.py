"""The per-row parse gives, row for row, the output recorded before its speed-ups.

``tests/fixtures/parse_golden.jsonl.gz`` holds one JSON line per row: its
input (``request``, ``response``, ``status_code``, ``logging_error_codes``)
and the ``parse_values`` output the code gave before the parse was made
faster (every payload fixture in ``tests/fixtures/payloads``, then 1,500
rows of ``traffic.generate(1500, seed=20)``). The inputs are kept in the
file, so the check does not depend on the traffic generator staying the same.
A change meant to alter the parse's output regenerates the file on purpose.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson

import gatewatch.transforms.parsers  # noqa: F401  (registers the built-in parsers)
from gatewatch.transforms.rows import parse_values

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "parse_golden.jsonl.gz"
_INPUT = ("request", "response", "status_code", "logging_error_codes")


def _golden() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in gzip.decompress(GOLDEN.read_bytes()).splitlines()]


def test_parse_output_equals_the_golden_rows():
    """Every golden row's parse gives exactly its recorded columns and values."""
    golden = _golden()
    out = parse_values(*([g["input"][k] for g in golden] for k in _INPUT))
    names = sorted(out)
    assert len(golden) > 1500 and {g["output"]["outcome"] for g in golden} >= {"predict_ok", "stream_ok", "error"}
    for i, g in enumerate(golden):
        got = orjson.loads(orjson.dumps({k: out[k][i] for k in names}))
        assert got == g["output"], g["input"]["name"]
