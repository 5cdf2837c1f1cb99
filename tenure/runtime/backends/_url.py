"""Backend URLs: which implementation one names, and how to show it without its password."""

from __future__ import annotations

__all__ = ["is_postgres", "redact"]


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL backend."""
    return url.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password (errors and logs never carry credentials)."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, userinfo = head.partition("://")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}@{tail}"
