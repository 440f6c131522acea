"""The OpenAPI document: valid OpenAPI 3.1, complete, and true to what a live replica does."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gateway.affinity import validate_affinity_id
from gateway.app import create_app
from gateway.config import Config, parse_config
from gateway.errors import BadRequest
from gateway.openapi import AFFINITY_ID_PATTERN, openapi_document
from tests.configs import three_models
from tests.support import ThreadServer, gateway

UPSTREAM = "http://127.0.0.1:9"  # never called: these tests only build documents


def config(**extra: Any) -> Config:
    return parse_config({**three_models(UPSTREAM), **extra}, environ={})


def validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator for one component schema, with the document's $refs resolvable."""
    registry: Registry[Any] = Registry().with_resource("urn:doc", DRAFT202012.create_resource(document))
    schema = {"$ref": f"urn:doc#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_document_is_valid_openapi_31() -> None:
    document = openapi_document(config())
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_route_of_the_app_is_documented_and_nothing_else() -> None:
    cfg = config()
    app = create_app(cfg)
    served = {(path, method.lower()) for path, method in app.table() if method != "HEAD"}
    documented = {
        (path, method)
        for path, operations in openapi_document(cfg)["paths"].items()
        for method in operations
    }
    assert documented == served


def test_document_follows_the_config() -> None:
    plain = openapi_document(config(limits={"max_messages": 7}))
    schemas = plain["components"]["schemas"]
    assert schemas["ChatCompletionRequest"]["properties"]["messages"]["maxItems"] == 7
    names = schemas["ChatCompletionRequest"]["properties"]["model"]["anyOf"][0]["enum"]
    assert {"openai/gpt-4o", "gpt-4o", "vllm/coder", "fast", "auto"} <= set(names)
    assert "security" not in plain and "securitySchemes" not in plain["components"]
    secured = openapi_document(config(auth={"keys": [{"key": "k-1", "tenant": "a"}]}))
    assert secured["security"] == [{"bearer": []}, {"apiKey": []}]
    assert secured["paths"]["/metrics"]["get"]["security"] == []  # open unless auth.protect says so
    protected = openapi_document(config(auth={"keys": [{"key": "k-1"}], "protect": ["metrics"]}))
    assert "security" not in protected["paths"]["/metrics"]["get"]
    assert "401" in protected["paths"]["/metrics"]["get"]["responses"]
    assert protected["paths"]["/v1/models"]["get"]["security"] == []
    assert "k-1" not in str(secured)  # keys are config, never documentation


REAL_CHAT_BODIES = [
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    {"model": "fast", "stream": True, "stream_options": {"include_usage": True},
     "messages": [{"role": "system", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "hi"},
                                               {"type": "image_url", "image_url": {"url": "x"}}]},
                  {"role": "assistant", "content": None,
                   "tool_calls": [{"id": "c1", "type": "function",
                                   "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "42"}],
     "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
     "tool_choice": "auto", "temperature": 0.2, "max_tokens": 64, "n": 1, "seed": 3},
    {"model": "some-unknown-model", "messages": [{"role": "developer", "content": "x"}]},
]
BAD_CHAT_BODIES = [
    {"model": "fast"},
    {"model": "fast", "messages": []},
    {"model": "fast", "messages": "hi"},
    {"model": 7, "messages": [{"role": "user", "content": "x"}]},
    {"model": "fast", "stream": "yes", "messages": [{"role": "user", "content": "x"}]},
    {"model": "fast", "messages": [{"role": 7, "content": "x"}]},
]
REAL_MESSAGES_BODIES = [
    {"model": "claude-sonnet-4-20250514", "max_tokens": 64, "system": "be brief",
     "messages": [{"role": "user", "content": "hi"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f",
                                                     "input": {}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                "content": "42"}]}],
     "tools": [{"name": "f", "input_schema": {"type": "object"}}], "stream": False},
]


@pytest.mark.parametrize("body", REAL_CHAT_BODIES)
def test_real_chat_bodies_are_valid(body: dict[str, Any]) -> None:
    validator(openapi_document(config()), "ChatCompletionRequest").validate(body)


@pytest.mark.parametrize("body", BAD_CHAT_BODIES)
def test_bodies_the_gateway_rejects_are_invalid(body: dict[str, Any]) -> None:
    assert not validator(openapi_document(config()), "ChatCompletionRequest").is_valid(body)


@pytest.mark.parametrize("body", REAL_MESSAGES_BODIES)
def test_real_messages_bodies_are_valid(body: dict[str, Any]) -> None:
    document = openapi_document(config())
    validator(document, "MessagesRequest").validate(body)
    # Newer Claude Code sends system turns inside `messages`: passed through, so valid.
    system_turn = {**body, "messages": [{"role": "system", "content": "x"}]}
    validator(document, "MessagesRequest").validate(system_turn)
    assert not validator(document, "MessagesRequest").is_valid({**body, "messages": [{"role": 7}]})


def gateway_accepts(affinity_id: str) -> bool:
    try:
        validate_affinity_id(affinity_id)
    except BadRequest:
        return False
    return True


# ECMA-262 regex semantics, as OpenAPI specifies (Python's `$` also matches before a final \n).
PATTERN = jsonschema_rs.validator_for({"type": "string", "pattern": AFFINITY_ID_PATTERN})
ID_ALPHABET = st.sampled_from("Aaz09._:@/+=- \n\t;é\u00a0%")


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(ID_ALPHABET, max_size=140) | st.text(max_size=10))
def test_affinity_pattern_agrees_with_the_gateway(affinity_id: str) -> None:
    assert PATTERN.is_valid(affinity_id) == gateway_accepts(affinity_id)


def test_affinity_pattern_edges() -> None:
    for edge in ("x" * 128, "a", "A.b_c:d@e/f+g=h-0"):
        assert PATTERN.is_valid(edge) and gateway_accepts(edge)
    for edge in ("x" * 129, "", "a\n", "has space"):
        assert not PATTERN.is_valid(edge) and not gateway_accepts(edge)


@pytest.fixture
def replica(simulator: ThreadServer) -> Any:
    with gateway(three_models(simulator.url)) as server:
        yield server


def test_live_responses_match_their_documented_schemas(replica: ThreadServer) -> None:
    document = openapi_document(config())
    chat = {"messages": [{"role": "user", "content": "write a function to parse CSV code"}]}
    url = replica.url

    def check(response: httpx.Response, status: int, schema: str) -> None:
        assert response.status_code == status, response.text
        validator(document, schema).validate(response.json())

    pinned = {"X-Model-Affinity": "doc-1"}
    check(httpx.post(f"{url}/routing/v1/chat/completions", json=chat, headers=pinned), 200,
          "RoutingDecision")
    check(httpx.post(f"{url}/routing/v1/messages", json=chat), 200, "RoutingDecision")
    check(httpx.get(f"{url}/v1/models"), 200, "ModelList")
    check(httpx.get(f"{url}/v1/affinity/doc-1"), 200, "Pin")
    check(httpx.delete(f"{url}/v1/affinity/doc-1"), 200, "Pin")
    check(httpx.get(f"{url}/v1/affinity/doc-1"), 404, "Error")
    check(httpx.get(f"{url}/healthz"), 200, "Status")
    check(httpx.get(f"{url}/readyz"), 200, "Status")
    check(httpx.post(f"{url}/v1/chat/completions", json={"model": 7}), 400, "Error")
    check(httpx.post(f"{url}/v1/messages", json={"messages": []}), 400, "AnthropicError")
    check(httpx.post(f"{url}/v1/chat/completions", json={**chat, "model": "nope"}), 404, "Error")
    check(httpx.post(f"{url}/v1/chat/completions", json=chat, headers={"X-Model-Affinity": "a b"}),
          400, "Error")


def test_the_replica_serves_its_document(replica: ThreadServer) -> None:
    response = httpx.get(f"{replica.url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == openapi_document(config())  # upstream URLs are not in it
