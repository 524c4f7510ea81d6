"""Export and import over HTTP, on both backends: our JSON export of every branch, Markdown of
the branch shown, and imports of our export or ChatGPT's `conversations.json` that store a
new conversation whole, or nothing at all."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.config import Settings
from app.db.models import Conversation, Message, UserMonthlyUsage
from app.db.session import create_engine
from tests.auth import bearer
from tests.factories import create_conversation, send_message

CONVERSATIONS = "/api/v1/conversations"
IMPORT = f"{CONVERSATIONS}/import"
# Times of the ChatGPT fixture, Unix seconds as ChatGPT writes them.
T0 = 1_700_000_000.123456
# What an export's messages keep through an import: all but the ids, which are new.
REMAPPED = ("id", "conversation_id", "parent_id", "sibling_ids")


async def export(client: httpx.AsyncClient, conversation_id: str, **params: str) -> Any:
    response = await client.get(f"{CONVERSATIONS}/{conversation_id}/export", params=params)
    assert response.status_code == 200, response.text
    return response.json() if params.get("format", "json") == "json" else response.text


async def import_(client: httpx.AsyncClient, body: Any) -> Any:
    response = await client.post(IMPORT, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def stored_counts(settings: Settings) -> dict[str, Any]:
    """Rows in the database, read straight from it: conversations, messages, monthly usage."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            conversations = (await connection.execute(select(func.count(Conversation.id)))).one()
            messages = (await connection.execute(select(func.count(Message.id)))).one()
            usage = (
                await connection.execute(
                    select(UserMonthlyUsage.user_id, UserMonthlyUsage.cost_usd)
                )
            ).all()
        return {"conversations": conversations[0], "messages": messages[0], "usage": usage}
    finally:
        await engine.dispose()


def shape(document: dict[str, Any]) -> dict[str, Any]:
    """An export without what an import renews: ids become positions, `exported_at` goes."""
    position = {message["id"]: index for index, message in enumerate(document["messages"])}
    messages = []
    for message in document["messages"]:
        kept = {key: value for key, value in message.items() if key not in REMAPPED}
        parent = message["parent_id"]
        messages.append({**kept, "parent": None if parent is None else position[parent]})
    conversation = {
        key: value for key, value in document["conversation"].items() if key not in ("id",)
    }
    leaf = conversation.pop("active_leaf_id")
    conversation["active_leaf"] = None if leaf is None else position[leaf]
    return {"conversation": conversation, "messages": messages}


def without(fields: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if key not in names}


def chatgpt_node(
    node_id: str,
    parent: str | None,
    children: list[str],
    role: str | None = None,
    parts: list[Any] | None = None,
    *,
    at: float | None = None,
    **message_fields: Any,
) -> dict[str, Any]:
    """One node of a ChatGPT `mapping`, in the shape of a real `conversations.json`."""
    message = None
    if role is not None:
        message = {
            "id": node_id,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": at,
            "update_time": None,
            "content": {"content_type": "text", "parts": parts if parts is not None else [""]},
            "status": "finished_successfully",
            "end_turn": role == "assistant" or None,
            "weight": 1.0,
            "metadata": {},
            "recipient": "all",
            "channel": None,
            **message_fields,
        }
    return {"id": node_id, "message": message, "parent": parent, "children": children}


def chatgpt_conversation() -> dict[str, Any]:
    """A ChatGPT conversation with an edited question: the first answer has two user
    children, and `current_node` ends the second branch (the edit, asked with an image)."""
    mapping = {
        "client-created-root": chatgpt_node("client-created-root", None, ["sys"]),
        "sys": chatgpt_node(
            "sys",
            "client-created-root",
            ["u1"],
            "system",
            [""],
            metadata={"is_visually_hidden_from_conversation": True},
        ),
        "u1": chatgpt_node("u1", "sys", ["a1"], "user", ["Plan a day in Rome"], at=T0),
        "a1": chatgpt_node(
            "a1",
            "u1",
            ["u2", "u2-edit"],
            "assistant",
            ["Start at the Colosseum."],
            at=T0 + 5,
            metadata={"model_slug": "gpt-4o", "finish_details": {"type": "stop"}},
        ),
        "u2": chatgpt_node("u2", "a1", ["a2"], "user", ["And lunch?"], at=T0 + 60),
        "a2": chatgpt_node("a2", "u2", [], "assistant", ["Try Trastevere."], at=T0 + 65),
        "u2-edit": chatgpt_node(
            "u2-edit",
            "a1",
            ["a2-edit"],
            "user",
            [
                {
                    "content_type": "image_asset_pointer",
                    "asset_pointer": "file-service://file-abc123",
                    "size_bytes": 123456,
                    "width": 800,
                    "height": 600,
                    "fovea": None,
                    "metadata": None,
                },
                "And dinner near here?",
            ],
            at=T0 + 120,
        ),
        "a2-edit": chatgpt_node("a2-edit", "u2-edit", [], "assistant", ["Try Monti."], at=T0 + 125),
    }
    mapping["u2-edit"]["message"]["content"]["content_type"] = "multimodal_text"
    return {
        "title": "Rome trip",
        "create_time": T0 - 1,
        "update_time": T0 + 125,
        "mapping": mapping,
        "moderation_results": [],
        "current_node": "a2-edit",
        "plugin_ids": None,
        "conversation_id": "6650b0a2-0000-8000-9000-00000000c0de",
        "conversation_template_id": None,
        "gizmo_id": None,
        "is_archived": False,
        "safe_urls": [],
        "default_model_slug": "gpt-4o",
        "id": "6650b0a2-0000-8000-9000-00000000c0de",
    }


def path_to_leaf(conversation: dict[str, Any]) -> list[str]:
    """The contents of the active branch, first message first."""
    by_id = {message["id"]: message for message in conversation["messages"]}
    path, node = [], conversation["active_leaf_id"]
    while node is not None:
        path.append(by_id[node]["content"])
        node = by_id[node]["parent_id"]
    return path[::-1]


@pytest.fixture
async def talked(client: httpx.AsyncClient) -> dict[str, Any]:
    """A conversation made through the API: two turns answered by the mock provider."""
    conversation = await create_conversation(
        client, title="Trip: Rome/Paris", system_prompt="Be brief.", metadata={"k": "v"}
    )
    await send_message(client, conversation["id"], "Hello!")
    await send_message(client, conversation["id"], "Tell me more")
    return conversation


class TestExportJson:
    async def test_holds_every_message_with_its_parent_and_exact_costs(
        self, client: httpx.AsyncClient, talked: dict[str, Any]
    ) -> None:
        response = await client.get(f"{CONVERSATIONS}/{talked['id']}/export")

        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        disposition = response.headers["content-disposition"]
        assert disposition == 'attachment; filename="Trip-Rome-Paris.json"'
        document = response.json()
        detail = (await client.get(f"{CONVERSATIONS}/{talked['id']}")).json()
        assert document["format"] == "chat-api.conversation"
        assert document["version"] == 1
        assert document["exported_at"].endswith("Z")
        # Every message and field of the detail, less `sibling_ids` (the parents say it all).
        shown = [without(m, "sibling_ids") for m in detail.pop("messages")]
        assert [without(m, "sibling_ids") for m in document["messages"]] == shown
        assert document["conversation"] == detail
        assert [m["role"] for m in document["messages"]] == ["user", "assistant"] * 2
        costs = [Decimal(str(m["cost_usd"])) for m in document["messages"]]
        assert costs[1] > 0
        assert sum(costs) == Decimal(str(detail["total_cost_usd"]))

    async def test_an_untitled_conversation_is_named_by_its_id(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)

        response = await client.get(f"{CONVERSATIONS}/{conversation['id']}/export")

        expected = f'attachment; filename="{conversation["id"]}.json"'
        assert response.headers["content-disposition"] == expected
        assert response.json()["messages"] == []

    async def test_an_unknown_format_is_a_validation_error(
        self, client: httpx.AsyncClient, talked: dict[str, Any]
    ) -> None:
        response = await client.get(
            f"{CONVERSATIONS}/{talked['id']}/export", params={"format": "pdf"}
        )

        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["query", "format"]


class TestExportMarkdown:
    async def test_has_the_title_each_turn_and_the_totals(
        self, client: httpx.AsyncClient, talked: dict[str, Any]
    ) -> None:
        response = await client.get(
            f"{CONVERSATIONS}/{talked['id']}/export", params={"format": "markdown"}
        )

        assert response.status_code == 200
        assert response.headers["content-type"] == "text/markdown; charset=utf-8"
        assert response.headers["content-disposition"].endswith('filename="Trip-Rome-Paris.md"')
        text = response.text
        detail = (await client.get(f"{CONVERSATIONS}/{talked['id']}")).json()
        assert text.startswith(
            "# Trip: Rome/Paris\n\n### System\n\nBe brief.\n\n### User\n\nHello!"
        )
        assert text.count("### User") == 2
        assert text.count("### Assistant") == 2
        for message in detail["messages"]:
            assert message["content"] in text
        assert f"*4 messages · {detail['total_tokens']} tokens · $" in text

    async def test_shows_only_the_active_branch(self, client: httpx.AsyncClient) -> None:
        imported = await import_(client, chatgpt_conversation())

        text = await export(client, imported["id"], format="markdown")

        assert "And dinner near here?" in text
        assert "[image]" in text
        assert "Try Monti." in text
        assert "And lunch?" not in text
        assert "6 messages (all branches)" in text

    async def test_renders_tool_calls_results_and_images(self, client: httpx.AsyncClient) -> None:
        document = our_export(
            [
                message(
                    "user",
                    "What is on this picture, and the weather?",
                    parts=[
                        {"type": "text", "text": "What is on this picture, and the weather?"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                ),
                message(
                    "assistant",
                    "",
                    tool_calls=[
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                        }
                    ],
                    finish_reason="tool_calls",
                ),
                message("tool", "sunny, 24 C", tool_call_id="call_1"),
                message("assistant", "A cat; sunny in Rome."),
            ]
        )
        imported = await import_(client, document)

        text = await export(client, imported["id"], format="markdown")

        assert "![image](https://example.com/a.png)" in text
        assert "data:image" not in text
        assert "\n\n[image]\n\n" in text
        assert "Tool call `weather`:\n\n```json\n" in text
        assert '"city": "Rome"' in text
        assert "### Tool\n\nResult of `call_1`:\n\n```\nsunny, 24 C\n```" in text


def message(role: str, content: str, **fields: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **fields}


def our_export(messages: list[dict[str, Any]], **conversation: Any) -> dict[str, Any]:
    """A hand-written export document: one path of `messages`, ids and parents given here."""
    ids = [f"01a20000-0000-7000-8000-{index:012d}" for index in range(len(messages))]
    written = [
        {
            "id": ids[index],
            "parent_id": ids[index - 1] if index else None,
            "created_at": f"2026-01-01T10:00:{index:02d}Z",
            **fields,
        }
        for index, fields in enumerate(messages)
    ]
    return {
        "format": "chat-api.conversation",
        "version": 1,
        "exported_at": "2026-01-02T00:00:00Z",
        "conversation": {
            "title": "written by hand",
            "active_leaf_id": ids[-1] if ids else None,
            **conversation,
        },
        "messages": written,
    }


class TestImportOurExport:
    async def test_gives_the_same_tree_costs_and_totals_under_new_ids(
        self, client: httpx.AsyncClient, talked: dict[str, Any], settings: Settings
    ) -> None:
        document = await export(client, talked["id"])
        before = await stored_counts(settings)
        report = (await client.get("/api/v1/usage")).json()

        imported = await import_(client, document)

        assert imported["id"] != talked["id"]
        old_ids = {m["id"] for m in document["messages"]}
        assert not old_ids & {m["id"] for m in imported["messages"]}
        assert {m["conversation_id"] for m in imported["messages"]} == {imported["id"]}
        for field in ("message_count", "total_tokens", "total_cost_usd", "title", "metadata"):
            assert imported[field] == document["conversation"][field], field
        reread = await export(client, imported["id"])
        assert shape(reread) == shape(document)
        after = await stored_counts(settings)
        assert after["conversations"] == before["conversations"] + 1
        assert after["messages"] == before["messages"] + 4
        assert after["usage"] == before["usage"]  # nothing charged, nothing counted
        # Nor reported: the usage report leaves imported replies out.
        assert (await client.get("/api/v1/usage")).json() == report

    async def test_the_owner_is_the_caller_and_totals_are_the_sums(
        self, client: httpx.AsyncClient
    ) -> None:
        document = our_export(
            [
                message("user", "hi"),
                message(
                    "assistant",
                    "hello",
                    total_tokens=30,
                    prompt_tokens=10,
                    completion_tokens=20,
                    cost_usd="0.0000123456",
                ),
                message("assistant", "again", total_tokens=5, cost_usd=0.00001),
            ],
            message_count=99,
            total_tokens=12345,
            total_cost_usd=42.0,
        )
        document["conversation"]["user_id"] = "mallory"

        imported = await import_(client, document)

        assert imported["user_id"] == "anonymous"
        assert imported["message_count"] == 3
        assert imported["total_tokens"] == 35
        assert Decimal(str(imported["total_cost_usd"])) == Decimal("0.0000223456")

    async def test_a_reply_exported_mid_generation_is_imported_cancelled(
        self, client: httpx.AsyncClient
    ) -> None:
        document = our_export(
            [
                message("user", "hi"),
                message("assistant", "partial", status="in_progress"),
                message("assistant", "boom", status="failed"),
            ]
        )
        document["messages"][2]["parent_id"] = document["messages"][0]["id"]

        imported = await import_(client, document)

        assert [m["status"] for m in imported["messages"]] == ["completed", "cancelled", "failed"]
        # Another reply can still be started: no reply of it counts as running.
        turn = await client.post(
            f"{CONVERSATIONS}/{imported['id']}/messages", json={"content": "next"}
        )
        assert turn.status_code == 201, turn.text

    async def test_a_provider_this_service_lacks_is_dropped_from_the_defaults(
        self, client: httpx.AsyncClient
    ) -> None:
        document = our_export(
            [message("assistant", "hi", provider="anthropic", model="claude-x")],
            provider="anthropic",
            model="claude-x",
        )

        imported = await import_(client, document)

        assert (imported["provider"], imported["model"]) == (None, None)
        assert imported["messages"][0]["provider"] == "anthropic"

    @pytest.mark.parametrize(
        ("change", "loc"),
        [
            (lambda d: d["messages"][1].update(role="robot"), ["messages", 1, "role"]),
            (
                lambda d: d["messages"][2].update(parent_id="01a20000-0000-7000-8000-999999999999"),
                ["messages", 2, "parent_id"],
            ),
            (
                lambda d: d["messages"][0].update(parent_id=d["messages"][2]["id"]),
                ["messages", 0, "parent_id"],
            ),
            (lambda d: d["messages"][1].update(id=d["messages"][0]["id"]), ["messages", 1, "id"]),
            (lambda d: d["messages"][2].update(content="nul\x00"), ["messages", 2, "content"]),
            (lambda d: d["messages"][1].update(cost_usd=-1), ["messages", 1, "cost_usd"]),
            (
                lambda d: d["conversation"].update(
                    active_leaf_id="01a20000-0000-7000-8000-999999999999"
                ),
                ["conversation", "active_leaf_id"],
            ),
            (lambda d: d.update(version=2), ["version"]),
        ],
        ids=[
            "unknown-role",
            "missing-parent",
            "cycle",
            "duplicate-id",
            "nul",
            "negative-cost",
            "unknown-leaf",
            "version",
        ],
    )
    async def test_a_malformed_file_names_the_bad_message_and_stores_nothing(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        change: Callable[[dict[str, Any]], None],
        loc: list[Any],
    ) -> None:
        document = our_export(
            [message("user", "a"), message("assistant", "b"), message("user", "c")]
        )
        change(document)
        before = await stored_counts(settings)

        response = await client.post(IMPORT, json=document)

        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["code"] == "validation_error"
        assert body["errors"][0]["loc"] == ["body", *loc]
        assert await stored_counts(settings) == before


class TestImportChatGPT:
    async def test_imports_both_branches_and_continues_from_the_current_node(
        self, client: httpx.AsyncClient
    ) -> None:
        imported = await import_(client, chatgpt_conversation())

        contents = [m["content"] for m in imported["messages"]]
        assert contents == [
            "Plan a day in Rome",
            "Start at the Colosseum.",
            "And lunch?",
            "Try Trastevere.",
            "[image]\nAnd dinner near here?",
            "Try Monti.",
        ]
        assert path_to_leaf(imported) == [
            "Plan a day in Rome",
            "Start at the Colosseum.",
            "[image]\nAnd dinner near here?",
            "Try Monti.",
        ]
        by_content = {m["content"]: m for m in imported["messages"]}
        first_answer = by_content["Start at the Colosseum."]["id"]
        assert by_content["And lunch?"]["parent_id"] == first_answer
        assert by_content["[image]\nAnd dinner near here?"]["parent_id"] == first_answer
        # The hidden system message and the root are not stored: the question is a first one.
        assert by_content["Plan a day in Rome"]["parent_id"] is None
        assert imported["title"] == "Rome trip"
        assert imported["metadata"] == {
            "imported_from": "chatgpt",
            "chatgpt_conversation_id": "6650b0a2-0000-8000-9000-00000000c0de",
        }
        assert imported["created_at"].startswith("2023-11-14T22:13:19")
        assert imported["messages"][0]["created_at"] == "2023-11-14T22:13:20.123456Z"
        assert by_content["Start at the Colosseum."]["model"] == "gpt-4o"
        assert by_content["Start at the Colosseum."]["finish_reason"] == "stop"
        assert {m["status"] for m in imported["messages"]} == {"completed"}
        assert imported["total_cost_usd"] == 0
        assert imported["total_tokens"] == 0
        assert imported["message_count"] == 6

    async def test_round_trips_through_our_export(self, client: httpx.AsyncClient) -> None:
        first = await export(client, (await import_(client, chatgpt_conversation()))["id"])

        second = await export(client, (await import_(client, first))["id"])

        assert shape(second) == shape(first)
        assert path_to_leaf({**second["conversation"], "messages": second["messages"]}) == (
            path_to_leaf({**first["conversation"], "messages": first["messages"]})
        )

    async def test_an_array_is_imported_whole_and_answered_with_a_list(
        self, client: httpx.AsyncClient
    ) -> None:
        other = chatgpt_conversation()
        other["title"] = "Second"

        imported = await import_(client, [chatgpt_conversation(), other])

        assert [c["title"] for c in imported] == ["Rome trip", "Second"]
        assert imported[0]["id"] != imported[1]["id"]
        listing = (await client.get(CONVERSATIONS)).json()["items"]
        assert {c["id"] for c in listing} == {c["id"] for c in imported}

    async def test_messages_without_times_follow_their_parents(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = chatgpt_conversation()
        for node in conversation["mapping"].values():
            if node["message"] is not None:
                node["message"]["create_time"] = None

        imported = await import_(client, conversation)

        by_id = {m["id"]: m for m in imported["messages"]}
        for position, stored in enumerate(imported["messages"]):
            parent = stored["parent_id"]
            assert parent is None or list(by_id).index(parent) < position
        assert path_to_leaf(imported)[-1] == "Try Monti."

    @pytest.mark.parametrize(
        ("change", "loc"),
        [
            (
                lambda c: c["mapping"]["a2"].update(parent="no-such-node"),
                ["mapping", "a2", "parent"],
            ),
            (
                lambda c: c["mapping"]["u1"].update(parent="a2"),
                ["mapping", "u1", "parent"],
            ),
            (
                lambda c: c["mapping"]["u2"]["message"]["author"].update(role="critic"),
                ["mapping", "u2", "message", "author", "role"],
            ),
            (lambda c: c.update(current_node="gone"), ["current_node"]),
            (
                lambda c: c["mapping"]["a1"]["message"]["content"].update(parts=["a\x00b"]),
                ["mapping", "a1", "message", "content", "parts", 0],
            ),
            (
                lambda c: c["mapping"]["a1"]["message"].update(create_time="yesterday"),
                ["mapping", "a1", "message", "create_time"],
            ),
        ],
        ids=["missing-parent", "cycle", "unknown-role", "unknown-current-node", "nul", "time"],
    )
    async def test_a_malformed_file_names_the_node_and_stores_nothing(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        change: Callable[[dict[str, Any]], None],
        loc: list[Any],
    ) -> None:
        good = chatgpt_conversation()
        bad = copy.deepcopy(good)
        change(bad)
        before = await stored_counts(settings)

        single = await client.post(IMPORT, json=bad)
        # In an array, the good conversation before the bad one is not stored either.
        batch = await client.post(IMPORT, json=[good, bad])

        assert single.status_code == batch.status_code == 422, single.text
        assert single.json()["code"] == "validation_error"
        assert single.json()["errors"][0]["loc"] == ["body", *loc]
        assert batch.json()["errors"][0]["loc"] == ["body", 1, *loc]
        assert await stored_counts(settings) == before

    @pytest.mark.parametrize(
        "body",
        [[], 42, "text", {"title": "neither format"}, [{"mapping": "no"}]],
        ids=["empty-array", "number", "string", "unknown-object", "mapping-not-an-object"],
    )
    async def test_a_body_in_neither_format_is_a_validation_error(
        self, client: httpx.AsyncClient, body: Any
    ) -> None:
        response = await client.post(IMPORT, json=body)

        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"
        assert response.json()["errors"][0]["loc"][0] == "body"

    async def test_too_many_nodes_is_refused(self, client: httpx.AsyncClient) -> None:
        conversation = chatgpt_conversation()
        mapping = conversation["mapping"]
        for index in range(10_001):
            mapping[f"n{index}"] = {"id": f"n{index}", "message": None, "parent": None}

        response = await client.post(IMPORT, json=conversation)

        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == ["body", "mapping"]


class TestTenancy:
    async def test_another_users_conversation_cannot_be_exported(
        self,
        start_app: Callable[..., Any],
        auth_settings: Callable[..., Settings],
        issue_key: Callable[..., Any],
    ) -> None:
        client: httpx.AsyncClient = await start_app(auth_settings())
        alice, bob = await issue_key("alice"), await issue_key("bob")
        created = await client.post(CONVERSATIONS, json={"title": "secret"}, headers=bearer(alice))
        url = f"{CONVERSATIONS}/{created.json()['id']}/export"

        for export_format in ("json", "markdown"):
            foreign = await client.get(url, params={"format": export_format}, headers=bearer(bob))
            own = await client.get(url, params={"format": export_format}, headers=bearer(alice))
            assert foreign.status_code == 404
            assert foreign.json()["code"] == "conversation_not_found"
            assert "secret" not in foreign.text
            assert own.status_code == 200

    async def test_an_import_belongs_to_the_caller(
        self,
        start_app: Callable[..., Any],
        auth_settings: Callable[..., Settings],
        issue_key: Callable[..., Any],
    ) -> None:
        client: httpx.AsyncClient = await start_app(auth_settings())
        bob = await issue_key("bob")

        response = await client.post(IMPORT, json=chatgpt_conversation(), headers=bearer(bob))
        unauthenticated = await client.post(IMPORT, json=chatgpt_conversation())

        assert response.status_code == 201, response.text
        assert response.json()["user_id"] == "bob"
        assert unauthenticated.status_code == 401
