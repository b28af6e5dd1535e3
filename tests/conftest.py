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

