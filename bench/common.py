"""Shared by the bench scripts (plain scripts: they set ``sys.path`` and Django up themselves)."""

from __future__ import annotations


def ensure_database(url: str) -> None:
    """Create the Postgres database of ``url`` if it does not exist (before Django connects)."""
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
