"""The wheel's package list covers every package folder of the repository."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {"tests", "bench", "checkpoints", "build", "dist"}


def test_every_package_folder_is_in_the_wheel():
    """A folder with an ``__init__.py`` outside tests and bench is listed in pyproject's packages."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"gatewatch"}
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts and (rel.parts[0] in SKIP or rel.parts[0].startswith(".")):
            continue
        if rel.parts:
            found.add("gatewatch." + ".".join(rel.parts))
    assert found, "no package folder found"
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"
