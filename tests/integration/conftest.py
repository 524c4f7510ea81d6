"""Fixtures for integration tests that turn authentication on."""

from tests.auth import auth_settings, issue_key

__all__ = ["auth_settings", "issue_key"]
