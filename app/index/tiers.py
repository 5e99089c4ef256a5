"""Which index a catalogue of n segments gets, when the service chooses (`index_factory=auto`).

Four kinds, by segment count:

* ``Flat``: exact search. Best below some 50k segments, where a check's ~225 query vectors
  compared with every stored one still answer in a few milliseconds.
* ``IVF{nlist},SQ8``: an inverted file over 8-bit scalar-quantised codes (a quarter of the
  float32 memory), from ``ivf_from`` segments.
* ``IVF{nlist},PQ{dim/2}x4fs,Refine(SQ8)``: 4-bit product codes scanned with SIMD lookups, the
  best ``4·k`` of each search re-ranked on SQ8 codes kept beside them
  (`app.index.reranked`), from ``rerank_from`` segments. About the memory of SQ8 (both codes,
  no hashtable). It has a quarter of the lists (`RERANK_LIST_DIVISOR`) and probes four
  times as many as SQ8 would at that count (per list probed it took a fifth to a seventh
  of SQ8's time, re-ranking included, so four is on the safe side). Measured on real music
  (`bench/index.py --data music`, one key-scan search): at 1M segments recall@10 0.82 in
  38 ms where SQ8 at its nprobe gives 0.63 in 32 ms; at 10M 0.83 in 110 ms where SQ8 gives
  0.75 in 261 ms (README, Scale; with 4,096 and 16,384 lists, before the divisor).
* ``OPQ{m},IVF{nlist},PQ{m}``: rotated product-quantised codes of ``m`` bytes each, from
  ``pq_from`` segments (tens of millions), where even SQ8 codes outgrow one machine's memory.
  Measured at 3M segments (`bench/index.py --options opq-ivf-pq`), m = dim/4 reached only
  recall@10 0.38-0.46 against exact search: raise ``pq_from`` to stay on the re-ranked tier
  until longer codes or re-ranking of PQ have been measured (see the README's Scale section).

``nlist`` is about 4·√n lists (a quarter of that in the re-ranked tier), rounded to a power
of two (so a tier holds until the catalogue has grown fourfold) and kept between 64 and
65,536; ``nprobe`` is 16 at 4,096 lists, the setting `bench/index.py` measured at recall@10
≥ 0.95 on a million synthetic segments (0.63 on real music, hence the re-ranked tier from a
million), and grows as √nlist (`nprobe_for`).

A tier is only ever left upwards while the service runs (`is_upgrade`): withdrawals that
shrink the catalogue below a boundary do not make it retrain back and forth.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

__all__ = ["AUTO", "IndexChoice", "TierPolicy", "choose", "is_upgrade", "rank"]

AUTO: Final = "auto"
MIN_NLIST: Final = 64
MAX_NLIST: Final = 65_536
_KIND_RANK: Final = {"Flat": 0, "IVF-SQ8": 1, "IVF-PQfs-SQ8": 2, "IVF-PQ": 3}
# Lists probed by the re-ranked fast-scan tier, relative to SQ8's.
RERANK_PROBE_FACTOR: Final = 4
# The re-ranked tier has a quarter of the lists `nlist_for` gives (about √n), probed at half
# the count (`nprobe_for` grows as √nlist): a larger share of fewer, longer lists finds as
# much, for a cheaper coarse step (every query row against every centroid) and a faster
# build. Measured on real music (README, Scale): at 1M, recall@10 0.81 either way, 21 ms a
# search on two threads against 29; at 10M, 0.83 either way, 38 ms against 44, and the
# inverted file built in 89 s instead of 511.
RERANK_LIST_DIVISOR: Final = 4
_IVF: Final = re.compile(r"(?:^|,)IVF(\d+)(?:,|$)")


@dataclass(frozen=True, slots=True)
class TierPolicy:
    """Segment counts at which the next kind of index starts."""

    ivf_from: int = 50_000
    rerank_from: int = 1_000_000
    pq_from: int = 20_000_000


@dataclass(frozen=True, slots=True)
class IndexChoice:
    """A factory string and the search parameters meant for it."""

    factory: str
    search_params: str
    segments: int


def nlist_for(segments: int) -> int:
    """About 4·√segments inverted lists, the nearest power of two in [MIN_NLIST, MAX_NLIST]."""
    target = 4.0 * math.sqrt(max(1, segments))
    power: int = 2 ** round(math.log2(target))
    return max(MIN_NLIST, min(MAX_NLIST, power))


def nprobe_for(nlist: int) -> int:
    """Lists probed: 16 at 4,096 lists (measured at 1M segments), growing as √nlist.

    Probing a fixed share of the lists would make the codes scanned grow with the catalogue;
    √nlist keeps a check's work growing as the square root of the segment count instead.
    """
    return max(8, round(16 * math.sqrt(nlist / 4096)))


def _divisor_at_most(dim: int, m: int) -> int:
    """The largest divisor of `dim` that is at most `m` (and at least 1): sub-quantizers must
    split the vector evenly."""
    m = max(1, m)
    while dim % m:
        m -= 1
    return m


def pq_bytes(dim: int) -> int:
    """PQ code size: one byte per 4 dimensions, at most 64, and a divisor of dim."""
    return _divisor_at_most(dim, min(64, dim // 4))


def fast_scan_subquantizers(dim: int) -> int:
    """4-bit sub-quantizers: one per two dimensions (32 bytes a code at 128), a divisor of dim."""
    return _divisor_at_most(dim, dim // 2)


def choose(segments: int, dim: int, policy: TierPolicy) -> IndexChoice:
    """The index for a catalogue of `segments` stored segments of dimension `dim`."""
    if segments < policy.ivf_from:
        return IndexChoice("Flat", "", segments)
    nlist = nlist_for(segments)
    params = f"nprobe={nprobe_for(nlist)}"
    if segments < min(policy.rerank_from, policy.pq_from):
        return IndexChoice(f"IVF{nlist},SQ8", params, segments)
    if segments < policy.pq_from:
        nlist = max(MIN_NLIST, nlist // RERANK_LIST_DIVISOR)
        params = f"nprobe={RERANK_PROBE_FACTOR * nprobe_for(nlist)}"
        return IndexChoice(
            f"IVF{nlist},PQ{fast_scan_subquantizers(dim)}x4fs,Refine(SQ8)", params, segments
        )
    m = pq_bytes(dim)
    return IndexChoice(f"OPQ{m},IVF{nlist},PQ{m}", params, segments)


def rank(factory: str) -> tuple[int, int]:
    """Orders factories of the auto tiers: by kind, then by number of lists."""
    found = _IVF.search(factory)
    nlist = int(found.group(1)) if found else 0
    if found is None:
        return (_KIND_RANK["Flat"], 0)
    kind = "IVF-SQ8"
    if "Refine(" in factory:
        kind = "IVF-PQfs-SQ8"
    elif ",PQ" in factory:
        kind = "IVF-PQ"
    return (_KIND_RANK[kind], nlist)


def is_upgrade(current: str, wanted: str) -> bool:
    """True when `wanted` is a later tier than `current` (retraining is worth it)."""
    return rank(wanted) > rank(current)
