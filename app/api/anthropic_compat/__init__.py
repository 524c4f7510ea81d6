"""The Anthropic-compatible surface under /v1/messages: the `anthropic` SDKs and tools that
honour `ANTHROPIC_BASE_URL` talk to every configured provider through it.

Same credentials (also as `x-api-key`), rate limits, budgets and idempotency as /api/v1;
errors in Anthropic's format (`errors.ANTHROPIC_ERRORS`, applied by `app.api.error_shapes`).
"""

from fastapi import APIRouter

from app.api.anthropic_compat import messages
from app.api.deps import RATE_LIMITED

router = APIRouter(prefix="/v1", tags=["anthropic-compatible"])
router.include_router(messages.router, dependencies=RATE_LIMITED)
