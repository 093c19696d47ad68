"""Shared fixtures: a real PostgreSQL server for the results store over a URL (tests/pg_server.py)."""

from pg_server import pg_server, pg_url  # noqa: F401  (pytest finds fixtures by name)
