"""The /api/v1 surface: one router per resource."""

from fastapi import APIRouter

from app.api.v1 import conversations, feedback, messages, model_catalog, streams, usage

router = APIRouter(prefix="/api/v1")
router.include_router(conversations.router)
router.include_router(messages.router)
router.include_router(feedback.router)
router.include_router(usage.router)
router.include_router(model_catalog.router)
router.include_router(streams.router)
