"""Input types whose values the database can always store, refused with a 422 when not.

PostgreSQL refuses some values Python accepts: NUL and lone surrogates in text, instants
outside years 1..9999 once moved to UTC, integers beyond 64 bits, and JSON holding `NaN`,
`Infinity` or `\\u0000`. Letting them through turns a client's mistake into a 500, so every text
field, instant and JSON document the API takes goes through one of the types here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator

from app.errors import Unprocessable

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# C0 and C1 controls (tab, LF and CR are allowed in multi-line text only) and lone surrogates.
_MULTI_LINE_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_SINGLE_LINE_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _describe(char: str) -> str:
    return f"U+{ord(char):04X}"


def single_line(value: str) -> str:
    """Text of one line: no control characters (tab and newlines included), no surrogates."""
    bad = _SINGLE_LINE_BAD.search(value)
    if bad:
        raise ValueError(f"control character {_describe(bad.group())} is not allowed here")
    return value


def multi_line(value: str) -> str:
    """Free text: tab, LF and CR allowed; other control characters and surrogates are not."""
    bad = _MULTI_LINE_BAD.search(value)
    if bad:
        raise ValueError(f"control character {_describe(bad.group())} is not allowed here")
    return value


def in_range(value: dt.datetime) -> dt.datetime:
    """The instant in UTC (naive values are taken as UTC), if it has a year 1..9999 there."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("out of range: in UTC it must fall in the years 1 to 9999") from None


def ordered_period(start: dt.datetime | None, end: dt.datetime | None) -> None:
    """Refuse a period `[from, to)` whose end is not after its start (a swapped pair)."""
    if start is not None and end is not None and end <= start:
        raise Unprocessable(
            "the period ends before it starts: `to` must be after `from`",
            details=[{"field": "query.to", "message": "must be after `from`"}],
        )


SingleLine = Annotated[str, AfterValidator(single_line)]
MultiLine = Annotated[str, AfterValidator(multi_line)]
Instant = Annotated[dt.datetime, AfterValidator(in_range)]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:20]} is out of range")
    return number


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 30:
        raise ValueError(f"integer {text[:20]}… has more than 30 digits")
    return int(text)


def _check_tree(value: Any, *, max_depth: int, depth: int = 0) -> None:
    if depth > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    if isinstance(value, str):
        if "\x00" in value or re.search("[\ud800-\udfff]", value):
            raise ValueError("text holds NUL or a lone surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_tree(key, max_depth=max_depth, depth=depth)
            _check_tree(item, max_depth=max_depth, depth=depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_tree(item, max_depth=max_depth, depth=depth + 1)


def json_object(text: str, *, max_bytes: int, max_depth: int = 32) -> dict[str, Any]:
    """Parse a JSON object that PostgreSQL's jsonb can store; ValueError says why not.

    Refused: more than `max_bytes` of UTF-8, invalid JSON, `NaN` and `Infinity`, numbers that
    overflow a double, integers of more than 30 digits, NUL or lone surrogates in any string,
    and nesting deeper than `max_depth`.
    """
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes")
    # Depth is bounded before parsing too: the parser recurses once per level.
    if max(text.count("["), text.count("{")) > max_depth and _raw_depth(text) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    try:
        parsed = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite, parse_int=_bounded_int
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    if not isinstance(parsed, dict):
        raise ValueError("must be a JSON object")
    _check_tree(parsed, max_depth=max_depth)
    return parsed


def _raw_depth(text: str) -> int:
    """Deepest bracket nesting, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
