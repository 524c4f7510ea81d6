"""A server killed mid-reply (no goodbye): after a restart the reply ends `failed`, text kept,
within seconds, and a client resuming its stream hears that end as soon as it happens.

Default settings: the dead process's lease lapses (GENERATION_LEASE_SECONDS, 8 s) and the
restarted server's sweep fails the reply; it was ~2 minutes when a reply had to be silent
for PROVIDER_TIMEOUT_SECONDS + 38 s before it counted as abandoned.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx

from tests.databases import REDIS_URL
from tests.e2e.conftest import start_server, stop_server
from tests.sse import aiter_frames

LEASE_S = 8.0  # GENERATION_LEASE_SECONDS' default, which the servers run on


async def test_a_reply_cut_by_a_killed_server_is_failed_within_seconds_and_resumers_hear_it(
    database_url: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "MOCK_CHUNK_DELAY_MS": "150"}
    first = start_server(env, tmp_path / "first.log")
    try:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=10) as client:
            conversation = (await client.post("/api/v1/conversations", json={})).json()
            url = f"/api/v1/conversations/{conversation['id']}/messages"
            body = {"content": "tell me a long story", "stream": True}
            deltas, last_id = 0, ""
            async with client.stream("POST", url, json=body) as response:
                async for frame in aiter_frames(response):
                    deltas += frame.event == "delta"
                    last_id = frame.id or last_id
                    if deltas == 12:
                        break
            await asyncio.sleep(2.5)  # a flush of the partial text (every 2 s) has happened
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
            killed_at = time.monotonic()
    finally:
        if first.process.poll() is None:
            stop_server(first)

    second = await asyncio.to_thread(start_server, env, tmp_path / "second.log")
    ready_at = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as client:
            resumed: list[tuple[str | None, str]] = []
            stream_url = f"/api/v1/conversations/{conversation['id']}/stream"
            headers = {"Last-Event-ID": last_id}
            async with client.stream("GET", stream_url, headers=headers) as response:
                assert response.status_code == 200
                async for frame in aiter_frames(response):
                    if frame.event is not None:
                        resumed.append((frame.event, frame.data))
                    if frame.event in ("done", "error"):
                        break
            heard_at = time.monotonic()
            stored = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
            again = await client.post(url, json={"content": "try again"})
    finally:
        stop_server(second)

    heard_after_s, restart_s = heard_at - killed_at, ready_at - killed_at
    print(  # noqa: T201
        f"the killed server's reply ended {heard_after_s:.1f} s after the kill"
        f" (the restart took {restart_s:.1f} s)"
    )
    assert resumed
    assert resumed[-1][0] == "error"
    assert '"generation_abandoned"' in resumed[-1][1]
    # The lease lapses at most LEASE_S after the kill, and a live server checks every quarter
    # of it: the end is heard a few seconds after the later of the lapse and the restart (a
    # loaded machine can take seconds to start a server; that is not the sweep's delay).
    assert heard_at - max(killed_at + LEASE_S, ready_at) < 5
    question, reply = stored["messages"][:2]
    assert question["content"] == "tell me a long story"
    assert reply["status"] == "failed"
    assert reply["content"]  # the text flushed before the kill is kept
    assert reply["metadata"]["error"]["code"] == "generation_abandoned"
    assert again.status_code == 201, again.text
