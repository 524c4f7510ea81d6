"""A /v1 503 after a turn may have been stored says what was stored, in OpenAI's error shape."""

from __future__ import annotations

from app.api.openai_compat.errors import translate_problem


def test_a_503_naming_a_stored_reply_keeps_the_names_in_the_message() -> None:
    problem = {
        "status": 503,
        "code": "not_ready",
        "detail": "the database is unavailable",
        "conversation_id": "c-1",
        "reply_id": "r-1",
    }

    _, body = translate_problem(503, problem)

    assert "conversation c-1, reply r-1" in body["error"]["message"]


def test_a_plain_503_says_nothing_of_stored_messages() -> None:
    _, body = translate_problem(503, {"status": 503, "code": "not_ready", "detail": "down"})

    assert body["error"]["message"] == "down"
