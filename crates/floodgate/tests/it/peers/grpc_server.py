"""A gRPC server built on grpcio, for tests/it/grpc.rs: prints its port, then serves a
service `test.Echo` with raw-bytes messages (no generated code): `Unary` echoes,
`ServerStream` answers each byte of the request as a message of its own,
`ClientStream` joins what it was sent, `Bidi` echoes each message as it comes, `Fail`
aborts with the status named in the request (`NOT_FOUND:why`), `Metadata` returns the
request's metadata as trailing metadata, and `Slow` waits for its deadline. It also
answers the gRPC health checking protocol (grpc.health.v1.Health/Check), by hand: the
whole server and `test.Echo` are SERVING, the service `down` is NOT_SERVING; each check
prints {"health": service} on stdout once answered."""

import json, sys, time
from concurrent import futures

import grpc


def unary(request, context):
    return request


def server_stream(request, context):
    for b in request:
        yield bytes([b])


def client_stream(requests, context):
    return b"".join(requests)


def bidi(requests, context):
    for r in requests:
        yield r


def fail(request, context):
    code, _, why = request.decode().partition(":")
    context.abort(getattr(grpc.StatusCode, code), why)


def metadata(request, context):
    context.set_trailing_metadata(
        tuple((k, v) for k, v in context.invocation_metadata() if k.startswith("x-"))
    )
    return request


def slow(request, context):
    while context.is_active():
        time.sleep(0.05)
    return b""


def health(request, context):
    # HealthCheckRequest { service = 1 } in, HealthCheckResponse { status = 1 } out.
    service = request[2:].decode() if request[:1] == b"\x0a" else ""
    print(json.dumps({"health": service}), flush=True)
    return b"\x08\x02" if service == "down" else b"\x08\x01"


def main():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Metadata": grpc.unary_unary_rpc_method_handler(metadata),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("test.Echo", handlers),
        grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health)}
        ),
    ))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


main()
