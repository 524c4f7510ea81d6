"""`Annotated` dependencies: how handlers reach settings, sessions, providers and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, TypedDict
from uuid import UUID

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.security import DEVELOPMENT_PRINCIPAL, Principal
from app.db.models import Conversation
from app.errors import Unauthenticated
from app.providers.registry import ProviderRegistry
from app.services import conversations as conversation_service
from app.services.generations import Generations
from app.services.pricing import PriceBook
from app.services.turns import TurnContext


class AppState(TypedDict):
    """What the lifespan builds once and every request shares."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis | None
    providers: ProviderRegistry
    prices: PriceBook
    turns: TurnContext
    generations: Generations


def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


def _sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.state.sessionmaker
    return sessionmaker


def _providers(request: Request) -> ProviderRegistry:
    registry: ProviderRegistry = request.state.providers
    return registry


def _turns(request: Request) -> TurnContext:
    turns: TurnContext = request.state.turns
    return turns


def _generations(request: Request) -> Generations:
    generations: Generations = request.state.generations
    return generations


GenerationsDep = Annotated[Generations, Depends(_generations)]


def _redis(request: Request) -> Redis | None:
    redis: Redis | None = request.state.redis
    return redis


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionFactoryDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessionmaker)]
ProvidersDep = Annotated[ProviderRegistry, Depends(_providers)]


def _prices(request: Request) -> PriceBook:
    prices: PriceBook = request.state.prices
    return prices


PricesDep = Annotated[PriceBook, Depends(_prices)]
TurnsDep = Annotated[TurnContext, Depends(_turns)]
RedisDep = Annotated["Redis | None", Depends(_redis)]


async def _session(sessionmaker: SessionFactoryDep) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session
        await session.commit()  # an exception skips this; closing the session rolls back


# scope="function": commit before the response is sent, so a 201 always means "stored".
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]


async def _principal(settings: SettingsDep) -> Principal:
    if not settings.auth_enabled:
        return DEVELOPMENT_PRINCIPAL
    # No credential verifier is installed yet, so with auth on every request fails closed.
    raise Unauthenticated()


CurrentUser = Annotated[Principal, Depends(_principal)]


async def _owned_conversation(
    conversation_id: UUID, session: SessionDep, principal: CurrentUser
) -> Conversation:
    return await conversation_service.get_owned(session, principal, conversation_id)


OwnedConversation = Annotated[Conversation, Depends(_owned_conversation)]
