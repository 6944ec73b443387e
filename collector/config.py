"""The collector's configuration file (TOML).

Paths in it are relative to the folder of the config file, so a config and its accounts and
tariffs can be moved together. See ``config/collector.example.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocols.errors import EncodeError
from protocols.record import check_id

from .tomlfile import load_toml

__all__ = ["BillingConfig", "CollectorConfig", "Config", "MqttConfig", "load_config"]


@dataclass(frozen=True)
class CollectorConfig:
    database: Path
    id: str
    batch_coalesce: int = 50  # how many waiting MQTT messages one transaction takes at most
    stats_interval: int = 60  # seconds between rate log lines


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


def load_config(path: Path | str) -> Config:
    path = Path(path).resolve()
    root = load_toml(path, "collector config")
    root.check_keys({"collector", "mqtt", "billing"})

    sec = root.table_of("collector")
    sec.check_keys({"database", "id", "batch_coalesce", "stats_interval"})
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
    return Config(path, collector, mqtt, billing)
