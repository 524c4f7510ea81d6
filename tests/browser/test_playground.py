"""The playground in a real Chromium against a real server: stream, resume after reload, vote,
attach images, call tools and answer them, edit and regenerate into branches and flip between
them, stop a reply, manage and export a conversation."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from app.providers.base import ChatMessage, ChatRequest
from app.providers.mock import reply_words
from tests.auth import issue_key
from tests.databases import IN_CI
from tests.e2e.conftest import LiveServer, start_server, stop_server

pytestmark = pytest.mark.browser
__all__ = ["issue_key"]  # the fixture, for the tests with auth on

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[1] / "output"
# The mock provider waits this long before each word, so a long reply takes a few seconds.
CHUNK_DELAY_MS = 60


def mock_reply(question: str) -> str:
    """The mock provider's reply to a first message (it depends on that message alone)."""
    words = reply_words(ChatRequest(model="mock", messages=(ChatMessage("user", question),)))
    return "".join(word if i == 0 else f" {word}" for i, word in enumerate(words))


def long_question() -> str:
    """A question whose mock reply has at least 36 words: over two seconds of streaming."""
    return next(
        question
        for n in range(1000)
        if len(mock_reply(question := f"Tell me how streaming works, take {n}").split()) >= 36
    )


@pytest.fixture(scope="module")
def playground_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    log_path = tmp_path_factory.mktemp("playground") / "server.log"
    server = start_server(
        {"DATABASE_URL": database_url, "MOCK_CHUNK_DELAY_MS": str(CHUNK_DELAY_MS)}, log_path
    )
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium (never a downloaded one); missing fails in CI and skips elsewhere."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(
    browser: Browser, playground_server: LiveServer, clean_database: None
) -> AsyncIterator[Page]:
    """A fresh browser profile on the playground; uncaught script errors fail the test."""
    context = await browser.new_context(
        base_url=playground_server.base_url, viewport={"width": 1280, "height": 820}
    )
    opened = await context.new_page()
    script_errors: list[str] = []
    opened.on("pageerror", lambda error: script_errors.append(str(error)))
    await opened.goto("/playground")
    await expect(opened.locator("body")).to_have_attribute("data-ready", "true")
    try:
        yield opened
    finally:
        await context.close()
    assert script_errors == []


def usd(amount: float) -> str:
    """Money as the page shows it: exact to 1e-8, trailing zeros trimmed, cents kept."""
    return "$" + re.sub(r"(\.\d\d\d*?)0+$", r"\1", f"{amount:.8f}")


async def reply_state(reply: Locator) -> tuple[str, str]:
    """The reply's status and text, read together so neither changes in between."""
    status, text = await reply.evaluate(
        "el => [el.dataset.status, el.querySelector('.content').textContent]"
    )
    return status, text


async def watch_growth(reply: Locator, *, growths: int, timeout_s: float = 10) -> list[str]:
    """Texts of a streaming reply, sampled until it grew `growths` times while in progress."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, text = await reply_state(reply)
        assert status == "in_progress", f"the reply ended after {seen!r}"
        if text and (not seen or text != seen[-1]):
            if seen:
                assert text.startswith(seen[-1]), "streamed text must only grow"
            seen.append(text)
            if len(seen) > growths:
                return seen
        await asyncio.sleep(0.03)
    raise AssertionError(f"the reply did not grow {growths} times: {seen!r}")


async def create_conversation(page: Page, title: str) -> str:
    await page.get_by_placeholder("Title (optional)").fill(title)
    await page.get_by_role("button", name="New conversation").click()
    await expect(page.locator("#conversation-title")).to_have_text(title)
    selected = page.locator("#conversation-list button[aria-current='true']")
    await expect(selected).to_contain_text(title)
    conversation_id = await selected.get_attribute("data-conversation-id")
    assert conversation_id
    return conversation_id


def tiny_png(width: int = 8, height: int = 6) -> bytes:
    """A valid RGB PNG of one colour, built by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + checksum

    rows = b"".join(b"\x00" + b"\xd0\x40\x30" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


async def save_tools(page: Page, text: str) -> None:
    """Types `text` into the conversation's "Tools (JSON)" setting and saves it."""
    settings = page.locator("#conversation-settings")
    if await settings.get_attribute("open") is None:
        await settings.get_by_text("Conversation settings").click()
    await page.get_by_label("Tools (JSON)").fill(text)
    await page.get_by_role("button", name="Save tools").click()


async def api_get(server: LiveServer, path: str) -> Any:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        response = await http.get(path)
    assert response.status_code == 200, response.text
    return response.json()


class TestPlayground:
    async def test_a_reply_streams_resumes_after_a_reload_and_takes_a_thumbs_up(
        self, page: Page, playground_server: LiveServer
    ) -> None:
        conversation_id = await create_conversation(page, "Playground walk-through")
        question = long_question()

        await page.get_by_role("textbox", name="Message").fill(question)
        await page.get_by_role("button", name="Send").click()
        reply = page.locator(".message.assistant").last
        streamed = await watch_growth(reply, growths=2)

        await page.reload()
        await expect(page.locator("body")).to_have_attribute("data-ready", "true")
        reply = page.locator(".message.assistant").last
        resumed = await watch_growth(reply, growths=1)
        assert len(resumed[-1]) > len(streamed[-1])

        await expect(reply).to_have_attribute("data-status", "completed", timeout=15_000)
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        stored_reply = stored["messages"][-1]
        assert stored_reply["status"] == "completed"
        assert stored_reply["content"] == mock_reply(question)
        # Nothing was lost or repeated across the reload.
        await expect(reply.locator(".content")).to_have_text(stored_reply["content"])
        await expect(reply).to_have_attribute("data-message-id", stored_reply["id"])
        await expect(reply.locator(".usage")).to_contain_text(
            f"{stored_reply['total_tokens']} tokens"
        )
        assert stored_reply["cost_usd"] > 0
        await expect(reply.locator(".usage")).to_contain_text(usd(stored_reply["cost_usd"]))
        await expect(page.locator("#conversation-cost")).to_have_text(usd(stored["total_cost_usd"]))
        await expect(page.locator("#conversation-messages")).to_have_text("2")

        thumbs_up = reply.get_by_role("button", name="Thumbs up")
        await thumbs_up.click()
        await expect(thumbs_up).to_have_attribute("aria-pressed", "true")
        feedback = await api_get(
            playground_server, f"/api/v1/conversations/{conversation_id}/feedback"
        )
        assert [(item["type"], item["message_id"]) for item in feedback["items"]] == [
            ("thumbs_up", stored_reply["id"])
        ]

        OUTPUT.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=OUTPUT / "playground.png")

    async def test_the_spend_panel_charts_spend_per_day_and_per_model(
        self, page: Page, playground_server: LiveServer
    ) -> None:
        await create_conversation(page, "Spend chart")
        await page.get_by_role("textbox", name="Message").fill("Hello there")
        await page.get_by_role("button", name="Send").click()
        reply = page.locator(".message.assistant").last
        await expect(reply).to_have_attribute("data-status", "completed", timeout=15_000)

        await page.get_by_text("Spend", exact=True).click()

        by_model = await api_get(playground_server, "/api/v1/usage?group_by=model")
        by_day = await api_get(playground_server, "/api/v1/usage?group_by=day")
        day = by_day["items"][0]
        model_bar = page.locator("#usage-by-model .usage-bar[data-key='mock']")
        day_bar = page.locator(f"#usage-by-day .usage-bar[data-key='{day['key']}']")
        await expect(model_bar).to_have_count(1)
        await expect(day_bar).to_have_count(1)
        await expect(model_bar).to_have_attribute(
            "data-cost", str(by_model["items"][0]["cost_usd"])
        )
        assert float(await day_bar.locator("rect").get_attribute("width") or 0) > 0
        await expect(page.locator("#usage-total")).to_have_text(
            f"Total: {usd(by_model['total_cost_usd'])}"
        )
        # A second turn moves the chart without reopening the panel.
        await page.get_by_role("textbox", name="Message").fill("And again")
        await page.get_by_role("button", name="Send").click()
        await expect(page.locator(".message.assistant")).to_have_count(2)
        await expect(page.locator(".message.assistant").last).to_have_attribute(
            "data-status", "completed", timeout=15_000
        )
        after = await api_get(playground_server, "/api/v1/usage?group_by=model")
        await expect(model_bar).to_have_attribute("data-cost", str(after["items"][0]["cost_usd"]))

    async def test_an_api_error_shows_its_detail_and_keeps_the_draft(
        self, page: Page, playground_server: LiveServer
    ) -> None:
        conversation_id = await create_conversation(page, "Soon gone")
        async with httpx.AsyncClient(base_url=playground_server.base_url, timeout=10) as http:
            deleted = await http.delete(f"/api/v1/conversations/{conversation_id}")
        assert deleted.status_code == 204

        await page.get_by_role("textbox", name="Message").fill("Anyone there?")
        await page.get_by_role("button", name="Send").click()

        alert = page.get_by_role("alert")
        await expect(alert).to_be_visible()
        await expect(alert).to_contain_text("conversation_not_found")
        await expect(page.get_by_role("textbox", name="Message")).to_have_value("Anyone there?")
        await expect(page.locator(".message")).to_have_count(0)


class TestPlaygroundImages:
    async def test_an_attached_image_is_previewed_sent_beside_the_text_and_shown_as_a_thumbnail(
        self, page: Page, playground_server: LiveServer, tmp_path: Path
    ) -> None:
        conversation_id = await create_conversation(page, "Pictures")
        png = tiny_png()
        image = tmp_path / "dot.png"
        image.write_bytes(png)

        await page.locator("#image-input").set_input_files(image)
        await expect(page.get_by_role("img", name="Image to send")).to_be_visible()
        await page.get_by_role("textbox", name="Message").fill("What is in this picture?")
        await page.get_by_role("button", name="Send").click()

        reply = page.locator(".message.assistant").last
        await expect(reply).to_have_attribute("data-status", "completed", timeout=15_000)
        await expect(reply.locator(".content")).to_contain_text("I see 1 image")
        await expect(page.locator("#attachment")).to_be_hidden()
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        question = stored["messages"][0]
        data_url = "data:image/png;base64," + base64.b64encode(png).decode()
        assert question["content"] == "What is in this picture?"
        assert question["parts"] == [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": data_url, "detail": "auto"}},
        ]
        # The history's thumbnail, loaded (the page's CSP allows data: images).
        await expect(page.locator("#conversation-messages")).to_have_text("2")
        thumbnail = page.locator(".message.user").get_by_role("img", name="Attached image 1")
        await expect(thumbnail).to_be_visible()
        await expect(thumbnail).to_have_attribute("src", data_url)
        assert await thumbnail.evaluate("img => img.complete && img.naturalWidth") == 8

    async def test_an_image_too_big_for_a_request_is_refused_before_sending(
        self, page: Page, tmp_path: Path
    ) -> None:
        await create_conversation(page, "Too big")
        image = tmp_path / "big.png"
        image.write_bytes(tiny_png() + bytes(800 * 1024))

        await page.locator("#image-input").set_input_files(image)

        await expect(page.get_by_role("alert")).to_contain_text("images up to 700 KiB")
        await expect(page.locator("#attachment")).to_be_hidden()


class TestPlaygroundTools:
    async def test_the_tools_setting_refuses_bad_json_and_shows_the_servers_422(
        self, page: Page, playground_server: LiveServer
    ) -> None:
        conversation_id = await create_conversation(page, "Tool settings")
        error = page.locator("#tools-error")

        await save_tools(page, '[{"type": "function"')
        await expect(error).to_contain_text("not valid JSON")
        await save_tools(page, '{"type": "function"}')
        await expect(error).to_contain_text("must be a JSON array")
        await save_tools(page, '[{"type": "function", "function": {"name": "get weather"}}]')
        await expect(error).to_contain_text("tools.0.function.name")
        await expect(page.get_by_label("Tools (JSON)")).to_have_attribute("aria-invalid", "true")
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        assert stored["tools"] is None

        await save_tools(page, json.dumps(WEATHER_TOOLS))
        await expect(page.locator("#tools-status")).to_have_text("Saved: 1 tool.")
        await expect(error).to_be_hidden()
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        assert stored["tools"] == WEATHER_TOOLS
        await page.reload()
        await expect(page.locator("body")).to_have_attribute("data-ready", "true")
        shown = await page.get_by_label("Tools (JSON)").input_value()
        assert json.loads(shown) == WEATHER_TOOLS

    async def test_a_tool_call_renders_and_its_typed_result_gets_the_final_reply(
        self, page: Page, playground_server: LiveServer
    ) -> None:
        conversation_id = await create_conversation(page, "Weather")
        await save_tools(page, json.dumps(WEATHER_TOOLS))
        await expect(page.locator("#tools-status")).to_have_text("Saved: 1 tool.")

        await page.get_by_role("textbox", name="Message").fill("get_weather for city: Paris")
        await page.get_by_role("button", name="Send").click()
        calling = page.locator(".message.assistant").last
        await expect(calling).to_have_attribute("data-status", "completed", timeout=15_000)
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        stored_call = stored["messages"][-1]
        assert stored_call["finish_reason"] == "tool_calls"
        [call] = stored_call["tool_calls"]
        call_view = calling.locator(".tool-call")
        await expect(call_view).to_have_count(1)
        await expect(call_view).to_have_attribute("data-tool-call-id", call["id"])
        await expect(call_view.locator(".tool-name")).to_have_text("get_weather")
        await expect(call_view.locator(".tool-arguments")).to_have_text(
            json.dumps({"city": "Paris"}, indent=2)
        )

        await calling.get_by_label("Result of get_weather").fill("Sunny, 21 °C")
        await calling.get_by_role("button", name="Send results").click()

        await expect(page.locator(".message.assistant")).to_have_count(2)
        final = page.locator(".message.assistant").last
        await expect(final).to_have_attribute("data-status", "completed", timeout=15_000)
        await expect(final.locator(".content")).to_have_text(
            "The tool get_weather returned: Sunny, 21 °C."
        )
        result = page.locator(".message.tool")
        await expect(result).to_have_count(1)
        await expect(result.locator(".tool-answer")).to_have_text(
            f"Result of get_weather ({call['id']})"
        )
        await expect(result.locator(".content")).to_have_text("Sunny, 21 °C")
        await expect(page.locator(".tool-results")).to_have_count(0)
        await expect(page.locator("#conversation-messages")).to_have_text("4")
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        assert [(m["role"], m["tool_call_id"]) for m in stored["messages"]] == [
            ("user", None),
            ("assistant", None),
            ("tool", call["id"]),
            ("assistant", None),
        ]

    async def test_a_tool_calls_arguments_render_piece_by_piece_while_the_reply_streams(
        self, page: Page
    ) -> None:
        await create_conversation(page, "Live call")
        await save_tools(page, json.dumps(WEATHER_TOOLS))
        await expect(page.locator("#tools-status")).to_have_text("Saved: 1 tool.")
        # Every state of the reply's call block, as the DOM changes.
        await page.evaluate(
            """() => {
              window.callStates = [];
              new MutationObserver(() => {
                const reply = [...document.querySelectorAll(".message.assistant")].at(-1);
                const call = reply && reply.querySelector(".tool-call");
                if (!call) return;
                window.callStates.push([
                  reply.dataset.status,
                  call.querySelector(".tool-name").textContent,
                  call.querySelector(".tool-arguments").textContent,
                ]);
              }).observe(document.getElementById("messages"),
                         { subtree: true, childList: true, characterData: true });
            }"""
        )

        await page.get_by_role("textbox", name="Message").fill("get_weather for city: Paris")
        await page.get_by_role("button", name="Send").click()
        reply = page.locator(".message.assistant").last
        await expect(reply).to_have_attribute("data-status", "completed", timeout=15_000)

        states: list[list[str]] = await page.evaluate("window.callStates")
        whole = json.dumps({"city": "Paris"})
        pretty = json.dumps({"city": "Paris"}, indent=2)  # shown once the JSON is whole
        streaming = [(name, args) for status, name, args in states if status == "in_progress"]
        assert streaming, states
        assert {name for name, _ in streaming} == {"get_weather"}
        partial = [args for _, args in streaming if args not in ("", whole, pretty)]
        assert partial, f"no arguments were seen before they were whole: {states!r}"
        assert all(whole.startswith(args) for args in partial), states
        await expect(reply.locator(".tool-arguments")).to_have_text(pretty)

    async def test_a_replys_reasoning_shows_collapsed_and_opens(
        self, page: Page, playground_server: LiveServer
    ) -> None:
        conversation_id = await create_conversation(page, "Thinking")
        await page.get_by_role("textbox", name="Message").fill("Hello there")
        await page.get_by_role("button", name="Send").click()
        reply = page.locator(".message.assistant").last
        await expect(reply).to_have_attribute("data-status", "completed", timeout=15_000)
        await expect(reply.locator(".reasoning")).to_be_hidden()

        # The mock reasons only when asked, which /api/v1 turns do not: the stored reply
        # is given reasoning on its way to the page.
        async def with_reasoning(route: Any) -> None:
            response = await route.fetch()
            body = await response.json()
            body["messages"][-1]["reasoning"] = "The user greets me.\nGreet back."
            body["messages"][-1]["reasoning_tokens"] = 7
            await route.fulfill(response=response, json=body)

        await page.route(re.compile(rf".*/api/v1/conversations/{conversation_id}$"), with_reasoning)
        await page.reload()
        await expect(page.locator("body")).to_have_attribute("data-ready", "true")
        reasoning = page.locator(".message.assistant").last.locator(".reasoning")
        await expect(reasoning).to_be_visible()
        await expect(reasoning).not_to_have_attribute("open", "")
        await expect(reasoning.locator(".reasoning-text")).to_be_hidden()
        await reasoning.get_by_text("Reasoning", exact=True).click()
        await expect(reasoning.locator(".reasoning-text")).to_have_text(
            "The user greets me.\nGreet back."
        )
        await expect(page.locator(".message.assistant").last.locator(".usage")).to_contain_text(
            "7 reasoning"
        )


async def send(page: Page, text: str) -> Locator:
    """Sends `text` from the composer; the reply, once it has completed."""
    await page.get_by_role("textbox", name="Message").fill(text)
    await page.get_by_role("button", name="Send").click()
    reply = page.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-status", "completed", timeout=15_000)
    return reply


class TestPlaygroundBranches:
    async def test_a_message_is_edited_a_reply_regenerated_the_branches_flip_and_all_export(
        self, page: Page, playground_server: LiveServer
    ) -> None:
        conversation_id = await create_conversation(page, "Branches")
        first_reply = await send(page, "Hello there")
        first_reply_id = await first_reply.get_attribute("data-message-id")
        await expect(page.locator(".versions")).to_have_count(0)

        # Edit: the new message and its reply replace the old ones on the page.
        question = long_question()
        user = page.locator(".message.user")
        await user.get_by_role("button", name="Edit").click()
        await user.get_by_role("textbox", name="Edited message").fill(question)
        await user.get_by_role("button", name="Save").click()
        edited_reply = page.locator(".message.assistant")
        await expect(edited_reply).to_have_attribute("data-status", "completed", timeout=15_000)
        await expect(page.locator(".message")).to_have_count(2)
        await expect(user.locator(".content")).to_have_text(question)
        await expect(user.locator(".version-position")).to_have_text("2 / 2")
        await expect(edited_reply.locator(".content")).to_have_text(mock_reply(question))
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        edited, edited_answer = stored["messages"]
        assert edited["parent_id"] is None
        assert len(edited["sibling_ids"]) == 2

        # Regenerate: a new reply beside that one streams in its place.
        await edited_reply.get_by_role("button", name="Regenerate").click()
        await watch_growth(edited_reply, growths=1)
        await expect(edited_reply).to_have_attribute("data-status", "completed", timeout=15_000)
        await expect(edited_reply.locator(".version-position")).to_have_text("2 / 2")
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        regenerated = stored["messages"][-1]
        assert regenerated["sibling_ids"] == [edited_answer["id"], regenerated["id"]]
        await expect(edited_reply).to_have_attribute("data-message-id", regenerated["id"])

        # Flip: the reply's versions, then the message's: the first branch comes back whole.
        await edited_reply.get_by_role("button", name="Previous version").click()
        await expect(edited_reply).to_have_attribute("data-message-id", edited_answer["id"])
        await expect(edited_reply.locator(".version-position")).to_have_text("1 / 2")
        await user.get_by_role("button", name="Previous version").click()
        await expect(user.locator(".content")).to_have_text("Hello there")
        await expect(user.locator(".version-position")).to_have_text("1 / 2")
        await expect(page.locator(".message.assistant")).to_have_attribute(
            "data-message-id", first_reply_id or ""
        )
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        assert stored["active_leaf_id"] == first_reply_id
        await user.get_by_role("button", name="Next version").click()
        await expect(user.locator(".content")).to_have_text(question)
        # The edited branch comes back at the reply last shown in it.
        await expect(page.locator(".message.assistant")).to_have_attribute(
            "data-message-id", re.compile(f"{edited_answer['id']}|{regenerated['id']}")
        )

        # Export: the JSON link downloads every branch; the Markdown one the branch shown.
        async with page.expect_download() as downloading:
            await page.get_by_role("link", name="Export JSON").click()
        downloaded = await (await downloading.value).path()
        exported = json.loads(await asyncio.to_thread(Path(downloaded).read_text))
        assert exported["conversation"]["id"] == conversation_id
        every_message = {*edited["sibling_ids"], first_reply_id, *regenerated["sibling_ids"]}
        assert {m["id"] for m in exported["messages"]} == every_message
        assert len(exported["messages"]) == 5
        assert {m["content"] for m in exported["messages"] if m["role"] == "user"} == {
            "Hello there",
            question,
        }
        markdown_url = await page.get_by_role("link", name="Export Markdown").get_attribute("href")
        fetched = await page.evaluate(
            "async url => { const r = await fetch(url); return [r.status, await r.text()]; }",
            markdown_url,
        )
        assert fetched[0] == 200
        assert question in fetched[1]
        assert "Hello there" not in fetched[1]

    async def test_edit_and_regenerate_ask_for_the_picked_model(self, page: Page) -> None:
        await create_conversation(page, "Picked model")
        picker = page.get_by_label("Model", exact=True)
        await expect(picker.locator("option[value='mock/mock']")).to_have_count(1)
        await picker.select_option("mock/mock")
        async with page.expect_request(re.compile(r".*/messages$")) as sending:
            reply = await send(page, "Hello there")
        assert (await sending.value).post_data_json["model"] == "mock"
        async with page.expect_request(re.compile(r".*/regenerate$")) as regenerating:
            await reply.get_by_role("button", name="Regenerate").click()
        body = (await regenerating.value).post_data_json
        assert (body["provider"], body["model"], body["stream"]) == ("mock", "mock", True)
        await expect(reply.locator(".version-position")).to_have_text("2 / 2", timeout=15_000)

    async def test_stop_cancels_the_streaming_reply_and_keeps_its_text(
        self, page: Page, playground_server: LiveServer
    ) -> None:
        conversation_id = await create_conversation(page, "Stopped")
        stop = page.get_by_role("button", name="Stop", exact=True)
        await expect(stop).to_be_hidden()
        await page.get_by_role("textbox", name="Message").fill(long_question())
        await page.get_by_role("button", name="Send").click()
        reply = page.locator(".message.assistant").last
        await watch_growth(reply, growths=1)

        await stop.click()

        await expect(reply).to_have_attribute("data-status", "cancelled", timeout=15_000)
        await expect(stop).to_be_hidden()
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        assert stored["messages"][-1]["status"] == "cancelled"
        await expect(reply.locator(".content")).to_have_text(stored["messages"][-1]["content"])
        assert stored["messages"][-1]["content"]


class TestPlaygroundConversationActions:
    async def test_a_conversation_is_renamed_pinned_archived_unarchived_and_deleted(
        self, page: Page, playground_server: LiveServer
    ) -> None:
        conversation_id = await create_conversation(page, "Old name")
        selected = page.locator(f"#conversation-list [data-conversation-id='{conversation_id}']")

        await page.get_by_role("button", name="Rename").click()
        await page.get_by_role("textbox", name="New title").fill("New name")
        await page.get_by_role("button", name="Save title").click()
        await expect(page.locator("#conversation-title")).to_have_text("New name")
        await expect(selected).to_contain_text("New name")

        await page.get_by_role("button", name="Pin").click()
        await expect(page.get_by_role("button", name="Unpin")).to_have_attribute(
            "aria-pressed", "true"
        )
        await expect(selected).to_contain_text("Pinned")

        await page.get_by_role("button", name="Archive", exact=True).click()
        await expect(page.get_by_role("button", name="Unarchive")).to_be_visible()
        await expect(selected).to_have_count(0)
        await page.get_by_label("Archived").check()
        await expect(selected).to_have_count(1)
        stored = await api_get(playground_server, f"/api/v1/conversations/{conversation_id}")
        assert (stored["title"], stored["pinned"], stored["archived"]) == ("New name", True, True)
        await page.get_by_role("button", name="Unarchive").click()
        await expect(selected).to_have_count(0)
        await page.get_by_label("Archived").uncheck()
        await expect(selected).to_have_count(1)

        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.get_by_role("button", name="Delete").click()
        await expect(page.locator("#conversation-title")).to_have_text(
            "Pick or create a conversation"
        )
        await expect(selected).to_have_count(0)
        async with httpx.AsyncClient(base_url=playground_server.base_url, timeout=10) as http:
            gone = await http.get(f"/api/v1/conversations/{conversation_id}")
        assert gone.status_code == 404


@pytest.fixture(scope="module")
def authed_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    log_path = tmp_path_factory.mktemp("playground-auth") / "server.log"
    server = start_server(
        {
            "DATABASE_URL": database_url,
            "MOCK_CHUNK_DELAY_MS": str(CHUNK_DELAY_MS),
            "AUTH_ENABLED": "true",
        },
        log_path,
    )
    try:
        yield server
    finally:
        stop_server(server)


class TestPlaygroundWithAuth:
    async def test_a_dropped_stream_reopens_with_a_new_ticket_and_resumes_after_its_last_event(
        self,
        browser: Browser,
        authed_server: LiveServer,
        issue_key: Any,
        clean_database: None,
    ) -> None:
        """The browser's own reconnect would reuse the spent ticket (401): the page asks for
        a new one and names the last event it saw; the text ends whole, nothing repeated."""
        key = await issue_key("alice")
        context = await browser.new_context(base_url=authed_server.base_url)
        await context.add_init_script(
            f"sessionStorage.setItem('chat-api.playground.token', {key!r});"
        )
        page = await context.new_page()
        script_errors: list[str] = []
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        stream_urls: list[str] = []
        kept_events = 3  # start and two deltas, then the connection drops

        async def drop_the_first_stream(route: Any) -> None:
            stream_urls.append(route.request.url)
            if len(stream_urls) > 1:
                await route.continue_()
                return
            whole = await route.fetch()
            frames = (await whole.text()).replace("\r\n", "\n").split("\n\n")
            events = [frame for frame in frames if "\nevent:" in f"\n{frame}"]
            cut = frames.index(events[kept_events - 1]) + 1
            await route.fulfill(
                status=200,
                headers={"content-type": "text/event-stream", "cache-control": "no-cache"},
                body="\n\n".join(frames[:cut]) + "\n\n",
            )

        try:
            await page.goto("/playground")
            await expect(page.locator("body")).to_have_attribute("data-ready", "true")
            conversation_id = await create_conversation(page, "Tickets")
            question = long_question()
            await page.get_by_role("textbox", name="Message").fill(question)
            await page.get_by_role("button", name="Send").click()
            reply = page.locator(".message.assistant").last
            await watch_growth(reply, growths=1)

            await page.route(re.compile(r".*/stream\?.*"), drop_the_first_stream)
            await page.reload()
            await expect(page.locator("body")).to_have_attribute("data-ready", "true")
            reply = page.locator(".message.assistant").last
            await expect(reply).to_have_attribute("data-status", "completed", timeout=15_000)

            async with httpx.AsyncClient(
                base_url=authed_server.base_url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            ) as http:
                stored = (await http.get(f"/api/v1/conversations/{conversation_id}")).json()
            stored_reply = stored["messages"][-1]
            assert stored_reply["content"] == mock_reply(question)
            await expect(reply.locator(".content")).to_have_text(stored_reply["content"])
            assert len(stream_urls) == 2, stream_urls
            first, second = (httpx.URL(url).params for url in stream_urls)
            assert first["ticket"] != second["ticket"]
            assert "last_event_id" not in first
            assert second["last_event_id"] == f"{stored_reply['id']}/{kept_events}"
        finally:
            await context.close()
        assert script_errors == []
