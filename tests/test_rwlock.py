"""The index's readers-writer lock: searches overlap, changes run alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from app.index.rwlock import ReadWriteLock


def test_readers_overlap() -> None:
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=5)

    def read() -> None:
        with lock.reading():
            inside.wait()  # all three readers are inside at once, or this times out

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not inside.broken


def test_a_writer_waits_for_readers_and_goes_before_later_readers() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    reader_in, release_reader = threading.Event(), threading.Event()

    def first_reader() -> None:
        with lock.reading():
            events.append("reader in")
            reader_in.set()
            release_reader.wait(5)
            events.append("reader out")

    def writer() -> None:
        with lock.writing():
            events.append("writer")

    def late_reader() -> None:
        with lock.reading():
            events.append("late reader")

    first = threading.Thread(target=first_reader)
    first.start()
    assert reader_in.wait(5)
    write = threading.Thread(target=writer)
    write.start()
    _wait_until(lambda: lock._writers_waiting == 1)
    late = threading.Thread(target=late_reader)
    late.start()
    release_reader.set()
    for t in (first, write, late):
        t.join(timeout=10)
    assert events == ["reader in", "reader out", "writer", "late reader"]


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.001)
