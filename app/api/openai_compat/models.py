"""GET /v1/models: what is configured, in OpenAI's list format."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import PricesDep, ProvidersDep
from app.api.openai_compat.openapi import openai_errors
from app.schemas.openai_compat import OpenAIModelList
from app.services.chat_completions import model_list

router = APIRouter(prefix="/models")


@router.get("", response_model=OpenAIModelList, responses=openai_errors(401, 429))
async def list_models(registry: ProvidersDep, prices: PricesDep) -> OpenAIModelList:
    """Each model under the name that routes to it; `provider/model` always works too."""
    return model_list(registry, prices)
