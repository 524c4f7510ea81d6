"""The request fingerprint behind Idempotency-Key, and the rate limiter's memory fallback."""

from __future__ import annotations

import pytest

from app.errors import RateLimited
from app.services.limits.idempotency import request_hash
from app.services.limits.rate_limits import RateLimiter


class TestRequestHash:
    def test_json_key_order_and_spacing_do_not_change_it(self) -> None:
        a = request_hash("POST", "/api/v1/conversations", b'{"a": 1, "b": [1, 2]}')
        b = request_hash("post", "/api/v1/conversations", b'{"b":[1,2],"a":1}')
        assert a == b
        assert len(a) == 64

    @pytest.mark.parametrize(
        ("method", "path", "body", "variant"),
        [
            ("PUT", "/api/v1/conversations", b'{"a": 1}', ""),
            ("POST", "/api/v1/conversations/x", b'{"a": 1}', ""),
            ("POST", "/api/v1/conversations", b'{"a": 2}', ""),
            ("POST", "/api/v1/conversations", b'{"a": 1}', "sse"),
        ],
    )
    def test_method_path_body_and_variant_each_change_it(
        self, method: str, path: str, body: bytes, variant: str
    ) -> None:
        base = request_hash("POST", "/api/v1/conversations", b'{"a": 1}')
        assert request_hash(method, path, body, variant=variant) != base

    def test_a_body_that_is_not_json_is_hashed_as_sent(self) -> None:
        assert request_hash("POST", "/p", b"") != request_hash("POST", "/p", b"{")


class TestRateLimiter:
    async def test_off_limits_count_nothing(self) -> None:
        limiter = RateLimiter(rpm=None, tpm=None)
        assert not limiter.enabled
        assert await limiter.hit_request("u") is None
        await limiter.check_tokens("u")
        await limiter.add_tokens("u", 10**9)

    async def test_unreachable_redis_falls_back_to_memory(self) -> None:
        limiter = RateLimiter(rpm=2, tpm=None, redis_url="redis://127.0.0.1:1/0")
        try:
            assert (await limiter.hit_request("u")) is not None
            assert (await limiter.hit_request("u")) is not None
            with pytest.raises(RateLimited):
                await limiter.hit_request("u")
        finally:
            await limiter.aclose()

    async def test_tokens_past_the_limit_fill_the_window(self) -> None:
        limiter = RateLimiter(rpm=None, tpm=100)
        await limiter.add_tokens("u", 60)
        await limiter.check_tokens("u")  # 60 of 100 used: a turn may start
        await limiter.add_tokens("u", 500)  # more than is left: counted up to the limit
        with pytest.raises(RateLimited) as refused:
            await limiter.check_tokens("u")
        assert refused.value.headers["RateLimit-Limit"] == "100"
        await limiter.check_tokens("someone else")
