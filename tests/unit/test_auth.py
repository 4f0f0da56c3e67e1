"""Signed tokens: the key pair, issuing, and every way a token must be refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import FastAPI

from shared.auth import ISSUER, ensure_keypair, issue_token, load_private_key, load_public_key, verify_token
from shared.errors import NotAuthenticated
from shared.http import CurrentPrincipal
from shared.principal import Principal, Role

ALICE = Principal(subject="alice", organisation="dept-x", role=Role.DEPARTMENT, jurisdiction="510600")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("keys") / "keys"
    private, public = directory / "token-signing.pem", directory / "token-signing.pub.pem"
    ensure_keypair(private, public)
    return private, public


@pytest.fixture(scope="module")
def private_key(keys: tuple[Path, Path]) -> Ed25519PrivateKey:
    return load_private_key(keys[0])


@pytest.fixture(scope="module")
def public_key(keys: tuple[Path, Path]) -> Ed25519PublicKey:
    return load_public_key(keys[1])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "org": "dept-x",
        "role": "department",
        "jurisdiction": "510600",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    claims.update(overrides)
    return claims


def _refused(public_key: Ed25519PublicKey, token: str) -> NotAuthenticated:
    with pytest.raises(NotAuthenticated) as caught:
        verify_token(public_key, token)
    return caught.value


# --- the key pair --------------------------------------------------------------------


def test_ensure_keypair_creates_both_files_in_a_new_directory(tmp_path: Path) -> None:
    private, public = tmp_path / "a" / "k.pem", tmp_path / "b" / "k.pub.pem"
    ensure_keypair(private, public)
    assert isinstance(load_private_key(private), Ed25519PrivateKey)
    assert load_public_key(public).public_bytes_raw() == load_private_key(private).public_key().public_bytes_raw()


def test_a_second_ensure_keypair_keeps_the_existing_key(tmp_path: Path) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    ensure_keypair(private, public)
    first_private, first_public = private.read_bytes(), public.read_bytes()
    ensure_keypair(private, public)
    assert private.read_bytes() == first_private
    assert public.read_bytes() == first_public


def test_a_lost_public_key_is_rebuilt_from_the_private_key(tmp_path: Path) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    ensure_keypair(private, public)
    original_public = public.read_bytes()
    public.unlink()
    ensure_keypair(private, public)
    assert public.read_bytes() == original_public


def test_the_private_key_file_is_readable_by_its_owner_only(keys: tuple[Path, Path]) -> None:
    assert stat.S_IMODE(keys[0].stat().st_mode) == 0o600


# --- round trip ----------------------------------------------------------------------


def test_a_token_names_the_principal_it_was_issued_for(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    assert verify_token(public_key, issue_token(private_key, ALICE)) == ALICE


def test_a_token_carries_issuer_and_lifetime(private_key: Ed25519PrivateKey) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    token = issue_token(private_key, ALICE, ttl=timedelta(hours=2), now=now)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == ISSUER
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert claims["exp"] - claims["iat"] == 7200
    assert claims["iat"] == int(now.timestamp())


# --- refusals ------------------------------------------------------------------------


def test_an_expired_token_is_refused_as_expired(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    token = issue_token(private_key, ALICE, ttl=timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2))
    error = _refused(public_key, token)
    assert error.code == "token_expired"
    assert error.status == 401


def test_a_token_signed_by_another_key_is_refused(public_key: Ed25519PublicKey) -> None:
    token = issue_token(Ed25519PrivateKey.generate(), ALICE)
    assert _refused(public_key, token).code == "token_invalid"


def test_a_token_with_a_tampered_payload_is_refused(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    header, _, signature = issue_token(private_key, ALICE).split(".")
    forged = _b64(json.dumps(_claims(jurisdiction="100000", role="association")).encode())
    assert _refused(public_key, f"{header}.{forged}.{signature}").code == "token_invalid"


def test_an_hs256_token_keyed_with_the_public_key_is_refused(
    keys: tuple[Path, Path], public_key: Ed25519PublicKey
) -> None:
    """Algorithm confusion: the public key is no secret, so it must never verify an HMAC."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims(role="association", jurisdiction="100000")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(hmac.new(keys[1].read_bytes(), signing_input, hashlib.sha256).digest())
    assert _refused(public_key, f"{header}.{payload}.{signature}").code == "token_invalid"


def test_an_unsigned_token_is_refused(public_key: Ed25519PublicKey) -> None:
    token = jwt.encode(_claims(), key=None, algorithm="none")
    assert _refused(public_key, token).code == "token_invalid"


def test_a_correctly_signed_token_with_these_claims_is_accepted(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    """The control for the refusals below: only the named claim differs."""
    assert verify_token(public_key, jwt.encode(_claims(), private_key, algorithm="EdDSA")) == ALICE


def test_a_token_with_an_unknown_role_is_refused(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    token = jwt.encode(_claims(role="superuser"), private_key, algorithm="EdDSA")
    assert _refused(public_key, token).code == "token_invalid"


def test_a_token_from_another_issuer_is_refused(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    token = jwt.encode(_claims(iss="someone-else"), private_key, algorithm="EdDSA")
    assert _refused(public_key, token).code == "token_invalid"


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "sub", "org", "role", "jurisdiction"])
def test_a_token_missing_a_claim_is_refused(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey, claim: str
) -> None:
    claims = _claims()
    del claims[claim]
    token = jwt.encode(claims, private_key, algorithm="EdDSA")
    assert _refused(public_key, token).code == "token_invalid"


def test_a_malformed_token_is_refused(public_key: Ed25519PublicKey) -> None:
    assert _refused(public_key, "not-a-token").code == "token_invalid"


def test_a_token_with_a_malformed_jurisdiction_is_refused_as_invalid(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    token = jwt.encode(_claims(jurisdiction="not-a-code"), private_key, algorithm="EdDSA")
    assert _refused(public_key, token).code == "token_invalid"


def test_no_token_may_carry_the_system_role(tmp_path: Path) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    ensure_keypair(private, public)
    system = Principal(subject="registry", organisation="registry", role=Role.SYSTEM, jurisdiction="100000")
    with pytest.raises(ValueError, match="system role"):
        issue_token(load_private_key(private), system)
    now = datetime.now(UTC)
    claims = {
        "iss": "chengneng",
        "sub": "x",
        "org": "x",
        "role": "system",
        "jurisdiction": "100000",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    forged_by_key_holder = jwt.encode(claims, load_private_key(private), algorithm="EdDSA")
    with pytest.raises(NotAuthenticated) as refused:
        verify_token(load_public_key(public), forged_by_key_holder)
    assert refused.value.code == "token_invalid"


def test_the_request_s_log_context_carries_the_principal_its_token_names(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    """``current_principal`` binds who is acting for the request's log lines; bound in a worker
    thread's copy of the context (a sync dependency), it never reached the endpoint."""
    app = FastAPI()
    app.state.public_key = public_key

    @app.get("/who")
    async def who(principal: CurrentPrincipal) -> dict[str, Any]:
        return {"subject": principal.subject, "logged_as": structlog.contextvars.get_contextvars().get("principal")}

    async def ask() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://chengneng.test") as client:
            response = await client.get("/who", headers={"Authorization": f"Bearer {issue_token(private_key, ALICE)}"})
        return response.json()

    answer = asyncio.run(ask())
    assert answer == {"subject": "alice", "logged_as": "alice"}


# --- tokens remembered once verified ---------------------------------------------------------


def test_a_remembered_token_is_refused_once_it_expires(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import auth

    token = issue_token(private_key, ALICE, ttl=timedelta(minutes=5))
    assert verify_token(public_key, token) == ALICE  # checked, and remembered
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    monkeypatch.setattr(auth, "time", SimpleNamespace(time=lambda: expires - 1))
    assert verify_token(public_key, token) == ALICE
    monkeypatch.setattr(auth, "time", SimpleNamespace(time=lambda: expires))
    assert _refused(public_key, token).code == "token_expired"


def test_a_token_remembered_under_one_key_is_checked_again_under_another(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    token = issue_token(private_key, ALICE)
    assert verify_token(public_key, token) == ALICE
    rotated = Ed25519PrivateKey.generate().public_key()
    assert _refused(rotated, token).code == "token_invalid"


def test_a_refused_token_is_not_remembered(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    from shared import auth

    header, _, signature = issue_token(private_key, ALICE).split(".")
    tampered = f"{header}.{_b64(json.dumps(_claims(role='central')).encode())}.{signature}"
    for _ in range(2):
        assert _refused(public_key, tampered).code == "token_invalid"
    assert not any(token == tampered for _, token in auth._VERIFIED)


def test_at_most_so_many_tokens_are_remembered(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import auth

    monkeypatch.setattr(auth, "VERIFIED_KEPT", 3)
    monkeypatch.setattr(auth, "_VERIFIED", {})
    tokens = [issue_token(private_key, ALICE, ttl=timedelta(minutes=n + 1)) for n in range(5)]
    for token in tokens:
        assert verify_token(public_key, token) == ALICE
    assert [token for _, token in auth._VERIFIED] == tokens[2:]  # the oldest went first
