"""structlog set-up: JSON lines in production, readable console lines in development."""

from __future__ import annotations

import importlib.util
import io
import logging
import re
import sys
from typing import Any, TextIO

import structlog
from opentelemetry import trace

from app.core.config import Settings
from app.core.redaction import redact

# Their INFO lines repeat every outgoing URL, query string included; warnings still show.
_QUIETED_LIBRARIES = ("httpx", "httpcore")
# Written by us, never personal data; a request id is 32 hex characters, which looks like a key.
_UNREDACTED_KEYS = frozenset(
    {"timestamp", "level", "logger", "request_id", "trace_id", "span_id", "exc_info"}
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _exception_formatter() -> structlog.typing.ExceptionRenderer:
    """Readable tracebacks without local variables: those hold message text and keys."""
    if importlib.util.find_spec("rich") is not None:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    return structlog.dev.plain_traceback


def add_trace_ids(
    _logger: Any, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The active span's trace and span ids (hex, as tracing backends show them), if any.

    Without tracing no span is ever active, so this is one context-variable read per line.
    """
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(item) for item in value]
    return redact(repr(value))  # what both renderers would print for it


def redact_event(
    _logger: Any, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Masks emails, card numbers, keys, ... in every value: error details and tracebacks too."""
    return {
        key: value if key in _UNREDACTED_KEYS else _redacted(value)
        for key, value in event_dict.items()
    }


def _redacting(formatter: structlog.typing.ExceptionRenderer) -> structlog.typing.ExceptionRenderer:
    """The console's traceback, masked; plain (uncoloured) when masking changed it."""

    def render(sio: TextIO, exc_info: structlog.typing.ExcInfo) -> None:
        buffer = io.StringIO()
        formatter(buffer, exc_info)
        text = buffer.getvalue()
        plain = _ANSI.sub("", text)
        masked = redact(plain)
        sio.write(text if masked == plain else masked)

    return render


def configure_logging(settings: Settings) -> None:
    """Route structlog and the standard library through one renderer.

    Context bound with `structlog.contextvars` (the request id) and the active span's trace id
    appear in every line, including lines from libraries that log through the standard library.
    """
    # The same chain for both formats: loggers cache it on first use, so only the handler's
    # formatter below may differ, or a re-configured process keeps the first format's chain.
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # PII_REDACTION=logs or provider: values are masked after tracebacks are rendered to text.
    redacting = settings.pii_redaction != "off"
    masking: list[structlog.types.Processor] = [redact_event] if redacting else []
    rendering: list[structlog.types.Processor]
    if settings.effective_log_format == "json":
        rendering = [
            structlog.processors.format_exc_info,
            *masking,
            structlog.processors.JSONRenderer(),
        ]
    else:
        formatter = _exception_formatter()
        rendering = [
            *masking,
            structlog.dev.ConsoleRenderer(
                exception_formatter=_redacting(formatter) if redacting else formatter
            ),
        ]

    structlog.configure(
        # filter_by_level first: a line below LOG_LEVEL is dropped before the chain builds it
        # (three lines a turn are INFO; at WARNING each cost the whole chain for nothing).
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
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
