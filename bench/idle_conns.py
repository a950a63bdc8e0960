#!/usr/bin/env python3
"""Opens N keep-alive connections to HOST:PORT one after another, each sending one request
and reading its response, then holds them all open until stdin closes (or HOLD seconds pass). Prints
"ready N" once all connections are established and idle. Used by bench/proxy.sh to measure
memory with many idle clients. Traffic goes only to the given loopback address."""
import socket, sys, time, select

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
hold = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
socks = []
ok = 0
# One client at a time: connect, one request, read the answer, then leave it idle. This is
# what idle keep-alive clients look like (and keeps upstream connections to a few).
for i in range(n):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(req)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    ok += data.startswith(b"HTTP/1.1 200")
    socks.append(s)
print(f"ready {ok}", flush=True)
select.select([sys.stdin], [], [], hold)
for s in socks:
    s.close()
