"""structlog set-up: JSON lines in production, readable console lines in development."""

from __future__ import annotations

import importlib.util
import logging
import sys

import structlog

from app.core.config import Settings

# Their INFO lines repeat every outgoing URL, query string included; warnings still show.
_QUIETED_LIBRARIES = ("httpx", "httpcore")


def _exception_formatter() -> structlog.typing.ExceptionRenderer:
    """Readable tracebacks without local variables: those hold message text and keys."""
    if importlib.util.find_spec("rich") is not None:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    return structlog.dev.plain_traceback


def configure_logging(settings: Settings) -> None:
    """Route structlog and the standard library through one renderer.

    Context bound with `structlog.contextvars` (the request id) appears in every line,
    including lines from libraries that log through the standard library.
    """
    # The same chain for both formats: loggers cache it on first use, so only the handler's
    # formatter below may differ, or a re-configured process keeps the first format's chain.
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list[structlog.types.Processor]
    if settings.effective_log_format == "json":
        rendering = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        rendering = [structlog.dev.ConsoleRenderer(exception_formatter=_exception_formatter())]

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in _QUIETED_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # Our middleware writes the access line (with the request id); uvicorn's would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
