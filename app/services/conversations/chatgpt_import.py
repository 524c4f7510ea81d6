"""One conversation of ChatGPT's data export (`conversations.json`) read as a draft.

A ChatGPT conversation is a `mapping` of node id -> `{message, parent, children}`; its
`current_node` ends the branch shown. The root has no message, and hidden system messages
(custom instructions, context) and empty ones are not stored: their children follow the
nearest stored ancestor. Text parts are joined; an image is kept as the text "[image]" (the
export holds a pointer to ChatGPT's file store, not the image). Nothing is known of cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from app.db.models import Message, MessageRole, MessageStatus
from app.schemas.common import StorableText
from app.schemas.transfers import (
    MAX_IMPORTED_MESSAGES,
    DraftConversation,
    DraftMessage,
    ImportShape,
    InvalidImport,
    Loc,
)

TITLE_CHARS = 500
# The last second of year 9999: what a stored time can hold.
_LAST_SECOND = 253_402_300_799
Timestamp = Annotated[float, Field(ge=0, le=_LAST_SECOND, allow_inf_nan=False)]
_STORABLE: TypeAdapter[str] = TypeAdapter(StorableText)
_FINISH_REASONS = {"stop": "stop", "max_tokens": "length"}


class ChatGPTAuthor(ImportShape):
    role: Literal["user", "assistant", "system", "tool"]


class ChatGPTContent(ImportShape):
    content_type: str | None = None
    parts: list[Any] | None = None  # text, or objects (image asset pointers, transcripts)
    text: Any = None  # the content of `code` and `execution_output` messages


class ChatGPTMessage(ImportShape):
    author: ChatGPTAuthor
    content: ChatGPTContent | None = None
    create_time: Timestamp | None = None
    metadata: dict[str, Any] | None = None


class ChatGPTNode(ImportShape):
    message: ChatGPTMessage | None = None
    parent: str | None = None


class ChatGPTConversation(ImportShape):
    title: StorableText | None = None
    create_time: Timestamp | None = None
    update_time: Timestamp | None = None
    mapping: Annotated[dict[str, ChatGPTNode], Field(max_length=MAX_IMPORTED_MESSAGES)]
    current_node: str | None = None
    conversation_id: str | None = None
    id: str | None = None


def read_chatgpt(document: dict[str, Any], within: Loc) -> DraftConversation:
    """A ChatGPT conversation object as a draft; `within` is where the file has it."""
    try:
        conversation = ChatGPTConversation.model_validate(document)
    except ValidationError as error:
        raise InvalidImport.of(error, within) from None
    leaf = conversation.current_node
    if leaf is not None and leaf not in conversation.mapping:
        raise InvalidImport.at(within + ("current_node",), "is not a node of `mapping`")
    messages = [
        _draft(key, node, within + ("mapping", key)) for key, node in conversation.mapping.items()
    ]
    title = _title(conversation.title)
    metadata: dict[str, Any] = {"imported_from": "chatgpt"}
    if (original := _label(conversation.conversation_id or conversation.id, 255)) is not None:
        metadata["chatgpt_conversation_id"] = original
    return DraftConversation(
        settings={
            "title": title,
            # Never renamed by a generated title: it is the name the user knew it by.
            "title_source": None if title is None else "user",
            "metadata_": metadata,
        },
        created_at=_moment(conversation.create_time),
        updated_at=_moment(conversation.update_time),
        messages=messages,
        leaf=leaf,
        leaf_loc=within + ("current_node",),
        newest_is_leaf=True,
        source="chatgpt",
    )


def _draft(key: str, node: ChatGPTNode, loc: Loc) -> DraftMessage:
    parent_loc = loc + ("parent",)
    message = node.message
    if message is None:  # the root
        return DraftMessage(key, node.parent, loc, parent_loc, row=None)
    text = _text(message.content, loc + ("message", "content"))
    metadata = message.metadata or {}
    if metadata.get("is_visually_hidden_from_conversation") is True or not text.strip():
        return DraftMessage(key, node.parent, loc, parent_loc, row=None)
    role = MessageRole(message.author.role)
    replied = role is MessageRole.ASSISTANT
    finish = metadata.get("finish_details")
    row = Message(
        role=role,
        content=text,
        status=MessageStatus.COMPLETED,
        # ChatGPT's own model names (`gpt-4o`, `text-davinci-002-render-sha`), for the record.
        model=_label(metadata.get("model_slug"), 255) if replied else None,
        finish_reason=(
            _FINISH_REASONS.get(str(finish.get("type")))
            if replied and isinstance(finish, dict)
            else None
        ),
        cost_usd=Decimal(0),
        metadata_={},
        created_at=_moment(message.create_time),
    )
    return DraftMessage(key, node.parent, loc, parent_loc, row=row)


def _text(content: ChatGPTContent | None, loc: Loc) -> str:
    """The message's text: its string parts, objects as placeholders, one per line."""
    if content is None:
        return ""
    if content.parts is None:
        text = content.text
        return _storable(text, loc + ("text",)) if isinstance(text, str) else ""
    pieces: list[str] = []
    for position, part in enumerate(content.parts):
        if isinstance(part, str):
            pieces.append(_storable(part, loc + ("parts", position)))
        elif isinstance(part, dict):
            pieces.append(_placeholder(part, loc + ("parts", position)))
    return "\n".join(piece for piece in pieces if piece)


def _placeholder(part: dict[str, Any], loc: Loc) -> str:
    kind = part.get("content_type")
    if kind == "image_asset_pointer":
        return "[image]"
    if kind == "audio_transcription" and isinstance(part.get("text"), str):
        return _storable(part["text"], loc + ("text",))
    return f"[{_label(kind, 64) or 'attachment'}]"


def _storable(text: str, loc: Loc) -> str:
    try:
        return _STORABLE.validate_python(text)
    except ValidationError as error:
        raise InvalidImport.of(error, loc) from None


def _label(value: object, limit: int) -> str | None:
    """A short string from the file worth keeping, or None when it is not one."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    try:
        return _STORABLE.validate_python(value)
    except ValidationError:
        return None


def _title(title: str | None) -> str | None:
    if title is None or not (line := " ".join(title.split())):
        return None
    return line[:TITLE_CHARS]


def _moment(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
