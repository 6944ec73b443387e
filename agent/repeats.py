"""Fewer log lines for the same failure: a meter unplugged for a day on a one-minute
interval would otherwise write 1,440 identical warnings.

A message is logged when it is new for its key (or differs from the key's last one), and
then again on its 10th, 100th, 1,000th, ... repeat with the count; when the key's failure
ends, the caller logs the recovery with :meth:`Repeats.clear`'s count. Counting goes on in
the meter's statistics either way: only the log is thinned.
"""

from __future__ import annotations

__all__ = ["Repeats"]


class Repeats:
    def __init__(self) -> None:
        self._last: dict[str, tuple[str, int]] = {}

    def note(self, key: str, text: str) -> str | None:
        """The line to log for this occurrence, or None to stay quiet."""
        last, count = self._last.get(key, ("", 0))
        if text != last:
            self._last[key] = (text, 1)
            return text
        count += 1
        self._last[key] = (text, count)
        if _is_power_of_ten(count):
            return f"{text} (repeated, {count} times in a row)"
        return None

    def clear(self, key: str) -> int:
        """Forget the key's failure; the number of times it occurred in a row (0: none)."""
        _text, count = self._last.pop(key, ("", 0))
        return count


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1
