"""A server killed mid-reply (no goodbye): after a restart the reply ends `failed`, text kept."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from tests.e2e.conftest import start_server, stop_server
from tests.sse import aiter_frames


async def test_a_reply_cut_by_a_killed_server_is_failed_with_its_partial_text_after_restart(
    database_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "MOCK_CHUNK_DELAY_MS": "150",
        "STREAM_FLUSH_SECONDS": "0.2",
        "ABANDONED_REPLY_SECONDS": "1",
    }
    first = start_server(env, tmp_path / "first.log")
    try:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=10) as client:
            conversation = (await client.post("/api/v1/conversations", json={})).json()
            url = f"/api/v1/conversations/{conversation['id']}/messages"
            body = {"content": "tell me a long story", "stream": True}
            deltas = 0
            async with client.stream("POST", url, json=body) as response:
                async for frame in aiter_frames(response):
                    deltas += frame.event == "delta"
                    if deltas == 4:
                        break
            await asyncio.sleep(0.5)  # a flush of the partial text has happened
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
    finally:
        if first.process.poll() is None:
            stop_server(first)

    await asyncio.sleep(1.2)  # the reply is now older than ABANDONED_REPLY_SECONDS
    second = start_server(env, tmp_path / "second.log")
    try:
        async with httpx.AsyncClient(base_url=second.base_url, timeout=10) as client:
            reply: dict[str, object] = {}
            for _ in range(50):
                stored = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
                reply = stored["messages"][1]
                if reply["status"] != "in_progress":
                    break
                await asyncio.sleep(0.1)
    finally:
        stop_server(second)

    assert stored["messages"][0]["content"] == "tell me a long story"
    assert reply["status"] == "failed"
    assert reply["content"]  # the text flushed before the kill is kept
    assert isinstance(reply["metadata"], dict)
    assert reply["metadata"]["error"]["code"] == "generation_abandoned"
