"""The ``[commands]`` table of the collector config: remote commands to gateways.

[commands]
key = "command.key"        # the head-end's Ed25519 command key (``collector keys init``)
expiry = "10m"             # a command not run by then is refused by the gateway
reply_timeout = "60s"      # how long ``collector command`` waits for the reply
key_grace = "7d"           # after a rotation, the old gateway key stays valid this long
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..tomlfile import Section

__all__ = ["CommandSettings", "parse_commands"]


@dataclass(frozen=True)
class CommandSettings:
    key: Path | None = None  # None: next to the config file, "command.key"
    expiry_ms: int = 600_000
    reply_timeout_ms: int = 60_000
    key_grace_ms: int = 7 * 86_400_000

    def key_path(self, config_path: Path) -> Path:
        return self.key if self.key is not None else config_path.parent / "command.key"


def parse_commands(root: Section, duration_ms: Callable[[str], int]) -> CommandSettings:
    sec = root.table_of("commands", required=False)
    sec.check_keys({"key", "expiry", "reply_timeout", "key_grace"})
    values: dict[str, int] = {}
    for key, default in (("expiry", "10m"), ("reply_timeout", "60s"), ("key_grace", "7d")):
        try:
            values[key] = duration_ms(sec.str(key, default))
        except ValueError as exc:
            raise sec.error(key, str(exc)) from None
    if values["expiry"] > 7 * 86_400_000:
        raise sec.error("expiry", "at most 7d (gateways refuse commands expiring later)")
    key = sec.path_of("key") if "key" in sec.data else None
    return CommandSettings(key, values["expiry"], values["reply_timeout"], values["key_grace"])
