"""Keyset pagination: stable pages over growing tables, with opaque cursors."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

import sqlalchemy as sa
from fastapi import Query
from pydantic import BaseModel
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.errors import Unprocessable
from app.validation import INT64_MAX, in_range, single_line

T = TypeVar("T")
Row = TypeVar("Row")

MAX_LIMIT = 500

LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=1024, description="`next_cursor` of the previous page; omit for the first."),
]


class Page(BaseModel, Generic[T]):
    """One page of results; pass `next_cursor` back to get the next page (null at the end)."""

    items: list[T]
    next_cursor: str | None


def _encode(values: Sequence[Any]) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, dt.datetime) else str(v) for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str, columns: Sequence[InstrumentedAttribute[Any]]) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(raw, list) or len(raw) != len(columns):
            raise ValueError("wrong arity")
        return [_parse(value, column) for value, column in zip(raw, columns, strict=True)]
    except (ValueError, TypeError, OverflowError, binascii.Error, json.JSONDecodeError):
        raise Unprocessable(
            "malformed cursor", details=[{"field": "query.cursor", "message": "malformed cursor"}]
        ) from None


def _instant(value: str) -> dt.datetime:
    return in_range(dt.datetime.fromisoformat(value))


def _bigint(value: str) -> int:
    number = int(value)
    if not -INT64_MAX - 1 <= number <= INT64_MAX:
        raise ValueError("out of range")
    return number


def _parse(value: Any, column: InstrumentedAttribute[Any]) -> Any:
    if not isinstance(value, str):
        raise TypeError("cursor values are strings")
    python_type = column.type.python_type
    parsers: dict[type, Callable[[str], Any]] = {
        dt.datetime: _instant,
        uuid.UUID: uuid.UUID,
        int: _bigint,
    }
    return parsers.get(python_type, single_line)(value)


def paginate(
    session: Session,
    stmt: sa.Select[Row],
    *,
    order_by: Sequence[InstrumentedAttribute[Any]],
    cursor: str | None,
    limit: int,
    descending: bool = True,
) -> tuple[list[Row], str | None]:
    """Run `stmt` ordered by `order_by` (unique together), from `cursor`, at most `limit` rows."""
    if cursor is not None:
        after = _decode(cursor, order_by)
        key = sa.tuple_(*order_by)
        stmt = stmt.where(key < sa.tuple_(*after) if descending else key > sa.tuple_(*after))
    ordering = [c.desc() if descending else c.asc() for c in order_by]
    rows = list(session.scalars(stmt.order_by(*ordering).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, _encode([getattr(last, c.key) for c in order_by])
