"""Server-sent events on the wire: FastAPI's framing, the contract's headers, `retry` first."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event

from app.core import metrics
from app.services.streams import RETRY_MS, StreamItem

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_stream(items: AsyncIterator[StreamItem]) -> StreamingResponse:
    """A `text/event-stream` response that opens with `retry:` and then relays `items`."""

    async def frames() -> AsyncIterator[bytes]:
        metrics.OPEN_STREAMS.inc()
        try:
            yield format_sse_event(retry=RETRY_MS)
            async for item in items:
                if item.comment is not None:
                    yield format_sse_event(comment=item.comment)
                else:
                    yield format_sse_event(data_str=item.data, event=item.event, id=item.id)
        finally:
            # Also when Starlette cancels the body because the client left.
            metrics.OPEN_STREAMS.dec()

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)
