"""The collector's configuration file (TOML).

Paths in it are relative to the folder of the config file, so a config and its accounts and
tariffs can be moved together. See ``config/collector.example.toml``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from protocols.clock import ClockSetting, ClockSettingError
from protocols.errors import EncodeError
from protocols.record import check_id

from .tomlfile import load_toml
from .vee.settings import VeeSettings, parse_vee

__all__ = [
    "BillingConfig",
    "CollectorConfig",
    "Config",
    "MqttConfig",
    "load_config",
    "parse_duration_ms",
    "with_clock",
]

SYSTEM_CLOCK = ClockSetting.system()


@dataclass(frozen=True)
class CollectorConfig:
    database: Path
    id: str
    batch_coalesce: int = 50  # how many waiting MQTT messages one transaction takes at most
    stats_interval: int = 60  # seconds between rate log lines
    # the collector's clock: "system", or the fleet's virtual clock (START@ANCHORxSPEED)
    clock: ClockSetting = SYSTEM_CLOCK
    # records captured more than this ahead of the clock are refused ("future-dated")
    max_future_ms: int = 86_400_000


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    group: str = "collectors"
    keepalive: int = 30
    session_expiry: int = 86_400  # seconds the broker keeps our session (and its queue)


@dataclass(frozen=True)
class BillingConfig:
    accounts: Path
    tariffs: Path


@dataclass(frozen=True)
class Config:
    path: Path
    collector: CollectorConfig
    mqtt: MqttConfig
    billing: BillingConfig | None
    vee: VeeSettings = field(default_factory=VeeSettings)  # [vee]: off when absent


def load_config(path: Path | str) -> Config:
    path = Path(path).resolve()
    root = load_toml(path, "collector config")
    root.check_keys({"collector", "mqtt", "billing", "vee"})

    sec = root.table_of("collector")
    sec.check_keys({"database", "id", "batch_coalesce", "stats_interval", "clock", "max_future"})
    client_id = sec.str("id", "collector-1")
    try:
        check_id("collector", client_id)
    except EncodeError as exc:
        raise sec.error("id", str(exc)) from None
    collector = CollectorConfig(
        database=sec.path_of("database", "collector.sqlite"),
        id=client_id,
        batch_coalesce=sec.int("batch_coalesce", 50, 1, 10_000),
        stats_interval=sec.int("stats_interval", 60, 1, 86_400),
    )
    try:
        clock = ClockSetting.parse(sec.str("clock", "system"))
    except ClockSettingError as exc:
        raise sec.error("clock", str(exc)) from None
    try:
        max_future_ms = parse_duration_ms(sec.str("max_future", "1d"))
    except ValueError as exc:
        raise sec.error("max_future", str(exc)) from None
    collector = replace(collector, clock=clock, max_future_ms=max_future_ms)

    sec = root.table_of("mqtt", required=False)
    sec.check_keys({"host", "port", "group", "keepalive", "session_expiry"})
    group = sec.str("group", "collectors")
    if any(c in group for c in "/+#$"):
        raise sec.error("group", f"shared-subscription group {group!r} may not hold / + # $")
    mqtt = MqttConfig(
        host=sec.str("host", "127.0.0.1"),
        port=sec.int("port", 1883, 1, 65535),
        group=group,
        keepalive=sec.int("keepalive", 30, 5, 3600),
        session_expiry=sec.int("session_expiry", 86_400, 0, 2**32 - 1),
    )

    billing = None
    if "billing" in root.data:
        sec = root.table_of("billing")
        sec.check_keys({"accounts", "tariffs"})
        billing = BillingConfig(sec.path_of("accounts"), sec.path_of("tariffs"))
    return Config(path, collector, mqtt, billing, parse_vee(root, parse_duration_ms))


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``"1d"``, ``"6h"``, ``"30m"``, ``"90s"``, ``"500ms"`` -> milliseconds (> 0, <= 10 years)."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. '1d', '6h', '30m', '90s')")
    ms = int(Decimal(match.group(1)) * _UNIT_MS[match.group(2)])
    if not 0 < ms <= 3650 * 86_400_000:
        raise ValueError(f"{text!r}: must be more than 0 and at most 3650d")
    return ms


def with_clock(config: Config, text: str) -> Config:
    """``config`` with the clock given on the command line (``collector run --clock``)."""
    clock = ClockSetting.parse(text)
    return replace(config, collector=replace(config.collector, clock=clock))
