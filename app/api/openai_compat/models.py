"""GET /v1/models and /v1/models/{id}: what is configured, in OpenAI's format."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import PricesDep, ProvidersDep
from app.api.openai_compat.openapi import openai_errors
from app.schemas.openai_compat import OpenAIModel, OpenAIModelList
from app.services.turns.chat_completions import model_list, model_of

router = APIRouter(prefix="/models")


@router.get("", response_model=OpenAIModelList, responses=openai_errors(401, 429))
async def list_models(registry: ProvidersDep, prices: PricesDep) -> OpenAIModelList:
    """Each model under the name that routes to it; `provider/model` always works too."""
    return model_list(registry, prices)


# `:path`: model ids may hold a slash (`azure/gpt-4o`, `meta-llama/Llama-3.1-8B-Instruct`).
@router.get("/{model_id:path}", response_model=OpenAIModel, responses=openai_errors(401, 404, 429))
async def retrieve_model(model_id: str, registry: ProvidersDep, prices: PricesDep) -> OpenAIModel:
    """The model as the list shows it, or any name that routes to a provider; else 404."""
    return model_of(registry, prices, model_id)
