"""Reading configuration: YAML files and ``--set key=value`` overrides into ``Settings``.

This is the only module that reads YAML. A mistake is reported as a
``ConfigError`` naming the dotted key and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gatewatch.errors import ConfigError
from gatewatch.settings import Settings

_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def packaged_conf(name: str) -> Path:
    """The path of a file shipped in the package's ``conf/`` folder."""
    return Path(str(resources.files("gatewatch").joinpath("conf", name)))


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one YAML mapping, with a ConfigError for a missing or malformed file."""
    file = Path(path)
    if not file.exists():
        raise ConfigError(str(path), "an existing YAML file", "no such file")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "unknown line"
        raise ConfigError(str(path), f"valid YAML ({where})", getattr(err, "problem", None)) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "a YAML mapping at the top level", type(data).__name__)
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; list items are addressed by index (``sources.0.table``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "KEY=VALUE after --set")
        key, raw = item.split("=", 1)
        value = _scalar(raw)
        node: Any = data
        parts = key.strip().split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) > len(node):
                    raise ConfigError(".".join(parts[: depth + 1]), f"a list index 0..{len(node)}")
                index = int(part)
                if index == len(node):
                    node.append({})
                if last:
                    node[index] = value
                else:
                    node = node[index]
            else:
                if last:
                    node[part] = value
                else:
                    child = node.get(part)
                    if child is None:
                        child = [] if parts[depth + 1].isdigit() else {}
                        node[part] = child
                    node = child
    return data


def _scalar(raw: str) -> Any:
    """An override's value read as YAML (``5``, ``true``, ``[a, b]``); text YAML cannot read stays text."""
    if not raw.strip():
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith(("function-", "tagged-union")))


def to_settings(data: Mapping[str, Any]) -> Settings:
    """Validate a mapping into ``Settings``, naming the first bad key on failure."""
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(p for p in first["loc"] if p not in ("int", "literal['earliest','latest']"))
        kind = first["type"]
        if kind == "extra_forbidden":
            raise ConfigError(_key(loc), "no such key: remove or rename it") from None
        if kind == "missing":
            raise ConfigError(_key(loc), "a value (it is required)") from None
        raise ConfigError(_key(loc), first["msg"].lower(), first.get("input")) from None


def substitute_env(value: Any) -> Any:
    """Replace ``${env:NAME}`` in strings; a missing variable is a ConfigError."""
    if isinstance(value, str):
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"${{env:{name}}}", f"environment variable {name} to be set")
            return os.environ[name]

        return _ENV.sub(one, value)
    if isinstance(value, list):
        return [substitute_env(v) for v in value]
    if isinstance(value, dict):
        return {k: substitute_env(v) for k, v in value.items()}
    return value


def read_rules(path: str | os.PathLike[str] | None = None) -> list[Any]:
    """The ``rules:`` list of an alert rules file (default: the packaged ``conf/alerts.yaml``), unvalidated."""
    file = Path(path) if path else packaged_conf("alerts.yaml")
    data = read_yaml(file)
    rules = data.get("rules")
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise ConfigError("alerts.rules", f"a list under rules: in {file}", type(rules).__name__)
    return rules


def with_alert_rules(data: dict[str, Any], base: Path | None = None) -> tuple[dict[str, Any], Path | None]:
    """``data`` with ``alerts.rules`` read from ``alerts.rules_file`` unless the config lists rules itself.

    A relative ``rules_file`` is relative to the config file's folder
    (``base``). Returns the data and the rules file read (``None`` if none was).
    """
    alerts = data.get("alerts")
    if alerts is None:
        alerts = {}
    if not isinstance(alerts, dict):
        raise ConfigError("alerts", "a mapping", type(alerts).__name__)
    if alerts.get("enabled", True) is False or alerts.get("rules") is not None:
        return data, None
    file = alerts.get("rules_file")
    path = None if not file else Path(str(file)).expanduser()
    if path is not None and not path.is_absolute() and base is not None:
        path = base / path
    rules = read_rules(path)
    return {**data, "alerts": {**alerts, "rules": rules}}, path or packaged_conf("alerts.yaml")


def load_settings(path: str | None = None, overrides: Iterable[str] = ()) -> Settings:
    """Load the config file (or the packaged default), apply overrides, and read the alert rules file."""
    data = read_yaml(path) if path else read_yaml(packaged_conf("gatewatch.yaml"))
    data, rules_file = with_alert_rules(apply_overrides(data, overrides), Path(path).parent if path else None)
    try:
        return to_settings(data)
    except ConfigError as err:
        if rules_file is None or not err.key.startswith("alerts.rules."):
            raise
        raise ConfigError(err.key, f"{err.expected} [rules file {rules_file}]", err.got) from None
