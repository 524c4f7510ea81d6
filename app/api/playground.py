"""/playground: a browser page for trying the API by hand, served as static files (no build)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

ASSETS = Path(__file__).resolve().parent.parent / "static" / "playground"

# The only files served, by name: nothing else under the directory can be reached.
_MEDIA_TYPES = {
    "playground.css": "text/css; charset=utf-8",
    # ES modules: playground.js starts the page and imports the others.
    "playground.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "conversations.js": "text/javascript; charset=utf-8",
    "messages.js": "text/javascript; charset=utf-8",
    "tool-calls.js": "text/javascript; charset=utf-8",
    "composer.js": "text/javascript; charset=utf-8",
    "streaming.js": "text/javascript; charset=utf-8",
    "settings.js": "text/javascript; charset=utf-8",
    "usage.js": "text/javascript; charset=utf-8",
    "models.js": "text/javascript; charset=utf-8",
    "branches.js": "text/javascript; charset=utf-8",
    "conversation-actions.js": "text/javascript; charset=utf-8",
}
# Scripts and styles from this origin only, no inline code: data reaches the page as text.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["playground"], include_in_schema=False)


@router.get("/playground")
async def playground_page() -> FileResponse:
    """The playground page; its script talks to /api/v1 on the same origin."""
    return FileResponse(
        ASSETS / "index.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
    )


@router.get("/playground/static/{name}")
async def playground_asset(name: str) -> FileResponse:
    """One of the page's stylesheet or script; 404 for any other name."""
    media_type = _MEDIA_TYPES.get(name)
    if media_type is None:
        raise HTTPException(404, "no such playground asset")
    return FileResponse(
        ASSETS / name,
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )
