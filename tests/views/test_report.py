"""``gatewatch report``: the demo's report drawn by headless Chromium, and what the page holds."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from gatewatch.errors import ConfigError
from gatewatch.views.report import CHARTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def demo(spark, tmp_path_factory) -> dict:
    """The demo, small, run once: its summary, which names the report it wrote."""
    from gatewatch.cli.demo import run_demo

    root = tmp_path_factory.mktemp("views-report") / "demo"
    summary = run_demo(root, commits=1, rows_per_commit=120, spark=spark, out=io.StringIO())
    summary["root"] = root
    return summary


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1400,3200", "--virtual-time-budget=15000", *args],
                          capture_output=True, text=True, timeout=180)


def _sections(dom: str) -> dict[str, str]:
    """Each chart section of the rendered page by dataset name: its HTML after the scripts ran."""
    found = {}
    for match in re.finditer(r'<section class="chart" id="chart-([\w]+)"', dom):
        end = dom.find("</section>", match.end())
        found[match.group(1)] = dom[match.end():end]
    return found


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_every_chart_draws_in_chromium_and_the_figures_match_the_tables(spark, demo, tmp_path) -> None:
    """Chromium draws every chart as SVG bars and saves a screenshot; the page's figures are the tables' own."""
    page = Path(demo["report"])
    shot = tmp_path / "report.png"
    taken = _chromium(f"--screenshot={shot}", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000, taken.stderr[-2000:]
    dumped = _chromium("--dump-dom", page.as_uri())
    dom = dumped.stdout
    sections = _sections(dom)
    assert set(sections) == {name for name, *_ in CHARTS}, sorted(sections)
    for name, html in sections.items():
        assert 'class="main-svg"' in html, f"{name}: no plot drawn"
        bars = re.findall(r'<g class="point"><path [^>]*d="M([^"]+)"', html)
        assert [d for d in bars if d.strip() not in ("", "M0,0Z")], f"{name}: no bar drawn"

    out = Path(demo["output"])
    requests = spark.read.format("delta").load(str(out / "requests"))
    quarantine = spark.read.format("delta").load(str(out / "quarantine"))
    figures = {key: text for key, _, text in re.findall(r'id="kpi-(\w+)" data-value="(\d*)">([\d,]+)<', dom)}
    assert int(figures["total_tokens"].replace(",", "")) == requests.agg(F.sum("total_tokens")).first()[0] > 0
    assert int(figures["requests"].replace(",", "")) == requests.count() >= demo["requests"]
    assert int(figures["quarantined"].replace(",", "")) == quarantine.count() >= demo["quarantined"]


def test_the_page_loads_nothing_from_a_network(demo) -> None:
    """The report inlines plotly.js and its styles: no script, stylesheet or image is fetched from anywhere."""
    text = Path(demo["report"]).read_text(encoding="utf-8")
    assert "Plotly.newPlot" in text and len(text) > 1_000_000
    assert not re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=", text)


def test_since_and_until_take_durations_or_dates_and_name_the_flag_when_wrong() -> None:
    """``24h``/``7d``/ISO dates are read relative to now; anything else is a ConfigError naming the flag."""
    from datetime import datetime, timezone

    from gatewatch.views.data import parse_when

    now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    assert parse_when("24h", "--since", now) == datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_when("7d", "--since", now) == datetime(2026, 2, 23, 12, 0, tzinfo=timezone.utc)
    assert parse_when("2026-03-01", "--until", now) == datetime(2026, 3, 1, tzinfo=timezone.utc)
    with pytest.raises(ConfigError) as err:
        parse_when("yesterday", "--since", now)
    assert err.value.key == "--since"
