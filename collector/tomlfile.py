"""Reading TOML files with errors that name the file, the key and the line.

``tomllib`` reports syntax errors with a line, but not where a key that is present but wrong
sits; ``Section`` finds that line by scanning the text (best effort: the first ``key =`` after
the table's header). Floats are parsed as ``Decimal`` so prices and values stay exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from protocols.tomltext import TomlTextError, loads_exact

from .errors import ConfigError

__all__ = ["Section", "load_toml"]


@dataclass(frozen=True)
class TomlFile:
    path: Path
    lines: tuple[str, ...]

    def header_line(self, table: str, index: int = 0) -> int | None:
        """1-based line of ``[table]`` (or the ``index``-th ``[[table]]``)."""
        if not table:
            return None
        pattern = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
        seen = 0
        for number, line in enumerate(self.lines, 1):
            if pattern.match(line):
                if seen == index:
                    return number
                seen += 1
        return None

    def key_line(self, table: str, index: int, key: str) -> int | None:
        start = self.header_line(table, index) or 0
        if table and start == 0:
            return None
        key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number in range(start + 1, len(self.lines) + 1):
            line = self.lines[number - 1]
            if number > start + 1 and table and line.lstrip().startswith("["):
                break
            if not table and line.lstrip().startswith("["):
                break
            if key_re.match(line):
                return number
        return None


def load_toml(path: Path, what: str = "file") -> Section:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        doc = loads_exact(text)
    except TomlTextError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return Section(TomlFile(path, tuple(text.splitlines())), doc, "", 0)


class Section:
    """A table of a TOML file with typed getters whose errors say file, key and line."""

    def __init__(
        self, file: TomlFile, data: dict[str, Any], table: str, index: int, array: bool = False
    ) -> None:
        self.array = array
        self.file = file
        self.data = data
        self.table = table
        self.index = index

    @property
    def path(self) -> Path:
        return self.file.path

    def _name(self, key: str) -> str:
        if not self.table:
            return key
        if self.array:
            return f"{self.table}[{self.index}].{key}"
        return f"{self.table}.{key}"

    def error(self, key: str | None, message: str) -> ConfigError:
        if key is None:
            line = self.file.header_line(self.table, self.index)
            where = f"[{self.table}]" if self.table else "top level"
            if self.array:
                where = f"[[{self.table}]] number {self.index + 1}"
        else:
            line = self.file.key_line(self.table, self.index, key)
            if line is None:
                line = self.file.header_line(self.table, self.index)
            where = f"key {self._name(key)!r}"
        at = f", line {line}" if line else ""
        return ConfigError(f"{self.path}{at}: {where}: {message}")

    def table_of(self, key: str, required: bool = True) -> Section:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.error(None, f"missing table [{key}]")
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        name = f"{self.table}.{key}" if self.table else key
        return Section(self.file, value, name, 0)

    def tables(self, key: str) -> list[Section]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, f"must be an array of tables ([[{key}]])")
        return [Section(self.file, item, key, i, True) for i, item in enumerate(value)]

    def check_keys(self, known: set[str]) -> None:
        for key in self.data:
            if key not in known:
                raise self.error(key, f"unknown key (known: {', '.join(sorted(known))})")

    def _get(self, key: str, default: Any, required: bool) -> Any:
        if key not in self.data:
            if required:
                raise self.error(None, f"missing key {self._name(key)!r}")
            return default
        return self.data[key]

    def str(self, key: str, default: str | None = None, required: bool = True) -> str:
        value = self._get(key, default, required and default is None)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value

    def int(self, key: str, default: int | None = None, low: int = 0, high: int = 2**31) -> int:
        value = self._get(key, default, default is None)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise self.error(key, f"must be in {low}..{high}, got {value}")
        return value

    def decimal(self, key: str, required: bool = True) -> Decimal | None:
        value = self._get(key, None, required)
        if value is None:
            return None
        if isinstance(value, bool):
            raise self.error(key, f"must be a number, got {value!r}")
        if isinstance(value, int | Decimal):
            result = Decimal(value)
        elif isinstance(value, str):
            try:
                result = Decimal(value)
            except InvalidOperation:
                raise self.error(key, f"not a decimal number: {value!r}") from None
        else:
            raise self.error(key, f"must be a number, got {value!r}")
        if not result.is_finite():
            raise self.error(key, f"must be a finite number, got {value!r}")
        return result

    def str_list(self, key: str) -> list[str]:
        value = self._get(key, None, True)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"must be a list of non-empty strings, got {value!r}")
        return value

    def path_of(self, key: str, default: str | None = None) -> Path:
        """A path relative to the folder of the file it is written in."""
        return (self.path.parent / self.str(key, default)).resolve()
