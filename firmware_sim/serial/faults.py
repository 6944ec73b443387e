"""Faults on a simulated serial line: what a meter (or a P1 port) does wrong.

One :class:`LineFault` per meter (RTU: per unit), settable at start (``--fault``, ``fault =``
in a scenario table) and at run time on the control channel (``fault ...``). A fault holds
until changed, or for the next COUNT answers (telegrams) only when a count is given.

=================  =============================================================  ===========
KIND[:ARG]         what the client gets                                           simulators
=================  =============================================================  ===========
``none``           correct answers (clears a fault)                               all
``silent``         nothing: the meter is unplugged                                all
``late:MS``        the correct answer, MS milliseconds later than normal          all
``corrupt``        the answer with one byte changed (bad CRC / BCC)               all
``truncated``      the first half of the answer, then silence                    all
``wrong-unit[:U]`` a well-formed answer from unit U (default: the next unit)      rtu
``exception:C``    Modbus exception response with code C (1..255)                 rtu
``garbage``        RTU: random bytes instead of the answer; DSMR: random bytes    rtu, dsmr
                   (never ``/``) on the line before the telegram
=================  =============================================================  ===========
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ALL_KINDS",
    "DSMR_KINDS",
    "IEC_KINDS",
    "RTU_KINDS",
    "FaultState",
    "LineFault",
    "LineFaultError",
    "fault_command",
    "parse_line_fault",
]

ALL_KINDS = (
    "none", "silent", "late", "corrupt", "truncated", "wrong-unit", "exception", "garbage",
)  # fmt: skip
RTU_KINDS = frozenset(ALL_KINDS)
IEC_KINDS = frozenset({"none", "silent", "late", "corrupt", "truncated"})
DSMR_KINDS = frozenset({"none", "silent", "late", "corrupt", "truncated", "garbage"})
_ARG_REQUIRED = {"late", "exception"}
_ARG_OPTIONAL = {"wrong-unit"}


class LineFaultError(ValueError):
    """A fault setting that cannot be understood (the message names it)."""


@dataclass(frozen=True, slots=True)
class LineFault:
    kind: str = "none"
    arg: int | None = None  # late: ms; exception: code; wrong-unit: the unit (None: next)

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"


NO_FAULT = LineFault()


def parse_line_fault(text: str, kinds: frozenset[str] = RTU_KINDS) -> LineFault:
    """``KIND[:ARG]`` for a simulator that knows ``kinds``."""
    kind, colon, arg = text.strip().partition(":")
    if kind not in kinds:
        raise LineFaultError(
            f"unknown fault {kind!r} here (known: {', '.join(k for k in ALL_KINDS if k in kinds)})"
        )
    if kind in _ARG_REQUIRED and not arg:
        raise LineFaultError(f"fault {kind!r} needs an argument ({kind}:...)")
    if kind not in _ARG_REQUIRED | _ARG_OPTIONAL and colon:
        raise LineFaultError(f"fault {kind!r} takes no argument, got {arg!r}")
    if not arg:
        return LineFault(kind)
    limits = {"late": (0, 3_600_000), "exception": (1, 255), "wrong-unit": (1, 247)}[kind]
    try:
        value = int(arg)
    except ValueError:
        raise LineFaultError(f"{kind}:{arg}: expected an integer") from None
    if not limits[0] <= value <= limits[1]:
        raise LineFaultError(f"{kind}:{arg}: must be {limits[0]}..{limits[1]}")
    return LineFault(kind, value)


class FaultState:
    """The fault of one meter now: ``take()`` gives the fault for the next answer and counts
    down a limited one (``set(fault, count)``)."""

    def __init__(self, fault: LineFault = NO_FAULT) -> None:
        self.fault = fault
        self.remaining: int | None = None  # None: until changed
        self.applied = 0  # answers (telegrams) that got a fault

    def set(self, fault: LineFault, count: int | None = None) -> None:
        self.fault = fault
        self.remaining = count

    def take(self) -> LineFault:
        fault = self.fault
        if fault.kind == "none":
            return fault
        self.applied += 1
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.fault, self.remaining = NO_FAULT, None
        return fault

    def describe(self) -> str:
        text = str(self.fault)
        return text if self.remaining is None else f"{text} x{self.remaining}"


def fault_command(state: FaultState, args: list[str], kinds: frozenset[str]) -> str:
    """``KIND[:ARG] [COUNT]`` from the control channel -> the answer line."""
    if not 1 <= len(args) <= 2:
        return "ERROR fault: expected KIND[:ARG] [COUNT]"
    try:
        fault = parse_line_fault(args[0], kinds)
    except LineFaultError as exc:
        return f"ERROR fault: {exc}"
    count = None
    if len(args) == 2:
        if not args[1].isdigit() or int(args[1]) < 1:
            return f"ERROR fault: COUNT must be a positive integer, got {args[1]!r}"
        count = int(args[1])
    state.set(fault, count if fault.kind != "none" else None)
    return f"OK fault {state.describe()}"
