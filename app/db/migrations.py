"""Apply Alembic migrations from code, so `make run` needs no separate step."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command
from app.core.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(settings: Settings) -> None:
    if (path := settings.sqlite_path) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.database_url), "head")
