"""JWT verification: only configured algorithms, required claims, issuer and audience checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.core.config import Settings
from app.core.security import Principal
from app.errors import Unauthenticated
from app.services.access.jwt_tokens import principal_from_jwt

SECRET = "a-test-secret-long-enough-for-every-hmac-algorithm-0123456789abcdef"
ISSUER = "https://issuer.test"
AUDIENCE = "chat-api"


def _rsa_pair() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public_pem


RSA_PRIVATE, RSA_PUBLIC_PEM = _rsa_pair()
OTHER_RSA_PRIVATE, _ = _rsa_pair()


def claims(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 300,
    }
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def hs256_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": SECRET,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def rs256_settings() -> Settings:
    return hs256_settings(jwt_secret=None, jwt_public_key=RSA_PUBLIC_PEM)


def unsigned(payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


class TestAcceptedTokens:
    def test_an_hs256_token_names_its_subject(self) -> None:
        token = jwt.encode(claims(), SECRET, algorithm="HS256")

        assert principal_from_jwt(token, hs256_settings()) == Principal(user_id="alice")

    def test_admin_true_makes_an_admin(self) -> None:
        token = jwt.encode(claims(admin=True), SECRET, algorithm="HS256")

        assert principal_from_jwt(token, hs256_settings()).is_admin is True

    def test_admin_must_be_the_boolean_true(self) -> None:
        token = jwt.encode(claims(admin="yes"), SECRET, algorithm="HS256")

        assert principal_from_jwt(token, hs256_settings()).is_admin is False

    def test_an_rs256_token_is_checked_with_the_public_key(self) -> None:
        token = jwt.encode(claims(sub="bob"), RSA_PRIVATE, algorithm="RS256")

        assert principal_from_jwt(token, rs256_settings()).user_id == "bob"

    def test_a_pem_with_escaped_newlines_from_an_env_var_works(self) -> None:
        settings = hs256_settings(
            jwt_secret=None, jwt_public_key=RSA_PUBLIC_PEM.replace("\n", "\\n")
        )
        token = jwt.encode(claims(), RSA_PRIVATE, algorithm="RS256")

        assert principal_from_jwt(token, settings).user_id == "alice"

    def test_without_issuer_and_audience_configured_they_are_not_required(self) -> None:
        token = jwt.encode(claims(iss=None, aud=None), SECRET, algorithm="HS256")
        settings = Settings(_env_file=None, jwt_secret=SECRET)

        assert principal_from_jwt(token, settings).user_id == "alice"


REJECTED = {
    "expired": lambda: jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256"),
    "no_exp": lambda: jwt.encode(claims(exp=None), SECRET, algorithm="HS256"),
    "wrong_issuer": lambda: jwt.encode(claims(iss="https://evil.test"), SECRET, algorithm="HS256"),
    "missing_issuer": lambda: jwt.encode(claims(iss=None), SECRET, algorithm="HS256"),
    "wrong_audience": lambda: jwt.encode(claims(aud="someone-else"), SECRET, algorithm="HS256"),
    "missing_audience": lambda: jwt.encode(claims(aud=None), SECRET, algorithm="HS256"),
    "bad_signature": lambda: jwt.encode(claims(), SECRET + "-other", algorithm="HS256"),
    "tampered_payload": lambda: _tampered(),
    "alg_none": lambda: unsigned(claims()),
    "rs256_when_only_hs256_is_configured": lambda: jwt.encode(
        claims(), RSA_PRIVATE, algorithm="RS256"
    ),
    "hs512_not_configured": lambda: jwt.encode(claims(), SECRET, algorithm="HS512"),
    "missing_sub": lambda: jwt.encode(claims(sub=None), SECRET, algorithm="HS256"),
    "empty_sub": lambda: jwt.encode(claims(sub=""), SECRET, algorithm="HS256"),
    "overlong_sub": lambda: jwt.encode(claims(sub="x" * 256), SECRET, algorithm="HS256"),
    "not_yet_valid": lambda: jwt.encode(
        claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256"
    ),
    "garbage": lambda: "not-a-jwt",
    "three_garbage_parts": lambda: "a.b.c",
}


def _tampered() -> str:
    header, _, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims(sub="mallory")).encode())
    return f"{header}.{payload.rstrip(b'=').decode()}.{signature}"


class TestRejectedTokens:
    @pytest.mark.parametrize("case", sorted(REJECTED))
    def test_is_unauthenticated(self, case: str) -> None:
        with pytest.raises(Unauthenticated):
            principal_from_jwt(REJECTED[case](), hs256_settings())

    def test_an_hs256_token_signed_with_the_public_key_is_refused_under_rs256(self) -> None:
        # The classic algorithm confusion: the public key used as an HMAC secret.
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
        body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
        mac = hmac.new(RSA_PUBLIC_PEM.encode(), f"{header}.{body}".encode(), hashlib.sha256)
        signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

        with pytest.raises(Unauthenticated):
            principal_from_jwt(f"{header}.{body}.{signature}", rs256_settings())

    def test_an_rs256_token_from_another_key_is_refused(self) -> None:
        token = jwt.encode(claims(), OTHER_RSA_PRIVATE, algorithm="RS256")

        with pytest.raises(Unauthenticated):
            principal_from_jwt(token, rs256_settings())

    def test_with_no_jwt_key_configured_every_token_is_refused(self) -> None:
        token = jwt.encode(claims(), SECRET, algorithm="HS256")

        with pytest.raises(Unauthenticated):
            principal_from_jwt(token, Settings(_env_file=None))
