"""JWT bearer tokens: HS256 with JWT_SECRET and/or RS256 with JWT_PUBLIC_KEY, nothing else."""

from __future__ import annotations

from typing import Any

import jwt

from app.core.config import Settings
from app.core.security import Principal
from app.errors import Unauthenticated

# Clock skew tolerated on `exp`, `nbf` and `iat`.
LEEWAY_SECONDS = 10
MAX_USER_ID_LENGTH = 255


def verification_keys(settings: Settings) -> dict[str, Any]:
    """Algorithm → key, for the algorithms this deployment configured; no others are accepted."""
    keys: dict[str, Any] = {}
    if settings.jwt_secret is not None:
        keys["HS256"] = settings.jwt_secret.get_secret_value()
    if settings.jwt_public_key is not None:
        # An env var often carries the PEM on one line with literal "\n"s.
        keys["RS256"] = settings.jwt_public_key.replace("\\n", "\n")
    return keys


def principal_from_jwt(token: str, settings: Settings) -> Principal:
    """The caller a valid token names (`sub`, optional `admin: true`); anything else is a 401."""
    keys = verification_keys(settings)
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
        if not isinstance(algorithm, str) or algorithm not in keys:
            raise Unauthenticated()
        claims = jwt.decode(
            token,
            keys[algorithm],
            algorithms=[algorithm],  # one explicit algorithm: no `none`, no HS/RS confusion
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway=LEEWAY_SECONDS,
            options={
                "require": ["exp", "sub"],
                "verify_aud": settings.jwt_audience is not None,
            },
        )
    except jwt.PyJWTError as error:
        raise Unauthenticated() from error
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_USER_ID_LENGTH:
        raise Unauthenticated()
    return Principal(user_id=subject, is_admin=claims.get("admin") is True)
