"""Errors of the Modbus codec: one root, split by what the caller should do about them."""

from __future__ import annotations

__all__ = ["ModbusError", "ModbusPlanError", "ModbusProfileError", "ModbusValueError"]


class ModbusError(Exception):
    """Root of every error raised by ``protocols.modbus``; not raised itself."""

    def __init__(self, *args: object) -> None:
        if type(self) is ModbusError:
            raise TypeError("ModbusError is abstract: raise one of its subclasses")
        super().__init__(*args)


class ModbusValueError(ModbusError, ValueError):
    """Registers that do not hold a usable value (NaN, inf, wrong length), or a value
    that does not fit the register type when encoding. Skip this value, keep the link."""


class ModbusPlanError(ModbusError, ValueError):
    """Register points that cannot be read as asked (too long, overlapping an unreadable
    range, duplicated ids). A configuration mistake, not a device fault."""


class ModbusProfileError(ModbusError, ValueError):
    """A device profile that cannot be loaded; names the file, the key and the line."""

    def __init__(
        self,
        message: str,
        *,
        source: str = "<profile>",
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.source = source
        self.key = key
        self.line = line
        where = source if line is None else f"{source}:{line}"
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        super().__init__(text)
