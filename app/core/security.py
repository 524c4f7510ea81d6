"""Who is calling: the principal every repository scopes its queries to."""

from __future__ import annotations

from dataclasses import dataclass

ANONYMOUS_USER = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. Admins may act for any user; everyone else only for themselves."""

    user_id: str
    is_admin: bool = False
    # Auth off (development): whoever the request names, else "anonymous".
    trusts_requested_user: bool = False

    def owner_for(self, requested_user_id: str | None) -> str:
        """The owner of a new row: the caller, or for admins the user they name."""
        if (self.is_admin or self.trusts_requested_user) and requested_user_id:
            return requested_user_id
        return self.user_id

    def visible_owner(self, requested_user_id: str | None) -> str | None:
        """The owner a read by id is limited to; `None` means every owner."""
        if self.is_admin or self.trusts_requested_user:
            return requested_user_id
        return self.user_id

    def listing_owner(self, requested_user_id: str | None) -> str | None:
        """Whose rows a listing shows: with auth off, the named user or else "anonymous"."""
        if self.trusts_requested_user:
            return requested_user_id or self.user_id
        return self.visible_owner(requested_user_id)


# With auth off (development only) `user_id` in bodies and queries picks the owner, rows
# without one belong to "anonymous", and listings without one show anonymous's (API.md).
DEVELOPMENT_PRINCIPAL = Principal(user_id=ANONYMOUS_USER, trusts_requested_user=True)
