"""What time it is, as one injectable callable.

Everything that dates money (ledger transactions, checks, dispute steps, period closing) reads
the time through a `Clock` handed to it, so tests can move time forward (a dispute's review
window, a month's end) without sleeping. Production uses `system_clock`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    """The current time in UTC."""
    return dt.datetime.now(dt.UTC)
