"""``gatewatch demo`` (what ``make demo`` runs), small: it accounts for every row and shows an alert fire and resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_the_demo_lands_every_row_once_and_fires_then_resolves_its_alert(tmp_path):
    """Every inserted row is in requests or quarantine once; the generated spike fires once and resolves."""
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
    assert len(re.findall(r"FIRING .*content_filter_spike \[endpoint=chat-prod\]", out)) == 1
    assert len(re.findall(r"RESOLVED .*content_filter_spike \[endpoint=chat-prod\]", out)) == 1
