"""What every admin-facing store module shares: the errors a request can meet, the row conversions to
JSON-ready dicts, and "the one row, or NotFound".

The HTTP layer (`worker.admin.errors.from_store`) and the console map `StoreError` to a status once: NotFound
404, Conflict 409, InvalidReference 400 naming the field.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from worker.store import Conn, Pool

Row = asyncpg.Record | Mapping[str, Any]


class StoreError(Exception):
    """A request the data does not allow; `str(error)` is the operator-facing message."""


class NotFound(StoreError):
    """The resource named by the request path does not exist."""


class Conflict(StoreError):
    """The request contradicts the current state (duplicate, mapping conflict, not enabled …)."""


class InvalidReference(StoreError):
    """A body field refers to something that does not exist."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class PoolQueries:
    """The base of the admin store's resource classes: stateless apart from the pool it is given."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> Pool:
        """The pool this store runs on (the preview, an engine function, reads through it)."""
        return self._pool


async def one(on: Conn | Pool, what: str, sql: str, *args: Any) -> asyncpg.Record:
    """The row `sql` selects, or NotFound("no <what>")."""
    row = await on.fetchrow(sql, *args)
    if row is None:
        raise NotFound(f"no {what}")
    return row


# ---- conversions -----------------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """A column value as JSON carries it: UUIDs and times as text."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def record(row: Row, *, json_fields: Sequence[str] = ()) -> dict[str, Any]:
    """A row as a JSON-ready dict; `json_fields` (read as `::text`) decoded."""
    out = {key: plain(value) for key, value in row.items()}
    for key in json_fields:
        out[key] = json.loads(out[key]) if out[key] is not None else None
    return out


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def dumps(value: Any) -> str:
    """Compact JSON, written as `$n::text::jsonb` (works with or without the pool's jsonb codec)."""
    return json.dumps(value, separators=(",", ":"))
