"""Two-rate registers (tariff 1 / tariff 2) from a model that only knows totals.

``MeterModel`` has no tariffs, so the simulators split its import and export energy by a
fixed rule: **tariff 1 (low)** from 23:00 to 07:00 UTC on weekdays and all of Saturday and
Sunday (UTC days), **tariff 2 (normal)** otherwise (the Dutch DSMR convention: tariff 1 is
the low rate). At the model's origin each total is split in half (tariff 1 takes the odd
mWh). Exact: tariff 1 + tariff 2 == the total, in mWh, at every instant; both only grow.

Tariff 1 is the sum of the total's increments over the low windows since the origin; the
increments of whole days are cached, so a query is O(1) amortised for a clock moving on.
"""

from __future__ import annotations

from ..model import MeterModel

__all__ = ["DAY_NS", "TariffSplit", "tariff_at"]

DAY_NS = 86_400 * 1_000_000_000
_HOUR_NS = 3_600 * 1_000_000_000
_LOW_END = 7 * _HOUR_NS
_LOW_START = 23 * _HOUR_NS


def _weekend(day: int) -> bool:
    return (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday


def tariff_at(virtual_ns: int) -> int:
    """The tariff in force at ``virtual_ns``: 1 (low) or 2 (normal)."""
    day, into = divmod(virtual_ns, DAY_NS)
    return 1 if _weekend(day) or into < _LOW_END or into >= _LOW_START else 2


class TariffSplit:
    """Import and export of ``model`` split into tariff 1 and 2 (mWh)."""

    def __init__(self, model: MeterModel) -> None:
        self.model = model
        self.origin_ns = model.origin_bucket * 60 * 1_000_000_000
        self._day0 = self.origin_ns // DAY_NS
        self._forward: list[tuple[int, int]] = [(0, 0)]  # low of days day0+1 .. day0+k
        self._back: list[tuple[int, int]] = [(0, 0)]  # low of days day0-k .. day0-1

    def _energy(self, ns: int) -> tuple[int, int]:
        imp, exp, _ri, _re = self.model.energies_mwh(ns)
        return imp, exp

    def _low(self, a: int, b: int) -> tuple[int, int]:
        """Import and export during the low windows within [a, b), both in one UTC day."""
        if b <= a:
            return 0, 0
        start = a - a % DAY_NS
        windows = (
            [(start, start + DAY_NS)]
            if _weekend(a // DAY_NS)
            else [(start, start + _LOW_END), (start + _LOW_START, start + DAY_NS)]
        )
        imp = exp = 0
        for lo, hi in windows:
            lo, hi = max(lo, a), min(hi, b)
            if lo < hi:
                i1, e1 = self._energy(lo)
                i2, e2 = self._energy(hi)
                imp, exp = imp + i2 - i1, exp + e2 - e1
        return imp, exp

    def _full(self, day: int) -> tuple[int, int]:
        return self._low(day * DAY_NS, (day + 1) * DAY_NS)

    def _low_since_origin(self, ns: int) -> tuple[int, int]:
        origin, day0 = self.origin_ns, self._day0
        day = ns // DAY_NS
        if ns >= origin:
            if day == day0:
                return self._low(origin, ns)
            while len(self._forward) < day - day0:
                k = len(self._forward)
                full = self._full(day0 + k)
                prev = self._forward[-1]
                self._forward.append((prev[0] + full[0], prev[1] + full[1]))
            head = self._low(origin, (day0 + 1) * DAY_NS)
            mid = self._forward[day - day0 - 1]
            tail = self._low(day * DAY_NS, ns)
            return tuple(h + m + t for h, m, t in zip(head, mid, tail, strict=True))  # type: ignore[return-value]
        if day == day0:
            low = self._low(ns, origin)
            return -low[0], -low[1]
        while len(self._back) < day0 - day:
            k = len(self._back)
            full = self._full(day0 - k)
            prev = self._back[-1]
            self._back.append((prev[0] + full[0], prev[1] + full[1]))
        head = self._low(day0 * DAY_NS, origin)
        mid = self._back[day0 - day - 1]
        tail = self._low(ns, (day + 1) * DAY_NS)
        return -(head[0] + mid[0] + tail[0]), -(head[1] + mid[1] + tail[1])

    def split_mwh(self, ns: int) -> tuple[int, int, int, int]:
        """(import T1, import T2, export T1, export T2) in mWh at ``ns``."""
        imp, exp = self._energy(ns)
        init_imp, init_exp = self._energy(self.origin_ns)
        low_imp, low_exp = self._low_since_origin(ns)
        imp1 = max(init_imp - init_imp // 2 + low_imp, 0)
        exp1 = max(init_exp - init_exp // 2 + low_exp, 0)
        return imp1, imp - imp1, exp1, exp - exp1
