"""The OpenAPI 3.1 document of the gateway's HTTP surface (served as `GET /openapi.json`).

Request bodies are typed where the gateway itself checks them (`messages`, `model`, `stream`)
and open elsewhere (`additionalProperties`): providers add fields faster than any schema here
could follow, and the gateway passes unknown fields through. Built from the config, so the
model names, the message cap and the security schemes are the ones this replica enforces.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Config

AFFINITY_ID_PATTERN = "^[A-Za-z0-9._:@/+=-]{1,128}$"
ERROR_STATUSES = {
    "400": "Bad JSON, a bad field or an invalid affinity id",
    "401": "Missing or wrong gateway key",
    "403": "The key may not manage pins (admin key required)",
    "404": "Unknown model or pin",
    "413": "Request body too large",
    "429": "Rate limited (here or upstream)",
    "502": "The upstream failed or answered with an error",
    "503": "The upstream is unreachable",
    "504": "The upstream timed out",
}
UPSTREAM_STATUSES = ("400", "401", "404", "413", "429", "502", "503", "504")
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _schemas(config: Config) -> dict[str, Schema]:
    names = sorted({*config.models, *config.aliases, "auto"})
    content_part = {"type": "object", "additionalProperties": True,
                    "properties": {"type": {"type": "string"}, "text": {"type": "string"}}}
    content = {"anyOf": [{"type": "string"}, {"type": "array", "items": content_part},
                         {"type": "null"}]}
    messages = {"type": "array", "minItems": 1, "maxItems": config.limits.max_messages}
    common = {
        # Any string is accepted; an unconfigured name is a 404, "auto" lets the gateway choose.
        "model": {"anyOf": [{"enum": names}, {"type": "string"}]},
        "stream": {"type": ["boolean", "null"]},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "tools": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
    }
    return {
        "ChatMessage": {
            "type": "object", "required": ["role"], "additionalProperties": True,
            "properties": {
                # the known roles, or any other a newer client sends (passed through)
                "role": {"anyOf": [{"enum": ["system", "developer", "user", "assistant", "tool",
                                             "function"]}, {"type": "string"}]},
                "content": content,
                "name": {"type": "string"},
                "tool_call_id": {"type": "string"},
                "tool_calls": {"type": "array", "items": {"type": "object"}},
            },
        },
        "ChatCompletionRequest": {
            "type": "object", "required": ["messages"], "additionalProperties": True,
            "properties": {
                **common,
                "messages": {**messages, "items": _ref("ChatMessage")},
                "stream_options": {"type": "object", "additionalProperties": True,
                                   "properties": {"include_usage": {"type": "boolean"}}},
                "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
            },
        },
        "AnthropicMessage": {
            "type": "object", "required": ["role"], "additionalProperties": True,
            # user and assistant, and whatever roles newer clients send (passed through)
            "properties": {"role": {"type": "string"}, "content": content},
        },
        "MessagesRequest": {
            "type": "object", "required": ["messages"], "additionalProperties": True,
            "properties": {
                **common,
                "messages": {**messages, "items": _ref("AnthropicMessage")},
                "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": content_part}]},
                "tool_choice": {"type": "object", "additionalProperties": True},
            },
        },
        "ResponsesRequest": {
            "type": "object", "required": ["input"], "additionalProperties": True,
            "properties": {
                "model": common["model"],
                "stream": common["stream"],
                "input": {"anyOf": [{"type": "string"}, {
                    "type": "array", "maxItems": config.limits.max_messages,
                    "items": {"type": "object", "additionalProperties": True}}]},
                "instructions": {"type": ["string", "null"]},
                "previous_response_id": {"type": ["string", "null"]},
                "store": {"type": ["boolean", "null"]},
                "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
                "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "tools": common["tools"],
                "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
                "parallel_tool_calls": {"type": ["boolean", "null"]},
                "text": {"type": ["object", "null"], "additionalProperties": True},
                "reasoning": {"type": ["object", "null"], "additionalProperties": True},
                "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
                "prompt_cache_key": {"type": ["string", "null"]},
            },
        },
        "Response": {
            "type": "object", "required": ["id", "object", "output"], "additionalProperties": True,
            "properties": {"id": {"type": "string"}, "object": {"type": "string"},
                           "output": {"type": "array", "items": {"type": "object"}}},
        },
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["message", "type", "param", "code"],
                "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                               "param": {"type": ["string", "null"]},
                               "code": {"type": ["string", "null"]}},
            }},
        },
        "AnthropicError": {
            "type": "object", "required": ["type", "error"],
            "properties": {"type": {"const": "error"}, "error": {
                "type": "object", "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            }},
        },
        "RoutingDecision": {
            "type": "object", "required": ["models", "route", "trace_id", "session_id", "pinned"],
            "properties": {
                "models": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "route": {"type": ["string", "null"]},
                "trace_id": {"type": "string"},
                "session_id": {"type": ["string", "null"]},
                "session_source": {"type": "string"},
                "pinned": {"type": "boolean"},
            },
        },
        "ModelList": {
            "type": "object", "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
                "type": "object", "required": ["id", "object", "owned_by"],
                "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                               "owned_by": {"type": "string"}},
            }}},
        },
        "Pin": {
            "type": "object", "required": ["id", "tenant"],
            "properties": {"id": {"type": "string"}, "tenant": {"type": "string"},
                           "model": {"type": "string"}, "route": {"type": ["string", "null"]},
                           "degraded": {"type": "boolean"}, "deleted": {"type": "boolean"},
                           "lanes": {"type": "array", "items": {"anyOf": [
                               {"type": "string"},
                               {"type": "object", "required": ["lane", "model"],
                                "properties": {"lane": {"type": "string"}, "model": {"type": "string"},
                                               "route": {"type": ["string", "null"]},
                                               "degraded": {"type": "boolean"}}}]}}},
        },
        "TokenCount": {"type": "object", "required": ["input_tokens"],
                       "properties": {"input_tokens": {"type": "integer", "minimum": 0}}},
        "Status": {"type": "object", "required": ["status"],
                   "properties": {"status": {"enum": ["ok", "unavailable"]}}},
    }


def _errors(schema: str, *statuses: str) -> dict[str, Schema]:
    return {s: {"description": ERROR_STATUSES[s], "content": _json(_ref(schema))} for s in statuses}


def _ok(description: str, schema: str) -> Schema:
    return {"description": description, "content": _json(_ref(schema))}


def _affinity_header() -> Schema:
    return {
        "name": "X-Model-Affinity", "in": "header", "required": False,
        "description": "Pins the session to the model chosen on its first turn.",
        "schema": {"type": "string", "pattern": AFFINITY_ID_PATTERN},
    }


def _completion(summary: str, request: str, error: str) -> Schema:
    success = {"description": "The completion, whole or as a server-sent event stream", "content": {
        "application/json": {"schema": {"type": "object"}},
        # One schema per event (the fields of a server-sent event), as OpenAPI 3.2 reads it.
        "text/event-stream": {"schema": {
            "type": "object", "required": ["data"],
            "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
        }},
    }}
    return {"post": {
        "summary": summary,
        "parameters": [_affinity_header()],
        "requestBody": {"required": True, "content": _json(_ref(request))},
        "responses": {"200": success, **_errors(error, *UPSTREAM_STATUSES)},
    }}


def _decision(summary: str, request: str, error: str) -> Schema:
    return {"post": {
        "summary": summary,
        "parameters": [_affinity_header()],
        "requestBody": {"required": True, "content": _json(_ref(request))},
        "responses": {"200": {"description": "The routing decision (no model is called)",
                              "content": _json(_ref("RoutingDecision"))},
                      **_errors(error, "400", "401", "404", "413", "429", "503")},
    }}


def _simple(summary: str, schema: Schema, content_type: str = "application/json") -> Schema:
    return {"get": {"summary": summary, "responses": {
        "200": {"description": summary, "content": {content_type: {"schema": schema}}},
        "503": {"description": "Not ready", "content": _json(_ref("Status"))},
    }}}


def openapi_document(config: Config) -> dict[str, Any]:
    """The OpenAPI 3.1 document for this gateway (a plain dict, ready for JSON)."""
    pin_param: Schema = {"name": "affinity_id", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": AFFINITY_ID_PATTERN}}
    tenant_param: Schema = {"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"}}
    lane_param: Schema = {"name": "lane", "in": "query", "required": False, "schema": {"type": "string"},
                          "description": "One lane: model:<requested name> or agent:<sub-agent id>"}
    pin_errors = _errors("Error", "400", "401", "403", "404")
    pin_ops: Schema = {
        method: {"summary": summary, "parameters": [pin_param, tenant_param, lane_param],
                 "responses": {"200": _ok(summary, "Pin"), **pin_errors, **extra}}
        for method, summary, extra in (
            ("get", "Inspect a pin", {}),
            # Redis unreachable: only this replica's copy could go
            ("delete", "Drop a pin", _errors("Error", "503")),
        )
    }
    response_param: Schema = {"name": "response_id", "in": "path", "required": True,
                              "schema": {"type": "string"}}
    stored_ops: Schema = {
        method: {"summary": summary, "parameters": [response_param],
                 "responses": {"200": _ok(summary, schema), **_errors("Error", "401", "404", *failures)}}
        for method, summary, schema, failures in (
            # `{response_id}/input_items` lists the stored input items (OpenAI's list shape).
            ("get", "A stored response (append /input_items for its input items)", "Response", ("503",)),
            # A native provider's response is deleted there first: its failures are the delete's.
            ("delete", "Delete a stored response (at its native provider too)", "Response",
             ("502", "503", "504")),
        )
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Affinity Gateway", "version": "0.1.0",
                 "description": "OpenAI- and Anthropic-compatible LLM gateway with session pins."},
        "paths": {
            "/v1/chat/completions": _completion(
                "OpenAI Chat Completions", "ChatCompletionRequest", "Error"),
            "/v1/messages": _completion("Anthropic Messages", "MessagesRequest", "AnthropicError"),
            "/v1/messages/count_tokens": {"post": {
                "summary": "Anthropic token counting, by the model the request would be served by",
                "parameters": [_affinity_header()],
                "requestBody": {"required": True, "content": _json(_ref("MessagesRequest"))},
                "responses": {"200": _ok("The count (estimated for non-Anthropic models: "
                                         "x-gateway-token-estimate)", "TokenCount"),
                              **_errors("AnthropicError", *UPSTREAM_STATUSES)},
            }},
            "/routing/v1/chat/completions": _decision(
                "Routing decision for a Chat Completions request", "ChatCompletionRequest", "Error"),
            "/routing/v1/messages": _decision(
                "Routing decision for a Messages request", "MessagesRequest", "AnthropicError"),
            "/v1/models": {"get": {"summary": "Configured models and aliases", "responses": {
                "200": {"description": "The model list", "content": _json(_ref("ModelList"))}}}},
            "/v1/affinity/{affinity_id}": pin_ops,
            "/v1/responses": _completion("OpenAI Responses", "ResponsesRequest", "Error"),
            "/routing/v1/responses": _decision(
                "Routing decision for a Responses request", "ResponsesRequest", "Error"),
            "/v1/responses/{response_id}": stored_ops,
            "/healthz": _simple("Liveness", _ref("Status")),
            "/readyz": _simple("Readiness", _ref("Status")),
            "/": {"get": {"summary": "Reachability probe (HEAD too)", "responses": {
                "200": {"description": "The gateway is reachable", "content": _json(_ref("Status"))}}}},
            "/metrics": _simple("Prometheus metrics", {"type": "string"}, "text/plain"),
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {
                "description": "The OpenAPI document",
                "content": _json({"type": "object", "required": ["openapi", "paths"]}),
            }}}},
        },
        "components": {"schemas": _schemas(config)},
    }
    if config.auth.enabled:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        }
        document["security"] = [{"bearer": []}, {"apiKey": []}]
        for name, path in (("metrics", "/metrics"), ("models", "/v1/models"), ("openapi", "/openapi.json")):
            operation = document["paths"][path]["get"]
            if name in config.auth.protect:
                operation["responses"].update(_errors("Error", "401"))
            else:  # open to anyone unless `auth.protect` names it
                operation["security"] = []
        for path in ("/healthz", "/readyz"):
            document["paths"][path]["get"]["security"] = []
    return document
