"""Conversations as files: the export document, what an import of it may carry, and the one
form both import formats (ours, ChatGPT's) are read into before anything is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, ValidationError

from app.db.models import Message, MessageRole, MessageStatus
from app.errors import ChatAPIError
from app.schemas.common import Metadata, Schema, StorableText
from app.schemas.content import ContentParts
from app.schemas.conversations import ConversationRead, ConversationSettings
from app.schemas.messages import MessageRead

EXPORT_FORMAT: Final = "chat-api.conversation"
EXPORT_VERSION: Final = 1
# In one request, over every conversation of it; the body-size limit usually binds first.
MAX_IMPORTED_MESSAGES = 10_000
# Errors listed in one 422: a file broken everywhere must not answer with thousands.
MAX_REPORTED_ERRORS = 20

Loc = tuple[str | int, ...]


class ConversationExport(Schema):
    """`GET .../export?format=json`: a conversation and every message of every branch."""

    format: Literal["chat-api.conversation"] = EXPORT_FORMAT
    version: Literal[1] = EXPORT_VERSION
    exported_at: datetime
    conversation: ConversationRead
    # Oldest first; each names its `parent_id`, so the whole tree comes back on import.
    messages: list[MessageRead]


class InvalidImport(ChatAPIError):
    """An import body that is JSON but not a conversation this service can store (422): each
    error's `loc` names the place in the file, the first one the first bad node."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "validation_error"

    def __init__(self, errors: list[tuple[Loc, str]]) -> None:
        shown = [{"loc": ["body", *loc], "msg": msg} for loc, msg in errors[:MAX_REPORTED_ERRORS]]
        super().__init__("the import is not valid", extra={"errors": shown})

    @classmethod
    def at(cls, loc: Loc, msg: str) -> InvalidImport:
        return cls([(loc, msg)])

    @classmethod
    def of(cls, error: ValidationError, within: Loc = ()) -> InvalidImport:
        """Pydantic's errors, at their place in the file (`within`: where the document is)."""
        return cls([(within + _path(e["loc"]), e["msg"]) for e in error.errors()])


def _path(loc: Loc) -> Loc:
    # The steps pydantic adds for a union's members (`function-after[...]`) are no field.
    return tuple(step for step in loc if not any(mark in str(step) for mark in "[]()"))


# An import reads files written elsewhere: a field this version does not know (a newer
# export's, ChatGPT's many) is ignored rather than refused.
class ImportShape(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _utc(moment: datetime) -> datetime:
    # A time without an offset is read as UTC: the database stores only aware times.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _exact_to_storage(value: Decimal) -> Decimal:
    # Money columns keep 10 decimal places; both databases then store the same value.
    return value.quantize(Decimal("1e-10"))


Moment = Annotated[datetime, AfterValidator(_utc)]
Cost = Annotated[
    Decimal, Field(ge=0, lt=10**8, allow_inf_nan=False), AfterValidator(_exact_to_storage)
]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
Label = Annotated[StorableText, Field(max_length=64)]
Name = Annotated[StorableText, Field(max_length=255)]


class ImportedPricing(ImportShape):
    input_per_mtok: Cost
    cached_input_per_mtok: Cost | None = None
    cache_write_per_mtok: Cost | None = None
    cache_write_1h_per_mtok: Cost | None = None
    output_per_mtok: Cost
    source: Label | None = None


class ImportedFunction(ImportShape):
    name: Annotated[StorableText, Field(min_length=1, max_length=255)]
    arguments: StorableText


class ImportedToolCall(ImportShape):
    id: Annotated[StorableText, Field(min_length=1, max_length=255)]
    type: Literal["function"]
    function: ImportedFunction


class ImportedMessage(ImportShape):
    """A message of our export, as an import reads it (a `MessageRead` plus its `parent_id`)."""

    # The message's id in the file: what `parent_id` and `active_leaf_id` refer to.
    id: UUID
    parent_id: UUID | None = None
    role: MessageRole
    content: StorableText = ""
    parts: ContentParts | None = None
    tool_calls: Annotated[list[ImportedToolCall], Field(max_length=128)] | None = None
    tool_call_id: Name | None = None
    reasoning: StorableText | None = None
    status: MessageStatus = MessageStatus.COMPLETED
    provider: Label | None = None
    model: Name | None = None
    prompt_tokens: Count = 0
    completion_tokens: Count = 0
    total_tokens: Count = 0
    cached_tokens: Count = 0
    cache_write_tokens: Count = 0
    cache_write_1h_tokens: Count = 0
    reasoning_tokens: Count = 0
    cost_usd: Cost | None = Decimal(0)
    pricing: ImportedPricing | None = None
    latency_ms: Count | None = None
    time_to_first_token_ms: Count | None = None
    finish_reason: Annotated[StorableText, Field(max_length=32)] | None = None
    metadata: Metadata = Field(default_factory=dict)
    created_at: Moment | None = None


class ImportedConversation(ImportShape, ConversationSettings):
    """The conversation of our export: its settings; owner, ids and totals are not taken."""

    title_source: Literal["user", "generated", "first_message"] | None = None
    archived: StrictBool = False
    active_leaf_id: UUID | None = None
    created_at: Moment | None = None
    updated_at: Moment | None = None


class ExportDocument(ImportShape):
    """Our export (`ConversationExport`) as an import reads it."""

    format: Literal["chat-api.conversation"]
    version: Literal[1]
    conversation: ImportedConversation
    messages: Annotated[list[ImportedMessage], Field(max_length=MAX_IMPORTED_MESSAGES)]


@dataclass(slots=True)
class DraftMessage:
    """A message read from an import file, before it has an id of its own."""

    key: str  # its id in the file
    parent: str | None  # its parent's id in the file
    loc: Loc  # where the file has it, for errors
    parent_loc: Loc  # where the file names its parent
    # Unsaved, `created_at` None when the file gave no time; None: not stored (ChatGPT's
    # root, hidden and empty messages), its children then follow its nearest stored ancestor.
    row: Message | None


@dataclass(slots=True)
class DraftConversation:
    """A conversation read from an import file: the same form whichever format it came in."""

    settings: dict[str, Any]  # conversation columns as they are stored (title, metadata_, ...)
    created_at: datetime | None
    updated_at: datetime | None
    messages: list[DraftMessage]
    leaf: str | None  # the message the conversation continues from, by its id in the file
    leaf_loc: Loc
    # No leaf given: continue from the newest message (ChatGPT) or from none (ours).
    newest_is_leaf: bool = False
    # Where it came from ("chat-api", "chatgpt"), stamped on each imported message.
    source: str = "chat-api"
    # Defaults for new turns: kept only if this service can serve them.
    provider: str | None = None
    model: str | None = None
