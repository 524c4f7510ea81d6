"""Counting what a prompt carries besides text (tools, tool calls, images, files) and trimming
a history without ever parting a tool call from its results."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import pytest

from app.providers.base import ChatMessage, ChatRequest, ChatRole, ToolCall
from app.providers.context import (
    fit_to_window,
    image_tokens,
    message_tokens,
    openai_counter,
    part_tokens,
    prompt_tokens,
    tool_steps,
    tools_tokens,
    utf8_bytes,
)
from app.providers.image_size import image_size


def chars(text: str) -> int:
    """One token per character: easy to reason about."""
    return len(text)


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def png(width: int, height: int) -> bytes:
    """A PNG's signature and header chunk: all a size reader needs."""
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 6, 0, 0, 0])
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4)


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + width.to_bytes(2, "little") + height.to_bytes(2, "little") + b"\0" * 3


def jpeg(width: int, height: int, *, frame: int = 0xC0) -> bytes:
    """Start of image, a JFIF segment, a large EXIF segment, then the frame with the size."""
    jfif = b"\xff\xe0" + (16).to_bytes(2, "big") + b"JFIF\0" + b"\1\1\0\0\1\0\1\0\0"
    exif = b"\xff\xe1" + (40_002).to_bytes(2, "big") + b"Exif\0\0" + b"\0" * 39_994
    size = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    sof = b"\xff" + bytes([frame]) + (17).to_bytes(2, "big") + b"\x08" + size + b"\x03" + b"\0" * 9
    return b"\xff\xd8" + jfif + exif + b"\xff\xff" + sof + b"\xff\xd9"


def webp(chunk: bytes, body: bytes) -> bytes:
    payload = b"WEBP" + chunk + len(body).to_bytes(4, "little") + body
    return b"RIFF" + len(payload).to_bytes(4, "little") + payload


def webp_lossy(width: int, height: int) -> bytes:
    frame = b"\x50\x02\x00\x9d\x01\x2a" + width.to_bytes(2, "little") + height.to_bytes(2, "little")
    return webp(b"VP8 ", frame + b"\0" * 8)


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | (height - 1) << 14
    return webp(b"VP8L", b"\x2f" + bits.to_bytes(4, "little") + b"\0" * 8)


def webp_extended(width: int, height: int) -> bytes:
    sizes = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return webp(b"VP8X", b"\x10\0\0\0" + sizes)


def image(url: str, detail: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"url": url}
    if detail is not None:
        spec["detail"] = detail
    return {"type": "image_url", "image_url": spec}


class TestImageSize:
    @pytest.mark.parametrize(
        ("media_type", "data"),
        [
            ("image/png", png(2048, 4096)),
            ("image/gif", gif(2048, 4096)),
            ("image/jpeg", jpeg(2048, 4096)),
            ("image/jpeg", jpeg(2048, 4096, frame=0xC2)),  # progressive
            ("image/webp", webp_lossy(2048, 4096)),
            ("image/webp", webp_lossless(2048, 4096)),
            ("image/webp", webp_extended(2048, 4096)),
        ],
        ids=["png", "gif", "jpeg", "jpeg-progressive", "webp-lossy", "webp-lossless", "webp-x"],
    )
    def test_the_size_is_read_from_the_header(self, media_type: str, data: bytes) -> None:
        assert image_size(data_url(media_type, data)) == (2048, 4096)

    def test_only_the_header_is_decoded(self) -> None:
        # Megabytes of text that is no base64 after the header: decoding it all would fail.
        url = data_url("image/png", png(640, 480)) + "!" * 4_000_000

        assert image_size(url) == (640, 480)

    @pytest.mark.parametrize(
        "url",
        [
            "https://example.com/cat.png",
            "data:image/png;base64,not base64 at all",
            "data:image/png,rawbytes",
            data_url("image/bmp", b"BM" + b"\0" * 40),
            data_url("image/png", b"\x89PNG\r\n"),  # cut short
        ],
    )
    def test_an_unreadable_size_is_none(self, url: str) -> None:
        assert image_size(url) is None


class TestImageTokens:
    @pytest.mark.parametrize(
        ("width", "height", "tokens"),
        [
            (1024, 1024, 765),  # OpenAI's example: scaled to 768x768, four tiles
            (2048, 4096, 1105),  # OpenAI's example: 1024x2048, then 768x1536, six tiles
            (4096, 8192, 1105),  # first fitted into 2048x2048
            (512, 512, 255),  # small: one tile, never scaled up
            (100, 3000, 765),  # fitted to 68x2048: one tile wide, four tall
        ],
    )
    def test_high_detail_follows_openai_s_published_formula(
        self, width: int, height: int, tokens: int
    ) -> None:
        url = data_url("image/png", png(width, height))

        assert image_tokens(url, "high") == tokens
        assert part_tokens(image(url, "high")) == tokens

    def test_auto_and_no_detail_count_as_high(self) -> None:
        url = data_url("image/png", png(2048, 4096))

        assert part_tokens(image(url, "auto")) == part_tokens(image(url)) == 1105

    def test_low_detail_is_85_whatever_the_size(self) -> None:
        url = data_url("image/png", png(2048, 4096))

        assert part_tokens(image(url, "low")) == 85

    def test_an_image_of_unknown_size_is_counted_as_1024_square(self) -> None:
        assert part_tokens(image("https://example.com/cat.png")) == 765


class TestPromptTokens:
    def test_an_image_adds_its_tokens_to_its_message(self) -> None:
        url = data_url("image/png", png(2048, 4096))
        text = ChatMessage("user", "what is it?")
        with_image = ChatMessage("user", "what is it?", parts=(image(url), image(url, "low")))

        assert message_tokens(with_image, chars) == message_tokens(text, chars) + 1105 + 85

    def test_a_file_is_estimated_from_its_size(self) -> None:
        file_data = data_url("application/pdf", b"%PDF" + b"\0" * 11_996)  # 12,000 bytes
        part = {"type": "file", "file": {"file_data": file_data, "filename": "a.pdf"}}

        assert part_tokens(part) == 3_000  # four bytes a token

    def test_the_tools_offered_are_counted_as_their_json_text(self) -> None:
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
        bare = ChatRequest("gpt-4o", (ChatMessage("user", "hi"),))
        offered = ChatRequest("gpt-4o", bare.messages, options={"tools": tools})
        compact = json.dumps(tools, separators=(",", ":"))

        assert tools_tokens(offered, chars) == len(compact)
        assert prompt_tokens(offered, chars) == prompt_tokens(bare, chars) + len(compact)

    def test_tool_calls_count_their_names_and_arguments(self) -> None:
        call = ToolCall("call_1", "get_weather", '{"city":"Paris"}')
        asked = ChatMessage("assistant", "", tool_calls=(call, call))

        assert message_tokens(asked, chars) == 4 + 2 * (len("get_weather") + len(call.arguments))

    def test_a_tool_result_counts_like_any_message(self) -> None:
        result = ChatMessage("tool", "18 C", tool_call_id="call_1")

        assert message_tokens(result, chars) == len("18 C") + 4

    def test_the_byte_ceiling_still_bounds_the_exact_count(self) -> None:
        tools = [{"type": "function", "function": {"name": "naïve_lookup", "parameters": {}}}]
        call = ToolCall("call_1", "naïve_lookup", '{"q":"日本語"}')
        request = ChatRequest(
            "gpt-4o",
            (
                ChatMessage("user", "look it up"),
                ChatMessage("assistant", "", tool_calls=(call,)),
                ChatMessage("tool", "見つかりました", tool_call_id="call_1"),
            ),
            options={"tools": tools},
        )

        assert prompt_tokens(request, utf8_bytes) >= prompt_tokens(
            request, openai_counter("gpt-4o")
        )


def message(role: ChatRole, content: str, *calls: str, answers: str | None = None) -> ChatMessage:
    tool_calls = tuple(ToolCall(call, "get_weather", "{}") for call in calls)
    return ChatMessage(role, content, tool_calls=tool_calls, tool_call_id=answers)


# With `chars`, each message costs its length + 4; each call here `get_weather{}` (13).
ASKED = message("assistant", "", "call_1", "call_2")  # 4 + 26 = 30
RESULT_1 = message("tool", "18 C", answers="call_1")  # 8
RESULT_2 = message("tool", "19 C", answers="call_2")  # 8
HISTORY = (
    message("user", "hello"),  # 9
    message("assistant", "hi!"),  # 7
    message("user", "weather?"),  # 12
    ASKED,
    RESULT_1,
    RESULT_2,
    message("assistant", "mild"),  # 8
    message("user", "thanks"),  # 10
)


def trimmed(messages: tuple[ChatMessage, ...], window: int, **options: Any) -> list[str]:
    request = ChatRequest("m", messages, options=options)
    fitted = fit_to_window(request, context_window=window, reply_reserve=0, count=chars)
    return [
        m.content or f"<{m.role} {','.join(c.id for c in m.tool_calls)}>" for m in fitted.messages
    ]


class TestTrimmingAroundToolCalls:
    def test_a_call_and_its_results_are_one_step(self) -> None:
        steps = tool_steps(HISTORY)

        assert [len(step) for step in steps] == [1, 1, 1, 3, 1, 1]
        assert steps[3] == (ASKED, RESULT_1, RESULT_2)

    def test_a_call_is_kept_with_its_results(self) -> None:
        # 3 priming + 10 + 8 + 46 (the call's step) + 12 = 79: room down to "weather?".
        assert trimmed(HISTORY, 79) == [
            "weather?",
            "<assistant call_1,call_2>",
            "18 C",
            "19 C",
            "mild",
            "thanks",
        ]

    def test_a_call_is_left_out_with_its_results_never_leaving_a_result_first(self) -> None:
        # Room for both results and more (3 + 10 + 8 + 16 = 37), not for the call's whole step.
        assert trimmed(HISTORY, 66) == ["thanks"]

    def test_the_newest_results_keep_their_call_and_their_question_when_it_fits(self) -> None:
        ending_in_results = HISTORY[:6]

        assert trimmed(ending_in_results, 10) == ["<assistant call_1,call_2>", "18 C", "19 C"]
        assert trimmed(ending_in_results, 61) == [
            "weather?",
            "<assistant call_1,call_2>",
            "18 C",
            "19 C",
        ]

    def test_an_orphan_result_is_never_left_first(self) -> None:
        # The call RESULT_1 answers is not in the history: the result fits, its question not.
        orphaned = (message("user", "a long question here"), RESULT_1, message("user", "now?"))

        assert trimmed(orphaned, 30) == ["now?"]

    def test_the_tools_offered_take_room_from_the_history(self) -> None:
        tools = [{"type": "function", "function": {"name": "get_weather"}}]
        room = len(json.dumps(tools, separators=(",", ":")))

        assert trimmed(HISTORY, 79 + room, tools=tools) == trimmed(HISTORY, 79)
        assert trimmed(HISTORY, 78 + room, tools=tools) == ["thanks"]
