"""Reference servers for `make bench`, on the same uvicorn settings as the gateway (one worker,
uvloop, httptools, no access log):

- `empty`: a Starlette handler that reads and parses the JSON body and answers a canned chat
  completion: the ceiling for any Python gateway on this stack.
- `proxy`: a minimal Starlette proxy over aiohttp (read, forward, return the bytes): what
  a gateway costs before routing, Redis and metrics.

    python loadtest/baseline.py empty --port 9100
    python loadtest/baseline.py proxy --port 9101 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstream import CHAT

PATH = "/v1/chat/completions"


def empty_app() -> Starlette:
    async def chat(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(CHAT, media_type="application/json")

    return Starlette(routes=[Route(PATH, chat, methods=["POST"])])


def proxy_app(upstream: str) -> Starlette:
    sessions: list[aiohttp.ClientSession] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)))
        yield
        await sessions[0].close()

    async def chat(request: Request) -> Response:
        body = await request.body()
        async with sessions[0].post(
            upstream + PATH, data=body, headers={"content-type": "application/json"}
        ) as answer:
            data = await answer.read()
            return Response(data, answer.status, media_type="application/json")

    return Starlette(routes=[Route(PATH, chat, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["empty", "proxy"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="")
    args = parser.parse_args()
    app = empty_app() if args.kind == "empty" else proxy_app(args.upstream)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
