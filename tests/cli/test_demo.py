"""``gatewatch demo`` (what ``make demo`` runs), small: it accounts for every row and shows an alert fire and resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_demo_lands_every_row_once_and_fires_then_resolves_its_alert(tmp_path):
    """Every inserted row is in requests or quarantine once; the guardrail spike's alerts fire once and resolve."""
    proc = subprocess.run(
        [sys.executable, "-m", "gatewatch.cli.main", "demo", "--dir", str(tmp_path / "demo"),
         "--commits", "1", "--rows", "120", "--log-format", "json"],
        capture_output=True, text=True, env=dict(os.environ), timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    landed = re.search(r"inserted ([\d,]+) rows -> ([\d,]+) requests \+ ([\d,]+) quarantined "
                       r"\((\d+) missing, (\d+) duplicated\)", out)
    assert landed, out[-3000:]
    inserted, requests, quarantined, missing, duplicated = (int(g.replace(",", "")) for g in landed.groups())
    assert inserted > 0 and requests + quarantined == inserted
    assert (missing, duplicated) == (0, 0)
    assert "quarantine reason" in out and "endpoint" in out
    assert "a guardrail spike on chat-prod" in out
    for rule in ("databricks_safety_spike", "content_filter_spike"):
        assert len(re.findall(rf"FIRING .*{rule} \[endpoint=chat-prod\]", out)) == 1, rule
        assert len(re.findall(rf"RESOLVED .*{rule} \[endpoint=chat-prod\]", out)) == 1, rule
    assert not re.search(r"FIRING .*(databricks_safety_spike|content_filter_spike) \[endpoint=agent-prod\]", out)
