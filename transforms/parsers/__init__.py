"""One parser per outcome, one module each; importing this package registers them."""

from __future__ import annotations

from gatewatch.transforms.parsers import (  # noqa: F401  (each module registers itself)
    error,
    predict_blocked,
    predict_ok,
    stream_blocked_immediate,
    stream_blocked_partial,
    stream_ok,
)
from gatewatch.transforms.registry import (
    OUTCOME_PARSERS,
    SHAPE_PARSERS,
    dispatch_shapes,
    parse_row,
    register,
    register_shape,
)

__all__ = ["OUTCOME_PARSERS", "SHAPE_PARSERS", "dispatch_shapes", "parse_row", "register", "register_shape"]
