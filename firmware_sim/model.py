"""A deterministic consumption (and PV generation) model for one simulated meter.

Time is cut into 1-minute virtual buckets (aligned to UTC minutes). In each bucket the load
and the PV output are constant, so the meter's power is constant and its energy registers
grow linearly. Everything is exact integers:

* bucket energies in milliwatt-hours (mWh); a bucket of E mWh lasts 1/60 h, so its power is
  ``E * 60`` mW, i.e. exactly ``E * 0.06`` W: power is always the slope of energy;
* cumulative registers are the initial value plus prefix sums of bucket energies, plus the
  elapsed part of the current bucket rounded down, so they never decrease.

Randomness is a hash of (seed, meter id, quantity, bucket index), never ``random``: the same
seed and meter id give the same readings in any process, for any query order. Prefix sums
are cached and grown on demand from the model's origin (where the registers hold their
initial values), forwards and backwards, so monotone queries cost O(1) amortised.

Times are UTC: the daily shape follows UTC hours (a simulator, not a weather model).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

from protocols.obis import Obis

__all__ = ["BUCKET_NS", "MeterModel", "ModelParams"]

BUCKET_NS = 60 * 1_000_000_000  # one virtual minute
_BUCKETS_PER_DAY = 1440
_MWH_PER_KWH = 1_000_000

# Load shape per UTC hour, permille of the base load.
_HOUSEHOLD = (
    450,
    400,
    380,
    370,
    380,
    450,
    800,
    1300,
    1200,
    900,
    800,
    850,
    950,
    850,
    800,
    850,
    1000,
    1400,
    1800,
    1900,
    1700,
    1400,
    1000,
    650,
)
_HOUSEHOLD_WEEKEND = (
    500,
    450,
    400,
    380,
    380,
    400,
    500,
    700,
    1100,
    1300,
    1300,
    1300,
    1400,
    1300,
    1200,
    1200,
    1300,
    1500,
    1800,
    1900,
    1700,
    1400,
    1100,
    700,
)
_COMMERCIAL = (
    300,
    300,
    300,
    300,
    300,
    350,
    600,
    1200,
    1800,
    2000,
    2000,
    2000,
    1900,
    2000,
    2000,
    1900,
    1800,
    1400,
    900,
    600,
    450,
    400,
    350,
    300,
)
_COMMERCIAL_WEEKEND = (300,) * 24
# Water (a household's tap use): nothing flows from 22:00 to 05:00 UTC (23:00-06:00 in
# Central Europe in winter), so a leak (``ModelParams.leak_w``) shows as night-time flow.
_WATER = (0, 0, 0, 0, 0, 300, 1400, 1800, 1200, 700, 500, 500,
          700, 500, 400, 400, 500, 900, 1500, 1600, 1200, 700, 0, 0)  # fmt: skip
_WATER_WEEKEND = (0, 0, 0, 0, 0, 0, 400, 1000, 1600, 1500, 1100, 900,
                  900, 700, 600, 600, 700, 1000, 1400, 1500, 1200, 800, 0, 0)  # fmt: skip
_SHAPES = {
    "household": (_HOUSEHOLD, _HOUSEHOLD_WEEKEND),
    "commercial": (_COMMERCIAL, _COMMERCIAL_WEEKEND),
    "water": (_WATER, _WATER_WEEKEND),
}

# PV: a parabola from 06:00 to 20:00 UTC, peak at 13:00 (minute 780).
_PV_NOON = 780
_PV_HALF_WIDTH = 420

OBIS_IMPORT = Obis.parse("1-0:1.8.0")
OBIS_EXPORT = Obis.parse("1-0:2.8.0")
OBIS_RIMPORT = Obis.parse("1-0:3.8.0")
OBIS_REXPORT = Obis.parse("1-0:4.8.0")
OBIS_P_IMPORT = Obis.parse("1-0:1.7.0")
OBIS_P_EXPORT = Obis.parse("1-0:2.7.0")
OBIS_P_NET = Obis.parse("1-0:16.7.0")
OBIS_FREQ = Obis.parse("1-0:14.7.0")
OBIS_P_PHASE = tuple(Obis.parse(f"1-0:{c}.7.0") for c in (21, 41, 61))
OBIS_V_PHASE = tuple(Obis.parse(f"1-0:{c}.7.0") for c in (32, 52, 72))
OBIS_I_PHASE = tuple(Obis.parse(f"1-0:{c}.7.0") for c in (31, 51, 71))


@dataclass(frozen=True, slots=True)
class ModelParams:
    """What kind of meter this is. Energies in kWh/kvarh (exact decimals), powers in W."""

    kind: str = "household"  # or "commercial", "water"
    base_load_w: int = 600  # mean load of the shape's 1000-permille level
    pv_peak_w: int = 0  # 0: no PV
    leak_w: int = 0  # a constant extra load (a leak, for a water meter) from ``leak_from_ns``
    leak_from_ns: int | None = None  # virtual instant the leak starts (None: always)
    initial_import_kwh: Decimal = Decimal("12345.67")
    initial_export_kwh: Decimal = Decimal(0)
    initial_import_kvarh: Decimal = Decimal(0)
    initial_export_kvarh: Decimal = Decimal(0)
    nominal_voltage_v: int = 230

    def __post_init__(self) -> None:
        if self.kind not in _SHAPES:
            raise ValueError(f"model kind must be one of {', '.join(_SHAPES)}, got {self.kind!r}")
        if self.base_load_w < 0 or self.pv_peak_w < 0 or self.leak_w < 0:
            raise ValueError("base_load_w, pv_peak_w and leak_w must be >= 0")
        for name in (
            "initial_import_kwh",
            "initial_export_kwh",
            "initial_import_kvarh",
            "initial_export_kvarh",
        ):
            value = getattr(self, name)
            if isinstance(value, float) or Decimal(value) < 0:
                raise ValueError(f"{name} must be a non-negative Decimal, got {value!r}")


@dataclass(frozen=True, slots=True)
class _Bucket:
    import_mwh: int
    export_mwh: int
    rimport_mvarh: int
    rexport_mvarh: int


class MeterModel:
    """One meter's readings as a function of virtual time (Unix ns)."""

    def __init__(
        self, meter_id: str, seed: int = 0, params: ModelParams | None = None, *, origin_ns: int = 0
    ) -> None:
        self.meter_id = meter_id
        self.seed = seed
        self.params = params or ModelParams()
        self.origin_bucket = origin_ns // BUCKET_NS
        leak_from = self.params.leak_from_ns
        # the first whole bucket of the leak (a bucket's load is constant: it starts there)
        self._leak_bucket = None if leak_from is None else -(-leak_from // BUCKET_NS)
        self._key = f"{seed}\x00{meter_id}\x00".encode()
        self._initial_mwh = tuple(
            int(Decimal(v) * _MWH_PER_KWH)
            for v in (
                self.params.initial_import_kwh,
                self.params.initial_export_kwh,
                self.params.initial_import_kvarh,
                self.params.initial_export_kvarh,
            )
        )
        # forward[i]: sums of buckets origin .. origin+i-1; back[i]: origin-i .. origin-1
        self._forward: list[tuple[int, ...]] = [(0, 0, 0, 0)]
        self._back: list[tuple[int, ...]] = [(0, 0, 0, 0)]
        shares = [300 + self._noise("share", i, 400) for i in range(3)]
        total = sum(shares)
        self._phase_share = (shares[0] * 1000 // total, shares[1] * 1000 // total)

    # -- deterministic noise -------------------------------------------------------------
    def _noise(self, what: str, index: int, modulo: int) -> int:
        digest = hashlib.blake2b(
            self._key + what.encode() + index.to_bytes(8, "big", signed=True), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big") % modulo

    # -- one bucket ----------------------------------------------------------------------
    def load_mw(self, bucket: int) -> int:
        """Consumption in mW during bucket ``bucket`` (minutes since the Unix epoch)."""
        day, minute = divmod(bucket, _BUCKETS_PER_DAY)
        weekend = (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        weekday_shape, weekend_shape = _SHAPES[self.params.kind]
        shape = (weekend_shape if weekend else weekday_shape)[minute // 60]
        noise = 800 + self._noise("load", bucket, 401)  # 0.8 .. 1.2
        load = self.params.base_load_w * shape * noise // 1000
        if self.params.leak_w and (self._leak_bucket is None or bucket >= self._leak_bucket):
            load += self.params.leak_w * 1000
        return load

    def pv_mw(self, bucket: int) -> int:
        """PV generation in mW during ``bucket``: a daytime bell times a per-hour cloud factor."""
        if not self.params.pv_peak_w:
            return 0
        minute = bucket % _BUCKETS_PER_DAY
        offset = minute - _PV_NOON
        if abs(offset) >= _PV_HALF_WIDTH:
            return 0
        bell = (_PV_HALF_WIDTH**2 - offset * offset) * 1000 // _PV_HALF_WIDTH**2  # permille
        cloud = 500 + self._noise("cloud", bucket // 60, 501)  # 0.5 .. 1.0 per hour
        return self.params.pv_peak_w * bell * cloud // 1000

    def _bucket(self, bucket: int) -> _Bucket:
        net_mw = self.load_mw(bucket) - self.pv_mw(bucket)
        energy = abs(net_mw) // 60  # mWh in one minute
        if net_mw >= 0:
            return _Bucket(energy, 0, energy * 33 // 100, 0)  # PF about 0.95 inductive
        return _Bucket(0, energy, 0, energy * 10 // 100)

    # -- cumulative registers ------------------------------------------------------------
    def _cumulative(self, bucket: int) -> tuple[int, ...]:
        """Sums of bucket energies (import, export, reactive import, export) from the origin
        to ``bucket`` (exclusive); negative when ``bucket`` is before the origin."""
        offset = bucket - self.origin_bucket
        if offset >= 0:
            forward = self._forward
            while len(forward) <= offset:
                values = self._bucket_values(self.origin_bucket + len(forward) - 1)
                forward.append(tuple(a + b for a, b in zip(forward[-1], values, strict=True)))
            return forward[offset]
        back = self._back
        while len(back) <= -offset:
            values = self._bucket_values(self.origin_bucket - len(back))
            back.append(tuple(a + b for a, b in zip(back[-1], values, strict=True)))
        return tuple(-v for v in back[-offset])

    def _bucket_values(self, bucket: int) -> tuple[int, int, int, int]:
        b = self._bucket(bucket)
        return (b.import_mwh, b.export_mwh, b.rimport_mvarh, b.rexport_mvarh)

    def energies_mwh(self, virtual_ns: int) -> tuple[int, int, int, int]:
        """Import, export (mWh), reactive import, export (mvarh) registers at ``virtual_ns``.

        Before the origin the registers are the initial values minus what was used since,
        floored at zero (a meter does not read negative).
        """
        bucket, into = divmod(virtual_ns, BUCKET_NS)
        current = self._bucket_values(bucket)
        done = self._cumulative(bucket)
        out = [
            max(self._initial_mwh[i] + done[i] + current[i] * into // BUCKET_NS, 0)
            for i in range(4)
        ]
        return out[0], out[1], out[2], out[3]

    # -- the register view ---------------------------------------------------------------
    def values_at(self, virtual_ns: int) -> dict[Obis, Decimal]:
        """Every quantity the meter shows at ``virtual_ns``, in the canonical units of
        ``protocols.obis.QUANTITIES`` (kWh, kvarh, W, V, A, Hz). Exact decimals."""
        bucket = virtual_ns // BUCKET_NS
        imp, exp, rimp, rexp = self.energies_mwh(virtual_ns)
        now = self._bucket(bucket)
        # Power is the slope of energy: E mWh per minute is E * 0.06 W.
        p_import = Decimal(now.import_mwh) * Decimal("0.06")
        p_export = Decimal(now.export_mwh) * Decimal("0.06")
        p_net = p_import - p_export
        values: dict[Obis, Decimal] = {
            OBIS_IMPORT: Decimal(imp).scaleb(-6),
            OBIS_EXPORT: Decimal(exp).scaleb(-6),
            OBIS_RIMPORT: Decimal(rimp).scaleb(-6),
            OBIS_REXPORT: Decimal(rexp).scaleb(-6),
            OBIS_P_IMPORT: p_import,
            OBIS_P_EXPORT: p_export,
            OBIS_P_NET: p_net,
            OBIS_FREQ: Decimal(4990 + self._noise("hz", bucket, 21)).scaleb(-2),
        }
        # Phases: fixed per-meter shares of the net power; L3 takes the remainder so that
        # the three phases sum exactly to the total. Rounded to 0.1 W.
        p1 = (p_net * self._phase_share[0] / 1000).quantize(Decimal("0.1"))
        p2 = (p_net * self._phase_share[1] / 1000).quantize(Decimal("0.1"))
        phases = (p1, p2, p_net - p1 - p2)
        for i, power in enumerate(phases):
            volts = Decimal(
                self.params.nominal_voltage_v * 10 - 40 + self._noise(f"v{i}", bucket, 81)
            ).scaleb(-1)  # nominal +-4 V
            values[OBIS_P_PHASE[i]] = power
            values[OBIS_V_PHASE[i]] = volts
            values[OBIS_I_PHASE[i]] = (abs(power) / volts).quantize(Decimal("0.001"))
        return values
