"""docs/configuration.md lists every setting of `Settings`, each with its real default."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_core import PydanticUndefined

from app.core.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PAGE = PROJECT_ROOT / "docs" / "configuration.md"
# Read by a library rather than by `Settings`, and documented beside the settings.
NOT_SETTINGS = {"PROMETHEUS_MULTIPROC_DIR"}
ROW = re.compile(r"^\| `(?P<name>[A-Z0-9_]+)` \| (?P<default>[^|]+) \|", re.MULTILINE)


def documented_defaults() -> dict[str, str]:
    return {row["name"]: row["default"].strip() for row in ROW.finditer(PAGE.read_text())}


def default_as_documented(name: str) -> str:
    """How the page writes a field's default: `value`, "unset" for None, "empty" for []."""
    field = Settings.model_fields[name]
    default = field.default
    if default is PydanticUndefined and field.default_factory is not None:
        default = field.default_factory()  # type: ignore[call-arg]
    if default is None:
        return "unset"
    if default in ([], {}):
        return "empty"
    return f"`{default}`"


class TestConfigurationPage:
    def test_every_setting_is_on_the_page(self) -> None:
        documented = set(documented_defaults())
        missing = {name.upper() for name in Settings.model_fields} - documented
        assert not missing, f"settings missing from docs/configuration.md: {sorted(missing)}"

    def test_the_page_names_no_setting_that_does_not_exist(self) -> None:
        known = {name.upper() for name in Settings.model_fields} | NOT_SETTINGS
        unknown = set(documented_defaults()) - known
        assert not unknown, f"docs/configuration.md names unknown settings: {sorted(unknown)}"

    def test_every_default_on_the_page_is_the_real_one(self) -> None:
        documented = documented_defaults()
        wrong = {
            name.upper(): (documented[name.upper()], default_as_documented(name))
            for name in Settings.model_fields
            if documented.get(name.upper()) != default_as_documented(name)
        }
        assert not wrong, f"(documented, real) defaults differ: {wrong}"
