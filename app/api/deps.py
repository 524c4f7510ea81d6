"""`Annotated` dependencies: how handlers reach settings, sessions, providers and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, TypedDict
from uuid import UUID

from fastapi import Depends, Query, Request, Response
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.security import DEVELOPMENT_PRINCIPAL, Principal
from app.db.models import Conversation
from app.providers.registry import ProviderRegistry
from app.services.access.auth import authenticate
from app.services.access.known_keys import KnownKeys
from app.services.conversations import conversations as conversation_service
from app.services.limits.rate_limits import RateLimiter
from app.services.limits.stream_quota import Quotas
from app.services.pricing.price_book import PriceBook
from app.services.streaming.stream_tickets import StreamTickets
from app.services.turns.generations import Generations
from app.services.turns.turns import TurnContext


class AppState(TypedDict):
    """What the lifespan builds once and every request shares."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis | None
    providers: ProviderRegistry
    prices: PriceBook
    turns: TurnContext
    generations: Generations
    stream_tickets: StreamTickets
    limiter: RateLimiter
    quotas: Quotas
    # Never trusted, so never used, where keys are not cached (SQLite).
    known_keys: KnownKeys


# The getters below are `async def` on purpose: FastAPI runs a plain `def` dependency in a
# worker thread, a thread hop per getter per request (several per turn) for one attribute read.
async def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


async def _sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.state.sessionmaker
    return sessionmaker


async def _providers(request: Request) -> ProviderRegistry:
    registry: ProviderRegistry = request.state.providers
    return registry


async def _generations(request: Request) -> Generations:
    generations: Generations = request.state.generations
    return generations


GenerationsDep = Annotated[Generations, Depends(_generations)]


async def _redis(request: Request) -> Redis | None:
    redis: Redis | None = request.state.redis
    return redis


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionFactoryDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessionmaker)]
ProvidersDep = Annotated[ProviderRegistry, Depends(_providers)]


async def _prices(request: Request) -> PriceBook:
    prices: PriceBook = request.state.prices
    return prices


PricesDep = Annotated[PriceBook, Depends(_prices)]
RedisDep = Annotated["Redis | None", Depends(_redis)]


async def _session(
    request: Request, sessionmaker: SessionFactoryDep
) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        if request.method == "GET" and session.get_bind().dialect.name == "postgresql":
            # One snapshot for every statement of a read: a conversation and its messages
            # must agree even when a reply is stored between the two queries. Read-only,
            # so it never meets a serialization error; the pool resets the level on return.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session
        await session.commit()  # an exception skips this; closing the session rolls back


# scope="function": commit before the response is sent, so a 201 always means "stored".
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]


async def _stream_tickets(request: Request) -> StreamTickets:
    tickets: StreamTickets = request.state.stream_tickets
    return tickets


StreamTicketsDep = Annotated[StreamTickets, Depends(_stream_tickets)]


# The dependencies every request resolves (the caller, its rate limit, its Idempotency-Key)
# read the app state straight from the request rather than through the getters above: each
# dependency FastAPI solves costs a few microseconds, and these run on every request.
async def _principal(request: Request) -> Principal:
    state = request.state
    settings: Settings = state.settings
    if not settings.auth_enabled:
        return DEVELOPMENT_PRINCIPAL
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization is None and (api_key := headers.get("x-api-key")):
        # Anthropic's SDKs and tools send the key as `x-api-key`: the same key, another header.
        authorization = f"Bearer {api_key}"
    return await authenticate(
        settings, state.sessionmaker, authorization, known_keys=state.known_keys
    )


CurrentUser = Annotated[Principal, Depends(_principal)]


async def _stream_principal(
    request: Request, ticket: Annotated[str | None, Query(max_length=200)] = None
) -> Principal:
    state = request.state
    settings: Settings = state.settings
    if not settings.auth_enabled:
        return DEVELOPMENT_PRINCIPAL
    authorization = request.headers.get("authorization")
    return await authenticate(
        settings,
        state.sessionmaker,
        authorization,
        ticket=ticket,
        tickets=state.stream_tickets,
        known_keys=state.known_keys,
    )


# Stream routes only: a single-use `?ticket=` (for EventSource) may stand in for the header.
StreamCaller = Annotated[Principal, Depends(_stream_principal)]


async def _owned_conversation(
    conversation_id: UUID, session: SessionDep, principal: CurrentUser
) -> Conversation:
    return await conversation_service.get_owned(session, principal, conversation_id)


OwnedConversation = Annotated[Conversation, Depends(_owned_conversation)]


async def _quotas(request: Request) -> Quotas:
    quotas: Quotas = request.state.quotas
    return quotas


# Per-user caps on open streams and running replies.
QuotasDep = Annotated[Quotas, Depends(_quotas)]


@dataclass(frozen=True, slots=True)
class TurnServices:
    """Everything a turn's handler uses of the app state, read by one dependency.

    Each dependency FastAPI solves costs the worker ~9 us a request (five trivial ones
    against one: 110 vs 75 us a call); the turn handlers, the hottest routes, took seven.
    """

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    registry: ProviderRegistry
    prices: PriceBook
    turns: TurnContext
    generations: Generations
    quotas: Quotas


async def _turn_services(request: Request) -> TurnServices:
    state = request.state
    return TurnServices(
        settings=state.settings,
        sessionmaker=state.sessionmaker,
        registry=state.providers,
        prices=state.prices,
        turns=state.turns,
        generations=state.generations,
        quotas=state.quotas,
    )


TurnServicesDep = Annotated[TurnServices, Depends(_turn_services)]


async def _limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.state.limiter
    return limiter


LimiterDep = Annotated[RateLimiter, Depends(_limiter)]


async def _count_request(limiter: RateLimiter, principal: Principal, response: Response) -> None:
    status = await limiter.hit_request(principal.user_id)  # raises RateLimited (429)
    if status is not None:
        response.headers.update(status.headers())


async def _limit_requests(request: Request, principal: CurrentUser, response: Response) -> None:
    await _count_request(request.state.limiter, principal, response)


async def _limit_stream_requests(
    request: Request, principal: StreamCaller, response: Response
) -> None:
    await _count_request(request.state.limiter, principal, response)


# Per-user requests per minute, for the /api/v1 routers (stream routes accept a ticket).
RATE_LIMITED = [Depends(_limit_requests)]
STREAM_RATE_LIMITED = [Depends(_limit_stream_requests)]
