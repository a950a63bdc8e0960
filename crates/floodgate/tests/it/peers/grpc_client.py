"""A gRPC client built on grpcio, for tests/it/grpc.rs: calls each method of the
`test.Echo` service (see grpc_server.py) at the address in argv[1], over h2c (or over
TLS when argv[1] is `tls:CA_FILE@ADDRESS`, the CA file trusted), and prints
one JSON object with what came back, or the status code and message of each failure.
argv[2], if given, names the calls to make (comma-separated), in order; `no_route` calls
a service nothing routes. With argv[2] = `seq` and argv[3] a comma-separated list of
unary calls `Method:payload`, prints {"seq": [...]} with each call's answer in order."""

import json, sys

import grpc


def call(out, name, fn):
    if ONLY and name not in ONLY:
        return
    try:
        out[name] = fn()
    except grpc.RpcError as e:
        out[name] = {"code": e.code().name, "message": e.details()}


def channel(target):
    if target.startswith("tls:"):
        ca, _, address = target[4:].partition("@")
        creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        return grpc.secure_channel(address, creds)
    return grpc.insecure_channel(target)


def main(target):
    out = {}
    with channel(target) as ch:
        m = lambda kind, name: getattr(ch, kind)("/test.Echo/" + name)
        call(out, "unary", lambda: m("unary_unary", "Unary")(b"hello", timeout=20).decode())
        call(out, "big", lambda: len(m("unary_unary", "Unary")(b"x" * 3_000_000, timeout=20)))
        call(out, "server_stream", lambda: [r.decode() for r in m("unary_stream", "ServerStream")(b"abc", timeout=20)])
        call(out, "client_stream", lambda: m("stream_unary", "ClientStream")(iter([b"a", b"b", b"c"]), timeout=20).decode())
        call(out, "bidi", lambda: [r.decode() for r in m("stream_stream", "Bidi")(iter([b"1", b"2", b"3"]), timeout=20)])
        call(out, "fail", lambda: m("unary_unary", "Fail")(b"NOT_FOUND:no such thing", timeout=20).decode())

        def trailers():
            _, c = m("unary_unary", "Metadata").with_call(b"m", metadata=(("x-trace", "t1"),), timeout=20)
            return dict(c.trailing_metadata())

        call(out, "trailers", trailers)
        call(out, "deadline", lambda: m("unary_unary", "Slow")(b"", timeout=0.5).decode())
        call(out, "unimplemented", lambda: m("unary_unary", "Nope")(b"", timeout=20).decode())
        call(out, "unary_again", lambda: m("unary_unary", "Unary")(b"again", timeout=20).decode())
        call(out, "no_route", lambda: ch.unary_unary("/nope.Svc/X")(b"", timeout=20).decode())
    print(json.dumps(out), flush=True)


def seq(target, calls):
    out = []
    with grpc.insecure_channel(target) as ch:
        for c in calls.split(","):
            method, _, payload = c.partition(":")
            try:
                out.append({"ok": ch.unary_unary("/test.Echo/" + method)(payload.encode(), timeout=20).decode()})
            except grpc.RpcError as e:
                out.append({"code": e.code().name, "message": e.details()})
    print(json.dumps({"seq": out}), flush=True)


if len(sys.argv) > 3 and sys.argv[2] == "seq":
    seq(sys.argv[1], sys.argv[3])
    sys.exit(0)
ONLY = sys.argv[2].split(",") if len(sys.argv) > 2 else None
main(sys.argv[1])
