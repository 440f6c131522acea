"""An agent service behind the gateway: it forwards `X-Model-Affinity` on every call it makes.

POST /chat {"question": "...", "session_id": "optional"} runs a multi-step tool loop (the
demo's database-selection tools, with simulated results) through the gateway and answers with
the final answer and the model of each step. The session id - from the body, or from an
`X-Model-Affinity` header on the request - goes out as `X-Model-Affinity` on every LLM call,
so the whole loop stays on the model the gateway chose for its first step.

    GATEWAY_URL=http://127.0.0.1:12000 \\
        uvicorn examples.agent_server:create_app --factory --port 9000
    curl -s localhost:9000/chat -H 'content-type: application/json' \\
        -d '{"question": "PostgreSQL or MongoDB for our shop?", "session_id": "s-42"}'
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.demo.agent import SYSTEM_PROMPT, TOOLS, tool_result

MAX_STEPS = 12


async def agent_loop(
    llm: openai.AsyncOpenAI, question: str, session_id: str | None, model: str = "auto"
) -> tuple[str, list[dict[str, Any]]]:
    """Call the model until it stops asking for tools; the final answer and every step."""
    # The one line that keeps an agent on one model: the same id on every call of the session.
    headers = {"X-Model-Affinity": session_id} if session_id else {}
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]
    steps: list[dict[str, Any]] = []
    for number in range(1, MAX_STEPS + 1):
        raw = await llm.chat.completions.with_raw_response.create(
            model=model, messages=messages, tools=TOOLS, extra_headers=headers  # type: ignore[arg-type]
        )
        completion = raw.parse()
        message = completion.choices[0].message
        calls = message.tool_calls or []
        steps.append({
            "step": number,
            "model": raw.headers.get("x-gateway-model", completion.model),
            "route": raw.headers.get("x-gateway-route", ""),
            "affinity": raw.headers.get("x-model-affinity-status", ""),
            "tools": [call.function.name for call in calls if call.type == "function"],
        })
        if not calls:
            return (message.content or "").strip(), steps
        messages.append(message.model_dump(exclude_none=True))
        for call in calls:
            if call.type != "function":
                continue
            try:
                arguments = json.loads(call.function.arguments or "{}")
            except ValueError:
                arguments = None  # broken JSON from the model: the tool reports "no data"
            result = tool_result(
                call.function.name, arguments if isinstance(arguments, dict) else {}
            )
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return "", steps


async def chat(request: Request) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        body = None
    question = body.get("question") if isinstance(body, dict) else None
    session_id = body.get("session_id") if isinstance(body, dict) else None
    session_id = session_id or request.headers.get("x-model-affinity")
    if not isinstance(question, str) or not question.strip():
        return JSONResponse({"error": "send {\"question\": \"...\"}"}, status_code=400)
    if session_id is not None and not isinstance(session_id, str):
        return JSONResponse({"error": "session_id must be a string"}, status_code=400)
    try:
        answer, steps = await agent_loop(request.state.llm, question, session_id)
    except openai.APIStatusError as error:  # the gateway's own message (never a provider key)
        # A 400 is about what the client sent (a bad session id, say); the rest is upstream.
        status = 400 if error.status_code == 400 else 502
        return JSONResponse({"error": f"gateway: {error.message}"}, status_code=status)
    except openai.APIConnectionError:
        return JSONResponse({"error": "gateway unreachable"}, status_code=502)
    return JSONResponse({"answer": answer, "session_id": session_id, "steps": steps})


def create_app(gateway_url: str | None = None) -> Starlette:
    """The service; the gateway is `gateway_url`, else $GATEWAY_URL, else localhost:12000."""
    url = (gateway_url or os.environ.get("GATEWAY_URL") or "http://127.0.0.1:12000").rstrip("/")
    api_key = os.environ.get("GATEWAY_API_KEY") or "unused"  # only if the gateway has auth on

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0) as llm:
            yield {"llm": llm}

    return Starlette(routes=[Route("/chat", chat, methods=["POST"])], lifespan=lifespan)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "9000")))
