"""The GET and SET most simulated COSEM objects share: no selective access (a GET with a
selector is refused, other-reason) and no SET (read-write-denied). A subclass says what its
attributes read as (``read``) and, where it takes a SET, overrides ``set``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocols.dlms.apdu import AccessResult
from protocols.dlms.axdr import Data

if TYPE_CHECKING:
    from .objects import DlmsMeterState

__all__ = ["PlainObject"]


class PlainObject:
    __slots__ = ()

    def get(
        self, meter: DlmsMeterState, attribute: int, selector: Data | None
    ) -> Data | AccessResult:
        if selector is not None:
            return AccessResult.OTHER_REASON
        return self.read(meter, attribute)

    def read(self, meter: DlmsMeterState, attribute: int) -> Data | AccessResult:
        """Attribute ``attribute`` (>= 2) as it reads now."""
        return AccessResult.OBJECT_UNAVAILABLE

    def set(self, meter: DlmsMeterState, attribute: int, value: Data) -> AccessResult:
        return AccessResult.READ_WRITE_DENIED
