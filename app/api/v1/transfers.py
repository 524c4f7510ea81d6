"""Conversations out and in: export as JSON or Markdown, import our JSON or ChatGPT's."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/conversations", tags=["conversations"])
