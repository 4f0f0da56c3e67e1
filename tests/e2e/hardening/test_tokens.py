"""Tokens over HTTP: every operation that needs a token refuses every bad one with 401.

The operations come from each service's OpenAPI document: those that declare the bearer
scheme must refuse a missing, malformed, expired, not-yet-valid, tampered, re-signed,
unsigned or wrongly-keyed token with 401 problem details and a code; those that do not
declare it must be the public ones (health, metrics, audit proofs, the disclosure service),
so a new route that forgot the token check cannot hide.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.auth import ISSUER, load_private_key
from tests.conftest import Stack
from tests.e2e.hardening.support import ASSOCIATION, DEYANG, assert_problem

pytestmark = pytest.mark.stack

SERVICES = ("registry", "capability", "supervision", "disclosure")
PUBLIC_PATHS = re.compile(r"^/(health|metrics|audit/.*|public/.*)$")
"""Operations that need no token: operations, audit proofs (hashes only) and what is disclosed."""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**override: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    base = {
        "iss": ISSUER,
        "sub": "clerk",
        "org": ASSOCIATION,
        "role": "association",
        "jurisdiction": DEYANG,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    return {k: v for k, v in {**base, **override}.items() if v is not None}


def bad_tokens(stack: Stack) -> dict[str, tuple[str | None, str]]:
    """Name → (Authorization header, the code the refusal must carry)."""
    key = load_private_key(stack.home / "keys" / "token-signing.pem")
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = jwt.encode(claims(), key, algorithm="EdDSA")
    header, payload, signature = good.split(".")
    elevated = b64(json.dumps(claims(role="association", jurisdiction="100000")).encode())
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    hs_payload = b64(json.dumps(claims()).encode())
    hs_signature = b64(hmac.new(public_pem, f"{hs_header}.{hs_payload}".encode(), hashlib.sha256).digest())
    unsigned_header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    past = datetime.now(UTC) - timedelta(hours=3)
    future = datetime.now(UTC) + timedelta(hours=3)

    def signed(**override: Any) -> str:
        return jwt.encode(claims(**override), key, algorithm="EdDSA")

    return {
        "missing": (None, "token_missing"),
        "bearer without a token": ("Bearer", "token_missing"),
        "another scheme": (f"Basic {b64(b'clerk:secret')}", "token_missing"),
        "not a jwt": ("Bearer not-a-token", "token_invalid"),
        "expired": (
            f"Bearer {signed(iat=int(past.timestamp()), exp=int((past + timedelta(hours=1)).timestamp()))}",
            "token_expired",
        ),
        "issued in the future": (
            f"Bearer {signed(iat=int(future.timestamp()), exp=int((future + timedelta(hours=1)).timestamp()))}",
            "token_invalid",
        ),
        "tampered payload": (f"Bearer {header}.{elevated}.{signature}", "token_invalid"),
        "tampered signature": (f"Bearer {header}.{payload}.{signature[:-6]}AAAAAA", "token_invalid"),
        "signature stripped": (f"Bearer {header}.{payload}.", "token_invalid"),
        "wrong key": (
            f"Bearer {jwt.encode(claims(), Ed25519PrivateKey.generate(), algorithm='EdDSA')}",
            "token_invalid",
        ),
        "alg none": (f"Bearer {unsigned_header}.{b64(json.dumps(claims()).encode())}.", "token_invalid"),
        "HS256 keyed with the public key": (f"Bearer {hs_header}.{hs_payload}.{hs_signature}", "token_invalid"),
        "RS256 with another key": (
            f"Bearer {jwt.encode(claims(), rsa.generate_private_key(65537, 2048), algorithm='RS256')}",
            "token_invalid",
        ),
        "ES256 with another key": (
            f"Bearer {jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm='ES256')}",
            "token_invalid",
        ),
        "another issuer": (f"Bearer {signed(iss='someone-else')}", "token_invalid"),
        "no expiry": (f"Bearer {signed(exp=None)}", "token_invalid"),
        "system role": (f"Bearer {signed(role='system')}", "token_invalid"),
        "unknown role": (f"Bearer {signed(role='superuser')}", "token_invalid"),
        "bad jurisdiction": (f"Bearer {signed(jurisdiction='12')}", "token_invalid"),
    }


def operations(stack: Stack, service: str) -> list[tuple[str, str, bool]]:
    """(method, concrete path, declares the bearer token) of every operation the service publishes."""
    document = httpx.get(f"{stack.urls[service]}/openapi.json", timeout=15).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    found = []
    for path, methods in document["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", lambda m: DEYANG if m.group(0) == "{jurisdiction}" else "x-1", path)
        for method, operation in methods.items():
            secured = any("bearer" in requirement for requirement in operation.get("security", []))
            found.append((method.upper(), concrete, secured))
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_either_declares_the_token_or_is_public_by_design(stack: Stack, service: str) -> None:
    ops = operations(stack, service)
    assert ops
    for method, path, secured in ops:
        if service == "disclosure" or PUBLIC_PATHS.match(path):
            assert not secured, f"{method} {path} is public by design but declares a token"
        else:
            assert secured, f"{method} {path} neither declares the bearer token nor is public by design"


@pytest.mark.parametrize("service", SERVICES)
def test_every_bad_token_is_refused_with_401_on_every_operation_that_needs_one(stack: Stack, service: str) -> None:
    secured = [(method, path) for method, path, needs in operations(stack, service) if needs]
    tokens = bad_tokens(stack)
    if service == "disclosure":
        assert not secured
        # public pages ignore whatever token comes along: a forged one changes nothing
        public = httpx.get(
            f"{stack.urls[service]}/public/jurisdictions/{DEYANG}/functions",
            headers={"Authorization": tokens["tampered payload"][0] or ""},
        )
        assert public.status_code == 200, public.text
        return
    assert len(secured) >= 10

    with httpx.Client(base_url=stack.urls[service], timeout=30) as client:

        def send(item: tuple[tuple[str, str], tuple[str, tuple[str | None, str]]]) -> tuple[str, str]:
            (method, path), (name, (authorization, code)) = item
            headers = {"Authorization": authorization} if authorization is not None else {}
            response = client.request(method, path, json={} if method == "POST" else None, headers=headers)
            try:
                body = assert_problem(response, 401, code)
            except AssertionError as error:
                return f"{method} {path} with {name}", str(error)
            return f"{method} {path} with {name}", "" if body else "no body"

        work = [(op, token) for op in secured for token in tokens.items()]
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(send, work))
    failures = [f"{what}: {error}" for what, error in outcomes if error]
    assert not failures, "\n".join(failures[:20])
    # and a good token passes the same check
    good = stack.token("association", ASSOCIATION, DEYANG)
    with httpx.Client(base_url=stack.urls[service], headers={"Authorization": f"Bearer {good}"}) as client:
        method, path = next((m, p) for m, p in secured if m == "GET")
        assert client.request(method, path).status_code != 401
