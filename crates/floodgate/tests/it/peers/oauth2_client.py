"""An independent OAuth2 client (Authlib, with requests) against Floodgate's token
endpoint, for tests/it/oauth2.rs. Usage: oauth2_client.py BASE CLIENT_ID SECRET AUTH_METHOD.
Prints one JSON object: the token response, the statuses of calls with the token, the
token's claims as PyJWT verifies them with the gateway's JWKS, and error responses."""

import json, sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session

base, client_id, secret, method = sys.argv[1:5]
token_url = f"{base}/oauth2/token"
out = {}

session = OAuth2Session(client_id, secret, token_endpoint_auth_method=method, scope="read")
token = session.fetch_token(token_url, grant_type="client_credentials")
out["token"] = {k: token[k] for k in ("token_type", "expires_in", "scope")}
out["api"] = session.get(f"{base}/api").status_code
out["admin"] = session.get(f"{base}/admin").status_code

jwks = jwt.PyJWKClient(f"{base}/.well-known/jwks.json")
key = jwks.get_signing_key_from_jwt(token["access_token"])
claims = jwt.decode(token["access_token"], key.key, algorithms=["ES256", "EdDSA"],
                    audience="https://gw.test", issuer="https://gw.test")
out["claims"] = {k: claims[k] for k in ("sub", "scope", "iss", "aud")}
out["alg"] = jwt.get_unverified_header(token["access_token"])["alg"]

def post(data, auth=None):
    r = requests.post(token_url, data=data, auth=auth)
    return [r.status_code, r.json().get("error"), r.headers.get("cache-control")]

out["bad_secret"] = post({"grant_type": "client_credentials"}, (client_id, "wrong"))
out["bad_grant"] = post({"grant_type": "password", "username": "u", "password": "p"}, (client_id, secret))
out["bad_scope"] = post({"grant_type": "client_credentials", "scope": "admin"}, (client_id, secret))
out["get"] = requests.get(token_url).status_code
print(json.dumps(out))
