"""`python -m app.cli keys create|list|revoke`: issue and manage API keys.

Settings (DATABASE_URL) come from the environment or `.env`, like the service's own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from app.core.config import Settings, describe_invalid_settings
from app.db.models import ApiKey
from app.db.session import create_engine, make_sessionmaker
from app.services.access import api_keys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__)
    groups = parser.add_subparsers(dest="group", required=True)
    keys = groups.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="issue a key; it is printed once, never stored")
    create.add_argument("--user", required=True, help="the user id the key acts as")
    create.add_argument("--admin", action="store_true", help="may act for any user")
    create.add_argument("--name", help="a label shown in listings")
    listing = keys.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--user", help="only this user's keys")
    revoke = keys.add_parser("revoke", help="revoke a key by id or shown prefix")
    revoke.add_argument("key", help="the key's id or its prefix from `keys list`")
    return parser


def _row(key: ApiKey) -> str:
    state = "revoked" if key.revoked_at is not None else "active"
    last_used = key.last_used_at.isoformat() if key.last_used_at else "never"
    return "\t".join(
        [
            str(key.id),
            key.prefix,
            key.user_id,
            "admin" if key.is_admin else "user",
            key.name or "",
            state,
            key.created_at.isoformat(),
            last_used,
        ]
    )


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    engine = create_engine(settings)
    try:
        async with make_sessionmaker(engine)() as session:
            if args.action == "create":
                key, secret = await api_keys.issue(
                    session, user_id=args.user, is_admin=args.admin, name=args.name
                )
                await session.commit()
                print(f"created key {key.id} ({key.prefix}) for {key.user_id}", file=sys.stderr)  # noqa: T201
                print(secret)  # noqa: T201 — the only time the key is shown
                return 0
            if args.action == "list":
                print("id\tprefix\tuser\trole\tname\tstate\tcreated_at\tlast_used_at")  # noqa: T201
                for key in await api_keys.list_keys(session, args.user):
                    print(_row(key))  # noqa: T201
                return 0
            matches: Sequence[ApiKey] = await api_keys.revoke(session, args.key)
            await session.commit()
            if not matches:
                print(f"no key matches {args.key!r}", file=sys.stderr)  # noqa: T201
                return 1
            if len(matches) > 1:
                print(f"{len(matches)} keys match {args.key!r}; use the id", file=sys.stderr)  # noqa: T201
                return 1
            print(f"revoked key {matches[0].id} ({matches[0].prefix})")  # noqa: T201
            return 0
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_invalid_settings(error), file=sys.stderr)  # noqa: T201
        return 2
    return asyncio.run(_run(settings, args))


if __name__ == "__main__":
    sys.exit(main())
