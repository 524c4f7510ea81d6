"""The least a turn can cost on this stack: the floor `bench/skeleton.py` holds the service to.

A FastAPI app that speaks the part of the service's API `bench/load.py` drives, and does only
what any service storing turns must: parse the body with pydantic, read the history, store
the user's message and a reply placeholder, call the upstream through the official OpenAI SDK
(the service's aiohttp transport), store the reply, answer (JSON, or SSE events in the
service's format). asyncpg without SQLAlchemy, no auth, no validation of the conversation, no
pricing, metrics, logs, retries or idempotency. `SKELETON_PARTS` leaves parts out:
`http` (parse and answer only), `http+sdk` (and the upstream call), `http+sdk+db` (all).

    PORT=8001 DATABASE_URL=postgresql://... OPENAI_BASE_URL=http://127.0.0.1:8100/v1 \
        .venv/bin/python bench/skeleton_app.py
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import openai
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

PARTS = os.environ.get("SKELETON_PARTS", "http+sdk+db")
CALLS_UPSTREAM = "sdk" in PARTS
STORES = "db" in PARTS
MODEL = "gpt-4o-mini"

SCHEMA = """
CREATE TABLE IF NOT EXISTS skeleton_conversations (id uuid PRIMARY KEY, title text NOT NULL);
CREATE TABLE IF NOT EXISTS skeleton_messages (
    id uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES skeleton_conversations (id),
    role text NOT NULL,
    content text NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS skeleton_messages_history
    ON skeleton_messages (conversation_id, created_at);
"""
HISTORY = (
    "SELECT role, content FROM skeleton_messages"
    " WHERE conversation_id = $1 AND status = 'completed' ORDER BY created_at"
)
OPEN_TURN = (
    "INSERT INTO skeleton_messages (id, conversation_id, role, content, status)"
    " VALUES ($1, $3, 'user', $4, 'completed'), ($2, $3, 'assistant', '', 'in_progress')"
)
FINISH_TURN = "UPDATE skeleton_messages SET content = $2, status = 'completed' WHERE id = $1"


class ConversationCreate(BaseModel):
    title: str = Field(max_length=200)


class MessageCreate(BaseModel):
    content: str = Field(min_length=1, max_length=100_000)
    stream: bool = False


class Created(BaseModel):
    id: uuid.UUID


class Reply(BaseModel):
    id: uuid.UUID
    content: str


class Parts:
    database: asyncpg.Pool[Any] | None = None
    upstream: openai.AsyncOpenAI | None = None


parts = Parts()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    if STORES:
        dsn = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
        pool_size = int(os.environ.get("DB_POOL_SIZE", "20"))
        parts.database = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        async with parts.database.acquire() as connection:
            # Two workers start at once: one creates the tables, the other waits for it.
            await connection.execute("SELECT pg_advisory_lock(1)")
            await connection.execute(SCHEMA)
            await connection.execute("SELECT pg_advisory_unlock(1)")
    if CALLS_UPSTREAM:
        # As the service builds its client: the aiohttp transport, no SDK retries, room for
        # every stream's own connection.
        parts.upstream = openai.AsyncOpenAI(
            api_key=os.environ.get("OPENAI_API_KEY", "sk-skeleton"),
            base_url=os.environ["OPENAI_BASE_URL"],
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(
                limits=httpx2.Limits(max_connections=10_000, max_keepalive_connections=100)
            ),
        )
    yield
    if parts.upstream is not None:
        await parts.upstream.close()
    if parts.database is not None:
        await parts.database.close()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/api/v1/conversations", status_code=201)
async def create_conversation(body: ConversationCreate) -> Created:
    conversation_id = uuid.uuid4()
    if parts.database is not None:
        await parts.database.execute(
            "INSERT INTO skeleton_conversations (id, title) VALUES ($1, $2)",
            conversation_id,
            body.title,
        )
    return Created(id=conversation_id)


@app.post("/api/v1/conversations/{conversation_id}/messages", response_model=None)
async def send_message(
    conversation_id: uuid.UUID, body: MessageCreate
) -> Reply | StreamingResponse:
    reply_id = uuid.uuid4()
    history: list[dict[str, str]] = []
    if parts.database is not None:
        async with parts.database.acquire() as connection:
            rows = await connection.fetch(HISTORY, conversation_id)
            history = [{"role": row["role"], "content": row["content"]} for row in rows]
            await connection.execute(
                OPEN_TURN, uuid.uuid4(), reply_id, conversation_id, body.content
            )
    messages = [*history, {"role": "user", "content": body.content}]
    if body.stream:
        return StreamingResponse(_relay(reply_id, messages), media_type="text/event-stream")
    content = "skeleton reply"
    if parts.upstream is not None:
        completion: Any = await parts.upstream.post(
            "/chat/completions",
            body={"model": MODEL, "messages": messages, "stream": False},
            cast_to=object,
        )
        content = completion["choices"][0]["message"]["content"]
    await _finish(reply_id, content)
    return Reply(id=reply_id, content=content)


async def _relay(reply_id: uuid.UUID, messages: list[dict[str, str]]) -> AsyncIterator[str]:
    """The upstream's stream as the service's SSE events: start, deltas, done."""
    position = 1
    yield _event("start", reply_id, position, {"message_id": str(reply_id)})
    text: list[str] = []
    if parts.upstream is not None:
        stream: Any = await parts.upstream.post(
            "/chat/completions",
            body={
                "model": MODEL,
                "messages": messages,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            cast_to=object,
            stream=True,
            stream_cls=openai.AsyncStream[object],
        )
        async for chunk in stream:
            choices = chunk.get("choices") or [{}]
            piece = (choices[0].get("delta") or {}).get("content")
            if piece:
                text.append(piece)
                position += 1
                yield _event("delta", reply_id, position, {"content": piece})
    await _finish(reply_id, "".join(text))
    yield _event("done", reply_id, position + 1, {})


async def _finish(reply_id: uuid.UUID, content: str) -> None:
    if parts.database is not None:
        await parts.database.execute(FINISH_TURN, reply_id, content)


def _event(name: str, reply_id: uuid.UUID, position: int, data: object) -> str:
    return f"event: {name}\nid: {reply_id}/{position}\ndata: {json.dumps(data)}\n\n"


if __name__ == "__main__":
    uvicorn.run(
        "skeleton_app:app",
        app_dir=str(Path(__file__).resolve().parent),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ["PORT"]),
        workers=int(os.environ.get("WEB_CONCURRENCY", "1")),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
