"""Where ids sit in a sorted array of unique ids, found from their values.

Both the index manager (segment id -> track and start time) and the re-ranked index
(segment id -> row of its codes) keep ids in one sorted array, not a hashtable: ids arrive
in increasing order, and a hashtable of ten million entries would take several times the 80
MB the sorted ids do. One search call looks up thousands of ids at once (a key scan's 228
rows x 80 candidates to re-rank: 18,240). A plain binary search (`np.searchsorted`) misses
the cache at most of its ~23 steps over those 80 MB: 18 ms for the 18,240 ids at 10M, 5 ms
when they are sorted first.

Segment ids come from one database sequence and a track's segments are written together, so
the stored ids are mostly consecutive. `locate` therefore looks for an id first where it
would be if there were no gaps at all (one memory access: 0.3 ms for those 18,240 ids);
the ones not there (every id after a withdrawn track's, say) in the bucket of `STRIDE` rows
that the anchors (every `STRIDE`-th id, small enough to stay in cache) name: first where the
bucket would hold it without gaps, then by a binary search inside it, a few cache lines wide
(2.5 ms for the same ids with one gap near the start).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["STRIDE", "anchors", "locate"]

IdArray = npt.NDArray[np.int64]

STRIDE: Final = 128
"""Rows per bucket: 1 KB of ids, so a binary search within one stays in a few cache lines."""


def anchors(stored: IdArray) -> IdArray:
    """Every `STRIDE`-th id of `stored`: the first id of each bucket (80 KB per million)."""
    return stored[::STRIDE].copy()


def locate(
    stored: IdArray, wanted: IdArray, anchor_ids: IdArray
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Position of each wanted id in `stored`, and whether it is there at all.

    stored : unique ids in increasing order
    wanted : ids of any shape (negative ones, FAISS's empty slots, are never found)
    anchor_ids : `anchors(stored)`, computed once per change of `stored`
    Returns positions of `wanted`'s shape (some valid position where the id is absent) and
    the mask of the ids found.
    """
    n = stored.size
    flat = wanted.ravel()
    if n == 0 or flat.size == 0:
        return np.zeros(wanted.shape, dtype=np.intp), np.zeros(wanted.shape, dtype=bool)
    rows = np.clip(flat - stored[0], 0, n - 1)
    missed = np.flatnonzero(stored[rows] != flat)
    if missed.size:
        rows[missed] = _bucket_search(stored, flat[missed], anchor_ids)
    rows = rows.reshape(wanted.shape).astype(np.intp, copy=False)
    return rows, (wanted >= 0) & (stored[rows] == wanted)


def _bucket_search(stored: IdArray, wanted: IdArray, anchor_ids: IdArray) -> IdArray:
    """For each wanted id, the first position whose id is not below it (clipped to the last):
    where the bucket the anchors name would hold it without gaps, else a binary search
    inside that bucket. The ids are taken in sorted order, so the anchors are read in one
    direction."""
    n = stored.size
    order = np.argsort(wanted, kind="stable")
    keys = wanted[order]
    bucket = np.maximum(np.searchsorted(anchor_ids, keys, side="right") - 1, 0)
    lo = bucket * STRIDE
    hi = np.minimum(lo + STRIDE, n)
    # Ids increase strictly, so an id is never further into its bucket than this.
    guess = np.clip(lo + (keys - anchor_ids[bucket]), lo, hi - 1)
    there = stored[guess] == keys
    lo = np.where(there, guess, lo)
    hi = np.where(there, guess, hi)
    while True:
        open_ = lo < hi
        if not open_.any():
            break
        mid = np.minimum((lo + hi) // 2, n - 1)
        below = open_ & (stored[mid] < keys)
        lo = np.where(below, mid + 1, lo)
        hi = np.where(open_ & ~below, mid, hi)
    rows = np.empty_like(lo)
    rows[order] = np.minimum(lo, n - 1)
    return rows
