"""The caller's own account data (`/api/v1/users/me/...`)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/users/me", tags=["users"])
