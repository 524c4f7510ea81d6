"""Feedback bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field, StrictInt, model_validator

from app.db.models import FeedbackType
from app.schemas.common import RequestBody, Schema, StorableText


class FeedbackCreate(RequestBody):
    type: FeedbackType
    message_id: UUID | None = None
    # Strict: JSON `true` or `"5"` is a wrong type (422), not a silently coerced rating.
    rating: Annotated[StrictInt, Field(ge=1, le=5)] | None = None
    comment: Annotated[StorableText, Field(max_length=10_000)] | None = None

    @model_validator(mode="after")
    def _required_parts(self) -> FeedbackCreate:
        if self.type is FeedbackType.RATING and self.rating is None:
            raise ValueError("rating (1-5) is required when type is 'rating'")
        if self.type is FeedbackType.COMMENT and not (self.comment and self.comment.strip()):
            raise ValueError("comment is required when type is 'comment'")
        return self


class FeedbackRead(Schema):
    id: UUID
    conversation_id: UUID
    message_id: UUID | None
    type: FeedbackType
    rating: int | None
    comment: str | None
    created_at: datetime
