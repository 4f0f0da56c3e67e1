"""Signed tokens (JWT, EdDSA/Ed25519) naming principal, organisation, role and jurisdiction.

``chengneng token issue`` signs with the private key under ``$CHENGNENG_HOME/keys``;
services hold only the public key, so a compromised service cannot mint tokens.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from shared.errors import ChengnengError, NotAuthenticated
from shared.principal import Principal, Role

ISSUER = "chengneng"
ALGORITHM = "EdDSA"


def ensure_keypair(private_path: Path, public_path: Path) -> None:
    """Create the signing key pair once; an existing pair is never replaced."""
    if private_path.exists():
        if not public_path.exists():
            public_path.write_bytes(_public_pem(load_private_key(private_path)))
        return
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.touch(mode=0o600)
    private_path.write_bytes(pem)
    public_path.write_bytes(_public_pem(key))


def _public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def issue_token(
    key: Ed25519PrivateKey, principal: Principal, *, ttl: timedelta = timedelta(hours=12), now: datetime | None = None
) -> str:
    if principal.role is Role.SYSTEM:
        raise ValueError("the system role is for services' own reactions and is never put in a token")
    issued = now or datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "sub": principal.subject,
        "org": principal.organisation,
        "role": principal.role.value,
        "jurisdiction": principal.jurisdiction,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_token(key: Ed25519PublicKey, token: str) -> Principal:
    """The principal a token names; ``NotAuthenticated`` if it is expired, forged or malformed.

    A token that passed is remembered, by its exact text and the key that checked it, until
    it expires: checking an Ed25519 signature costs about 0.2 ms, and a client sends the same
    token with every request. Expiry is checked again on every use; a token that failed is
    not remembered, so it is checked (and refused) each time.
    """
    remembered = (key.public_bytes_raw(), token)
    verified = _VERIFIED.get(remembered)
    if verified is None:
        verified = _verify(key, token)
        if len(_VERIFIED) >= VERIFIED_KEPT:
            del _VERIFIED[next(iter(_VERIFIED))]  # the oldest: a dict keeps insertion order
        _VERIFIED[remembered] = verified
    principal, expires = verified
    if expires <= time.time():  # as PyJWT decides it, without leeway
        _VERIFIED.pop(remembered, None)
        raise NotAuthenticated("token_expired", "the token has expired; issue a new one")
    return principal


VERIFIED_KEPT = 4096
"""Tokens remembered as verified at most (a few MB): more clients than this only cost checks."""

_VERIFIED: dict[tuple[bytes, str], tuple[Principal, int]] = {}


def _verify(key: Ed25519PublicKey, token: str) -> tuple[Principal, int]:
    """Check a token's signature and claims: the principal it names and when it expires."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise NotAuthenticated("token_expired", "the token has expired; issue a new one") from exc
    except jwt.InvalidTokenError as exc:
        raise NotAuthenticated("token_invalid", f"the token was refused: {exc}") from exc
    if claims.get("role") == Role.SYSTEM.value:
        raise NotAuthenticated("token_invalid", "no token may carry the system role")
    try:
        principal = Principal(
            subject=claims["sub"],
            organisation=claims["org"],
            role=claims["role"],
            jurisdiction=claims["jurisdiction"],
        )
    except (KeyError, ValidationError, ChengnengError) as exc:
        raise NotAuthenticated("token_invalid", "the token does not name a valid principal") from exc
    return principal, int(claims["exp"])
