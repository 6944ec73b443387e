"""The SLA's part of the OpenAPI description (merged by collector/web/openapi.py)."""

from __future__ import annotations

from typing import Any

from .evaluate import CAUSES

__all__ = ["PATHS", "SCHEMAS"]


def _param(name: str, description: str, required: bool = False, **schema: Any) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_RATIO = {"type": ["string", "null"], "description": 'exact decimal 0..1, e.g. "0.995000"'}
_FIGURES = {
    "expected": {"type": "integer", "description": "intervals in the days"},
    "decided": {"type": "integer", "description": "actual, or past the deadline"},
    "actual": {"type": "integer"},
    "on_time": {"type": "integer"},
    "late": {"type": "integer", "description": "actual, after the deadline"},
    "estimated": {"type": "integer", "description": "estimated, edited or gap, past deadline"},
    "missing": {"type": "integer", "description": "nothing derived, past the deadline"},
    "pending": {"type": "integer", "description": "not actual yet, deadline not passed"},
    "actual_ratio": _RATIO,
    "on_time_ratio": _RATIO,
    "causes": {
        "type": "object",
        "description": "intervals not actual or late, by cause",
        "additionalProperties": {"type": "integer"},
    },
}
_COMMON = [
    _param("period", "2026-11, 2026-11-05 or 2026-11-01..2026-11-07 ([sla] timezone days)",
           required=True),
    _param("gateway", "only this gateway's meters (404 if unknown)"),
    _param("meter", "only this meter (404 if unknown)"),
    _param("cause", "only breaches whose main cause is this", enum=list(CAUSES)),
    _param("limit", "Breaches per page, 1..1000 (default 100).", type="integer", minimum=1,
           maximum=1000),
    _param("after", "The `next` cursor of the previous page."),
]  # fmt: skip
_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "404": {"$ref": "#/components/responses/NotFound"},
}
_PAGE = {
    "type": "object",
    "required": ["items", "next"],
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/SlaBreach"}},
        "next": {"type": ["string", "null"]},
    },
}


def _op(summary: str, schema: dict) -> dict:
    return {
        "get": {
            "summary": summary,
            "parameters": _COMMON,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
                **_ERRORS,
            },
        }
    }


_SUMMARY = _op(
    "Data-completeness SLA of a period: classes, gateways per day, first page of breaches",
    {"$ref": "#/components/schemas/SlaReport"},
)
_BREACHES = _op("The SLA breaches of a period (meter-days missing a target), by key", _PAGE)
PATHS: dict[str, Any] = {
    "/api/sla": _SUMMARY,
    "/api/sla/breaches": _BREACHES,
    "/api/v1/sla": _SUMMARY,
    "/api/v1/sla/breaches": _BREACHES,
}
SCHEMAS: dict[str, Any] = {
    "SlaBreach": {
        "type": "object",
        "properties": {
            "day": {"type": "string", "format": "date"},
            "gateway": {"type": "string"},
            "meter": {"type": "string"},
            "class": {"type": "string"},
            "kind": {"enum": ["actual", "on-time"]},
            "ratio": _RATIO,
            "target_pct": {"type": "string", "description": 'exact decimal, e.g. "99.5"'},
            "decided": {"type": "integer"},
            "intervals": {"type": "integer", "description": "decided intervals that missed"},
            "cause": {"enum": list(CAUSES), "description": "the cause of most of them"},
            "causes": _FIGURES["causes"],
        },
    },
    "SlaReport": {
        "type": "object",
        "properties": {
            "period": {"type": "string"},
            "from_ms": {"type": "integer"},
            "to_ms": {"type": "integer"},
            "now_ms": {"type": "integer", "description": "the collector's clock"},
            "timezone": {"type": "string"},
            "classes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "class": {"type": "string"},
                        "actual_pct": {"type": "string"},
                        "on_time_pct": {"type": "string"},
                        "deadline_ms": {"type": "integer"},
                        "meters": {"type": "integer"},
                        "meter_days_in_breach": {"type": "integer"},
                        **_FIGURES,
                    },
                },
            },
            "gateways": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "day": {"type": "string", "format": "date"},
                        "gateway": {"type": "string"},
                        "meters": {"type": "integer"},
                        "meters_in_breach": {"type": "integer"},
                        "breach": {"type": "boolean"},
                        **_FIGURES,
                    },
                },
            },
            "breach_count": {"type": "integer"},
            "unclassified_meters": {"type": "array", "items": {"type": "string"}},
            "breaches": _PAGE,
        },
    },
}
