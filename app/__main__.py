"""`python -m app`: validate configuration, apply migrations, then serve.

`python -m app migrate` only applies migrations.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import structlog
import uvicorn
from pydantic import ValidationError

from app.core.config import ConfigurationError, Settings, describe_invalid_settings
from app.core.logging import configure_logging
from app.core.metrics import MULTIPROC_DIR_VARIABLE
from app.db.migrations import upgrade_to_head
from app.providers.setup import build_registry
from app.services.pricing.price_book import build_price_book

log = structlog.get_logger("app.startup")


def main(argv: list[str]) -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_invalid_settings(error), file=sys.stderr)  # noqa: T201
        return 2
    # Before anything logs: with LOG_FORMAT=json every line, the first included, is JSON.
    configure_logging(settings)
    try:
        # Providers are checked before migrating: a bad DEFAULT_PROVIDER changes nothing.
        registry = build_registry(settings, build_price_book(settings).context_window)
    except ConfigurationError as error:
        print(f"invalid configuration: {error}", file=sys.stderr)  # noqa: T201
        return 2
    # Said here, once per start: each worker builds its own registry again, silently.
    for message, fields in registry.startup_warnings():
        log.warning(message, **fields)
    upgrade_to_head(settings)
    if argv[:1] == ["migrate"]:
        return 0
    prepare_metrics_directory(settings.web_concurrency)
    raise_open_file_limit()
    uvicorn.run(
        "app.main:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        log_config=None,  # structlog owns logging; see app.core.logging
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
        # uvicorn listens with a backlog of 2048: a burst of more connections than that
        # (thousands of clients opening streams at once) has the rest reset at connect.
        # The kernel caps it at net.core.somaxconn (4096 on current Linux).
        backlog=4096,
    )
    return 0


def raise_open_file_limit() -> None:
    """Let the process (and the workers it starts, which inherit it) open as many files as
    the system allows it, not the shell's usual soft limit of 1,024.

    Every open stream holds two sockets, the client's and its provider's: at the soft limit a
    worker would stop accepting connections after ~500 streams. Raising the soft limit up to
    the hard one needs no privilege; servers such as nginx and Go's runtime do the same.
    """
    try:
        import resource  # noqa: PLC0415 - Unix only
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def prepare_metrics_directory(workers: int) -> None:
    """Let `/metrics` add up every worker's values, whichever worker answers the scrape.

    prometheus_client's multiprocess mode keeps each worker's values in files under
    `PROMETHEUS_MULTIPROC_DIR`. A directory given by the operator is emptied first (files
    of an earlier run would be counted again); with several workers and none given, a private
    one is made for this run and removed at exit. Workers read the variable when they start.
    """
    given = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    elif workers > 1:
        private = tempfile.mkdtemp(prefix="chat-api-metrics-")
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        os.environ[MULTIPROC_DIR_VARIABLE] = private


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
