"""Keys and tokens for tests/it/jwt.rs, made by PyJWT and cryptography (independent of
Floodgate). Usage: jwt_tokens.py DIR. Writes each algorithm's public key as DIR/<alg>.pem
and a JWKS with two ES256 keys (DIR/jwks-k1.json: k1 only; DIR/jwks-k2.json: k1 and k2);
prints a JSON object of tokens by name."""

import base64, hashlib, hmac, json, sys, time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

out = sys.argv[1]
now = int(time.time())
claims = {"sub": "alice", "iss": "https://issuer.test", "aud": "shop", "iat": now,
          "exp": now + 600, "scope": "read admin"}
HMAC_SECRET = "a-shared-secret-of-at-least-32-bytes!"

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
private = {
    "RS": rsa_key,
    "PS": rsa_key,
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "ES384": ec.generate_private_key(ec.SECP384R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}

def pem(public):
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)

tokens = {}
for alg in ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
            "PS512", "ES256", "ES384", "EdDSA"]:
    if alg.startswith("HS"):
        key = HMAC_SECRET
    else:
        key = private.get(alg) or private[alg[:2]]
        open(f"{out}/{alg}.pem", "wb").write(pem(key.public_key()))
    tokens[alg] = jwt.encode(claims, key, algorithm=alg, headers={"kid": alg})

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

# Attacks. alg "none", unsigned.
tokens["none"] = (b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "."
                  + b64(json.dumps(claims).encode()) + ".")
# HS256 keyed with the RS256 public key's PEM (the classic confusion), naming that key.
rs_pem = pem(rsa_key.public_key())
head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "RS256"}).encode())
body = b64(json.dumps(claims).encode())
sig = hmac.new(rs_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
tokens["confusion"] = f"{head}.{body}.{b64(sig)}"
# An algorithm the key does not name: HS512 with the HS256 key's secret and id.
tokens["wrong_alg"] = jwt.encode(claims, HMAC_SECRET, algorithm="HS512", headers={"kid": "HS256"})
# Claims that must fail: expired (beyond the 60 s leeway), not yet valid, wrong issuer,
# wrong audience, no exp.
es = private["ES256"]
def es256(c, kid="ES256"):
    return jwt.encode(c, es, algorithm="ES256", headers={"kid": kid})
tokens["expired"] = es256({**claims, "exp": now - 120})
tokens["within_leeway"] = es256({**claims, "exp": now - 10})
tokens["not_yet"] = es256({**claims, "nbf": now + 600})
tokens["wrong_iss"] = es256({**claims, "iss": "https://evil.test"})
tokens["wrong_aud"] = es256({**claims, "aud": "other"})
tokens["no_exp"] = es256({k: v for k, v in claims.items() if k != "exp"})
tokens["no_admin_scope"] = es256({**claims, "sub": "bob", "scope": "read"})
tokens["admin_not_listed"] = es256({**claims, "sub": "carol"})
# A critical header extension nobody implements (RFC 7515 §4.1.11): must be refused.
tokens["crit"] = jwt.encode(claims, es, algorithm="ES256",
                            headers={"kid": "ES256", "crit": ["x-unknown"], "x-unknown": 1})
# ES512 (P-521), which Floodgate does not verify, naming the ES256 key.
tokens["es512"] = jwt.encode(claims, ec.generate_private_key(ec.SECP521R1()), algorithm="ES512",
                             headers={"kid": "ES256"})
# A tampered payload with the original signature.
h, p, s = tokens["ES256"].split(".")
tokens["tampered"] = f"{h}.{b64(json.dumps({**claims, 'sub': 'mallory'}).encode())}.{s}"

# JWKS: k1 at first; k2 appears after a rotation.
k1 = ec.generate_private_key(ec.SECP256R1())
k2 = ec.generate_private_key(ec.SECP256R1())
def jwk(key, kid):
    d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    d.update({"kid": kid, "alg": "ES256", "use": "sig"})
    return d
json.dump({"keys": [jwk(k1, "k1")]}, open(f"{out}/jwks-k1.json", "w"))
json.dump({"keys": [jwk(k1, "k1"), jwk(k2, "k2")]}, open(f"{out}/jwks-k2.json", "w"))
# k1 retired: only k2 left.
json.dump({"keys": [jwk(k2, "k2")]}, open(f"{out}/jwks-k2-only.json", "w"))
tokens["jwks_k1"] = jwt.encode({**claims, "sub": "carol"}, k1, algorithm="ES256", headers={"kid": "k1"})
tokens["jwks_k2"] = jwt.encode({**claims, "sub": "dave"}, k2, algorithm="ES256", headers={"kid": "k2"})

print(json.dumps(tokens))
