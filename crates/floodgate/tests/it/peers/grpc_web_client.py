"""A gRPC-Web client built on sonora (an independent gRPC-Web implementation), for
tests/it/grpc.rs: calls the `test.Echo` service (see grpc_server.py) through the gateway
at the URL in argv[1], over HTTP/1.1, and prints one JSON object with what came back."""

import json, sys

import grpc
import sonora.client

same = lambda b: b


def call(out, name, fn):
    try:
        out[name] = fn()
    except grpc.RpcError as e:
        out[name] = {"code": e.code().name, "message": e.details()}


def main(url):
    out = {}
    with sonora.client.insecure_web_channel(url) as ch:
        unary = ch.unary_unary("/test.Echo/Unary", same, same)
        call(out, "unary", lambda: unary(b"hello web", timeout=20).decode())
        stream = ch.unary_stream("/test.Echo/ServerStream", same, same)
        call(out, "server_stream", lambda: [m.decode() for m in stream(b"xyz", timeout=20)])
        fail = ch.unary_unary("/test.Echo/Fail", same, same)
        call(out, "fail", lambda: fail(b"NOT_FOUND:nothing here", timeout=20).decode())
        nope = ch.unary_unary("/nope.Svc/X", same, same)
        call(out, "no_route", lambda: nope(b"", timeout=20).decode())
    print(json.dumps(out), flush=True)


main(sys.argv[1])
