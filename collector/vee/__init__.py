"""Validation, estimation and editing (VEE) of stored readings, and derived consumption.

One module per rule (``units``, ``limits``, ``timestamps``, ``monotonic``, ``negative``,
``spike``, ``zero``, ``sumcheck``, ``gaps``), the derivation of interval consumption
(``derive``, ``estimate``), the engine that runs them inside ingest's transaction
(``engine``), and the operator's actions (``operator``). See docs/vee.md.
"""

from .engine import VeeEngine
from .settings import ALL_RULES, MeterRules, VeeSettings

__all__ = ["ALL_RULES", "MeterRules", "VeeEngine", "VeeSettings"]
