"""Import an OpenEI Utility Rate Database (URDB) tariff into the meterlink tariff TOML.

    meterlink tariff import-urdb FILE.json [--out T.toml] [--item N] [--id ID] [--timezone Z]

FILE.json is one URDB rate (as the API's ``detail=full`` returns it), or an API answer
``{"items": [...]}`` (``--item`` picks one, default the first). What is carried:

* ``fixedchargefirstmeter`` + ``fixedchargeunits`` ($/month, $/day; $/year as /12 a month)
  -> a ``standing`` charge;
* ``energyratestructure`` (periods x tiers of ``max``/``rate``/``adj``) with
  ``energyweekdayschedule``/``energyweekendschedule`` (12 x 24, 0-based period indexes)
  -> ``energy`` (one period, one tier), ``tiers`` (one period) or ``tou`` (periods ``p1``..,
  the matrices, per-period tier prices). A tier's price is ``rate + adj``;
* ``flatdemandstructure`` + ``flatdemandmonths`` -> a ``demand`` charge priced by month;
* ``demandratestructure`` + ``demandweekdayschedule``/``demandweekendschedule`` (+
  ``demandwindow``, ``demandratchetpercentage``) -> a TOU ``demand`` charge;
* ``mincharge`` + ``minchargeunits`` -> a ``minimum`` charge (older rates'
  ``fixedmonthlycharge`` / ``minmonthlycharge`` are read as $/month fixed / minimum);
* ``startdate``/``enddate`` -> the version's effective dates (UTC dates of the timestamps).

What cannot be carried is listed (one line each, on stderr from the CLI): sell rates, tier
units other than monthly kWh, demand tiers past the first, tier limits that differ between
periods (the first period's are used), fixed charges of additional meters, fuel adjustments,
coincident demand, and any other rate field with a value that the tariff format has no place for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["UrdbImport", "convert_urdb", "load_urdb", "to_toml"]

#: fields that are description, not price: ignored without a word
METADATA = {
    "label", "uri", "name", "utility", "eiaid", "sector", "description", "source",
    "sourceparent", "startdate", "enddate", "latest_update", "approved", "is_default",
    "country", "supersedes", "voltagecategory", "phasewiring", "servicetype",
    "basicinformationcomments",
    "energycomments", "demandcomments", "revisions", "dgrules", "fixedkeyvals",
    "energykeyvals", "demandunits", "flatdemandunit", "fixedchargeunits", "minchargeunits",
    "peakkwcapacitymin", "peakkwcapacitymax", "peakkwcapacityhistory", "peakkwhusagemin",
    "peakkwhusagemax", "peakkwhusagehistory", "voltageminimum", "voltagemaximum",
    "demandwindow", "demandratchetpercentage", "lookbackpercent", "lookbackrange",
    "lookbackmonths", "energyweekdayschedule", "energyweekendschedule",
    "demandweekdayschedule", "demandweekendschedule", "flatdemandmonths", "utility_id",
    "id", "_id", "rateversion", "demandrateunit", "demandattrs", "energyattrs", "fixedattrs",
}  # fmt: skip
CARRIED = {
    "fixedchargefirstmeter", "energyratestructure", "flatdemandstructure",
    "demandratestructure", "mincharge", "fixedmonthlycharge", "minmonthlycharge",
}  # fmt: skip
MONEY_UNITS = {"$/month", "$/day", "$/year"}


@dataclass
class UrdbImport:
    """The tariff as TOML-ready data, and what could not be carried."""

    top: dict[str, Any]
    version: dict[str, Any]
    charges: list[dict[str, Any]]
    dropped: list[str] = field(default_factory=list)


def load_urdb(path: Path, item: int = 0) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read URDB file: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        items = data["items"]
        if not 0 <= item < len(items):
            raise ConfigError(f"{path}: item {item} not in the file ({len(items)} item(s))")
        data = items[item]
    if not isinstance(data, dict) or (
        "energyratestructure" not in data and "fixedchargefirstmeter" not in data
    ):
        raise ConfigError(f"{path}: not a URDB rate (no energyratestructure/fixedchargefirstmeter)")
    return data


def _num(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ConfigError(f"URDB {where}: must be a number, got {value!r}")
    return Decimal(value)


def _price(tier: dict[str, Any], where: str) -> Decimal:
    return _num(tier.get("rate", 0), where + ".rate") + _num(tier.get("adj", 0), where + ".adj")


def _matrix(rate: dict[str, Any], key: str, names: list[str]) -> list[list[str]]:
    matrix = rate.get(key)
    if (
        not isinstance(matrix, list)
        or len(matrix) != 12
        or not all(isinstance(r, list) and len(r) == 24 for r in matrix)
    ):
        raise ConfigError(f"URDB {key}: must be 12 rows of 24 period indexes")
    out = []
    for m, row in enumerate(matrix):
        line = []
        for h, index in enumerate(row):
            if (
                isinstance(index, bool)
                or not isinstance(index, int)
                or not (0 <= index < len(names))
            ):
                raise ConfigError(
                    f"URDB {key}[{m}][{h}]: period {index!r} not in the rate structure "
                    f"(0..{len(names) - 1})"
                )
            line.append(names[index])
        out.append(line)
    return out


def _money_per(
    rate: dict[str, Any], key: str, units_key: str, dropped: list[str]
) -> tuple[Decimal, str]:
    amount = _num(rate[key], key)
    units = rate.get(units_key, "$/month")
    if units not in MONEY_UNITS:
        raise ConfigError(f"URDB {units_key}: unknown unit {units!r} (known: $/month, $/day, "
                          "$/year)")  # fmt: skip
    if units == "$/year":
        dropped.append(f"{key}: {amount} $/year carried as {amount}/12 per month")
        return amount / 12, "month"
    return amount, units[2:]


def _energy(rate: dict[str, Any], dropped: list[str]) -> dict[str, Any] | None:
    structure = rate.get("energyratestructure")
    if not structure:
        return None
    names = [f"p{i + 1}" for i in range(len(structure))]
    limits: list[Decimal] | None = None
    prices: list[list[Decimal]] = []
    for p, tiers in enumerate(structure):
        row, maxes = [], []
        for t, tier in enumerate(tiers):
            where = f"energyratestructure[{p}][{t}]"
            row.append(_price(tier, where))
            if "sell" in tier and _num(tier["sell"], where + ".sell") != 0:
                dropped.append(f"{where}.sell = {tier['sell']}: sell rates are not carried")
            unit = tier.get("unit", "kWh")
            if unit != "kWh":
                dropped.append(f"{where}.unit = {unit!r}: only monthly kWh tiers are carried "
                               "(limit taken as kWh per period)")  # fmt: skip
            if t < len(tiers) - 1:
                if "max" not in tier:
                    raise ConfigError(f"URDB {where}: a tier before the last needs max")
                maxes.append(_num(tier["max"], where + ".max"))
            elif "max" in tier:
                dropped.append(f"{where}.max = {tier['max']}: the last tier is unbounded here")
        if limits is None:
            limits = maxes
        elif maxes != limits:
            dropped.append(f"energyratestructure[{p}]: tier limits {[str(m) for m in maxes]} "
                           f"differ from period 1's; period 1's are used")  # fmt: skip
            maxes = limits
        prices.append(row)
    tiers_n = len(limits or []) + 1
    prices = [row + [row[-1]] * (tiers_n - len(row)) if len(row) < tiers_n else row[:tiers_n]
              for row in prices]  # fmt: skip
    if len(structure) == 1:
        if tiers_n == 1:
            return {"type": "energy", "label": "Energy", "price": prices[0][0]}
        tiers = [{"upto": m, "price": p} for m, p in zip(limits or [], prices[0], strict=False)]
        tiers.append({"price": prices[0][-1]})
        return {"type": "tiers", "label": "Energy", "mode": "graduated", "tiers": tiers}
    charge: dict[str, Any] = {"type": "tou", "label": "Energy"}
    if tiers_n > 1:
        charge["tiers_upto"] = list(limits or [])
    charge["weekday"] = _matrix(rate, "energyweekdayschedule", names)
    charge["weekend"] = _matrix(rate, "energyweekendschedule", names)
    charge["periods"] = {
        n: (row if tiers_n > 1 else row[0]) for n, row in zip(names, prices, strict=True)
    }
    return charge


def _demand_prices(structure: list[Any], key: str, dropped: list[str]) -> list[Decimal]:
    prices = []
    for p, tiers in enumerate(structure):
        if not tiers:
            raise ConfigError(f"URDB {key}[{p}]: a period without tiers")
        prices.append(_price(tiers[0], f"{key}[{p}][0]"))
        if len(tiers) > 1:
            dropped.append(f"{key}[{p}]: {len(tiers)} demand tiers, only the first is carried")
    return prices


def _ratchet(rate: dict[str, Any], dropped: list[str]) -> Decimal | None:
    values = rate.get("demandratchetpercentage")
    if not values:
        return None
    numbers = [_num(v, "demandratchetpercentage") for v in values]
    if not any(numbers):
        return None
    if len(set(numbers)) > 1:
        dropped.append("demandratchetpercentage differs by month: the highest is used")
    top = max(numbers)
    return top * 100 if top <= 1 else top


def convert_urdb(rate: dict[str, Any], tariff_id: str | None = None) -> UrdbImport:
    dropped: list[str] = []
    label = str(rate.get("label") or "urdb")
    name = str(rate.get("name") or label)
    utility = rate.get("utility")
    top: dict[str, Any] = {
        "format": 2,
        "id": tariff_id or f"urdb-{label}",
        "name": f"{utility}: {name}" if utility else name,
        "currency": "USD",
        "unit": "kWh",
        "rounding": "half-up",
        "source": str(rate.get("uri") or rate.get("source") or f"URDB {label}"),
    }
    version: dict[str, Any] = {"effective_from": _day(rate.get("startdate"), "2000-01-01")}
    if rate.get("enddate"):
        version["effective_to"] = _day(rate["enddate"], "")
    charges: list[dict[str, Any]] = []
    # older URDB versions: fixedmonthlycharge / minmonthlycharge ($/month)
    for old, new, units in (("fixedmonthlycharge", "fixedchargefirstmeter", "fixedchargeunits"),
                            ("minmonthlycharge", "mincharge", "minchargeunits")):  # fmt: skip
        if rate.get(old) and not rate.get(new):
            rate = {**rate, new: rate[old], units: "$/month"}
    if rate.get("fixedchargefirstmeter"):
        amount, per = _money_per(rate, "fixedchargefirstmeter", "fixedchargeunits", dropped)
        charges.append({"type": "standing", "label": "Fixed charge", "price": amount, "per": per})
    energy = _energy(rate, dropped)
    if energy:
        charges.append(energy)
    window = int(rate.get("demandwindow") or 15)
    if window not in (5, 10, 15, 30, 60):
        dropped.append(f"demandwindow = {window}: not a supported window, 15 minutes used")
        window = 15
    ratchet = _ratchet(rate, dropped)
    if rate.get("flatdemandstructure"):
        prices = _demand_prices(rate["flatdemandstructure"], "flatdemandstructure", dropped)
        names = [f"m{i + 1}" for i in range(len(prices))]
        months = rate.get("flatdemandmonths") or [0] * 12
        if len(months) != 12:
            raise ConfigError("URDB flatdemandmonths: must be 12 period indexes")
        matrix = [[names[_index(months[m], names, "flatdemandmonths")]] * 24 for m in range(12)]
        charge: dict[str, Any] = {"type": "demand", "label": "Demand", "window": window}
        if len(prices) == 1:
            charge["price"] = prices[0]
        else:
            charge.update(weekday=matrix, weekend=matrix,
                          periods=dict(zip(names, prices, strict=True)))  # fmt: skip
        if ratchet is not None:
            charge["ratchet"] = ratchet
        charges.append(charge)
    if rate.get("demandratestructure"):
        prices = _demand_prices(rate["demandratestructure"], "demandratestructure", dropped)
        names = [f"d{i + 1}" for i in range(len(prices))]
        charge = {"type": "demand", "label": "Demand, time of use", "window": window}
        charge["weekday"] = _matrix(rate, "demandweekdayschedule", names)
        charge["weekend"] = _matrix(rate, "demandweekendschedule", names)
        charge["periods"] = dict(zip(names, prices, strict=True))
        if ratchet is not None and not rate.get("flatdemandstructure"):
            charge["ratchet"] = ratchet
        charges.append(charge)
    if rate.get("mincharge"):
        amount, per = _money_per(rate, "mincharge", "minchargeunits", dropped)
        charges.append({"type": "minimum", "label": "Minimum charge top-up", "amount": amount,
                        "per": per})  # fmt: skip
    if rate.get("fixedchargeeaaddl"):
        dropped.append(f"fixedchargeeaaddl = {rate['fixedchargeeaaddl']}: charges of "
                       "additional meters are not carried")  # fmt: skip
    for key in sorted(rate):
        if key in METADATA or key in CARRIED or key == "fixedchargeeaaddl":
            continue
        value = rate[key]
        if value in (None, "", [], {}, 0) or value is False:
            continue
        dropped.append(f"{key}: no place for it in the tariff format")
    if not charges:
        raise ConfigError("URDB rate has no charge this importer can carry")
    return UrdbImport(top, version, charges, dropped)


def _index(value: Any, names: list[str], key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
        raise ConfigError(f"URDB {key}: period {value!r} not in the structure")
    return value


def _day(timestamp: Any, default: str) -> str:
    if timestamp in (None, ""):
        return default
    if isinstance(timestamp, str):
        return timestamp[:10]
    return datetime.fromtimestamp(int(timestamp), UTC).date().isoformat()


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        text = (
            format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")
        )
        return text if "." in text else text + ".0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _date_value(text: str) -> str:
    return text  # a TOML local date, e.g. 2026-01-01


def to_toml(result: UrdbImport, origin: str = "") -> str:
    out = ["# Imported from an OpenEI URDB rate" + (f" ({origin})" if origin else "") + "."]
    if result.dropped:
        out.append("# Not carried:")
        out += [f"#   {line}" for line in result.dropped]
    for key, value in result.top.items():
        out.append(f"{key} = {_value(value)}")
    out += ["", "[[version]]"]
    for key, value in result.version.items():
        out.append(f"{key} = {_date_value(value)}")
    for charge in result.charges:
        out += ["", "[[version.charge]]"]
        for key, value in charge.items():
            if key in ("weekday", "weekend"):
                rows = ",\n".join(f"  {_value(row)}" for row in value)
                out.append(f"{key} = [\n{rows},\n]")
            elif key == "periods":
                out.append("periods = " + _value(value))
            else:
                out.append(f"{key} = {_value(value)}")
    return "\n".join(out) + "\n"
