"""gatewatch: inference tables in, typed request tables, a quarantine and alerts out."""

from __future__ import annotations

__version__ = "0.1.0"
