"""Who is calling: the principal every repository scopes its queries to."""

from __future__ import annotations

from dataclasses import dataclass

ANONYMOUS_USER = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. Admins may act for any user; everyone else only for themselves."""

    user_id: str
    is_admin: bool = False

    def owner_for(self, requested_user_id: str | None) -> str:
        """The owner of a new row: the caller, or for admins the user they name."""
        if self.is_admin and requested_user_id:
            return requested_user_id
        return self.user_id

    def visible_owner(self, requested_user_id: str | None) -> str | None:
        """The owner a read is limited to; `None` means every owner (admins only)."""
        if self.is_admin:
            return requested_user_id
        return self.user_id


# With auth off (development only) the caller is trusted like an admin, so `user_id` in
# bodies and queries picks the owner, and rows without one belong to "anonymous".
DEVELOPMENT_PRINCIPAL = Principal(user_id=ANONYMOUS_USER, is_admin=True)
