"""Modbus, sans-IO: register value codecs, block-read planning and device profiles."""

from .errors import ModbusError, ModbusPlanError, ModbusProfileError, ModbusValueError
from .plan import (
    FUNCTION_HOLDING,
    FUNCTION_INPUT,
    MAX_READ_COUNT,
    AddressRange,
    Point,
    ReadRequest,
    plan_reads,
    split_response,
)
from .profile import Document, Profile, RegisterSpec, load_profile, parse_profile
from .values import DataType, Order, decode, encode, register_count

__all__ = [
    "FUNCTION_HOLDING",
    "FUNCTION_INPUT",
    "MAX_READ_COUNT",
    "AddressRange",
    "DataType",
    "Document",
    "ModbusError",
    "ModbusPlanError",
    "ModbusProfileError",
    "ModbusValueError",
    "Order",
    "Point",
    "Profile",
    "ReadRequest",
    "RegisterSpec",
    "decode",
    "encode",
    "load_profile",
    "parse_profile",
    "plan_reads",
    "register_count",
    "split_response",
]
