"""The Association LN object (class 15, version 1, 0.0.40.0.0.255, "current association")
of the simulated meter: what a client reads to learn which objects the meter has.

Attributes (Blue Book, Association LN version 1):

* 2 object_list: ``array of object_list_element``, one per object of the meter (itself
  included), in the meter's order::

      object_list_element ::= structure {
          class_id long-unsigned, version unsigned, logical_name octet-string(6),
          access_rights structure {
              attribute_access array of structure {
                  attribute_id integer, access_mode enum,
                  access_selectors CHOICE {null-data, array of integer}},
              method_access array of structure {method_id integer, access_mode enum}}}

  access_mode (attributes): 0 no_access, 1 read_only, 2 write_only, 3 read_and_write;
  (methods): 0 no_access, 1 access. Every attribute of the class is listed; those the
  simulator does not answer are no_access. The rights shown are those of the meter's
  management association (the clock's time and time_zone read_and_write); the public
  client is still refused a SET by the session (the object does not know which client
  asks).
* 5 xdlms_context_info: structure {conformance bit-string(24), max_receive_pdu_size
  long-unsigned, max_send_pdu_size long-unsigned, dlms_version_number unsigned,
  quality_of_service integer, cyphering_info octet-string}: what the meter offers.
* 8 association_status: enum 2 (associated: whoever reads it is).

Attributes 3 (associated_partners_id), 4 (application_context_name), 6
(authentication_mechanism_name) depend on the association asking, which an object does
not see here: object-unavailable. Attribute 7 (secret) is write-only: read-write-denied.
The list is larger than a small client's PDU; the session delivers it in blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocols.dlms.apdu import AccessResult
from protocols.dlms.axdr import Data, Tag
from protocols.obis import Obis

from .plain import PlainObject

if TYPE_CHECKING:
    from .objects import CosemObject, DlmsMeterState

__all__ = [
    "CLASS_ASSOCIATION_LN",
    "OBIS_ASSOCIATION",
    "AssociationObject",
    "Rights",
    "object_list",
]

CLASS_ASSOCIATION_LN = 15
OBIS_ASSOCIATION = Obis(0, 0, 40, 0, 0, 255)

NO_ACCESS, READ_ONLY, WRITE_ONLY, READ_AND_WRITE = 0, 1, 2, 3
METHOD_ACCESS = 1

#: conformance bits the simulated meter offers (bit n counted from the left of 24)
_OFFERED_BITS = (11, 19, 20, 21, 23)  # block-transfer-with-get, get, set, selective, action
MAX_RECEIVE_PDU = 1024  # as in the AARE (session.SERVER_MAX_RECEIVE_PDU)
DLMS_VERSION = 6


@dataclass(frozen=True, slots=True)
class Rights:
    """A class's attributes and methods as the object list shows them."""

    attributes: int  # attributes 1..n
    readable: frozenset[int]
    writable: frozenset[int] = frozenset()
    methods: int = 0  # methods 1..m (all no_access unless in ``callable``)
    callable: frozenset[int] = frozenset()
    selectors: tuple[tuple[int, tuple[int, ...]], ...] = ()  # (attribute, selectors)


def _rights(n: int, read: set[int], write: set[int] | None = None, **kw: object) -> Rights:
    return Rights(n, frozenset(read | {1}), frozenset(write or set()), **kw)  # type: ignore[arg-type]


#: per class id: what the simulator's objects of that class answer
CLASS_RIGHTS: dict[int, Rights] = {
    1: _rights(2, {2}),  # Data
    3: _rights(3, {2, 3}, methods=1),  # Register (reset: no access)
    4: _rights(5, {2, 3, 4, 5}, methods=1),  # Extended register
    7: _rights(8, {2, 3, 4, 5, 6, 7, 8}, methods=2, selectors=((2, (1, 2)),)),  # Profile generic
    8: _rights(9, {2, 3, 4}, {2, 3}, methods=6),  # Clock
    15: _rights(9, {2, 5, 8}, methods=4, callable=frozenset({1})),  # Association LN
}
_UNKNOWN = _rights(1, set())


def _access_rights(rights: Rights) -> Data:
    selectors = dict(rights.selectors)
    attributes = []
    for attribute in range(1, rights.attributes + 1):
        mode = (READ_ONLY if attribute in rights.readable else NO_ACCESS) | (
            WRITE_ONLY if attribute in rights.writable else NO_ACCESS
        )
        chosen = selectors.get(attribute)
        attributes.append(
            Data.structure(
                Data(Tag.INTEGER, attribute),
                Data(Tag.ENUM, mode),
                Data(Tag.NULL)
                if chosen is None
                else Data.array(*(Data(Tag.INTEGER, s) for s in chosen)),
            )
        )
    methods = [
        Data.structure(
            Data(Tag.INTEGER, method),
            Data(Tag.ENUM, METHOD_ACCESS if method in rights.callable else NO_ACCESS),
        )
        for method in range(1, rights.methods + 1)
    ]
    return Data.structure(Data.array(*attributes), Data.array(*methods))


def object_list(objects: list[CosemObject]) -> Data:
    """Attribute 2 of the Association LN for ``objects``."""
    return Data.array(
        *(
            Data.structure(
                Data(Tag.LONG_UNSIGNED, obj.class_id),
                Data(Tag.UNSIGNED, obj.version),
                Data.octet_string(obj.obis.to_bytes()),
                _access_rights(CLASS_RIGHTS.get(obj.class_id, _UNKNOWN)),
            )
            for obj in objects
        )
    )


def _conformance() -> bytes:
    bits = 0
    for n in _OFFERED_BITS:
        bits |= 1 << (23 - n)
    return bits.to_bytes(3, "big")


@dataclass(frozen=True, slots=True)
class AssociationObject(PlainObject):
    obis: Obis = OBIS_ASSOCIATION
    class_id: int = CLASS_ASSOCIATION_LN
    version: int = 1

    def read(self, meter: DlmsMeterState, attribute: int) -> Data | AccessResult:
        if attribute == 2:
            return object_list(list(meter.objects.values()))
        if attribute == 5:
            return Data.structure(
                Data(Tag.BIT_STRING, _conformance()),
                Data(Tag.LONG_UNSIGNED, MAX_RECEIVE_PDU),
                Data(Tag.LONG_UNSIGNED, MAX_RECEIVE_PDU),
                Data(Tag.UNSIGNED, DLMS_VERSION),
                Data(Tag.INTEGER, 0),
                Data.octet_string(b""),
            )
        if attribute == 7:
            return AccessResult.READ_WRITE_DENIED
        if attribute == 8:
            return Data(Tag.ENUM, 2)  # associated
        return AccessResult.OBJECT_UNAVAILABLE
