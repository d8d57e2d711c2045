"""A minimal Starlette + httpx proxy: POST /v1/chat/completions forwarded to one upstream.

    python benchmarks/proxies/starlette_httpx.py UPSTREAM_V1_URL [PORT]

Served by uvicorn as a plain ``pip install uvicorn`` serves it: pure-Python HTTP (h11) on the
standard asyncio event loop (uvicorn would pick uvloop and httptools only if they were installed,
and in the benchmark's environment they are, for the gateway); prints ``listening on URL`` once
the socket accepts connections.
"""

import socket
import sys

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = sys.argv[1].rstrip("/") + "/chat/completions"
client = httpx.AsyncClient(timeout=60.0, limits=httpx.Limits(max_connections=256))


async def chat(request: Request) -> Response:
    """Forward the body; stream the answer back as it arrives when it is an event stream."""
    headers = {"content-type": "application/json"}
    sent = client.build_request("POST", UPSTREAM, content=await request.body(), headers=headers)
    answer = await client.send(sent, stream=True)
    kind = {"content-type": answer.headers.get("content-type", "application/json")}
    if kind["content-type"].startswith("text/event-stream"):
        done = BackgroundTask(answer.aclose)
        return StreamingResponse(answer.aiter_raw(), answer.status_code, kind, background=done)
    body = await answer.aread()
    await answer.aclose()
    return Response(body, answer.status_code, kind)


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

if __name__ == "__main__":
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0))
    sock.listen(2048)  # listening before the URL is printed: early connections wait in the backlog
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    # The stack such a proxy gets from a plain `pip install uvicorn`: h11 on asyncio's loop.
    config = uvicorn.Config(app, log_level="warning", http="h11", loop="asyncio")
    uvicorn.Server(config).run(sockets=[sock])
