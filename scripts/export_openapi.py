"""Write the service's OpenAPI document to docs/api/openapi.json for the documentation site.

`make docs-build` runs it before `mkdocs build`, so the rendered API reference is always the
one the code serves at `/openapi.json`. The file is generated, not kept in git.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = PROJECT_ROOT / "docs" / "api" / "openapi.json"


def openapi_document() -> dict[str, object]:
    """The document `GET /openapi.json` serves (the same whatever the settings).

    Building the app opens no database, Redis or provider connection: its lifespan does that.
    """
    sys.path.insert(0, str(PROJECT_ROOT))
    from app.core.config import Settings  # noqa: PLC0415 - after the path is set
    from app.main import create_app  # noqa: PLC0415

    document: dict[str, object] = create_app(Settings(_env_file=None)).openapi()
    return document


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    output: Path = parser.parse_args().output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
