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

from .commands.settings import CommandSettings, parse_commands
from .errors import ConfigError
from .sla.settings import SlaSettings, parse_sla
from .tomlfile import Section, load_toml
from .vee.settings import VeeSettings, parse_vee

__all__ = [
    "BillingConfig",
    "CollectorConfig",
    "Config",
    "FleetConfig",
    "HttpConfig",
    "MqttConfig",
    "load_config",
    "parse_duration_ms",
    "with_clock",
]

SYSTEM_CLOCK = ClockSetting.system()


@dataclass(frozen=True)
class CollectorConfig:
    # a SQLite file (the default), or a PostgreSQL URL "postgresql://user@host:port/dbname"
    # (several collectors on one database; docs/scaling.md)
    database: Path | str
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
    # seconds the broker keeps our session (and its queue) while we are away: a restart
    # fits; a collector gone for good stops taking its share of a shared subscription
    session_expiry: int = 300
    # TLS with a client certificate (config/mosquitto/): the CA, our certificate and key
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None


@dataclass(frozen=True)
class BillingConfig:
    accounts: Path
    tariffs: Path


@dataclass(frozen=True)
class HttpConfig:
    """[http]: the collector's web server (API, dashboard, /metrics); off when absent."""

    users: Path  # the accounts and tokens file (mode 0600), see collector/web/auth.py
    host: str = "127.0.0.1"
    port: int = 8080
    session_hours: int = 12  # lifetime of a dashboard login cookie
    metrics_auth: bool = False  # /metrics needs a login too (default: open, aggregates only)


@dataclass(frozen=True)
class FleetConfig:
    """[fleet]: when a gateway counts as offline and a meter as stale."""

    offline_after_ms: int = 600_000  # no message and no status for this long: offline
    stale_after_ms: int = 7_200_000  # no good reading for this long: a stale meter
    flush_interval_ms: int = 5_000  # fleet state written to the store this often


@dataclass(frozen=True)
class Config:
    path: Path
    collector: CollectorConfig
    mqtt: MqttConfig
    billing: BillingConfig | None
    vee: VeeSettings = field(default_factory=VeeSettings)  # [vee]: off when absent
    http: HttpConfig | None = None  # [http]: no web server when absent
    fleet: FleetConfig = field(default_factory=FleetConfig)
    commands: CommandSettings = field(default_factory=CommandSettings)  # [commands]
    sla: SlaSettings = field(default_factory=SlaSettings)  # [sla]: collector/sla/settings.py


def _database(sec: Section) -> Path | str:
    """A PostgreSQL URL as written; anything else is a SQLite file relative to the config."""
    text = sec.str("database", "collector.sqlite")
    if text.startswith(("postgresql://", "postgres://")):
        if re.match(r"postgres(ql)?://[^/@]*:[^/@]*@", text) or re.search(r"[?&]password=", text):
            raise sec.error(
                "database",
                "the URL holds a password: keep it out of the config (use ~/.pgpass or "
                "PGPASSFILE, mode 0600), so that it is never shown or logged",
            )
        return text
    if "://" in text:
        raise sec.error("database", f"{text.split('://')[0]}:// is not a known database; use "
                        "a SQLite file path or a postgresql:// URL")  # fmt: skip
    return sec.path_of("database", "collector.sqlite")


def load_config(path: Path | str) -> Config:
    path = Path(path).resolve()
    root = load_toml(path, "collector config")
    root.check_keys({"collector", "mqtt", "billing", "vee", "http", "fleet", "commands",
                     "sla"})  # fmt: skip

    sec = root.table_of("collector")
    sec.check_keys({"database", "id", "batch_coalesce", "stats_interval", "clock", "max_future"})
    client_id = sec.str("id", "collector-1")
    try:
        check_id("collector", client_id)
    except EncodeError as exc:
        raise sec.error("id", str(exc)) from None
    collector = CollectorConfig(
        database=_database(sec),
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
    sec.check_keys(
        {"host", "port", "group", "keepalive", "session_expiry", "cafile", "certfile", "keyfile"}
    )
    group = sec.str("group", "collectors")
    if any(c in group for c in "/+#$"):
        raise sec.error("group", f"shared-subscription group {group!r} may not hold / + # $")
    mqtt = MqttConfig(
        host=sec.str("host", "127.0.0.1"),
        port=sec.int("port", 1883, 1, 65535),
        group=group,
        keepalive=sec.int("keepalive", 30, 5, 3600),
        session_expiry=sec.int("session_expiry", 300, 0, 2**32 - 1),
        **{k: sec.path_of(k) if k in sec.data else None for k in ("cafile", "certfile", "keyfile")},
    )

    billing = None
    if "billing" in root.data:
        sec = root.table_of("billing")
        sec.check_keys({"accounts", "tariffs"})
        billing = BillingConfig(sec.path_of("accounts"), sec.path_of("tariffs"))
    config = Config(path, collector, mqtt, billing, parse_vee(root, parse_duration_ms))
    config = replace(config, commands=parse_commands(root, parse_duration_ms))
    config = replace(config, sla=parse_sla(root, parse_duration_ms))
    return replace(config, http=_parse_http(root), fleet=_parse_fleet(root))


def _parse_http(root: Section) -> HttpConfig | None:
    if "http" not in root.data:
        return None
    sec = root.table_of("http")
    sec.check_keys({"host", "port", "users", "session_hours", "metrics_auth"})
    metrics_auth = sec.data.get("metrics_auth", False)
    if not isinstance(metrics_auth, bool):
        raise sec.error("metrics_auth", f"must be true or false, got {metrics_auth!r}")
    return HttpConfig(
        users=sec.path_of("users"),
        host=sec.str("host", "127.0.0.1"),
        port=sec.int("port", 8080, 0, 65535),
        session_hours=sec.int("session_hours", 12, 1, 24 * 90),
        metrics_auth=metrics_auth,
    )


def _parse_fleet(root: Section) -> FleetConfig:
    sec = root.table_of("fleet", required=False)
    sec.check_keys({"offline_after", "stale_after", "flush_interval"})
    values = {}
    for key, default in (("offline_after", "10m"), ("stale_after", "2h"), ("flush_interval", "5s")):
        try:
            values[key] = parse_duration_ms(sec.str(key, default))
        except ValueError as exc:
            raise sec.error(key, str(exc)) from None
    return FleetConfig(values["offline_after"], values["stale_after"], values["flush_interval"])


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


def with_clock(config: Config, text: str | None) -> Config:
    """``config`` with the clock given on the command line (``--clock`` of ``collector
    run``, ``sla``, ``latency``), if one was; a bad setting is a ``ConfigError``."""
    if not text:
        return config
    try:
        clock = ClockSetting.parse(text)
    except ClockSettingError as exc:
        raise ConfigError(f"--clock: {exc}") from None
    return replace(config, collector=replace(config.collector, clock=clock))
