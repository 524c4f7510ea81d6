"""The /api/v1 surface: one router per resource."""

from fastapi import APIRouter

from app.api.deps import RATE_LIMITED, STREAM_RATE_LIMITED
from app.api.v1 import (
    auth,
    conversations,
    feedback,
    messages,
    model_catalog,
    streams,
    transfers,
    usage,
    users,
)

router = APIRouter(prefix="/api/v1")
# Before `conversations`: `/conversations/import` must not be taken for a conversation id.
router.include_router(transfers.router, dependencies=RATE_LIMITED)
router.include_router(conversations.router, dependencies=RATE_LIMITED)
router.include_router(messages.router, dependencies=RATE_LIMITED)
router.include_router(feedback.router, dependencies=RATE_LIMITED)
router.include_router(usage.router, dependencies=RATE_LIMITED)
router.include_router(users.router, dependencies=RATE_LIMITED)
router.include_router(model_catalog.router, dependencies=RATE_LIMITED)
router.include_router(streams.router, dependencies=STREAM_RATE_LIMITED)
router.include_router(auth.router)
