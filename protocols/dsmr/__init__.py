"""DSMR P1 (Dutch DSMR 2.2, 3, 4.x, 5 and the Belgian e-MUCS), sans-IO.

``telegram`` frames and checks one telegram (CRC-16), ``stream`` cuts a P1 byte stream into
telegrams and errors, ``meters`` turns a telegram into readings of the electricity meter and
of each M-Bus device (gas, water, heat) with its own capture time.
"""

from .meters import (
    DEVICE_TYPES,
    ELECTRICITY,
    MeterReading,
    Reading,
    meter_readings,
    parse_timestamp,
)
from .stream import NEED_DATA, BadTelegram, Skipped, TelegramReader, TelegramReceived
from .telegram import (
    DataObject,
    DsmrCrcError,
    DsmrError,
    Telegram,
    crc16,
    encode_telegram,
    parse_telegram,
)

__all__ = [
    "DEVICE_TYPES",
    "ELECTRICITY",
    "NEED_DATA",
    "BadTelegram",
    "DataObject",
    "DsmrCrcError",
    "DsmrError",
    "MeterReading",
    "Reading",
    "Skipped",
    "Telegram",
    "TelegramReader",
    "TelegramReceived",
    "crc16",
    "encode_telegram",
    "meter_readings",
    "parse_telegram",
    "parse_timestamp",
]
