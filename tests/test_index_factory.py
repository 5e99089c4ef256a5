"""Tests for app.index.factory against real FAISS (small indexes, fast)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from app.index import factory as fx
from app.index import tuning

DIM = 16


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def segment_ids(n: int) -> npt.NDArray[np.int64]:
    """Sparse, large ids so a position can never pass for an id."""
    return (np.arange(n, dtype=np.int64) * 7919 + 10**12).astype(np.int64)


def filled(
    factory: str, n: int = 2000, **kwargs: bool
) -> tuple[faiss.Index, np.ndarray, np.ndarray]:
    x = unit_vectors(n)
    ids = segment_ids(n)
    index = fx.create_index(factory, DIM, **kwargs)
    if fx.needs_training(index):
        fx.train(index, x)
    fx.add(index, x, ids)
    return index, x, ids


# --- factory strings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory", ["IVF", "IVFx,Flat", "Flatt", "HNSWx", "IVF16,PQ5", "LSH", "PQ3"]
)
def test_bad_factory_string_raises_value_error_naming_it(factory: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(factory))):
        fx.create_index(factory, DIM)


@pytest.mark.parametrize("factory", ["", "   "])
def test_empty_factory_string_raises(factory: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        fx.create_index(factory, DIM)


@pytest.mark.parametrize("factory", ["IDMap,Flat", "IDMap2,IVF16,Flat", "IVF16,Flat,IDMap"])
def test_idmap_in_factory_string_is_rejected(factory: str) -> None:
    with pytest.raises(fx.IndexSetupError, match="IDMap"):
        fx.create_index(factory, DIM)


@pytest.mark.parametrize("dim", [0, -4, True])
def test_bad_dim_raises(dim: int) -> None:
    with pytest.raises(ValueError, match="dimension"):
        fx.create_index("Flat", dim)


@pytest.mark.parametrize(
    ("factory", "native"),
    [("Flat", False), ("SQ8", False), ("IVF16,Flat", True), ("IVF16,SQ8", True)],
)
def test_create_index_layout_and_metric(factory: str, native: bool) -> None:
    index = fx.create_index(factory, DIM)
    assert index.d == DIM
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert isinstance(index, faiss.IndexIDMap2) is not native
    caps = fx.capabilities(index)
    assert caps.native_ids is native
    assert caps.removable
    assert caps.reconstructable


def test_hnsw_refused_unless_removal_not_required() -> None:
    with pytest.raises(fx.IndexSetupError, match="remove_ids"):
        fx.create_index("HNSW16", DIM)
    index = fx.create_index("HNSW16", DIM, require_removal=False)
    assert isinstance(index, faiss.IndexIDMap2)
    assert not fx.capabilities(index).removable


def test_ivf_fast_scan_cannot_reconstruct_but_can_remove() -> None:
    with pytest.raises(fx.IndexSetupError, match="reconstruct"):
        fx.create_index("IVF8,PQ8x4fs", DIM)
    index, _, ids = filled("IVF8,PQ8x4fs", require_reconstruct=False)
    caps = fx.capabilities(index)
    assert caps.removable
    assert not caps.reconstructable
    assert fx.remove(index, ids[:10]) == 10


# --- re-ranked fast scan --------------------------------------------------------------------

RERANKED = "IVF16,PQ8x4fs,Refine(SQ8)"


def _recall_at_10(found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64]) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def test_reranked_candidates_are_reordered_on_the_finer_codes() -> None:
    """Recall@10 against exact search: the 4-bit codes alone, then re-ranked on SQ8."""
    x = unit_vectors(5000)
    ids = segment_ids(5000)
    queries = unit_vectors(200, seed=5)
    exact, _, _ = filled("Flat", n=5000)
    _, truth = fx.search(exact, queries, k=10)

    alone = fx.create_index("IVF16,PQ8x4fs", DIM, require_reconstruct=False)
    reranked = fx.create_index(RERANKED, DIM)
    for index in (alone, reranked):
        fx.train(index, x)
        fx.add(index, x, ids)
        fx.apply_search_params(index, "nprobe=16")
    # 8 two-dimensional 4-bit codes order random 16-d neighbours poorly (recall ~0.47); the
    # best 160 of them re-scored on SQ8 hold nearly all of the true ten.
    fx.apply_search_params(reranked, "k_factor_rf=16")
    _, coarse = fx.search(alone, queries, k=10)
    sims, found = fx.search(reranked, queries, k=10)
    assert _recall_at_10(coarse, truth) < 0.6
    assert _recall_at_10(found, truth) > 0.95
    # Similarities are the SQ8 codes' cosines, in decreasing order, under the right ids.
    assert np.all(np.diff(sims, axis=1) <= 0)
    top = np.searchsorted(ids, found[:, 0])
    np.testing.assert_allclose(sims[:, 0], np.sum(x[top] * queries, axis=1), atol=0.02)

    # k_factor_rf sets how many candidates are re-ranked: with one per result, the coarse
    # order decides which ten are re-scored, and recall falls back towards the codes alone.
    fx.apply_search_params(reranked, "k_factor_rf=1")
    _, narrow = fx.search(reranked, queries, k=10)
    assert _recall_at_10(narrow, truth) < _recall_at_10(found, truth) - 0.1


def test_reranked_index_pads_like_faiss_and_reconstructs() -> None:
    index, x, ids = filled(RERANKED, n=300)
    fx.apply_search_params(index, "nprobe=16")
    assert fx.capabilities(index) == fx.IndexCapabilities(True, True, True, True)
    sims, found = fx.search(index, x[:2], k=400)
    assert np.all(found[:, 300:] == -1)
    assert np.all(sims[:, 300:] < -1e38)
    assert set(found[:, :300].ravel()) == set(ids.tolist())
    np.testing.assert_allclose(index.reconstruct(int(ids[5])), x[5], atol=0.02)


def test_reranked_index_takes_ids_in_increasing_order() -> None:
    """Its store finds an id's row in its sorted ids, so ids must arrive in order."""
    index, x, ids = filled(RERANKED, n=300)
    with pytest.raises(ValueError, match="increasing order"):
        fx.add(index, x[:2], ids[:2])
    with pytest.raises(ValueError, match="increasing order"):
        fx.add(index, x[:2], np.array([ids[-1] + 9, ids[-1] + 5], dtype=np.int64))
    assert index.ntotal == 300
    fx.add(index, x[:2], ids[-1] + np.array([1, 2], dtype=np.int64))
    assert index.ntotal == 302


@pytest.mark.parametrize("layout", ["dense", "one gap", "a gap per track", "sparse"])
def test_reranked_index_finds_each_ids_row_whatever_the_gaps(layout: str) -> None:
    """Rows are looked for where dense ids would put them, then in 128-row buckets: every id
    the store holds is found at its own row, and no other id is, across bucket edges, also
    after a removal has moved the rows the buckets were computed from."""
    n = 1500
    dense = np.arange(n, dtype=np.int64) + 40
    ids = {
        "dense": dense,
        "one gap": np.where(dense < 700, dense, dense + 5),
        "a gap per track": dense + 3 * (dense // 90),
        "sparse": segment_ids(n),
    }[layout]
    x = unit_vectors(n)
    index = fx.create_index(RERANKED, DIM)
    fx.train(index, x)
    fx.add(index, x, ids)
    _, before = index._rows(ids.reshape(-1, 1))  # looked up once, so anything cached is warm
    assert before.all()
    assert fx.remove(index, ids[300:420]) == 120  # a withdrawn track: every later row moves
    kept = np.concatenate([ids[:300], ids[420:]])
    # Next to every kept id, the withdrawn ones, and beyond either end.
    near = np.concatenate([kept - 1, kept + 1, ids[300:420], [ids[0] - 3, ids[-1] + 4]])
    absent = np.setdiff1d(near, kept)
    # The store holds the kept ids in order, so an id's true row is its position there.
    rows, found = index._rows(np.concatenate([kept, absent, [-1]]).reshape(-1, 1))
    assert found[: kept.size].all()
    assert not found[kept.size :].any()
    np.testing.assert_array_equal(rows[: kept.size, 0], np.arange(kept.size))
    # And the public face of it: each kept id reconstructs to its own vector.
    for i in (0, 299, 300, 1000, kept.size - 1):
        np.testing.assert_allclose(
            index.reconstruct(int(kept[i])), x[i if i < 300 else i + 120], atol=0.02
        )


def test_reranked_index_survives_its_file_with_removal_and_parameters(tmp_path: Path) -> None:
    index, x, ids = filled(RERANKED)
    fx.apply_search_params(index, "nprobe=4,k_factor_rf=3")
    assert fx.remove(index, ids[:100]) == 100
    path = tmp_path / "index.faiss"
    fx.write_index(index, path)
    copy = fx.read_index(path)
    assert copy.k_factor == 3
    fx.apply_search_params(copy, "nprobe=4")
    np.testing.assert_array_equal(fx.search(copy, x, k=5)[1], fx.search(index, x, k=5)[1])
    assert fx.remove(copy, ids[100:110]) == 10
    # The codes kept for re-ranking go with the removed ids too.
    assert copy.store.ntotal == copy.ntotal == ids.size - 110
    assert not np.isin(fx.search(copy, x[100:120], k=5)[1], ids[:110]).any()
    # A plain FAISS index goes through the same two functions.
    flat, _, _ = filled("Flat", n=20)
    fx.write_index(flat, tmp_path / "flat.faiss")
    assert fx.read_index(tmp_path / "flat.faiss").ntotal == 20


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("Flat,Refine(SQ8)", "only an inverted file"),
        ("IVF16,Flat,Refine(HNSW16)", "flat codes"),
        ("IVF16,Flat,Refine(SQ9)", "invalid re-ranking codes"),
        ("IVF16,PQ8x4fs,Refine(SQ8)x", "invalid index factory string"),
    ],
)
def test_reranked_factory_errors_name_the_string(factory: str, message: str) -> None:
    with pytest.raises(fx.IndexSetupError, match=re.escape(message)):
        fx.create_index(factory, DIM)


def test_reranked_k_factor_must_be_a_whole_number() -> None:
    index = fx.create_index(RERANKED, DIM)
    with pytest.raises(fx.IndexSetupError, match="k_factor_rf"):
        fx.apply_search_params(index, "k_factor_rf=2.5")


# --- flat search ----------------------------------------------------------------------------


def test_flat_top_hit_is_the_vector_itself() -> None:
    index, x, ids = filled("Flat", n=500)
    sims, found = fx.search(index, x[:50], k=5)
    assert sims.shape == (50, 5)
    assert found.shape == (50, 5)
    assert sims.dtype == np.float32
    assert found.dtype == np.int64
    np.testing.assert_array_equal(found[:, 0], ids[:50])
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-6), "rows must be sorted by similarity"
    assert np.all(sims[:, 1] < 0.9999)


def test_flat_matches_brute_force() -> None:
    index, x, ids = filled("Flat", n=300)
    q = unit_vectors(20, seed=5)
    sims, found = fx.search(index, q, k=4)
    exact = q @ x.T
    order = np.argsort(-exact, axis=1)[:, :4]
    np.testing.assert_array_equal(found, ids[order])
    np.testing.assert_allclose(sims, np.take_along_axis(exact, order, axis=1), atol=1e-5)


def test_fewer_vectors_than_k_pads_with_minus_one() -> None:
    index, _, ids = filled("Flat", n=3)
    _, found = fx.search(index, unit_vectors(2, seed=9), k=5)
    assert set(found[:, :3].ravel()) <= set(ids.tolist())
    assert np.all(found[:, 3:] == -1)


def test_empty_query_batch() -> None:
    index, _, _ = filled("Flat", n=10)
    sims, found = fx.search(index, np.empty((0, DIM), dtype=np.float32), k=3)
    assert sims.shape == (0, 3)
    assert found.shape == (0, 3)


# --- removal --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory", ["Flat", "SQ8", "IVF16,Flat", "IVF16,SQ8", "IVF16,PQ8x4fs,Refine(SQ8)"]
)
def test_remove_ids_removes_and_keeps_the_rest_findable(factory: str) -> None:
    index, x, ids = filled(factory)
    fx.apply_search_params(index, "nprobe=16" if "IVF" in factory else "")
    gone = ids[::2]
    assert fx.remove(index, gone) == gone.size
    assert index.ntotal == ids.size - gone.size

    sims, found = fx.search(index, x, k=10)
    assert not np.isin(found, gone).any(), "a removed id came back"
    # Every remaining vector is still its own top hit, under its own id. (IndexIDMap2 around
    # an IVF fails exactly this: ids and inverted lists fall out of step after a removal.)
    kept = np.arange(ids.size)[1::2]
    np.testing.assert_array_equal(found[kept, 0], ids[kept])
    assert np.all(sims[kept, 0] > 0.98)

    np.testing.assert_allclose(index.reconstruct(int(ids[1])), x[1], atol=0.02)
    with pytest.raises(RuntimeError):
        index.reconstruct(int(ids[0]))


def test_remove_unknown_ids_removes_nothing() -> None:
    index, _, ids = filled("IVF16,Flat", n=500)
    assert fx.remove(index, np.array([1, 2, 3], dtype=np.int64)) == 0
    assert index.ntotal == ids.size


def test_remove_on_hnsw_raises_setup_error() -> None:
    index, _, ids = filled("HNSW16", n=200, require_removal=False)
    with pytest.raises(fx.IndexSetupError, match="remove"):
        fx.remove(index, ids[:3])


def test_remove_rejects_non_int64_ids() -> None:
    index, _, _ = filled("Flat", n=10)
    with pytest.raises(ValueError, match="int64"):
        fx.remove(index, np.array([1, 2], dtype=np.int32))


def test_ivf_survives_serialisation_with_remove_and_reconstruct() -> None:
    index, x, ids = filled("IVF16,Flat")
    copy = faiss.deserialize_index(faiss.serialize_index(index))
    assert fx.capabilities(copy).native_ids
    assert fx.capabilities(copy).reconstructable
    assert fx.remove(copy, ids[:5]) == 5
    np.testing.assert_allclose(copy.reconstruct(int(ids[7])), x[7], atol=1e-6)


# --- training -------------------------------------------------------------------------------


def test_ivf_needs_training_then_works() -> None:
    x = unit_vectors(2000)
    ids = segment_ids(2000)
    index = fx.create_index("IVF32,Flat", DIM)
    assert fx.needs_training(index)
    assert fx.min_training_size(index) == 32
    assert fx.recommended_training_size(index) == 20_000
    assert fx.recommended_training_size(fx.create_index("IVF1024,Flat", DIM)) == 1024 * 39
    with pytest.raises(ValueError, match="not trained"):
        fx.add(index, x, ids)
    with pytest.raises(ValueError, match="not trained"):
        fx.search(index, x[:2], k=1)

    fx.train(index, x)
    assert not fx.needs_training(index)
    fx.add(index, x, ids)
    fx.apply_search_params(index, "nprobe=32")
    _, found = fx.search(index, x[:100], k=1)
    np.testing.assert_array_equal(found[:, 0], ids[:100])


def test_flat_needs_no_training_and_train_is_a_no_op() -> None:
    index = fx.create_index("Flat", DIM)
    assert not fx.needs_training(index)
    fx.train(index, unit_vectors(5))
    assert index.ntotal == 0


def test_training_sample_smaller_than_centroids_raises() -> None:
    index = fx.create_index("IVF64,Flat", DIM)
    with pytest.raises(fx.IndexSetupError, match=r"has 63 vectors.*at least 64"):
        fx.train(index, unit_vectors(63))
    assert fx.needs_training(index)


def test_pq_training_size_counts_sub_codebooks() -> None:
    index = fx.create_index("IVF4,PQ4", DIM)
    assert fx.min_training_size(index) == 256
    with pytest.raises(fx.IndexSetupError, match="at least 256"):
        fx.train(index, unit_vectors(100))


def test_training_sample_must_be_finite() -> None:
    x = unit_vectors(200)
    x[3, 2] = np.nan
    with pytest.raises(fx.IndexSetupError, match="NaN"):
        fx.train(fx.create_index("IVF8,Flat", DIM), x)


def test_scalar_quantizer_needs_training() -> None:
    sq = fx.create_index("SQ8", DIM)
    assert fx.needs_training(sq)
    fx.train(sq, unit_vectors(10))
    assert not fx.needs_training(sq)


# --- search parameters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nprobe=32", {"nprobe": 32}),
        (" nprobe = 32 , efSearch=128 ", {"nprobe": 32, "efSearch": 128}),
        ("k_factor_rf=1.5", {"k_factor_rf": 1.5}),
        ("", {}),
        (None, {}),
        ({"nprobe": 8}, {"nprobe": 8}),
        ({"nprobe": 8.0}, {"nprobe": 8}),
    ],
)
def test_parse_search_params(spec: str | None, expected: dict[str, float]) -> None:
    parsed = fx.parse_search_params(spec)
    assert parsed == expected
    assert all(type(v) is type(expected[k]) for k, v in parsed.items())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nprobe", "cannot parse"),
        ("nprobe=32,", "empty item"),
        ("nprobe=x", "not an integer"),
        ("nprobe=1.5", "not an integer"),
        ("nprobe=0", ">= 1"),
        ("nprobe=-3", ">= 1"),
        ("nprobe=2,nprobe=3", "twice"),
        ("nprob=2", "unknown search parameter 'nprob'"),
        ("efSearch=inf", "not an integer"),
    ],
)
def test_parse_search_params_errors_quote_the_setting(spec: str, message: str) -> None:
    with pytest.raises(fx.IndexSetupError, match=re.escape(message)) as info:
        fx.parse_search_params(spec)
    assert repr(spec) in str(info.value)


def test_nprobe_is_applied_and_changes_results() -> None:
    index, x, ids = filled("IVF64,Flat", n=4000)
    ivf = faiss.extract_index_ivf(index)
    queries = unit_vectors(200, seed=3)
    exact_sims = np.sort(queries @ x.T, axis=1)[:, ::-1][:, :10]
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]

    assert fx.apply_search_params(index, "nprobe=1") == {"nprobe": 1}
    assert ivf.nprobe == 1
    _, narrow = fx.search(index, queries, k=10)

    fx.apply_search_params(index, {"nprobe": 64})
    assert ivf.nprobe == 64
    full_sims, _ = fx.search(index, queries, k=10)

    # every list probed: exact search (compared on similarities, near-ties may swap ids)
    np.testing.assert_allclose(full_sims, exact_sims, atol=1e-5)
    recall_narrow = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(narrow, ids[exact], strict=True)]
    )
    assert recall_narrow < 0.9, "nprobe=1 should miss neighbours on isotropic data"


def test_efsearch_is_applied_through_the_id_map() -> None:
    index = fx.create_index("HNSW16", DIM, require_removal=False)
    fx.apply_search_params(index, "efSearch=77")
    assert isinstance(index, faiss.IndexIDMap2)
    inner = faiss.downcast_index(index.index)
    assert isinstance(inner, faiss.IndexHNSW)
    assert inner.hnsw.efSearch == 77


@pytest.mark.parametrize(("factory", "spec"), [("Flat", "nprobe=8"), ("IVF8,Flat", "efSearch=8")])
def test_param_that_does_not_apply_raises(factory: str, spec: str) -> None:
    index = fx.create_index(factory, DIM)
    with pytest.raises(fx.IndexSetupError, match="does not apply"):
        fx.apply_search_params(index, spec)


# --- input validation -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def flat_index() -> faiss.Index:
    index, _, _ = filled("Flat", n=50)
    return index


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.zeros((3, DIM + 1), dtype=np.float32), "dimension 17, the index expects 16"),
        (np.zeros((3, DIM), dtype=np.float64), "float32"),
        (np.zeros((DIM,), dtype=np.float32), "2-D"),
        (np.zeros((2, 3, DIM), dtype=np.float32), "2-D"),
        (np.zeros((DIM, 6), dtype=np.float32).T, "C-contiguous"),
        (np.zeros((6, 2 * DIM), dtype=np.float32)[:, ::2], "C-contiguous"),
        ([[0.0] * DIM], "numpy array"),
    ],
)
def test_search_rejects_bad_vectors(flat_index: faiss.Index, vectors: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        fx.search(flat_index, vectors, k=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [0, -1, True, 2.0])
def test_search_rejects_bad_k(flat_index: faiss.Index, k: int) -> None:
    with pytest.raises(ValueError, match="k must be"):
        fx.search(flat_index, unit_vectors(1), k=k)


def test_add_rejects_mismatched_ids() -> None:
    index = fx.create_index("Flat", DIM)
    x = unit_vectors(4)
    with pytest.raises(ValueError, match="3 ids for 4 vectors"):
        fx.add(index, x, segment_ids(3))
    with pytest.raises(ValueError, match="int64"):
        fx.add(index, x, np.arange(4, dtype=np.int32))
    assert index.ntotal == 0


def test_train_rejects_wrong_dim() -> None:
    with pytest.raises(ValueError, match="dimension 8"):
        fx.train(fx.create_index("IVF4,Flat", DIM), unit_vectors(100, dim=8))


# --- threads --------------------------------------------------------------------------------


def test_search_threads_are_per_calling_thread() -> None:
    before = tuning.get_search_threads()
    seen: list[int] = []

    def worker() -> None:
        tuning.set_search_threads(1)
        seen.append(tuning.get_search_threads())

    try:
        tuning.set_search_threads(3)
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert seen == [1]
        assert tuning.get_search_threads() == 3
    finally:
        tuning.set_search_threads(before)


def test_search_with_threads_argument(flat_index: faiss.Index) -> None:
    before = tuning.get_search_threads()
    try:
        _, found = fx.search(flat_index, unit_vectors(2), k=1, threads=1)
        assert found.shape == (2, 1)
        assert tuning.get_search_threads() == 1
    finally:
        tuning.set_search_threads(before)


@pytest.mark.parametrize("n", [0, -2, True])
def test_set_search_threads_rejects_bad_counts(n: int) -> None:
    with pytest.raises(ValueError, match="thread count"):
        tuning.set_search_threads(n)


# --- BLAS threshold -------------------------------------------------------------------------


def test_prefer_blas_sets_and_restores_the_threshold() -> None:
    saved = faiss.cvar.distance_compute_blas_threshold  # an index manager may have set it
    tuning.reset_blas_threshold()
    before = faiss.cvar.distance_compute_blas_threshold
    try:
        previous = tuning.prefer_blas(128, min_rows=8)
        assert previous == before
        # faiss 1.15 compares rows * dim with its threshold (default 128000); older releases
        # compared rows alone (default 20).
        expected = 8 * 128 if before == 128_000 else 8
        assert faiss.cvar.distance_compute_blas_threshold == expected
        tuning.reset_blas_threshold()
        assert faiss.cvar.distance_compute_blas_threshold == before
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved


def test_blas_and_row_by_row_paths_agree() -> None:
    before = faiss.cvar.distance_compute_blas_threshold
    index, _, _ = filled("Flat", n=3000)
    queries = unit_vectors(60, seed=11)
    try:
        faiss.cvar.distance_compute_blas_threshold = 10**9  # row by row
        sims_seq, ids_seq = fx.search(index, queries, k=10)
        tuning.prefer_blas(DIM, min_rows=8)
        sims_blas, ids_blas = fx.search(index, queries, k=10)
    finally:
        faiss.cvar.distance_compute_blas_threshold = before
    np.testing.assert_allclose(sims_blas, sims_seq, atol=1e-5)
    assert (ids_blas[:, 0] == ids_seq[:, 0]).mean() > 0.99


@pytest.mark.parametrize(("dim", "rows"), [(0, 8), (128, 0), (True, 8)])
def test_prefer_blas_rejects_bad_arguments(dim: int, rows: int) -> None:
    with pytest.raises(ValueError, match="positive int"):
        tuning.prefer_blas(dim, min_rows=rows)
