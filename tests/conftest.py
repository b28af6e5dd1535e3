"""Shared fixtures: one local SparkSession with Delta for the whole test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SEED = FIXTURES / "seed"


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession with the Delta extension and small shuffles."""
    from gatewatch.settings import SparkSettings
    from gatewatch.streams.spark import build_spark

    session = build_spark(
        SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="2g"),
        app_name="gatewatch-tests",
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The folder of payload fixtures."""
    return FIXTURES


def load_fixture(name: str) -> dict:
    """Read one JSON fixture from tests/fixtures."""
    return json.loads((FIXTURES / name).read_text())


FIRST = ("connect", "slow", "alertmanager", "browser")
"""The markers of the longest lanes, which start first."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the longest lanes first, so the two workers of ``make test`` end together.

    pytest-xdist (``--dist loadgroup``) hands tests to whichever worker is
    free, in this order: a drill of several minutes started last would keep
    one worker busy after the other ran out of tests.
    """
    def rank(item: pytest.Item) -> int:
        return next((i for i, name in enumerate(FIRST) if item.get_closest_marker(name)), len(FIRST))

    items.sort(key=rank)
