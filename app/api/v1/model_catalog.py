"""/api/v1/models: the models this deployment offers, with prices and context windows."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import PricesDep, ProvidersDep
from app.schemas.usage import ModelList
from app.services.pricing.usage import model_catalog

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=ModelList)
async def list_models(registry: ProvidersDep, prices: PricesDep) -> ModelList:
    return ModelList(items=model_catalog(registry, prices))
