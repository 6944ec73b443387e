"""The OpenAPI 3.1 description of the JSON API, served at ``/api/openapi.json``.

Written by hand next to the handlers (collector/web/api.py) and checked by the tests against
the routes the application really has: every API route is described, nothing else is.
"""

from __future__ import annotations

from typing import Any

from collector.insight.openapi import PATHS as INSIGHT_PATHS
from collector.insight.openapi import SCHEMAS as INSIGHT_SCHEMAS
from collector.latency import OPENAPI_PATHS as LATENCY_PATHS
from collector.latency import OPENAPI_SCHEMAS as LATENCY_SCHEMAS
from collector.sla.openapi import PATHS as SLA_PATHS
from collector.sla.openapi import SCHEMAS as SLA_SCHEMAS
from protocols.commands import ACTIONS, REPLY_STATUSES

__all__ = ["OPENAPI"]


def _page_of(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "next": {
                "type": ["string", "null"],
                "description": "Give as `after` for the next page; null on the last page.",
            },
        },
    }


def _param(name: str, where: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


_LIMIT = _param("limit", "query", "Items per page, 1..1000 (default 100).", type="integer",
                minimum=1, maximum=1000)  # fmt: skip
_AFTER = _param("after", "query", "The `next` cursor of the previous page.")
_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
}


def _get(summary: str, schema: str, params: list[dict[str, Any]], page: bool = False,
         not_found: bool = False) -> dict[str, Any]:  # fmt: skip
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {
                "application/json": {
                    "schema": _page_of(schema)
                    if page
                    else {"$ref": f"#/components/schemas/{schema}"}
                }
            },
        },
        **_ERRORS,
    }
    if not_found:
        responses["404"] = {"$ref": "#/components/responses/NotFound"}
    return {"get": {"summary": summary, "parameters": params, "responses": responses}}


_MS = {"type": ["integer", "null"], "description": "Unix milliseconds, UTC"}
_DEC = {"type": "string", "description": 'exact decimal, e.g. "1234.567"'}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "meterlink collector API",
        "version": "1",
        "description": "Fleet state, readings, VEE findings, bills and remote commands of a"
        " meterlink head-end. Values are exact decimal strings, times Unix ms UTC."
        " See docs/api.md and docs/operations.md.",
    },
    "security": [{"bearer": []}, {"basic": []}, {"session": []}],
    "paths": {
        "/api/whoami": _get("Who the request is authenticated as", "Principal", []),
        "/api/fleet": _get(
            "Fleet overview: counts, offline gateways, stale meters (first `limit` of each)",
            "FleetOverview",
            [_LIMIT],
        ),
        "/api/gateways": _get(
            "Gateways by id",
            "Gateway",
            [_param("state", "query", "online | offline | unknown"), _LIMIT, _AFTER],
            page=True,
        ),
        "/api/gateways/{gateway_id}": _get(
            "One gateway, with its gap ranges and meter ids",
            "Gateway",
            [_param("gateway_id", "path", "gateway id")],
            not_found=True,
        ),
        "/api/meters": _get(
            "Meters by id",
            "Meter",
            [
                _param("gateway", "query", "only this gateway's meters"),
                _param("stale", "query", "true | false"),
                _LIMIT,
                _AFTER,
            ],
            page=True,
            not_found=True,  # an unknown `gateway`
        ),
        "/api/meters/{meter_id}": _get(
            "One meter", "Meter", [_param("meter_id", "path", "meter id")], not_found=True
        ),
        "/api/meters/{meter_id}/readings": _get(
            "A meter's readings captured in [from, to), oldest first",
            "Reading",
            [
                _param("meter_id", "path", "meter id"),
                _param("from", "query", "Unix ms or ISO 8601 (default: the beginning)"),
                _param("to", "query", "Unix ms or ISO 8601, exclusive (default: no end)"),
                _param("obis", "query", "only this quantity, as stored (exact), e.g. 1-0:1.8.0"),
                _LIMIT,
                _AFTER,
            ],
            page=True,
            not_found=True,
        ),
        "/api/vee/flags": _get(
            "VEE findings, oldest first",
            "VeeFlag",
            [
                _param("meter", "query", "only this meter"),
                _param("outcome", "query", "error | warn | info (default: error and warn)"),
                _LIMIT,
                _AFTER,
            ],
            page=True,
        ),
        "/api/bills": _get(
            "Issued bills in issuing order",
            "Bill",
            [_param("account", "query", "only this account"), _LIMIT, _AFTER],
            page=True,
        ),
        "/api/bills/{number}": {
            "get": {
                "summary": "One issued bill: its complete document as issued (docs/billing.md)",
                "parameters": [_param("number", "path", "bill number, e.g. B0000001")],
                "responses": {
                    "200": {
                        "description": "the bill document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_ERRORS,
                    "404": {"$ref": "#/components/responses/NotFound"},
                },
            }
        },
        "/api/fleet/flush": {
            "post": {
                "summary": "Write the fleet state to the store now (role operator)",
                "responses": {
                    "200": {"description": '{"flushed": true}'},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": {"$ref": "#/components/responses/Forbidden"},
                    "404": {"description": "this server keeps no fleet state"},
                },
            }
        },
        # remote commands (collector/web/api_commands.py)
        "/api/commands": _get(
            "Commands sent, newest first",
            "Command",
            [_param("gateway", "query", "only this gateway's commands"), _LIMIT, _AFTER],
            page=True,
        ),
        "/api/commands/{command_id}": _get(
            "One command and its reply (state: waiting, expired, or the reply's status)",
            "Command",
            [_param("command_id", "path", "command id")],
            not_found=True,
        ),
        "/api/gateways/{gateway_id}/commands": {
            "post": {
                "summary": "Sign, store and send a command to a gateway (role operator); wait"
                " up to wait_s for its reply",
                "parameters": [_param("gateway_id", "path", "gateway id")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["action"],
                                "properties": {
                                    "action": {"enum": list(ACTIONS)},
                                    "args": {
                                        "type": "object",
                                        "description": "meter; from / to (backfill); config,"
                                        " trial_s (push-config)",
                                    },
                                    "wait_s": {"type": "number", "minimum": 0, "maximum": 60},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "sent and replied",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Command"}}
                        },
                    },
                    "202": {
                        "description": "sent, no reply within wait_s (state: waiting); GET"
                        " /api/commands/{command_id} later",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Command"}}
                        },
                    },
                    **_ERRORS,
                    "404": {"$ref": "#/components/responses/NotFound"},
                    "502": {
                        "description": "could not be sent (the broker cannot be reached)",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                    "503": {
                        "description": "the head-end command key ([commands] key) is missing or"
                        " unsafe (readable by group or others)",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document (no login needed)",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (no login unless [http] metrics_auth = true)",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API token"},
            "basic": {"type": "http", "scheme": "basic", "description": "an operator account"},
            "session": {"type": "apiKey", "in": "cookie", "name": "meterlink_session"},
        },
        "responses": {
            name: {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for name, text in (
                ("BadRequest", "a query parameter or body field is wrong (the message names it)"),
                ("Unauthorized", "no or wrong credentials"),
                ("Forbidden", "the role does not allow this (read-only tried to write)"),
                ("NotFound", "no such gateway, meter, bill or command"),
            )
        },
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "Principal": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "role": {"enum": ["read-only", "operator"]},
                    "via": {"enum": ["password", "token", "session"]},
                },
            },
            "FleetOverview": {
                "type": "object",
                "properties": {
                    "now_ms": _MS,
                    "offline_after_ms": {"type": "integer"},
                    "stale_after_ms": {"type": "integer"},
                    "gateways": {"type": "integer"},
                    "gateways_online": {"type": "integer"},
                    "gateways_offline": {"type": "integer"},
                    "gateways_unknown": {"type": "integer"},
                    "backlog": {"type": "integer"},
                    "missing_records": {"type": "integer"},
                    "meters": {"type": "integer"},
                    "meters_stale": {"type": "integer"},
                    "meters_with_errors": {"type": "integer"},
                    "offline": {"type": "array", "items": {"$ref": "#/components/schemas/Gateway"}},
                    "stale": {"type": "array", "items": {"$ref": "#/components/schemas/Meter"}},
                },
            },
            "Gateway": {
                "type": "object",
                "properties": {
                    "gateway_id": {"type": "string"},
                    "state": {"enum": ["online", "offline", "unknown"]},
                    "offline_reason": {"type": "string"},
                    "status": {"type": ["string", "null"]},
                    "status_reason": {"type": "string"},
                    "status_at_ms": _MS,
                    "last_seen_ms": _MS,
                    "agent_version": {"type": "string"},
                    "backlog": {"type": "integer"},
                    "oldest_unacked_seq": {"type": ["integer", "null"]},
                    "dropped": {"type": "integer"},
                    "last_seq": {"type": "integer"},
                    "clock_offset_ms": {"type": ["integer", "null"]},
                    "batches": {"type": "integer"},
                    "records": {"type": "integer"},
                    "duplicates": {"type": "integer"},
                    "rejected": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "rejected_total": {"type": "integer"},
                    "sequence_gaps": {"type": "integer"},
                    "missing_records": {"type": "integer"},
                    "gap_ranges": {
                        "type": "array",
                        "items": {"type": "array"},
                        "description": "[first, last] missing seq ranges: the first 20 in a"
                        " list, up to 200 for one gateway",
                    },
                    "meters": {"type": "integer"},
                    "meter_ids": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "one gateway only",
                    },
                },
            },
            "Meter": {
                "type": "object",
                "properties": {
                    "meter_id": {"type": "string"},
                    "gateway_id": {"type": ["string", "null"]},
                    "stale": {"type": "boolean"},
                    "last_good_ms": _MS,
                    "last_good": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "obis": {"type": "string"},
                                "value": _DEC,
                                "unit": {"type": "string"},
                            },
                        },
                    },
                    "last_captured_ms": _MS,
                    "last_received_ms": _MS,
                    "captures": {"type": "integer"},
                    "good_captures": {"type": "integer"},
                    "read_success_rate": {
                        "type": ["string", "null"],
                        "description": "0.0000..1.0000",
                    },
                    "last_error": {"type": ["string", "null"]},
                    "last_error_ms": _MS,
                    "rejected": {"type": "integer"},
                    "clock_drift_ms": {"type": ["integer", "null"]},
                    "clock_suspect": {"type": "boolean"},
                    "clock_set_error": {"type": ["string", "null"]},
                    "vee_flags": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
            },
            "Reading": {
                "type": "object",
                "properties": {
                    "captured_ms": {"type": "integer"},
                    "obis": {"type": "string"},
                    "value": _DEC,
                    "unit": {"type": "string"},
                    "flags": {"type": "integer", "description": "quality flags (wire-format.md)"},
                    "clock_source": {"enum": ["gateway", "meter"]},
                    "gateway_id": {"type": "string"},
                    "seq": {"type": "integer"},
                },
            },
            "VeeFlag": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "meter_id": {"type": "string"},
                    "obis": {"type": "string"},
                    "captured_ms": {"type": "integer"},
                    "rule": {"type": "string"},
                    "outcome": {"enum": ["error", "warn", "info"]},
                    "detail": {"type": "string"},
                    "detected_ms": {"type": "integer"},
                },
            },
            "Command": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "gateway": {"type": "string"},
                    "action": {"enum": list(ACTIONS)},
                    "args": {
                        "type": "object",
                        "description": "as sent; a pushed config's text is shown as its size",
                    },
                    "issued_ms": {"type": "integer"},
                    "expires_ms": {"type": "integer"},
                    "issued_by": {"type": "string", "description": 'cli or "api:<account>"'},
                    "state": {
                        "enum": ["waiting", "expired", *REPLY_STATUSES],
                        "description": "waiting (no reply yet), expired (no reply before"
                        " expires_ms), or the reply's status",
                    },
                    "reply": {
                        "type": ["object", "null"],
                        "properties": {
                            "status": {"enum": list(REPLY_STATUSES)},
                            "message": {"type": "string"},
                            "result": {},
                            "at_ms": _MS,
                            "received_ms": _MS,
                        },
                    },
                },
            },
            "Bill": {
                "type": "object",
                "properties": {
                    "seq": {"type": "integer"},
                    "number": {"type": "string"},
                    "account_id": {"type": "string"},
                    "period": {"type": "string"},
                    "start_ms": {"type": "integer"},
                    "end_ms": {"type": "integer"},
                    "currency": {"type": "string"},
                    "total": _DEC,
                    "issued_ms": {"type": "integer"},
                },
            },
        },
    },
}
# the data-completeness SLA (collector/sla/openapi.py)
OPENAPI["paths"].update(SLA_PATHS)
OPENAPI["components"]["schemas"].update(SLA_SCHEMAS)
# usage insight and alerts (collector/insight/openapi.py)
OPENAPI["paths"].update(INSIGHT_PATHS)
OPENAPI["components"]["schemas"].update(INSIGHT_SCHEMAS)
# capture-to-commit delay (collector/latency.py)
OPENAPI["paths"].update(LATENCY_PATHS)
OPENAPI["components"]["schemas"].update(LATENCY_SCHEMAS)
