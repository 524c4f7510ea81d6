"""The OpenAI-compatible surface under /v1: any OpenAI client (SDKs, LangChain, tools that
take a `base_url`) talks to every configured provider through it.

Same credentials, rate limits, budgets and idempotency as /api/v1; errors in OpenAI's
format (`errors.OPENAI_ERRORS`, applied by `app.api.error_shapes`).
"""

from fastapi import APIRouter

from app.api.deps import RATE_LIMITED
from app.api.openai_compat import chat, models, responses

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
router.include_router(chat.router, dependencies=RATE_LIMITED)
router.include_router(models.router, dependencies=RATE_LIMITED)
router.include_router(responses.router, dependencies=RATE_LIMITED)
