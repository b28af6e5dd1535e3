"""Loading the user's parser modules named in ``parsers.modules``.

A module registers its parsers by decorator when imported (see
``transforms.parsers.registry.register_shape`` and the README); the job and
``gatewatch replay`` import them before the first batch.
"""

from __future__ import annotations

import importlib

import structlog

from gatewatch.errors import ConfigError
from gatewatch.settings import Settings

log = structlog.get_logger("gatewatch.parsers")


def load_parser_modules(settings: Settings) -> list[str]:
    """Import every module of ``parsers.modules``; return the parser labels now registered."""
    from gatewatch.transforms.registry import SHAPE_PARSERS, parser_version_tag

    for i, name in enumerate(settings.parsers.modules):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"parsers.modules.{i}", "an importable Python module", f"{name} ({err})") from None
    tag = parser_version_tag()
    if settings.parsers.modules:
        log.info("parsers_loaded", modules=list(settings.parsers.modules), shape_parsers=sorted(SHAPE_PARSERS))
    return tag.split(",")
