"""A fast inverted file whose candidates are re-ranked on finer codes, and which can remove.

``IVF16384,PQ64x4fs`` scans 4-bit product codes with SIMD table lookups: a fifth to a
seventh of the time 8-bit scalar codes take per list probed, re-ranking included (1M and 10M
music segments, `bench/index.py`), but too coarse to order near-ties (at 10M music
segments its recall@10 stops at 0.53). Re-ranking its best ``k · k_factor`` candidates on
8-bit scalar codes of the same vectors restores the order (recall 0.83 at nprobe 128, where
``IVF16384,SQ8`` needs nprobe 64 and three times the time; see the README's Scale section).

FAISS has this as ``IndexRefine``, which cannot remove vectors: it pairs its two indexes by
position. The service must drop withdrawn tracks, so `RerankedIndex` pairs them by id
instead:

* ``base``: the inverted file (``IVF…,PQ…x4fs`` or any other IVF), holding the ids natively,
  without a direct map (fast-scan lists can remove only without one).
* ``store``: ``IndexIDMap(<flat codes>)``, e.g. SQ8 codes in insertion order, their ids in
  ``id_map``. Ids are added in increasing order (the index manager adds segments by
  increasing id), and removal keeps the order, so ``id_map`` stays sorted and an id's row is
  found from its value (`RerankedIndex._rows`): no hashtable of ten million entries.

It offers the part of the ``faiss.Index`` interface the service uses (``d``, ``ntotal``,
``is_trained``, ``train``, ``add_with_ids``, ``remove_ids``, ``search``, ``reconstruct``),
and one-file serialisation (`write` / `read`), so `app.index.factory` treats it like any
other index. The factory string is FAISS's own: ``"IVF16384,PQ64x4fs,Refine(SQ8)"``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, BinaryIO, Final

import faiss
import numpy as np
import numpy.typing as npt

from app.index import sorted_ids

__all__ = ["MAGIC", "RerankedIndex", "is_reranked_file", "split_factory"]

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

_faiss: Any = faiss

# A file written by `RerankedIndex.write` starts with this (FAISS's own files start with a
# four-letter code such as "IwFl" or "IxM2"), then a line of JSON, then the two indexes.
MAGIC: Final = b"echoledger-reranked-index\n"
_FORMAT: Final = 1
_REFINE: Final = re.compile(r"^(?P<base>.+),\s*Refine\((?P<store>[^()]+)\)\s*$")
# What FAISS returns for an empty result slot of an inner-product search.
_EMPTY_SIM: Final = np.float32(-np.finfo(np.float32).max)
_IO_CHUNK: Final = 1 << 22


def split_factory(spec: str) -> tuple[str, str] | None:
    """``"IVF…,PQ…,Refine(SQ8)"`` → ``("IVF…,PQ…", "SQ8")``; None for any other string."""
    found = _REFINE.match(spec.strip())
    if found is None:
        return None
    return found.group("base").strip(), found.group("store").strip()


def is_reranked_file(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(MAGIC)) == MAGIC


class RerankedIndex:
    """An IVF (``base``) whose candidates are re-ranked on an id-mapped code store.

    base : an IVF index holding ids natively, without a direct map (removable)
    store : ``faiss.IndexIDMap`` over an ``IndexFlatCodes`` (``IndexScalarQuantizer``...)
    k_factor : candidates re-ranked per result (``k · k_factor`` from the base)
    """

    metric_type = faiss.METRIC_INNER_PRODUCT

    def __init__(self, base: faiss.Index, store: faiss.IndexIDMap, *, k_factor: int = 4) -> None:
        if base.d != store.d:
            raise ValueError(f"base has dimension {base.d}, store {store.d}")
        self.base = base
        self.store = store
        # The store's inner index, kept for decoding; owned by `store`.
        self._codes_index: Any = faiss.downcast_index(store.index)
        if not isinstance(self._codes_index, faiss.IndexFlatCodes):
            raise ValueError(
                f"the re-ranking store must hold flat codes, not {type(self._codes_index).__name__}"
            )
        self.k_factor = k_factor
        # `sorted_ids.anchors` of the store's ids; dropped by every add and remove (which
        # hold the index alone), computed again by the next search (0.4 ms at 10M).
        self._anchor_ids: IdArray | None = None

    @property
    def k_factor(self) -> int:
        return self._k_factor

    @k_factor.setter
    def k_factor(self, value: float) -> None:
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"k_factor must be an integer >= 1, got {value!r}")
        self._k_factor = int(value)

    @property
    def d(self) -> int:
        return int(self.base.d)

    @property
    def ntotal(self) -> int:
        return int(self.base.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.base.is_trained) and bool(self.store.is_trained)

    def parts(self) -> tuple[faiss.Index, faiss.Index]:
        return self.base, self._codes_index

    # -- the store's rows --------------------------------------------------------------------

    def _ids(self) -> IdArray:
        """The store's ids, sorted, as a view (valid until the next add or remove)."""
        n = int(self.store.ntotal)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        return _faiss.rev_swig_ptr(self.store.id_map.data(), n)  # type: ignore[no-any-return]

    def _codes(self) -> npt.NDArray[np.uint8]:
        """The store's codes [ntotal, code_size], as a view (valid until the next change)."""
        n = int(self.store.ntotal)
        size = int(self._codes_index.code_size)
        if n == 0:
            return np.zeros((0, size), dtype=np.uint8)
        flat = _faiss.rev_swig_ptr(self._codes_index.codes.data(), n * size)
        return flat.reshape(n, size)  # type: ignore[no-any-return]

    def _rows(self, ids: IdArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Row of each id in the store, and whether it is there at all (`sorted_ids`)."""
        stored = self._ids()
        if self._anchor_ids is None:
            self._anchor_ids = sorted_ids.anchors(stored)
        return sorted_ids.locate(stored, ids, self._anchor_ids)

    # -- the faiss.Index part the service uses -----------------------------------------------

    def train(self, x: FloatArray) -> None:
        self.base.train(x)
        self.store.train(x)

    def add_with_ids(self, x: FloatArray, ids: IdArray) -> None:
        """Add rows under ids that increase, and are above every id already stored."""
        if ids.size == 0:
            return
        stored = self._ids()
        if np.any(np.diff(ids) <= 0) or (stored.size and ids[0] <= stored[-1]):
            raise ValueError(
                "a re-ranked index takes ids in increasing order, each above those it holds"
            )
        self.base.add_with_ids(x, ids)
        self.store.add_with_ids(x, ids)
        self._anchor_ids = None

    def remove_ids(self, selector: Any) -> int:
        removed = int(self.base.remove_ids(selector))
        self.store.remove_ids(selector)
        self._anchor_ids = None
        return removed

    def reconstruct(self, key: int) -> FloatArray:
        rows, found = self._rows(np.array([key], dtype=np.int64))
        if not found[0]:
            raise RuntimeError(f"id {key} is not in the index")
        decoded = self._codes_index.sa_decode(self._codes()[rows])
        return np.asarray(decoded[0], dtype=np.float32)

    def search(self, x: FloatArray, k: int) -> tuple[FloatArray, IdArray]:
        """The base's best ``k · k_factor`` per row, re-scored on the store's codes, best k."""
        n = int(x.shape[0])
        wide = k * self._k_factor
        _, candidates = self.base.search(x, wide)
        rows, found = self._rows(candidates)
        sims = np.full((n, wide), -np.inf, dtype=np.float32)
        if found.any():
            # Every slot is decoded (a missing one at some stored row, masked after): one
            # batched product of each query row with its own candidates, a third of the time
            # of gathering the query rows per candidate (at 10M, 228 rows: 0.8 ms, not 2.1).
            decoded = self._codes_index.sa_decode(self._codes()[rows.ravel()])
            products = np.matmul(decoded.reshape(n, wide, -1), x[:, :, None])[:, :, 0]
            sims[found] = products[found]
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(sims, order, axis=1)
        ids = np.take_along_axis(candidates, order, axis=1)
        empty = ~np.isfinite(best)
        best[empty] = _EMPTY_SIM
        ids[empty] = -1
        return best, ids

    # -- one file ----------------------------------------------------------------------------

    def write(self, out: BinaryIO) -> None:
        header = {"format": _FORMAT, "k_factor": self._k_factor}
        out.write(MAGIC)
        out.write(json.dumps(header).encode() + b"\n")
        writer = _faiss.PyCallbackIOWriter(out.write, _IO_CHUNK)
        faiss.write_index(self.base, writer)
        faiss.write_index(self.store, writer)
        del writer

    @classmethod
    def read(cls, source: BinaryIO) -> RerankedIndex:
        if source.read(len(MAGIC)) != MAGIC:
            raise ValueError("not a re-ranked index file")
        header = json.loads(source.readline())
        if header.get("format") != _FORMAT:
            raise ValueError(f"re-ranked index format {header.get('format')!r} is not readable")
        reader = _faiss.PyCallbackIOReader(source.read, _IO_CHUNK)
        base = faiss.read_index(reader)
        store = faiss.read_index(reader)
        del reader
        if not isinstance(store, faiss.IndexIDMap):
            raise ValueError("the re-ranking store of this file has no id map")
        return cls(base, store, k_factor=int(header["k_factor"]))
