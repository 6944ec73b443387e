"""Usage insight's part of the OpenAPI description (merged by collector/web/openapi.py).

Every path is served under ``/api/`` and ``/api/v1/`` (``web.PREFIXES``)."""

from __future__ import annotations

from typing import Any

from .rules import KINDS

__all__ = ["PATHS", "SCHEMAS"]

_ACCOUNT = {
    "name": "account",
    "in": "path",
    "required": True,
    "description": "account id (the accounts file of [billing])",
    "schema": {"type": "string"},
}
_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "404": {"$ref": "#/components/responses/NotFound"},
}
_DEC = {"type": "string", "description": 'exact decimal, e.g. "12.345"'}
_NDEC = {"type": ["string", "null"], "description": "exact decimal; null: no data (absent)"}


def _q(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _paths(prefix: str) -> dict[str, Any]:
    base = f"{prefix}/accounts/{{account}}"
    return {
        f"{base}/usage": {
            "get": {
                "summary": "Usage by day (and hour) per service point, split by TOU period and"
                " interval quality, compared with the previous period and last year, and the"
                " most expensive hours (docs/billing.md, Usage insight and alerts)",
                "parameters": [
                    _ACCOUNT,
                    _q("period", "billing period YYYY-MM (default: the current one, to date)"),
                    _q("from", "first local day YYYY-MM-DD (with `to`)"),
                    _q("to", "local day YYYY-MM-DD after the last (exclusive)"),
                    _q("by", "day (default) | hour: hour rows as well", enum=["day", "hour"]),
                    _q("top", "how many expensive hours (1..100, default 5)", type="integer"),
                ],
                "responses": {"200": _json(_ref("Usage")), **_ERRORS},
            }
        },
        f"{base}/alerts": {
            "get": {
                "summary": "Alerts raised for the account, oldest first",
                "parameters": [
                    _ACCOUNT,
                    _q("limit", "Items per page, 1..1000 (default 100).", type="integer"),
                    _q("after", "The `next` cursor of the previous page."),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "items": {"type": "array", "items": _ref("UsageAlert")},
                                "next": {"type": ["string", "null"]},
                            },
                        }
                    ),
                    **_ERRORS,
                },
            }
        },
        f"{base}/alert-rules": {
            "get": {
                "summary": "The account's alert rules",
                "parameters": [_ACCOUNT],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "items": {"type": "array", "items": _ref("AlertRule")},
                                "next": {"type": "null"},
                            },
                        }
                    ),
                    **_ERRORS,
                },
            },
            "post": {
                "summary": "Add an alert rule (role operator); 400 names the field",
                "parameters": [_ACCOUNT],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("AlertRule")}},
                },
                "responses": {"201": _json(_ref("AlertRule"), "the rule, with its id"), **_ERRORS},
            },
        },
        f"{base}/alert-rules/{{rule}}": {
            "delete": {
                "summary": "End an alert rule (role operator); its alerts stay",
                "parameters": [
                    _ACCOUNT,
                    {
                        "name": "rule",
                        "in": "path",
                        "required": True,
                        "description": "rule id",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {"200": _json({"type": "object"}, '{"deleted": ID}'), **_ERRORS},
            }
        },
    }


PATHS: dict[str, Any] = {**_paths("/api"), **_paths("/api/v1")}

_BUCKET = {
    "total": _DEC,
    "intervals": {"type": "integer"},
    "by_tou": {"type": "object", "additionalProperties": _DEC},
    "by_quality": {
        "type": "object",
        "description": "actual, estimated, edited, gap",
        "additionalProperties": _DEC,
    },
}
_COMPARE = {
    "type": "object",
    "properties": {
        "from": {"type": "string"},
        "to": {"type": "string"},
        "hours": _DEC,
        "hours_covered": _DEC,
        "intervals": {"type": "integer"},
        "total": _NDEC,
        "change": _NDEC,
        "change_percent": _NDEC,
    },
}

SCHEMAS: dict[str, Any] = {
    "Usage": {
        "type": "object",
        "description": 'format "meterlink-usage/1"',
        "properties": {
            "format": {"type": "string"},
            "account": {"type": "string"},
            "timezone": {"type": "string"},
            "period": {"type": "string"},
            "from": {"type": "string", "description": "first local day"},
            "to": {"type": "string", "description": "local day after the last"},
            "by": {"enum": ["day", "hour"]},
            "service_points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "service_point": {"type": "string"},
                        "commodity": {"type": "string"},
                        "unit": {"type": "string"},
                        "tariffs": {"type": "array", "items": {"type": "string"}},
                        **_BUCKET,
                        "total": _NDEC,
                        "days": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"day": {"type": "string"}, **_BUCKET},
                            },
                        },
                        "hours": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "hour": {"type": "string", "description": "local, offset"},
                                    "start": {"type": "string", "description": "UTC"},
                                    **_BUCKET,
                                },
                            },
                        },
                        "comparison": {
                            "type": "object",
                            "properties": {"previous": _COMPARE, "last_year": _COMPARE},
                        },
                    },
                },
            },
            "top_hours": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "hour": {"type": "string"},
                        "start": {"type": "string"},
                        "end": {"type": "string"},
                        "cost": _DEC,
                        "currency": {"type": "string"},
                        "service_points": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
            "top_hours_cost_includes": {"type": "string"},
            "notes": {"type": "array", "items": {"type": "string"}},
        },
    },
    "UsageAlert": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "rule": {"type": "integer"},
            "service_point": {"type": "string"},
            "kind": {"enum": list(KINDS)},
            "day": {"type": "string", "description": "local day (night_flow: the night ending)"},
            "value": _DEC,
            "unit": {"type": "string"},
            "message": {"type": "string"},
            "raised_ms": {"type": "integer"},
            "raised": {"type": "string"},
        },
    },
    "AlertRule": {
        "type": "object",
        "required": ["kind", "service_point"],
        "properties": {
            "id": {"type": "integer", "readOnly": True},
            "kind": {"enum": list(KINDS)},
            "service_point": {"type": "string"},
            "threshold": {**_DEC, "description": "daily_usage_above: usage a day, in unit"},
            "unit": {
                "type": "string",
                "description": "daily: kWh, Wh, m3, l, ... (the point's or convertible);"
                " night_flow: l/h (default) or m3/h",
            },
            "window": {"type": "string", "description": 'night_flow: "00:00-05:00" (local)'},
            "min_flow": {**_DEC, "description": "night_flow: flow to exceed (default 0)"},
            "nights": {"type": "integer", "minimum": 1, "maximum": 31},
        },
    },
}
