"""A minimal C-parser proxy: a bare ASGI app on uvicorn with uvloop + httptools, aiohttp client.

    python benchmarks/proxies/uvloop_aiohttp.py UPSTREAM_V1_URL [PORT]

Forwards POST /v1/chat/completions to one upstream (event streams chunk by chunk); prints
``listening on URL`` once the socket accepts connections.
"""

import socket
import sys
from collections.abc import Awaitable, Callable

import aiohttp
import uvicorn

UPSTREAM = sys.argv[1].rstrip("/") + "/chat/completions"
HEADERS = {"content-type": "application/json"}
sessions: list[aiohttp.ClientSession] = []  # made on first use: a session needs a running loop
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


async def app(scope: dict, receive: Receive, send: Send) -> None:
    """Read the whole body, forward it, send the answer back (streamed if it is a stream)."""
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        return await send({"type": "http.response.body", "body": b""})
    if not sessions:
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)))
    async with sessions[0].post(UPSTREAM, data=body, headers=HEADERS) as answer:
        kind = answer.headers.get("content-type", "application/json")
        start = {"type": "http.response.start", "status": answer.status}
        if not kind.startswith("text/event-stream"):
            data = await answer.read()
            length = [(b"content-length", str(len(data)).encode())]
            await send({**start, "headers": [(b"content-type", kind.encode()), *length]})
            return await send({"type": "http.response.body", "body": data})
        await send({**start, "headers": [(b"content-type", kind.encode())]})
        async for chunk in answer.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0))
    sock.listen(2048)  # listening before the URL is printed: early connections wait in the backlog
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", lifespan="off", log_level="warning"
    )
    uvicorn.Server(config).run(sockets=[sock])
