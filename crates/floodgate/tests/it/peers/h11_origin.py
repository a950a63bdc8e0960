"""An origin built on h11 (an independent, strict HTTP/1.1 parser), for
tests/it/desync.rs: prints its port, then for every request it parses prints one JSON line
on stdout (method, target, body as Latin-1 text) before answering 200 `ok`. A request it
cannot parse prints {"error": ...} and gets a 400; the connection then closes. Each
connection is announced as {"accepted": n} when accepted and {"closed": n} once its last
byte was read, so a test can tell when nothing is left in flight."""

import json, socket, sys, threading

import h11


def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def serve(sock, n):
    conn = h11.Connection(h11.SERVER)
    request, body = None, b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.SEND_BODY:
                    if conn.their_state is h11.IDLE or conn.their_state is h11.DONE:
                        return
                continue
            if isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                emit({
                    "method": request.method.decode("latin-1"),
                    "target": request.target.decode("latin-1"),
                    "body": body.decode("latin-1"),
                })
                sock.sendall(conn.send(h11.Response(status_code=200, headers=[("content-length", "2")])))
                if request.method != b"HEAD":
                    sock.sendall(conn.send(h11.Data(data=b"ok")))
                sock.sendall(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
    except h11.RemoteProtocolError as e:
        emit({"error": str(e)})
        try:
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        except OSError:
            pass
    except OSError:
        pass
    finally:
        sock.close()
        emit({"closed": n})


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print(listener.getsockname()[1], flush=True)
    n = 0
    while True:
        sock, _ = listener.accept()
        n += 1
        emit({"accepted": n})
        threading.Thread(target=serve, args=(sock, n), daemon=True).start()


main()
