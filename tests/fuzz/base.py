"""What every fuzz target is made of (shared by ``targets.py`` and ``dlms_targets.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PromiseBroken", "Target"]


class PromiseBroken(AssertionError):
    """The decoder accepted an input but broke one of its own promises."""


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]
