"""Small, pure helpers around FAISS index creation, training, parameters and search.

Every index made here uses the inner-product metric: stored vectors and queries are
L2-normalised float32, so a similarity is a cosine in [-1, 1].

Ids are int64 segment ids chosen by the caller. Two layouts are used, both with the same
``add_with_ids`` / ``search`` / ``remove_ids`` / ``reconstruct`` interface:

* IVF indexes (``"IVF4096,Flat"``, ``"IVF4096,SQ8"``, ``"OPQ32,IVF4096,PQ32"``...) store ids
  natively in their inverted lists and get a hashtable direct map so ``reconstruct(id)``
  works and ``remove_ids`` stays cheap. They are *not* wrapped in ``IndexIDMap2``:
  ``IndexIDMap*.remove_ids`` assumes the wrapped index renumbers the vectors that remain
  (as flat storage does), but an IVF keeps its internal ids, so after a removal the id map
  and the inverted lists disagree and searches silently return ``-1`` or wrong ids.
* Everything else (``"Flat"``, ``"SQ8"``, ``"PQ32"``, ``"HNSW32"``...) is wrapped in
  ``faiss.IndexIDMap2``, which maps ids to positions and supports ``reconstruct(id)``.

A third layout re-ranks: ``"IVF16384,PQ64x4fs,Refine(SQ8)"`` gives a
`app.index.reranked.RerankedIndex`, a fast-scan inverted file whose candidates are re-scored
on SQ8 codes kept beside it by id (FAISS's own ``IndexRefine`` pairs them by position and
cannot remove). It has the same interface, and is written and read with ``write_index`` /
``read_index`` here rather than FAISS's functions.

HNSW graphs cannot remove vectors; ``create_index`` refuses them unless the caller passes
``require_removal=False`` (the benchmark does, to compare them).

Process-wide tuning (OpenMP threads, the BLAS threshold) lives in `app.index.tuning`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import faiss
import numpy as np
import numpy.typing as npt

from app.index import tuning
from app.index.reranked import RerankedIndex, is_reranked_file, split_factory

__all__ = [
    "Index",
    "IndexCapabilities",
    "IndexSetupError",
    "SearchParams",
    "add",
    "apply_search_params",
    "capabilities",
    "create_index",
    "min_training_size",
    "needs_training",
    "parse_search_params",
    "read_index",
    "recommended_training_size",
    "remove",
    "search",
    "train",
    "write_index",
]

# The type stubs in recent faiss-cpu wheels leave out DirectMap, the IDSelector classes,
# BlockInvertedLists and cvar; older wheels have no stubs at all. Those go through this alias.
_faiss: Any = faiss

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]
SearchParams = dict[str, int | float]
# What `create_index` returns: a FAISS index, or a re-ranked pair of them.
Index = faiss.Index | RerankedIndex

# Parameter names faiss.ParameterSpace understands that are useful at query time, with the
# smallest allowed value. ParameterSpace casts to unsigned and silently wraps negatives.
_SEARCH_PARAM_MIN: Final[Mapping[str, float]] = {
    "nprobe": 1,  # IVF: inverted lists visited per query
    "efSearch": 1,  # HNSW: candidate list size (also an HNSW coarse quantizer's)
    "quantizer_efSearch": 1,  # IVF with an HNSW coarse quantizer
    "max_codes": 0,  # IVF: stop after this many codes (0 = no limit)
    "k_factor": 1,  # IVFPQR: rerank k * k_factor candidates
    "k_factor_rf": 1,  # IndexRefine: rerank k * k_factor_rf candidates
    "ht": 0,  # polysemous Hamming threshold (IVFPQ)
}
_INT_PARAMS: Final = frozenset({"nprobe", "efSearch", "quantizer_efSearch", "max_codes", "ht"})
_PARAM_ITEM: Final = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([^=,\s]+)\s*$")

# faiss k-means prints a warning below this many points per centroid.
_POINTS_PER_CENTROID_WARN: Final = 39
# Floor for the recommended sample: scalar quantizers learn per-dimension ranges, which a
# tiny sample underestimates (values outside are clipped).
_MIN_RECOMMENDED_SAMPLE: Final = 20_000

# "Error in <signature> at /path/file.cpp:123: <message>"
_FAISS_LOCATION: Final = re.compile(r" at \S+?:\d+: ")


class IndexSetupError(ValueError):
    """A factory string, search parameter or training sample is unusable."""


@dataclass(frozen=True, slots=True)
class IndexCapabilities:
    """What an index made by ``create_index`` can do.

    native_ids : the index stores ids itself (IVF family); otherwise it is an IndexIDMap2
    removable : ``remove_ids`` works
    reconstructable : ``reconstruct(id)`` works (lossy for PQ/SQ/PCA codes)
    trained : ready to ``add`` / ``search``
    """

    native_ids: bool
    removable: bool
    reconstructable: bool
    trained: bool


def _faiss_message(exc: BaseException) -> str:
    """The message part of a faiss C++ exception, without the signature and source line."""
    text = " ".join(str(exc).split())
    parts = _FAISS_LOCATION.split(text, maxsplit=1)
    return parts[-1] or type(exc).__name__


def _walk(index: Index) -> Iterator[faiss.Index]:
    """Yield ``index`` and every index nested inside it (wrappers, storages, bases)."""
    stack = list(index.parts()) if isinstance(index, RerankedIndex) else [index]
    while stack:
        node = faiss.downcast_index(stack.pop())
        yield node
        for attr in ("index", "base_index", "refine_index", "storage"):
            child = getattr(node, attr, None)
            if isinstance(child, faiss.Index):
                stack.append(child)


def _native_ivf(index: Index) -> faiss.IndexIVF | None:
    """The IVF index if ``index`` is an IVF, possibly behind vector transforms, else None.

    Only these layouts take ``add_with_ids``/``remove_ids`` directly; an IVF nested in a
    refine wrapper does not.
    """
    if isinstance(index, RerankedIndex):
        return None
    node = faiss.downcast_index(index)
    while isinstance(node, faiss.IndexPreTransform):
        node = faiss.downcast_index(node.index)
    return node if isinstance(node, faiss.IndexIVF) else None


def _selector(index: Index, ids: IdArray) -> Any:
    """An IDSelector over ``ids`` (which must stay alive while it is used).

    IVF hashtable direct maps accept only an IDSelectorArray; elsewhere a hashed
    IDSelectorBatch keeps membership tests O(1).
    """
    ivf = _native_ivf(index)
    if ivf is not None and ivf.direct_map.type == _faiss.DirectMap.Hashtable:
        return _faiss.IDSelectorArray(ids.shape[0], faiss.swig_ptr(ids))
    return _faiss.IDSelectorBatch(ids.shape[0], faiss.swig_ptr(ids))


def _probe_removal(index: Index) -> bool:
    """Whether ``remove_ids`` is implemented, checked by removing nothing from an empty index."""
    none = np.empty(0, dtype=np.int64)
    try:
        index.remove_ids(_selector(index, none))
    except RuntimeError:
        return False
    return True


def create_index(
    factory: str,
    dim: int,
    *,
    require_removal: bool = True,
    require_reconstruct: bool = True,
) -> Index:
    """Build an empty inner-product index that takes int64 ids.

    factory : a faiss index_factory string without "IDMap", e.g. "Flat", "IVF4096,Flat",
        "IVF4096,SQ8", "HNSW32"; or an IVF followed by ",Refine(<flat codes>)", e.g.
        "IVF16384,PQ64x4fs,Refine(SQ8)", for a `RerankedIndex`
    dim : vector dimension (> 0)
    require_removal : refuse index types whose ``remove_ids`` is not implemented (HNSW,
        refine wrappers); the service needs it to withdraw tracks
    require_reconstruct : refuse layouts where ``reconstruct(id)`` cannot work (IVF
        fast-scan, whose block lists cannot keep a hashtable direct map and still remove)

    Returns an index with ``metric_type == METRIC_INNER_PRODUCT`` and ``d == dim``: the
    IVF itself (native ids, hashtable direct map) or a ``faiss.IndexIDMap2``. Check
    ``needs_training`` before adding. Raises IndexSetupError (a ValueError) naming the
    factory string when it is malformed, incompatible with ``dim`` or lacks a required
    capability.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise IndexSetupError(f"dimension must be a positive int, got {dim!r}")
    if not isinstance(factory, str) or not factory.strip():
        raise IndexSetupError(f"index factory string must be a non-empty str, got {factory!r}")
    spec = factory.strip()
    if "IDMap" in spec:
        raise IndexSetupError(
            f"index factory string {factory!r} must not contain IDMap: ids are handled by "
            "create_index"
        )
    refine = split_factory(spec)
    if refine is not None:
        return _create_reranked(factory, dim, *refine)
    inner = _from_factory(dim, spec, f"invalid index factory string {factory!r} for dim={dim}")
    if inner.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexSetupError(
            f"index factory string {factory!r} does not give an inner-product index"
        )

    ivf = _native_ivf(inner)
    if ivf is not None:
        index = inner
        ivf.set_direct_map_type(_faiss.DirectMap.Hashtable)
        reconstructable = True
        removable = _probe_removal(index)
        if not removable:
            # Fast-scan (block) inverted lists can remove only without a direct map.
            ivf.set_direct_map_type(_faiss.DirectMap.NoMap)
            reconstructable = False
            removable = _probe_removal(index)
    else:
        index = faiss.IndexIDMap2(inner)
        reconstructable = True
        removable = _probe_removal(index)

    if require_removal and not removable:
        raise IndexSetupError(
            f"index factory string {factory!r} gives an index without remove_ids "
            "(withdrawn tracks could not be dropped); pass require_removal=False to allow it"
        )
    if require_reconstruct and not reconstructable:
        raise IndexSetupError(
            f"index factory string {factory!r} gives an index without reconstruct(id); "
            "pass require_reconstruct=False to allow it"
        )
    return index


def _from_factory(dim: int, spec: str, problem: str) -> faiss.Index:
    """``faiss.index_factory`` for inner products; its errors as IndexSetupError(problem: why)."""
    try:
        return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexSetupError(f"{problem}: {_faiss_message(exc)}") from exc


def _create_reranked(factory: str, dim: int, base_spec: str, store_spec: str) -> RerankedIndex:
    """An IVF (``base_spec``) re-ranked on id-mapped flat codes (``store_spec``, e.g. SQ8)."""
    base = create_index(base_spec, dim, require_reconstruct=False)
    if isinstance(base, RerankedIndex) or _native_ivf(base) is None:
        raise IndexSetupError(
            f"index factory string {factory!r}: only an inverted file (IVF...) can be re-ranked"
        )
    problem = f"invalid re-ranking codes {store_spec!r} in {factory!r}"
    codes = _from_factory(dim, store_spec, problem)
    if not isinstance(codes, faiss.IndexFlatCodes):
        raise IndexSetupError(
            f"index factory string {factory!r}: re-ranking needs flat codes (SQ8, SQfp16, "
            f"Flat...), not {type(codes).__name__}"
        )
    return RerankedIndex(base, faiss.IndexIDMap(codes))


def capabilities(index: Index) -> IndexCapabilities:
    """Describe an index made by ``create_index`` (or read back with ``read_index``)."""
    if isinstance(index, RerankedIndex):
        return IndexCapabilities(
            native_ids=True, removable=True, reconstructable=True, trained=index.is_trained
        )
    ivf = _native_ivf(index)
    if ivf is not None:
        map_type = ivf.direct_map.type
        has_map = map_type != _faiss.DirectMap.NoMap
        invlists = ivf.invlists
        blocks = invlists is not None and isinstance(
            faiss.downcast_InvertedLists(invlists), _faiss.BlockInvertedLists
        )
        removable = not (blocks and map_type == _faiss.DirectMap.Hashtable) and (
            map_type != _faiss.DirectMap.Array
        )
        return IndexCapabilities(
            native_ids=True,
            removable=removable,
            reconstructable=has_map,
            trained=bool(index.is_trained),
        )
    removable = not any(
        isinstance(node, faiss.IndexHNSW | faiss.IndexRefine | faiss.IndexNSG)
        for node in _walk(index)
    )
    return IndexCapabilities(
        native_ids=False,
        removable=removable,
        reconstructable=isinstance(faiss.downcast_index(index), faiss.IndexIDMap2),
        trained=bool(index.is_trained),
    )


def needs_training(index: Index) -> bool:
    """True until ``train`` has run for an index that learns from data (IVF, PQ, SQ)."""
    return not bool(index.is_trained)


def _centroid_counts(index: Index) -> list[int]:
    """Sizes of the k-means codebooks ``train`` must fit (IVF lists, PQ sub-codebooks)."""
    counts: list[int] = []
    for node in _walk(index):
        if isinstance(node, faiss.IndexIVF):
            counts.append(int(node.nlist))
        pq = getattr(node, "pq", None)
        if isinstance(pq, faiss.ProductQuantizer) and not isinstance(node, faiss.IndexIVFFlat):
            counts.append(int(pq.ksub))
    return counts


def min_training_size(index: Index) -> int:
    """Smallest sample ``train`` accepts: one point per centroid of the largest codebook."""
    return max([1, *_centroid_counts(index)])


def recommended_training_size(index: Index) -> int:
    """Training sample size to aim for.

    39 points per centroid of the largest codebook (below that faiss k-means warns), and
    at least 20,000 so that scalar-quantizer ranges are representative.
    """
    return max(_MIN_RECOMMENDED_SAMPLE, _POINTS_PER_CENTROID_WARN * min_training_size(index))


def _check_vectors(vectors: object, dim: int, what: str) -> FloatArray:
    """Raise ValueError unless ``vectors`` is a C-contiguous float32 array [n, dim]."""
    if not isinstance(vectors, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(vectors).__name__}")
    if vectors.ndim != 2:
        raise ValueError(
            f"{what} must be 2-D [n, {dim}], got shape {vectors.shape}"
            + (" (use vectors[None, :] for one vector)" if vectors.ndim == 1 else "")
        )
    if vectors.dtype != np.float32:
        raise ValueError(f"{what} must be float32, got {vectors.dtype}")
    if vectors.shape[1] != dim:
        raise ValueError(f"{what} have dimension {vectors.shape[1]}, the index expects {dim}")
    if not vectors.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous (use np.ascontiguousarray)")
    return vectors


def _check_ids(ids: object, n: int) -> IdArray:
    if not isinstance(ids, np.ndarray) or ids.dtype != np.int64 or ids.ndim != 1:
        raise ValueError("ids must be a 1-D int64 numpy array")
    if ids.shape[0] != n:
        raise ValueError(f"got {ids.shape[0]} ids for {n} vectors")
    return np.ascontiguousarray(ids)


def train(index: Index, sample: FloatArray) -> None:
    """Train the index's codebooks (IVF centroids, PQ/SQ quantizers) on ``sample``.

    sample : np.ndarray [shape=(n, index.d), dtype=float32], C-contiguous, finite; use
        ``recommended_training_size(index)`` rows or more (faiss subsamples above 256 points
        per IVF centroid). A no-op for an index that needs no training.

    Raises IndexSetupError if the sample has fewer rows than ``min_training_size(index)``
    (k-means needs at least one point per centroid) or is not finite; ValueError on a
    wrong shape or dtype; IndexSetupError if vectors were already added.
    """
    _check_vectors(sample, int(index.d), "training sample")
    if not needs_training(index):
        return
    if int(index.ntotal) > 0:
        raise IndexSetupError("cannot train an index that already holds vectors")
    need = min_training_size(index)
    n = int(sample.shape[0])
    if n < need:
        raise IndexSetupError(
            f"training sample has {n} vectors; this index needs at least {need} "
            f"(one per centroid, {recommended_training_size(index)} recommended)"
        )
    if not np.isfinite(sample).all():
        raise IndexSetupError("training sample contains NaN or infinite values")
    try:
        index.train(sample)
    except RuntimeError as exc:
        raise IndexSetupError(f"training failed: {_faiss_message(exc)}") from exc
    if needs_training(index):  # pragma: no cover - faiss contract
        raise IndexSetupError("index still reports is_trained=False after training")


def add(index: Index, vectors: FloatArray, ids: IdArray) -> None:
    """Add ``vectors`` [n, index.d] float32 under int64 ``ids`` [n].

    Ids are not checked for duplicates: adding an id twice keeps both vectors and the
    later one wins for ``reconstruct``. Raises ValueError on bad shapes/dtypes or an
    untrained index.
    """
    _check_vectors(vectors, int(index.d), "vectors")
    ids = _check_ids(ids, int(vectors.shape[0]))
    if needs_training(index):
        raise ValueError("index is not trained; call train() first")
    index.add_with_ids(vectors, ids)


def remove(index: Index, ids: IdArray) -> int:
    """Remove every vector stored under one of ``ids`` [m] int64; returns how many went.

    Raises IndexSetupError if the index type cannot remove (see ``capabilities``).
    """
    if not isinstance(ids, np.ndarray) or ids.dtype != np.int64 or ids.ndim != 1:
        raise ValueError("ids must be a 1-D int64 numpy array")
    try:
        ids = np.ascontiguousarray(ids)
        return int(index.remove_ids(_selector(index, ids)))
    except RuntimeError as exc:
        raise IndexSetupError(f"cannot remove ids: {_faiss_message(exc)}") from exc


def parse_search_params(spec: str | Mapping[str, int | float] | None) -> SearchParams:
    """Parse a setting like ``"nprobe=32"`` or ``"nprobe=32,efSearch=128"``.

    Accepts an already-parsed mapping too; None or "" gives {}. Known names: nprobe,
    efSearch, quantizer_efSearch, max_codes, k_factor, k_factor_rf, ht. Values are ints
    except k_factor*. Raises IndexSetupError quoting the setting on malformed text, an
    unknown name, a duplicate or an out-of-range value.
    """
    if spec is None:
        return {}
    items: list[tuple[str, str | int | float]]
    if isinstance(spec, str):
        items = []
        for part in spec.split(","):
            if not part.strip():
                if spec.strip():
                    raise IndexSetupError(f"empty item in search params {spec!r}")
                continue
            m = _PARAM_ITEM.match(part)
            if m is None:
                raise IndexSetupError(
                    f"cannot parse {part.strip()!r} in search params {spec!r}; "
                    "expected name=value[,name=value...]"
                )
            items.append((m.group(1), m.group(2)))
    else:
        items = list(spec.items())

    out: SearchParams = {}
    for name, raw in items:
        if name not in _SEARCH_PARAM_MIN:
            raise IndexSetupError(
                f"unknown search parameter {name!r} in {spec!r}; "
                f"known: {', '.join(sorted(_SEARCH_PARAM_MIN))}"
            )
        if name in out:
            raise IndexSetupError(f"search parameter {name!r} given twice in {spec!r}")
        value: int | float
        try:
            if isinstance(raw, bool):
                raise ValueError(raw)
            if name in _INT_PARAMS:
                if isinstance(raw, float) and not raw.is_integer():
                    raise ValueError(raw)
                value = int(raw)
            else:
                value = float(raw)
        except ValueError:
            kind = "an integer" if name in _INT_PARAMS else "a number"
            raise IndexSetupError(
                f"search parameter {name}={raw!r} in {spec!r} is not {kind}"
            ) from None
        if not math.isfinite(value) or value < _SEARCH_PARAM_MIN[name]:
            raise IndexSetupError(
                f"search parameter {name}={raw!r} in {spec!r} must be >= {_SEARCH_PARAM_MIN[name]}"
            )
        out[name] = value
    return out


def apply_search_params(
    index: Index, params: str | Mapping[str, int | float] | None
) -> SearchParams:
    """Set query-time parameters on ``index`` (through any IDMap/transform wrappers).

    params : e.g. the service setting ``"nprobe=32"``, ``"efSearch=128"`` or a mapping
    Returns the parsed parameters. Raises IndexSetupError naming the parameter and index
    type when the index does not have it (``nprobe`` on a flat index, ``efSearch`` on an
    IVF with a flat coarse quantizer...). The values live on the index object and apply to
    every later search from any thread; set them once after loading, not per request.
    """
    parsed = parse_search_params(params)
    if isinstance(index, RerankedIndex):
        rest = {name: value for name, value in parsed.items() if name != "k_factor_rf"}
        apply_search_params(index.base, rest)
        if "k_factor_rf" in parsed:
            try:
                index.k_factor = parsed["k_factor_rf"]
            except ValueError as exc:
                raise IndexSetupError(f"search parameter k_factor_rf: {exc}") from None
        return parsed
    space = faiss.ParameterSpace()
    for name, value in parsed.items():
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError as exc:
            kind = type(faiss.downcast_index(index)).__name__
            inner = getattr(index, "index", None)
            if inner is not None:
                kind += f"({type(faiss.downcast_index(inner)).__name__})"
            raise IndexSetupError(
                f"search parameter {name!r} does not apply to index type {kind}"
            ) from exc
    return parsed


def search(
    index: Index, vectors: FloatArray, *, k: int, threads: int | None = None
) -> tuple[FloatArray, IdArray]:
    """Find the ``k`` most similar stored vectors for each query row.

    vectors : np.ndarray [shape=(n, index.d), dtype=float32], C-contiguous, L2-normalised
    k : results per row (>= 1)
    threads : if given, first set the calling thread's OpenMP limit (``set_search_threads``)

    Returns (similarities [n, k] float32, ids [n, k] int64), each row sorted by decreasing
    similarity (cosine for normalised vectors). Empty slots, when fewer than k vectors are
    reachable (small index, or an IVF whose probed lists hold fewer), have id -1 and a
    similarity of about -3.4e38. Raises ValueError on a bad shape, dtype, dim or k, or an
    untrained index.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    _check_vectors(vectors, int(index.d), "query vectors")
    if needs_training(index):
        raise ValueError("index is not trained; call train() first")
    if threads is not None:
        tuning.set_search_threads(threads)
    n = int(vectors.shape[0])
    if n == 0:
        return np.empty((0, k), dtype=np.float32), np.empty((0, k), dtype=np.int64)
    sims, ids = index.search(vectors, k)
    return sims, ids


def write_index(index: Index, path: Path) -> None:
    """Write ``index`` to ``path`` in one file (`read_index` reads it back)."""
    if isinstance(index, RerankedIndex):
        with path.open("wb") as out:
            index.write(out)
        return
    faiss.write_index(index, str(path))


def read_index(path: Path) -> Index:
    """An index written by `write_index` (or by ``faiss.write_index``)."""
    if is_reranked_file(path):
        with path.open("rb") as source:
            return RerankedIndex.read(source)
    return faiss.read_index(str(path))
