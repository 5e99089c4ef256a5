"""The index chooses itself by segment count and retrains in the background as it grows.

Real FAISS over segments stored in PostgreSQL; the tier thresholds are set small so that a
few thousand segments walk through every tier.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import faiss
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.catalogues.segments import SegmentStore
from app.config import Settings
from app.db import make_sessionmaker
from app.embedding import get_embedder
from app.index import tiers, tuning
from app.index.base import FloatArray, IdArray
from app.index.factory import capabilities, create_index
from app.index.manager import IndexManager, IndexSpec
from app.index.reranked import RerankedIndex
from app.main import create_app
from tests.test_index_manager import DIM, SyntheticCatalogue

POLICY = tiers.TierPolicy(ivf_from=300, pq_from=3000)
AUTO = IndexSpec(embedder="test", embedder_version="1", dim=DIM, factory="auto", tier_policy=POLICY)


@pytest.fixture
def catalogue(engine: Engine) -> SyntheticCatalogue:
    return SyntheticCatalogue(engine)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def _store(sessions: sessionmaker[Session], spec: IndexSpec = AUTO) -> SegmentStore:
    return SegmentStore(sessions, embedder=spec.embedder, version=spec.embedder_version, dim=DIM)


def _manager(sessions: sessionmaker[Session], path: Path, spec: IndexSpec = AUTO) -> IndexManager:
    return IndexManager(spec, source=_store(sessions, spec), snapshot_dir=path)


def _top1_share(
    manager: IndexManager, catalogue: SyntheticCatalogue, tracks: list[uuid.UUID]
) -> float:
    """Share of stored windows whose nearest segment belongs to their own track."""
    hits = total = 0
    for track in tracks:
        result = manager.search(catalogue.vectors[track], k=1)
        found = [result.track_ids[t] if t >= 0 else None for t in result.tracks[:, 0]]
        hits += sum(f == track for f in found)
        total += len(found)
    return hits / total


# -- the choice ----------------------------------------------------------------------------


def test_the_choice_moves_from_exact_to_inverted_files_to_product_codes() -> None:
    policy = tiers.TierPolicy()
    assert policy == tiers.TierPolicy(ivf_from=50_000, rerank_from=1_000_000, pq_from=20_000_000)
    assert tiers.choose(49_999, 128, policy) == tiers.IndexChoice("Flat", "", 49_999)
    assert tiers.choose(50_000, 128, policy).factory == "IVF1024,SQ8"
    below = tiers.choose(999_999, 128, policy)
    assert (below.factory, below.search_params) == ("IVF4096,SQ8", "nprobe=16")
    # The re-ranked tier: a quarter of the lists, probed at half the count (README, Scale).
    million = tiers.choose(1_000_000, 128, policy)
    assert (million.factory, million.search_params) == (
        "IVF1024,PQ64x4fs,Refine(SQ8)",
        "nprobe=32",
    )
    assert tiers.is_upgrade(below.factory, million.factory)
    ten = tiers.choose(10_000_000, 128, policy)
    assert (ten.factory, ten.search_params) == (
        "IVF4096,PQ64x4fs,Refine(SQ8)",
        "nprobe=64",
    )
    big = tiers.choose(50_000_000, 128, policy)
    assert (big.factory, big.search_params) == ("OPQ32,IVF32768,PQ32", "nprobe=45")
    assert tiers.choose(10**12, 512, policy).factory == "OPQ64,IVF65536,PQ64"
    # Every tier is a valid, removable index of that dimension.
    for n in (50_000, 1_000_000, 10_000_000, 50_000_000):
        index = create_index(tiers.choose(n, 128, policy).factory, 128)
        assert index.d == 128
        assert capabilities(index).removable
    # Without a re-ranked tier (rerank_from at or past pq_from), SQ8 runs up to the PQ tier.
    no_rerank = tiers.TierPolicy(rerank_from=20_000_000)
    assert tiers.choose(10_000_000, 128, no_rerank).factory == "IVF16384,SQ8"


def test_lists_grow_by_powers_of_two_and_only_upgrades_retrain() -> None:
    nlists = [tiers.nlist_for(n) for n in (1_000, 16_384, 65_536, 262_144, 10**9)]
    assert nlists == [128, 512, 1024, 2048, 65_536]
    assert [tiers.nprobe_for(n) for n in (64, 1024, 4096, 16_384)] == [8, 8, 16, 32]
    assert tiers.is_upgrade("Flat", "IVF64,SQ8")
    assert tiers.is_upgrade("IVF64,SQ8", "IVF128,SQ8")
    assert tiers.is_upgrade("IVF65536,SQ8", "OPQ32,IVF1024,PQ32")
    assert tiers.is_upgrade("IVF65536,SQ8", "IVF1024,PQ64x4fs,Refine(SQ8)")
    assert tiers.is_upgrade("IVF65536,PQ64x4fs,Refine(SQ8)", "OPQ32,IVF1024,PQ32")
    assert not tiers.is_upgrade("IVF1024,PQ64x4fs,Refine(SQ8)", "IVF65536,SQ8")
    assert not tiers.is_upgrade("IVF128,SQ8", "IVF64,SQ8")
    assert not tiers.is_upgrade("IVF128,SQ8", "Flat")
    assert not tiers.is_upgrade("IVF128,SQ8", "IVF128,SQ8")
    assert [tiers.pq_bytes(d) for d in (16, 100, 6, 512)] == [4, 25, 1, 64]
    assert [tiers.fast_scan_subquantizers(d) for d in (16, 128, 512, 100)] == [8, 64, 256, 50]


# -- the manager ---------------------------------------------------------------------------


def test_auto_builds_the_tier_of_the_stored_count(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    small = [catalogue.add_track(50) for _ in range(4)]
    flat = _manager(sessions, tmp_path / "a")
    flat.start()
    report = flat.report()
    assert (report.factory, report.chosen_by, report.trained_at) == ("Flat", "auto", None)
    assert report.segments == report.segments_at_choice == 200
    assert flat.retrain_needed() is None

    more = [catalogue.add_track(50) for _ in range(4)]
    ivf = _manager(sessions, tmp_path / "b")
    ivf.start()
    report = ivf.report()
    assert (report.factory, report.search_params) == ("IVF64,SQ8", "nprobe=8")
    assert report.trained_at is not None
    assert report.training_sample == 400
    assert report.started_from == "rebuild"
    stored = faiss.downcast_index(faiss.extract_index_ivf(ivf._state.index))
    assert isinstance(stored, faiss.IndexIVFScalarQuantizer)
    assert faiss.extract_index_ivf(ivf._state.index).nprobe == 8
    # Inverted lists probed 8 of 64 on random data still find most exact copies.
    assert _top1_share(ivf, catalogue, small + more) > 0.5


def test_a_catalogue_past_the_pq_tier_gets_product_codes(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    tracks = [catalogue.add_track(1000) for _ in range(3)]
    # An explicit nprobe replaces the chosen one on inverted-file tiers.
    spec = IndexSpec(
        embedder="test",
        embedder_version="1",
        dim=DIM,
        factory="auto",
        search_params="nprobe=64",
        tier_policy=POLICY,
    )
    manager = _manager(sessions, tmp_path, spec)
    manager.start()
    report = manager.report()
    assert (report.factory, report.search_params) == ("OPQ4,IVF256,PQ4", "nprobe=64")
    stored = faiss.downcast_index(faiss.extract_index_ivf(manager._state.index))
    assert isinstance(stored, faiss.IndexIVFPQ)
    assert _top1_share(manager, catalogue, tracks) > 0.9


def test_a_catalogue_past_the_rerank_tier_gets_re_ranked_fast_scan(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    tracks = [catalogue.add_track(500) for _ in range(4)]
    policy = tiers.TierPolicy(ivf_from=300, rerank_from=1000, pq_from=10**9)
    spec = IndexSpec("test", "1", DIM, factory="auto", tier_policy=policy)
    manager = _manager(sessions, tmp_path, spec)
    manager.start()
    report = manager.report()
    assert (report.factory, report.search_params) == (
        "IVF64,PQ8x4fs,Refine(SQ8)",
        "nprobe=32",
    )
    assert isinstance(manager._state.index, RerankedIndex)
    assert _top1_share(manager, catalogue, tracks) > 0.9
    # A withdrawal reaches both the lists and the codes kept for re-ranking.
    catalogue.withdraw(tracks[0])
    assert manager.sync().removed == 500
    result = manager.search(catalogue.vectors[tracks[0]], k=20)
    assert tracks[0] not in {result.track_ids[t] for t in result.tracks.ravel() if t >= 0}
    # The snapshot holds it as it is; a restart serves it without retraining.
    assert manager.save_snapshot()
    restarted = _manager(sessions, tmp_path, spec)
    restarted.start()
    again = restarted.report()
    assert (again.factory, again.started_from, again.segments) == (
        "IVF64,PQ8x4fs,Refine(SQ8)",
        "snapshot",
        1500,
    )
    assert again.trained_at == report.trained_at
    before = manager.search(catalogue.vectors[tracks[1]], k=10)
    after = restarted.search(catalogue.vectors[tracks[1]], k=10)
    np.testing.assert_array_equal(before.segments, after.segments)


def test_a_lone_search_on_an_inverted_file_uses_every_core(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("needs two CPUs to tell one search thread from every core")
    tracks = [catalogue.add_track(100) for _ in range(4)]
    before = tuning.get_search_threads()
    try:
        ivf = _manager(sessions, tmp_path / "ivf")
        ivf.start()
        assert ivf.report().factory == "IVF64,SQ8"
        for _ in range(2):  # the count of searches in flight returns to zero after each
            tuning.set_search_threads(1)
            ivf.search(catalogue.vectors[tracks[0]], k=5)
            assert tuning.get_search_threads() == cores
        forced = IndexSpec("test", "1", DIM, factory="Flat")
        flat = _manager(sessions, tmp_path / "flat", forced)
        flat.start()
        tuning.set_search_threads(2)
        flat.search(catalogue.vectors[tracks[0]], k=5)
        assert tuning.get_search_threads() == 1
    finally:
        tuning.set_search_threads(before)
    # With another search in flight, each keeps to one thread.
    assert tuning.search_threads("IVF64,SQ8", in_flight=2) == 1
    assert tuning.search_threads("IVF64,PQ8x4fs,Refine(SQ8)", in_flight=1) == cores
    assert tuning.search_threads("Flat", in_flight=1) == 1


def test_the_catalogue_outgrowing_its_tier_is_retrained_and_swapped(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    first = [catalogue.add_track(40) for _ in range(5)]
    manager = _manager(sessions, tmp_path)
    manager.start()
    assert manager.report().factory == "Flat"
    later = [catalogue.add_track(100) for _ in range(4)]
    manager.sync()
    choice = manager.retrain_needed()
    assert choice is not None
    assert choice.factory == "IVF128,SQ8"
    assert manager.retrain(choice)
    report = manager.report()
    assert (report.factory, report.segments, report.retraining_to) == ("IVF128,SQ8", 600, None)
    assert manager.retrain_needed() is None
    assert _top1_share(manager, catalogue, first + later) > 0.5
    # The new index is what the next snapshot holds, and a restart serves it as it is.
    assert manager.save_snapshot()
    restarted = _manager(sessions, tmp_path)
    restarted.start()
    again = restarted.report()
    assert (again.factory, again.started_from, again.trained_at) == (
        "IVF128,SQ8",
        "snapshot",
        report.trained_at,
    )


class _GatedStore(SegmentStore):
    """A real store whose training-sample read waits for the test (to hold a retraining
    mid-way and look at the service meanwhile)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reading_sample = threading.Event()
        self.go_on = threading.Event()

    def vectors(self, segment_ids: IdArray) -> FloatArray:
        self.reading_sample.set()
        assert self.go_on.wait(30)
        return super().vectors(segment_ids)


def test_the_old_index_serves_while_the_new_one_trains(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    tracks = [catalogue.add_track(100) for _ in range(2)]
    store = _GatedStore(sessions, embedder="test", version="1", dim=DIM)
    manager = IndexManager(AUTO, source=store, snapshot_dir=tmp_path)
    manager.start()
    tracks += [catalogue.add_track(100) for _ in range(2)]
    manager.sync()
    choice = manager.retrain_needed()
    assert choice is not None
    worker = threading.Thread(target=manager.retrain, args=(choice,))
    worker.start()
    try:
        assert store.reading_sample.wait(30)
        # Mid-retraining: the flat index answers, takes in new segments and withdrawals.
        assert manager.report().retraining_to == "IVF64,SQ8"
        assert manager.report().factory == "Flat"
        assert not manager.retrain(choice)  # one at a time
        added = catalogue.add_track(100)
        catalogue.withdraw(tracks[0])
        stats = manager.sync()
        assert (stats.added, stats.removed) == (100, 100)
        assert _top1_share(manager, catalogue, [added]) == 1.0
    finally:
        store.go_on.set()
        worker.join(60)
    report = manager.report()
    assert (report.factory, report.retraining_to) == ("IVF64,SQ8", None)
    # What happened during the retraining is in the new index too.
    assert report.segments == 400
    result = manager.search(catalogue.vectors[tracks[0]], k=20)
    assert tracks[0] not in {result.track_ids[t] for t in result.tracks.ravel() if t >= 0}
    assert _top1_share(manager, catalogue, [added]) > 0.5


def test_a_factory_setting_still_forces_the_index(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    [catalogue.add_track(100) for _ in range(5)]
    flat = IndexSpec(embedder="test", embedder_version="1", dim=DIM, tier_policy=POLICY)
    manager = _manager(sessions, tmp_path / "flat", flat)
    manager.start()
    report = manager.report()
    assert (report.factory, report.chosen_by, report.segments) == ("Flat", "setting", 500)
    assert manager.retrain_needed() is None

    # A forced IVF that fell back to Flat for want of data retrains once there is enough.
    ivf = IndexSpec(embedder="test", embedder_version="1", dim=DIM, factory="IVF1024,Flat")
    fallback = _manager(sessions, tmp_path / "ivf", ivf)
    fallback.start()
    assert fallback.report().factory == "Flat"
    assert fallback.retrain_needed() is None
    [catalogue.add_track(300) for _ in range(2)]
    fallback.sync()
    choice = fallback.retrain_needed()
    assert choice is not None
    assert choice.factory == "IVF1024,Flat"
    assert fallback.retrain(choice)
    assert fallback.report().factory == "IVF1024,Flat"


# -- the service ---------------------------------------------------------------------------


def test_readyz_reports_the_choice_and_the_background_retraining(
    settings: Settings, engine: Engine
) -> None:
    embedder = get_embedder("spectral")
    spectral = IndexSpec(embedder.name, embedder.version, embedder.dim)
    catalogue = SyntheticCatalogue(engine)
    [catalogue.add_track(100, spec=spectral) for _ in range(2)]
    settings = settings.model_copy(
        update={"index_ivf_from_segments": 150, "index_sync_seconds": 0.1}
    )
    with TestClient(create_app(settings)) as client:
        index = client.get("/readyz").json()["index"]
        assert index["factory"] == "IVF64,SQ8"
        assert (index["chosen_by"], index["segments"], index["segments_at_choice"]) == (
            "auto",
            200,
            200,
        )
        assert index["trained_at"] is not None
        assert index["started_from"] == "rebuild"
        first_trained = index["trained_at"]
        # Grown sixfold, to 1,200 segments: 128 lists; the service retrains by itself.
        [catalogue.add_track(500, spec=spectral) for _ in range(2)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            index = client.get("/readyz").json()["index"]
            if index["factory"] == "IVF128,SQ8":
                break
            time.sleep(0.1)
        assert index["factory"] == "IVF128,SQ8"
        assert index["segments"] == 1200
        # Chosen once the first new track pushed the count past the tier (700 or 1,200).
        assert index["segments_at_choice"] in {700, 1200}
        assert index["trained_at"] > first_trained
        assert index["retraining_to"] is None
