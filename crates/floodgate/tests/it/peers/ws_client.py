"""A WebSocket client built on the `websockets` library, for tests/it/websocket.rs: runs
one conversation through the URL in argv[1] and prints one JSON object with what came
back: text, binary, a fragmented message, ping/pong, a 1 MiB message, the headers the
origin saw, and the close code the origin chose."""

import asyncio, json, sys

from websockets.asyncio.client import connect


async def main(url):
    out = {}
    # No compression: the 1 MiB message crosses the tunnel as 1 MiB.
    async with connect(url, max_size=4 * 1024 * 1024, open_timeout=20, compression=None) as ws:
        await ws.send("hello")
        out["text"] = await ws.recv()
        await ws.send(b"\x00\x01\xfe\xff")
        out["binary"] = list(await ws.recv())
        await ws.send(["frag", "ment", "ed"])
        out["fragmented"] = await ws.recv()
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 20)
        out["pong"] = True
        big = bytes(range(256)) * 4096
        await ws.send(big)
        echoed = await ws.recv()
        out["big"] = len(echoed) == len(big) and echoed == big
        await ws.send("headers")
        out["headers"] = json.loads(await ws.recv())
        await ws.send("close:4001")
        try:
            await ws.recv()
        except Exception:
            pass
        out["close_code"] = ws.close_code
    print(json.dumps(out), flush=True)


asyncio.run(main(sys.argv[1]))
