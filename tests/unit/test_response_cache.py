"""The reply cache's key and its in-process store: what makes two requests the same, and the
store's bounds (entries, characters held, expiry)."""

from __future__ import annotations

import dataclasses

import pytest

from app.providers.base import ChatMessage, ChatRequest, Usage
from app.providers.caching import CachedReply, InProcessReplyStore, cache_key, cacheable

REQUEST = ChatRequest(
    model="gpt-4o",
    messages=(ChatMessage("user", "Hello"),),
    temperature=0,
    cache_scope="user-a",
)


def reply(text: str = "Hi.") -> CachedReply:
    return CachedReply(text, "stop", "gpt-4o-2024-08-06", "openai", "gpt-4o", Usage(3, 2))


class TestCacheKey:
    def test_equal_requests_share_a_key_and_integer_zero_equals_float_zero(self) -> None:
        same = dataclasses.replace(REQUEST, temperature=0.0)
        assert cache_key("openai", REQUEST) == cache_key("openai", same)

    @pytest.mark.parametrize(
        "change",
        [
            {"cache_scope": "user-b"},
            {"model": "gpt-4o-mini"},
            {"messages": (ChatMessage("user", "Hello!"),)},
            {"messages": (ChatMessage("assistant", "Hello"),)},
            {"system_prompt": "Be brief."},
            {"max_tokens": 10},
            {"top_p": 0.5},
            {"stop": ("END",)},
        ],
    )
    def test_any_other_field_changes_the_key(self, change: dict[str, object]) -> None:
        other = dataclasses.replace(REQUEST, **change)  # type: ignore[arg-type]
        assert cache_key("openai", REQUEST) != cache_key("openai", other)

    def test_the_provider_is_part_of_the_key(self) -> None:
        assert cache_key("openai", REQUEST) != cache_key("azure", REQUEST)

    def test_only_temperature_zero_with_a_scope_is_cacheable(self) -> None:
        assert cacheable(REQUEST)
        assert not cacheable(dataclasses.replace(REQUEST, temperature=0.2))
        assert not cacheable(dataclasses.replace(REQUEST, temperature=None))
        assert not cacheable(dataclasses.replace(REQUEST, cache_scope=None))


class TestCachedReply:
    def test_survives_a_round_trip_through_json(self) -> None:
        assert CachedReply.from_json(reply("Grüße ✓").to_json()) == reply("Grüße ✓")

    @pytest.mark.parametrize("raw", [b"not json", b"{}", b'{"reason": "bogus"}', b"[]"])
    def test_an_unreadable_value_is_a_miss(self, raw: bytes) -> None:
        assert CachedReply.from_json(raw) is None


class TestInProcessStore:
    async def test_expired_entries_are_not_served(self) -> None:
        now = [100.0]
        store = InProcessReplyStore(clock=lambda: now[0])
        await store.put("k", reply(), ttl_s=10)
        assert await store.get("k") == reply()
        now[0] = 110.0
        assert await store.get("k") is None
        assert len(store) == 0

    async def test_the_least_recently_used_entry_is_evicted_first(self) -> None:
        store = InProcessReplyStore(max_entries=2)
        await store.put("a", reply("A"), ttl_s=60)
        await store.put("b", reply("B"), ttl_s=60)
        assert await store.get("a") is not None  # "b" is now the least recently used
        await store.put("c", reply("C"), ttl_s=60)
        assert await store.get("b") is None
        assert await store.get("a") is not None
        assert await store.get("c") is not None

    async def test_the_characters_held_are_bounded(self) -> None:
        store = InProcessReplyStore(max_chars=10)
        await store.put("a", reply("x" * 6), ttl_s=60)
        await store.put("b", reply("y" * 6), ttl_s=60)
        assert len(store) == 1
        assert await store.get("b") is not None

    async def test_replacing_an_entry_does_not_count_it_twice(self) -> None:
        store = InProcessReplyStore(max_chars=10)
        for _ in range(5):
            await store.put("a", reply("x" * 6), ttl_s=60)
        assert await store.get("a") is not None
