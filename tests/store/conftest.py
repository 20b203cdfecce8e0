"""The migrated-store fixtures of tests/service (SQLite, and PostgreSQL when set)."""

from tests.service.conftest import db_url, engine, session, sessions

__all__ = ["db_url", "engine", "session", "sessions"]
