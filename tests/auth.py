"""Credentials for tests of authentication: API keys issued straight into the test database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import delete

from app.core.config import Settings
from app.db.models import ApiKey
from app.db.session import create_engine, make_sessionmaker
from app.services.access import api_keys

JWT_SECRET = "a-test-secret-long-enough-for-every-hmac-algorithm-0123456789abcdef"
JWT_ISSUER = "https://issuer.test"
JWT_AUDIENCE = "chat-api"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings with auth on: API keys, and HS256 JWTs with issuer and audience checked."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "auth_enabled": True,
            "jwt_secret": JWT_SECRET,
            "jwt_issuer": JWT_ISSUER,
            "jwt_audience": JWT_AUDIENCE,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
async def issue_key(database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """`await issue_key("alice", is_admin=False)` → the clear key; every key is deleted after."""
    engine = create_engine(Settings(_env_file=None, database_url=database_url, auth_enabled=False))
    sessionmaker = make_sessionmaker(engine)

    async def issue(user_id: str, *, is_admin: bool = False) -> str:
        async with sessionmaker() as session:
            _, secret = await api_keys.issue(session, user_id=user_id, is_admin=is_admin)
            await session.commit()
        return secret

    try:
        yield issue
    finally:
        async with sessionmaker() as session:
            await session.execute(delete(ApiKey))
            await session.commit()
        await engine.dispose()
