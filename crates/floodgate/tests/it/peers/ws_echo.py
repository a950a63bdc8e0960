"""A WebSocket origin built on the `websockets` library, for tests/it/websocket.rs:
prints its port, then echoes every message (text as text, binary as binary). A message
`close:<code>` closes the connection with that code instead; `headers` answers with the
handshake's headers as JSON and `path` with its request target (what reached the
origin)."""

import asyncio, json

from websockets.asyncio.server import serve


async def echo(ws):
    async for message in ws:
        if message == "path":
            await ws.send(ws.request.path)
        elif message == "headers":
            await ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()}))
        elif isinstance(message, str) and message.startswith("close:"):
            await ws.close(int(message[6:]), "asked")
            return
        else:
            await ws.send(message)


async def main():
    async with serve(echo, "127.0.0.1", 0, max_size=4 * 1024 * 1024) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


asyncio.run(main())
