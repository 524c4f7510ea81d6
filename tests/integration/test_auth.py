"""Authentication over HTTP: API keys, JWTs and single-use stream tickets; every failure a 401."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis as redis_client
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from app.core.config import Settings
from app.db.models import ApiKey
from app.db.session import create_engine, make_sessionmaker
from app.services.access import api_keys
from app.services.access.api_keys import hash_key
from app.services.streaming import stream_tickets
from tests.auth import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, bearer
from tests.databases import REDIS_URL

CONVERSATIONS = "/api/v1/conversations"
TICKETS = "/api/v1/auth/stream-ticket"


def token(**overrides: Any) -> str:
    claims: dict[str, Any] = {
        "sub": "alice",
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "exp": int(time.time()) + 300,
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, JWT_SECRET, "HS256")


@pytest.fixture
async def client(start_app: Callable[..., Any], auth_settings: Callable[..., Settings]) -> Any:
    return await start_app(auth_settings())


async def stored_key(database_url: str, secret: str) -> ApiKey:
    engine = create_engine(Settings(_env_file=None, database_url=database_url, auth_enabled=False))
    try:
        async with make_sessionmaker(engine)() as session:
            return (
                await session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
            ).one()
    finally:
        await engine.dispose()


class TestWithoutCredentials:
    async def test_a_request_without_credentials_is_401_with_www_authenticate(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get(CONVERSATIONS)

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["code"] == "unauthenticated"

    @pytest.mark.parametrize(
        "header", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer ", "ca_nothing", "Token abc"]
    )
    async def test_a_malformed_authorization_header_is_401(
        self, client: httpx.AsyncClient, header: str
    ) -> None:
        response = await client.get(CONVERSATIONS, headers={"Authorization": header})

        assert response.status_code == 401

    async def test_health_stays_open(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/health")).status_code == 200


class TestApiKeys:
    async def test_a_key_authenticates_as_its_user(
        self, client: httpx.AsyncClient, issue_key: Callable[..., Any]
    ) -> None:
        key = await issue_key("alice")

        created = await client.post(CONVERSATIONS, json={"user_id": "mallory"}, headers=bearer(key))

        assert created.status_code == 201
        assert created.json()["user_id"] == "alice"  # an ordinary caller cannot name another

    async def test_an_unknown_key_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get(CONVERSATIONS, headers=bearer("ca_" + "x" * 43))

        assert response.status_code == 401

    async def test_a_revoked_key_is_401(
        self, client: httpx.AsyncClient, issue_key: Callable[..., Any], database_url: str
    ) -> None:
        key = await issue_key("alice")
        assert (await client.get(CONVERSATIONS, headers=bearer(key))).status_code == 200
        engine = create_engine(Settings(_env_file=None, database_url=database_url))
        async with make_sessionmaker(engine)() as session:
            await api_keys.revoke(session, str((await stored_key(database_url, key)).id))
            await session.commit()
        await engine.dispose()

        assert (await client.get(CONVERSATIONS, headers=bearer(key))).status_code == 401

    async def test_use_is_recorded_at_most_once_a_minute(
        self, client: httpx.AsyncClient, issue_key: Callable[..., Any], database_url: str
    ) -> None:
        key = await issue_key("alice")
        assert (await stored_key(database_url, key)).last_used_at is None

        await client.get(CONVERSATIONS, headers=bearer(key))
        first = (await stored_key(database_url, key)).last_used_at
        await client.get(CONVERSATIONS, headers=bearer(key))
        second = (await stored_key(database_url, key)).last_used_at

        assert first is not None
        assert second == first


class TestJwt:
    async def test_a_valid_token_authenticates_as_its_subject(
        self, client: httpx.AsyncClient
    ) -> None:
        created = await client.post(CONVERSATIONS, json={}, headers=bearer(token(sub="carol")))

        assert created.status_code == 201
        assert created.json()["user_id"] == "carol"

    @pytest.mark.parametrize(
        "credential",
        [
            pytest.param(lambda: token(exp=int(time.time()) - 3600), id="expired"),
            pytest.param(lambda: token(exp=None), id="no_exp"),
            pytest.param(lambda: token(iss="https://evil.test"), id="wrong_issuer"),
            pytest.param(lambda: token(aud="another-service"), id="wrong_audience"),
            pytest.param(lambda: token(sub=None), id="missing_sub"),
            pytest.param(
                lambda: jwt.encode(
                    {
                        "sub": "alice",
                        "iss": JWT_ISSUER,
                        "aud": JWT_AUDIENCE,
                        "exp": int(time.time()) + 300,
                    },
                    JWT_SECRET + "-forged",
                    "HS256",
                ),
                id="bad_signature",
            ),
            pytest.param(
                lambda: jwt.encode(
                    {
                        "sub": "alice",
                        "iss": JWT_ISSUER,
                        "aud": JWT_AUDIENCE,
                        "exp": int(time.time()) + 300,
                    },
                    None,
                    "none",
                ),
                id="alg_none",
            ),
            pytest.param(lambda: _rs256_token(), id="rs256_when_only_hs256_configured"),
            pytest.param(lambda: "garbage", id="garbage"),
            pytest.param(lambda: "eyJ.eyJ.sig", id="garbage_segments"),
        ],
    )
    async def test_a_bad_token_is_401(
        self, client: httpx.AsyncClient, credential: Callable[[], str]
    ) -> None:
        response = await client.get(CONVERSATIONS, headers=bearer(credential()))

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


def _rs256_token() -> str:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"sub": "alice", "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "exp": int(time.time()) + 300}
    return jwt.encode(claims, private, "RS256")


@pytest.fixture(params=["in_process", "redis"])
async def ticket_client(
    request: pytest.FixtureRequest,
    start_app: Callable[..., Any],
    auth_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> httpx.AsyncClient:
    """An app with auth on, its tickets in process or in Redis; tickets live 0.5 s here."""
    monkeypatch.setattr(stream_tickets, "TICKET_TTL_SECONDS", 0.5)
    redis_url = REDIS_URL if request.param == "redis" else None
    if redis_url is not None:
        try:
            redis_client.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
        except redis_client.RedisError as error:
            pytest.skip(f"redis is not reachable: {error!r}")
    started: httpx.AsyncClient = await start_app(auth_settings(redis_url=redis_url))
    return started


async def ticket_for(client: httpx.AsyncClient, key: str) -> str:
    response = await client.post(TICKETS, headers=bearer(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"ticket", "expires_in"}
    ticket: str = body["ticket"]
    return ticket


async def conversation_with_reply(client: httpx.AsyncClient, key: str) -> str:
    created = await client.post(CONVERSATIONS, json={}, headers=bearer(key))
    conversation_id: str = created.json()["id"]
    sent = await client.post(
        f"{CONVERSATIONS}/{conversation_id}/messages",
        json={"content": "Hello"},
        headers=bearer(key),
    )
    assert sent.status_code == 201, sent.text
    return conversation_id


class TestStreamTickets:
    async def test_the_ticket_endpoint_promises_sixty_seconds(
        self, client: httpx.AsyncClient, issue_key: Callable[..., Any]
    ) -> None:
        response = await client.post(TICKETS, headers=bearer(await issue_key("alice")))

        assert response.status_code == 200
        assert response.json()["expires_in"] == 60

    async def test_a_ticket_needs_credentials(self, client: httpx.AsyncClient) -> None:
        assert (await client.post(TICKETS)).status_code == 401

    async def test_a_ticket_opens_a_stream_once(
        self, ticket_client: httpx.AsyncClient, issue_key: Callable[..., Any]
    ) -> None:
        key = await issue_key("alice")
        conversation_id = await conversation_with_reply(ticket_client, key)
        ticket = await ticket_for(ticket_client, key)
        url = f"{CONVERSATIONS}/{conversation_id}/stream"

        first = await ticket_client.get(url, params={"ticket": ticket})
        second = await ticket_client.get(url, params={"ticket": ticket})

        assert first.status_code == 200
        assert "event: done" in first.text
        assert second.status_code == 401

    async def test_an_expired_ticket_is_401(
        self, ticket_client: httpx.AsyncClient, issue_key: Callable[..., Any]
    ) -> None:
        key = await issue_key("alice")
        conversation_id = await conversation_with_reply(ticket_client, key)
        ticket = await ticket_for(ticket_client, key)
        await asyncio.sleep(0.7)

        response = await ticket_client.get(
            f"{CONVERSATIONS}/{conversation_id}/stream", params={"ticket": ticket}
        )

        assert response.status_code == 401

    async def test_a_made_up_ticket_is_401(
        self, ticket_client: httpx.AsyncClient, issue_key: Callable[..., Any]
    ) -> None:
        conversation_id = await conversation_with_reply(ticket_client, await issue_key("alice"))

        response = await ticket_client.get(
            f"{CONVERSATIONS}/{conversation_id}/stream", params={"ticket": "st_made-up"}
        )

        assert response.status_code == 401

    async def test_a_ticket_for_another_user_does_not_open_their_stream(
        self, ticket_client: httpx.AsyncClient, issue_key: Callable[..., Any]
    ) -> None:
        alices = await conversation_with_reply(ticket_client, await issue_key("alice"))
        bobs_ticket = await ticket_for(ticket_client, await issue_key("bob"))

        response = await ticket_client.get(
            f"{CONVERSATIONS}/{alices}/stream", params={"ticket": bobs_ticket}
        )

        assert response.status_code == 404

    async def test_a_ticket_is_accepted_only_on_stream_routes(
        self, ticket_client: httpx.AsyncClient, issue_key: Callable[..., Any]
    ) -> None:
        ticket = await ticket_for(ticket_client, await issue_key("alice"))

        response = await ticket_client.get(CONVERSATIONS, params={"ticket": ticket})

        assert response.status_code == 401


class TestProductionRefusesAuthOff:
    def test_python_m_app_exits_2_with_one_line(self, tmp_path: Any) -> None:
        env = {
            **os.environ,
            "APP_ENV": "production",
            "AUTH_ENABLED": "false",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
        }
        result = subprocess.run(
            [sys.executable, "-m", "app"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert lines == [
            "invalid configuration: AUTH_ENABLED: production refuses to start with auth off"
        ]
        assert not (tmp_path / "x.db").exists()  # refused before migrating


class TestCredentialsNeverLogged:
    async def test_keys_tokens_and_tickets_stay_out_of_every_log_line(
        self,
        capsys: pytest.CaptureFixture[str],  # first: logging is configured to its stdout
        caplog: pytest.LogCaptureFixture,
        ticket_client: httpx.AsyncClient,
        issue_key: Callable[..., Any],
    ) -> None:
        key = await issue_key("alice")
        jwt_token = token()
        conversation_id = await conversation_with_reply(ticket_client, key)
        ticket = await ticket_for(ticket_client, key)
        stream = f"{CONVERSATIONS}/{conversation_id}/stream"

        await ticket_client.get(stream, params={"ticket": ticket, "content": "hi"})
        await ticket_client.get(stream, params={"ticket": ticket})  # used: 401
        await ticket_client.get(CONVERSATIONS, headers=bearer(jwt_token))
        await ticket_client.get(CONVERSATIONS, headers=bearer(key + "x"))  # unknown: 401
        await ticket_client.get(CONVERSATIONS, headers=bearer(jwt_token[:-2]))  # forged: 401

        log = capsys.readouterr()
        text = log.out + log.err + caplog.text + repr([r.msg for r in caplog.records])
        assert "/api/v1/conversations/{conversation_id}/stream" in text  # the lines were captured
        for secret in (key, key[8:], jwt_token, jwt_token.split(".")[2], ticket, ticket[3:]):
            assert secret not in text
