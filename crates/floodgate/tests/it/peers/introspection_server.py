"""An RFC 7662 introspection endpoint built with Authlib (on Flask), for
tests/it/introspection.rs. It knows three tokens: one active with scope `read`, one
active with `read admin`, one expired; the gateway authenticates as client `gw`
(secret `gw-secret`) with client_secret_basic. Prints its port, then serves; each
introspection request is counted in the response header X-Count."""

import os, time

# Plain HTTP on loopback, for the test only (Authlib insists on https otherwise).
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Flask
from werkzeug.serving import make_server

COUNT = {"n": 0}


class Client(ClientMixin):
    def __init__(self, client_id, secret):
        self.client_id, self.secret = client_id, secret

    def get_client_id(self):
        return self.client_id

    def check_client_secret(self, secret):
        return secret == self.secret

    def check_endpoint_auth_method(self, method, endpoint):
        return method == "client_secret_basic"

    def check_token_endpoint_auth_method(self, method):
        return method == "client_secret_basic"


class Token(TokenMixin):
    def __init__(self, sub, scope, exp):
        self.sub, self.scope, self.exp = sub, scope, exp

    def check_client(self, client):
        return True

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.exp - int(time.time())

    def is_expired(self):
        return self.exp < time.time()

    def is_revoked(self):
        return False


now = int(time.time())
TOKENS = {
    "opaque-read-token": Token("erin", "read", now + 3600),
    "opaque-admin-token": Token("frank", "read admin", now + 3600),
    "opaque-expired-token": Token("gina", "read", now - 60),
}
CLIENTS = {"gw": Client("gw", "gw-secret")}


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic"]

    def query_token(self, token, token_type_hint):
        COUNT["n"] += 1
        return TOKENS.get(token)

    def introspect_token(self, token):
        return {"active": True, "sub": token.sub, "scope": token.scope, "exp": token.exp,
                "client_id": "app", "token_type": "Bearer"}

    def check_permission(self, token, client, request):
        return True


app = Flask(__name__)
server = AuthorizationServer(app, query_client=CLIENTS.get, save_token=lambda t, r: None)
server.register_endpoint(Introspection)


@app.route("/introspect", methods=["POST"])
def introspect():
    resp = server.create_endpoint_response(Introspection.ENDPOINT_NAME)
    resp.headers["X-Count"] = str(COUNT["n"])
    return resp


@app.route("/count")
def count():
    return str(COUNT["n"])


http = make_server("127.0.0.1", 0, app)
print(http.port, flush=True)
http.serve_forever()
